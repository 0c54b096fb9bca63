package io.gradguard.core.reference;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Guard;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.conformance.GuardKit;
import io.gradguard.core.spi.GuardedModel;
import io.gradguard.core.spi.TensorOps;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The {@link GuardKit} on the pure-Java reference backend: a host MLP with hand-written backprop,
 * SGD and Adam, guarded by the smallest possible adapter ({@link ReferenceGuard}: one
 * {@link GuardedModel}). It proves the kit itself, and shows how an adapter plugs into
 * {@link Guard}.
 */
class ReferenceGuardKitTest extends GuardKit {

    /** The whole adapter: a guard whose model is a host MLP. */
    static final class ReferenceGuard extends Guard<ReferenceTensor, ReferenceGuard> {
        ReferenceGuard(GradientPipeline pipeline) {
            super(pipeline);
        }

        StepResult<ReferenceTensor> step(HostMlp model, long batchSize, double loss) {
            return step(model, StepContext.ofBatch(batchSize).withLoss(loss));
        }
    }

    /** The kit's model on the host: parameters, their gradients, and SGD or Adam. */
    static class HostMlp implements GuardedModel<ReferenceTensor> {
        static final String[] NAMES = {"dense1/W", "dense1/b", "dense2/W", "dense2/b"};
        static final long[][] SHAPES = {{4, 8}, {8}, {8, 2}, {2}};
        final float[][] params = new float[4][];
        final float[][] grads = new float[4][];
        final float[][] m = new float[4][];
        final float[][] v = new float[4][];
        final Optimizer optimizer;
        long t;

        HostMlp(Optimizer optimizer) {
            this.optimizer = optimizer;
            KitModel k = KitModel.initial();
            params[0] = flat(k.w1());
            params[1] = k.b1().clone();
            params[2] = flat(k.w2());
            params[3] = k.b2().clone();
            for (int i = 0; i < 4; i++) {
                grads[i] = new float[params[i].length];
                m[i] = new float[params[i].length];
                v[i] = new float[params[i].length];
            }
        }

        private static float[] flat(float[][] a) {
            float[] out = new float[a.length * a[0].length];
            for (int i = 0; i < a.length; i++) {
                System.arraycopy(a[i], 0, out, i * a[0].length, a[0].length);
            }
            return out;
        }

        /** Forward and backward: grads ← ∂(mean over the batch of ½‖o − y‖²)/∂θ; returns the loss. */
        double backward(Batch b) {
            return backward(b, 1.0);
        }

        /** {@link #backward(Batch)} of the loss multiplied by {@code lossScale} (the guard's); returns the unscaled loss. */
        double backward(Batch b, double lossScale) {
            float scale = (float) lossScale;
            int n = b.x().length;
            for (float[] g : grads) {
                java.util.Arrays.fill(g, 0f);
            }
            double loss = 0;
            for (int e = 0; e < n; e++) {
                float[] x = b.x()[e];
                float[] h = new float[8];
                for (int j = 0; j < 8; j++) {
                    float z = params[1][j];
                    for (int i = 0; i < 4; i++) {
                        z += x[i] * params[0][i * 8 + j];
                    }
                    h[j] = (float) Math.tanh(z);
                }
                float[] dOut = new float[2];
                for (int j = 0; j < 2; j++) {
                    float o = params[3][j];
                    for (int i = 0; i < 8; i++) {
                        o += h[i] * params[2][i * 2 + j];
                    }
                    float d = o - b.y()[e][j];
                    loss += 0.5 * d * d / n;
                    dOut[j] = d / n * scale;
                }
                for (int j = 0; j < 2; j++) {
                    grads[3][j] += dOut[j];
                    for (int i = 0; i < 8; i++) {
                        grads[2][i * 2 + j] += h[i] * dOut[j];
                    }
                }
                for (int i = 0; i < 8; i++) {
                    float dh = dOut[0] * params[2][i * 2] + dOut[1] * params[2][i * 2 + 1];
                    float dz = dh * (1 - h[i] * h[i]);
                    grads[1][i] += dz;
                    for (int k = 0; k < 4; k++) {
                        grads[0][k * 8 + i] += x[k] * dz;
                    }
                }
            }
            return loss;
        }

        @Override
        public TensorOps<ReferenceTensor> ops() {
            return ReferenceOps.INSTANCE;
        }

        @Override
        public GradientSet<ReferenceTensor> gradients() {
            List<GradientTensor<ReferenceTensor>> out = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                out.add(new GradientTensor<>(NAMES[i], SHAPES[i], SHAPES[i].length == 2 ? Role.WEIGHT : Role.BIAS,
                        NAMES[i].substring(0, 6), Layout.outputLast(), ReferenceTensor.of(grads[i], SHAPES[i]),
                        ReferenceTensor.of(params[i].clone(), SHAPES[i])));
            }
            return GradientSet.of(out);
        }

        @Override
        public void apply(GradientSet<ReferenceTensor> gradients, StepResult<ReferenceTensor> result,
                UpdateRecorder<ReferenceTensor> updates) {
            t++;
            for (int i = 0; i < 4; i++) {
                float[] g = gradients.get(i).gradient().floats();
                float[] before = params[i].clone();
                for (int j = 0; j < g.length; j++) {
                    if (optimizer == Optimizer.SGD) {
                        params[i][j] -= SGD_LR * g[j];
                    } else {
                        m[i][j] = 0.9f * m[i][j] + 0.1f * g[j];
                        v[i][j] = 0.999f * v[i][j] + 0.001f * g[j] * g[j];
                        double mh = m[i][j] / (1 - Math.pow(0.9, t));
                        double vh = v[i][j] / (1 - Math.pow(0.999, t));
                        params[i][j] -= (float) (ADAM_LR * mh / (Math.sqrt(vh) + 1e-8));
                    }
                }
                if (updates != null) {
                    float[] delta = new float[g.length];
                    for (int j = 0; j < g.length; j++) {
                        delta[j] = params[i][j] - before[j];
                    }
                    updates.record(gradients.get(i), ReferenceTensor.of(delta, SHAPES[i]));
                }
            }
        }

        @Override
        public void discard(GradientSet<ReferenceTensor> gradients, StepResult<ReferenceTensor> result) {
            for (float[] g : grads) {
                java.util.Arrays.fill(g, 0f);
            }
        }

        @Override
        public void endStep() {
            // host arrays: nothing to free
        }

        void write(OutputStream out) throws IOException {
            DataOutputStream d = new DataOutputStream(out);
            d.writeLong(t);
            for (float[][] a : List.of(params, m, v)) {
                for (float[] p : a) {
                    for (float x : p) {
                        d.writeFloat(x);
                    }
                }
            }
            d.flush();
        }

        void read(InputStream in) throws IOException {
            DataInputStream d = new DataInputStream(in);
            t = d.readLong();
            for (float[][] a : List.of(params, m, v)) {
                for (float[] p : a) {
                    for (int j = 0; j < p.length; j++) {
                        p[j] = d.readFloat();
                    }
                }
            }
        }
    }

    static final class HostTrainee implements Trainee {
        final HostMlp model;
        final ReferenceGuard guard;

        HostTrainee(GradientPipeline pipeline, Optimizer optimizer) {
            model = new HostMlp(optimizer);
            guard = new ReferenceGuard(pipeline);
        }

        @Override
        public GuardView guard() {
            return GuardView.of(guard);
        }

        @Override
        public StepView train(Batch batch) {
            double loss = model.backward(batch, guard.lossScale());
            return StepView.of(guard.step(model, batch.x().length, loss));
        }

        @Override
        public float[] parameters() {
            return concat(model.params);
        }

        @Override
        public float[] optimizerState() {
            return model.optimizer == Optimizer.ADAM ? concat(model.m, model.v) : new float[0];
        }

        @Override
        public void checkpoint(Path dir) throws IOException {
            try (OutputStream out = Files.newOutputStream(dir.resolve("model.bin"))) {
                model.write(out);
            }
            try (OutputStream out = Files.newOutputStream(dir.resolve("guard.bin"))) {
                guard.saveState(out);
            }
        }

        @Override
        public long nativeBytes() {
            return -1; // host arrays only: nothing native to watch
        }

        @Override
        public void close() {
            guard.close();
        }

        private static float[] concat(float[][]... parts) {
            int n = 0;
            for (float[][] p : parts) {
                for (float[] a : p) {
                    n += a.length;
                }
            }
            float[] out = new float[n];
            int k = 0;
            for (float[][] p : parts) {
                for (float[] a : p) {
                    System.arraycopy(a, 0, out, k, a.length);
                    k += a.length;
                }
            }
            return out;
        }
    }

    @Override
    protected Trainee newTrainee(GradientPipeline pipeline, Optimizer optimizer) {
        return new HostTrainee(pipeline, optimizer);
    }

    @Override
    protected Trainee restore(Path dir, GradientPipeline pipeline, Optimizer optimizer) throws IOException {
        HostTrainee t = new HostTrainee(pipeline, optimizer);
        try (InputStream in = Files.newInputStream(dir.resolve("model.bin"))) {
            t.model.read(in);
        }
        try (InputStream in = Files.newInputStream(dir.resolve("guard.bin"))) {
            t.guard.restoreState(in);
        }
        return t;
    }

    @Override
    protected void useWithAnotherModel(Trainee trainee) {
        // the reference backend's ops are one instance, so "another model" shows as another gradient signature
        HostTrainee t = (HostTrainee) trainee;
        HostMlp other = new HostMlp(Optimizer.SGD) {
            @Override
            public GradientSet<ReferenceTensor> gradients() {
                return GradientSet.of(super.gradients().tensors().subList(0, 2));
            }
        };
        other.backward(Batch.of(1, 4));
        t.guard.step(other, 4, 0);
    }

    // ---- what the reference guard shows beyond the kit -------------------------------------------

    @org.junit.jupiter.api.Test
    void closing_the_guard_closes_its_monitors_and_their_reports_are_written(@org.junit.jupiter.api.io.TempDir Path dir)
            throws IOException {
        Path html = dir.resolve("run.html");
        io.gradguard.core.monitor.Monitor monitor = io.gradguard.core.monitor.Monitor.builder()
                .sink(io.gradguard.core.monitor.Sinks.html(html, 2)).build();
        HostTrainee t = new HostTrainee(GradientPipeline.of(io.gradguard.core.Transforms.clipByGlobalNorm(1.0), monitor),
                Optimizer.SGD);
        for (int s = 0; s < 3; s++) {
            t.train(Batch.of(s, 4));
        }
        org.junit.jupiter.api.Assertions.assertTrue(Files.exists(html), "the report is rewritten while the run goes on");
        long before = Files.size(html);
        t.close();
        org.junit.jupiter.api.Assertions.assertTrue(Files.size(html) > before, "closing the guard wrote the last records");
        org.junit.jupiter.api.Assertions.assertTrue(t.guard.isClosed());
        org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class, () -> t.train(Batch.of(9, 4)));
    }

    @org.junit.jupiter.api.Test
    void a_state_restored_before_the_first_step_is_applied_then_and_saved_back_unchanged() throws IOException {
        HostTrainee a = new HostTrainee(GradientPipeline.of(io.gradguard.core.Transforms.accumulate(3)), Optimizer.SGD);
        a.train(Batch.of(1, 4));
        a.train(Batch.of(2, 4));
        java.io.ByteArrayOutputStream saved = new java.io.ByteArrayOutputStream();
        a.guard.saveState(saved);
        HostTrainee b = new HostTrainee(GradientPipeline.of(io.gradguard.core.Transforms.accumulate(3)), Optimizer.SGD);
        Path file = Files.createTempFile("guard", ".state");
        Files.write(file, saved.toByteArray());
        a.guard.saveState(file);                       // atomically over the file
        b.guard.restoreState(file);
        java.io.ByteArrayOutputStream again = new java.io.ByteArrayOutputStream();
        b.guard.saveState(again);
        org.junit.jupiter.api.Assertions.assertArrayEquals(saved.toByteArray(), again.toByteArray(),
                "saving right after restoring writes the restored state");
        org.junit.jupiter.api.Assertions.assertTrue(b.train(Batch.of(3, 4)).applies(), "the third micro-batch of the window applies");
        org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class, () -> b.guard.accumulateInDouble(),
                "accumulateInDouble() after the first step");
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> b.guard.summaryEvery(-1));
        a.close();
        b.close();
    }
}
