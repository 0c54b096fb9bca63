package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Transforms;
import io.gradguard.core.conformance.GuardKit.Batch;
import io.gradguard.core.conformance.GuardKit.KitModel;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.MonitorEvent;
import io.gradguard.core.monitor.MonitorListener;
import io.gradguard.core.monitor.StepRecord;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.exceptions.TFInvalidArgumentException;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.framework.optimizers.Momentum;
import org.tensorflow.framework.optimizers.Optimizer;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.StdArrays;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TFloat64;

/**
 * {@link TfOptimizer}: the whole guarded step in one training op, run by the user's own
 * {@code session.runner()} loop. The oracle is {@link TfGuard#step} (core's host-driven step on the
 * same graph), which the GuardKit checks against SGD, full-batch accumulation and real skips: every
 * pipeline here must give the same parameters and optimizer slots, call for call.
 */
class TfOptimizerTest {

    /** The GuardKit's model (x[4] → dense(8, tanh) → dense(2), mean squared error) in a graph of its own. */
    static final class Kit implements AutoCloseable {
        final Graph graph = new Graph();
        final Session session = new Session(graph);
        final Ops tf = Ops.create(graph);
        final Placeholder<TFloat32> x = tf.withName("x").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 4)));
        final Placeholder<TFloat32> y = tf.withName("y").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 2)));
        final List<Variable<TFloat32>> variables = new ArrayList<>();
        final Operand<TFloat32> loss;
        final Optimizer optimizer;

        Kit(boolean momentum) {
            KitModel k = KitModel.initial();
            Variable<TFloat32> w1 = variable("dense1_kernel", StdArrays.ndCopyOf(k.w1()));
            Variable<TFloat32> b1 = variable("dense1_bias", StdArrays.ndCopyOf(k.b1()));
            Variable<TFloat32> w2 = variable("dense2_kernel", StdArrays.ndCopyOf(k.w2()));
            Variable<TFloat32> b2 = variable("dense2_bias", StdArrays.ndCopyOf(k.b2()));
            Operand<TFloat32> h = tf.math.tanh(tf.math.add(tf.linalg.matMul(x, w1), b1));
            Operand<TFloat32> out = tf.math.add(tf.linalg.matMul(h, w2), b2);
            loss = tf.withName("loss").math.mean(tf.math.square(tf.math.sub(out, y)), tf.constant(new int[] {0, 1}));
            optimizer = momentum ? new Momentum(graph, 0.05f, 0.9f) : new GradientDescent(graph, 0.1f);
        }

        private Variable<TFloat32> variable(String name, org.tensorflow.ndarray.FloatNdArray init) {
            Variable<TFloat32> v = tf.withName(name).variable(tf.constant(init));
            variables.add(v);
            return v;
        }

        Map<Operand<?>, Tensor> feeds(Batch b) {
            return Map.of(x, TFloat32.tensorOf(StdArrays.ndCopyOf(b.x())), y, TFloat32.tensorOf(StdArrays.ndCopyOf(b.y())));
        }

        void run(Op train, Batch b) {
            run(train, b, List.of());
        }

        /** One step, fetching these float64 scalars with it. */
        double[] run(Op train, Batch b, List<Operand<TFloat64>> fetches) {
            Map<Operand<?>, Tensor> f = feeds(b);
            try {
                Session.Runner r = session.runner();
                f.forEach(r::feed);
                fetches.forEach(r::fetch);
                try (Result res = r.addTarget(train).run()) {
                    double[] out = new double[fetches.size()];
                    for (int i = 0; i < out.length; i++) {
                        out[i] = ((TFloat64) res.get(i)).getDouble();
                    }
                    return out;
                }
            } finally {
                f.values().forEach(Tensor::close);
            }
        }

        /** The parameters and, with Momentum, its accumulators. */
        float[] state() {
            List<Operand<TFloat32>> all = new ArrayList<>(variables);
            if (optimizer instanceof Momentum m) {
                for (Variable<TFloat32> v : variables) {
                    m.getSlot(v.asOutput(), Momentum.MOMENTUM).ifPresent(all::add);
                }
            }
            return fetchAll(this, all);
        }

        @Override
        public void close() {
            session.close();
            graph.close();
        }
    }

    private static Batch poisoned(Batch b) {
        float[][] x = new float[b.x().length][];
        for (int i = 0; i < x.length; i++) {
            x[i] = b.x()[i].clone();
        }
        x[0][1] = Float.NaN;
        return new Batch(x, b.y());
    }

    /** Batches 0..n-1, those in {@code bad} poisoned with a NaN input. */
    private static List<Batch> batches(int n, int... bad) {
        List<Batch> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Batch b = Batch.of(100 + i, 8);
            final int at = i;
            out.add(Arrays.stream(bad).anyMatch(j -> j == at) ? poisoned(b) : b);
        }
        return out;
    }

    /** Trains the same batches through TfGuard.step and through TfOptimizer, and compares state after every call. */
    /** @return the host guard's skipped and clipped counts (so a test can check its stages acted) */
    private static long[] sameAsHostStep(boolean momentum, Supplier<GradientTransform[]> stages, List<Batch> batches, double tol) {
        try (Kit host = new Kit(momentum); Kit graph = new Kit(momentum);
                TfGuard guard = TfGuard.of(stages.get()).attach(host.session, host.loss, host.variables, host.optimizer)) {
            TfOptimizer wrapped = TfOptimizer.of(graph.session, graph.optimizer, stages.get());
            Op train = wrapped.minimize(graph.loss, graph.variables);
            for (int i = 0; i < batches.size(); i++) {
                Map<Operand<?>, Tensor> f = host.feeds(batches.get(i));
                try {
                    guard.step(f, 8);
                } finally {
                    f.values().forEach(Tensor::close);
                }
                graph.run(train, batches.get(i));
                float[] expected = host.state();
                float[] actual = graph.state();
                // TfGuard creates the optimizer's slots at its first update; until then the wrapper's must be untouched (0)
                assertTrue(expected.length <= actual.length, "state size after call " + i);
                for (int j = 0; j < actual.length; j++) {
                    assertEquals(j < expected.length ? expected[j] : 0f, actual[j], tol, "state[" + j + "] after call " + i);
                }
            }
            TfOptimizer.Counters c = wrapped.counters();
            assertEquals(guard.callCount(), c.calls(), "calls");
            assertEquals(guard.stepCount(), c.steps(), "steps");
            assertEquals(guard.skippedCount(), c.skipped(), "skipped");
            assertEquals(guard.heldCount(), c.held(), "held");
            return new long[] {guard.skippedCount(), guard.clippedCount()};
        }
    }

    @Test
    void clipByGlobalNormEqualsTheHostStepWithSgd() {
        sameAsHostStep(false, () -> new GradientTransform[] {Transforms.clipByGlobalNorm(0.05)}, batches(6), 1e-6);
    }

    @Test
    void everyStatelessStageEqualsTheHostStep() {
        sameAsHostStep(true, () -> new GradientTransform[] {Transforms.clipByValue(0.2), Transforms.adaptiveClip(0.05),
                Transforms.clipByNorm(0.5), Transforms.centralize()}, batches(6), 1e-6);
    }

    @Test
    void aNonFiniteStepIsSkippedAsByTheHostStep() {
        sameAsHostStep(true, () -> new GradientTransform[] {Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.1)},
                batches(10, 2, 5, 6), 1e-6);
    }

    @Test
    void accumulationWithSkipsEqualsTheHostStep() {
        sameAsHostStep(true, () -> new GradientTransform[] {Transforms.skipNonFinite(3), Transforms.accumulate(3),
                Transforms.clipByGlobalNorm(0.1)}, batches(14, 1, 7, 8), 1e-6);
    }

    @Test
    void lossScalingEqualsTheHostStep() {
        sameAsHostStep(true, () -> new GradientTransform[] {Transforms.dynamicLossScale(65536, 2.0, 0.5, 3), Transforms.skipNonFinite(3),
                Transforms.clipByGlobalNorm(0.1)}, batches(12, 9), 1e-6);
    }

    /**
     * Inside the training op a clip that does not act multiplies by exactly 1 without a gate, which
     * flushes a subnormal gradient to zero on TensorFlow's CPU kernels. The wrapped optimizer's
     * update runs on the same kernels and reads a subnormal as zero anyway: the variable and the
     * optimizer's slot end bit-identical to the unwrapped optimizer's, subnormal, normal and zero
     * gradients mixed. (Momentum: tensorflow-framework's own Adam races its beta powers, so two
     * unwrapped Adam runs need not agree bit for bit.)
     */
    @Test
    void aClipThatDoesNotActLeavesTheUpdateBitIdenticalWithSubnormalGradients() {
        float[] c = {1e-40f, -3e-39f, 0.25f, 0f, Float.MIN_VALUE};
        assertTrue(Math.abs(c[0]) < Float.MIN_NORMAL && Math.abs(c[1]) < Float.MIN_NORMAL, "the test needs subnormal gradients");
        float[][] plain = momentumOnLinear(c, false);
        float[][] guarded = momentumOnLinear(c, true);
        String[] names = {"w", "its momentum slot"};
        for (int i = 0; i < 2; i++) {
            for (int j = 0; j < c.length; j++) {
                assertEquals(Float.floatToRawIntBits(plain[i][j]), Float.floatToRawIntBits(guarded[i][j]), names[i] + "[" + j + "]: "
                        + guarded[i][j] + " against the unwrapped " + plain[i][j]);
            }
        }
    }

    /** w and its momentum after three steps on loss = Σ w·c (the gradient is c), through TfOptimizer (README's pipeline) or not. */
    private static float[][] momentumOnLinear(float[] c, boolean guarded) {
        try (Graph g = new Graph(); Session s = new Session(g)) {
            Ops tf = Ops.create(g);
            Variable<TFloat32> w = tf.withName("w").variable(tf.constant(new float[] {0.5f, -0.25f, 1f, 2f, 3f}));
            Operand<TFloat32> loss = tf.sum(tf.math.mul(w, tf.constant(c)), tf.constant(0));
            TfOptimizer guard = guarded ? TfOptimizer.of(s, new Momentum(g, 0.01f, 0.9f), Transforms.skipNonFinite(3),
                    Transforms.clipByGlobalNorm(1.0)) : null;
            Op train = guarded ? guard.minimize(loss) : new Momentum(g, 0.01f, 0.9f).minimize(loss);
            s.initialize();
            for (int i = 0; i < 3; i++) {
                s.runner().addTarget(train).run().close();
            }
            float[][] out = new float[2][c.length];
            try (Result r = s.runner().fetch("w").fetch("w-momentum").run()) {
                for (int i = 0; i < 2; i++) {
                    ((TFloat32) r.get(i)).copyTo(DataBuffers.of(out[i], false, false));
                }
            }
            if (guard != null) {
                assertEquals(3, guard.counters().steps(), "three updates, none skipped");
                guard.close();
            }
            return out;
        }
    }

    /** The batch with inputs and targets ×30: a gradient-norm spike. */
    private static Batch loud(Batch b) {
        float[][] x = new float[b.x().length][];
        float[][] y = new float[b.y().length][];
        for (int i = 0; i < x.length; i++) {
            x[i] = b.x()[i].clone();
            y[i] = b.y()[i].clone();
            for (int j = 0; j < x[i].length; j++) {
                x[i][j] *= 30;
            }
            for (int j = 0; j < y[i].length; j++) {
                y[i][j] *= 30;
            }
        }
        return new Batch(x, y);
    }

    private static List<Batch> withSpikes(int n, int... spikes) {
        List<Batch> out = batches(n);
        for (int i : spikes) {
            out.set(i, loud(out.get(i)));
        }
        return out;
    }

    @Test
    void skipSpikesEqualsTheHostStep() {
        long[] acted = sameAsHostStep(true, () -> new GradientTransform[] {io.gradguard.core.transform.SkipSpikes.zAbove(2.0).window(8)
                .minHistory(4).maxConsecutive(2), Transforms.clipByGlobalNorm(0.5)}, withSpikes(22, 9, 14, 15, 16, 17), 1e-6);
        assertEquals(3, acted[0], "spikes 9, 14, 15 skipped; 16 let through (2 in a row), 17 then judged against a window holding 16");
    }

    @Test
    void zClipEqualsTheHostStep() {
        assertTrue(sameAsHostStep(true, () -> new GradientTransform[] {Transforms.skipNonFinite(3), io.gradguard.core.transform.ZClip
                .defaults().warmup(4)}, withSpikes(16, 8, 12), 1e-6)[1] >= 2, "the spikes clipped");
        assertTrue(sameAsHostStep(false, () -> new GradientTransform[] {io.gradguard.core.transform.ZClip.defaults().warmup(3)
                .mode(io.gradguard.core.transform.ZClip.Mode.MEAN).cap(2.0)}, withSpikes(12, 1, 7), 1e-6)[1] >= 2, "clipped");
    }

    @Test
    void autoClipEqualsTheHostStep() {
        assertTrue(sameAsHostStep(true, () -> new GradientTransform[] {Transforms.accumulate(2), Transforms.autoClip(50, 5)},
                withSpikes(16, 3, 9), 1e-6)[1] >= 2, "clipped");
        assertTrue(sameAsHostStep(false, () -> new GradientTransform[] {Transforms.autoClip(10, 100)}, withSpikes(8, 5), 1e-6)[1] >= 3,
                "clipped");
    }

    @Test
    void aSkippedStepLeavesParametersAndSlotsBitIdentical() {
        try (Kit kit = new Kit(true)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.skipNonFinite(3));
            Op train = wrapped.minimize(kit.loss);
            kit.run(train, Batch.of(1, 8));
            float[] before = kit.state();
            double[] m = kit.run(train, poisoned(Batch.of(2, 8)), List.of(wrapped.metric("action"), wrapped.metric("nonFinite")));
            assertArrayEquals(before, kit.state());
            assertEquals(new TfOptimizer.Counters(2, 1, 1, 0), wrapped.counters());
            assertEquals(2.0, m[0], "action: skipped");
            assertTrue(m[1] > 0, "non-finite values counted");
        }
    }

    /** The in-graph count (all gradients flattened into one vector on a bad call) is exact, over tensors of any rank. */
    @Test
    void aSkippedStepCountsEveryNonFiniteValueOfEveryGradient() {
        for (boolean mixed : new boolean[] {false, true}) {
            try (Graph g = new Graph(); Session session = new Session(g)) {
                Ops tf = Ops.create(g);
                // loss = Σ a·x + Σ b·y: the gradients are x (2 non-finite of 6) and y (1 of 2), whatever a and b hold
                float nan = Float.NaN;
                float inf = Float.POSITIVE_INFINITY;
                Variable<TFloat32> a = tf.variable(tf.constant(new float[][] {{1, 2, 3}, {4, 5, 6}}));
                Operand<TFloat32> x = tf.constant(new float[][] {{1, nan, 3}, {-inf, 5, 6}});
                Operand<TFloat32> termA = tf.sum(tf.math.mul(a, x), tf.constant(new int[] {0, 1}));
                Operand<TFloat32> loss;
                if (mixed) { // a float64 variable: the gradients differ in dtype and are counted one by one
                    Variable<TFloat64> b = tf.variable(tf.constant(new double[] {1, 2}));
                    Operand<TFloat64> termB = tf.sum(tf.math.mul(b, tf.constant(new double[] {Double.NaN, 1})), tf.constant(0));
                    loss = tf.math.add(termA, tf.dtypes.cast(termB, TFloat32.class));
                } else {
                    Variable<TFloat32> b = tf.variable(tf.constant(new float[] {1, 2}));
                    loss = tf.math.add(termA, tf.sum(tf.math.mul(b, tf.constant(new float[] {nan, 1})), tf.constant(0)));
                }
                TfOptimizer wrapped = TfOptimizer.of(session, new GradientDescent(g, 0.1f), Transforms.skipNonFinite(3));
                Op train = wrapped.minimize(loss);
                session.initialize();
                try (Result r = session.runner().addTarget(train).fetch(wrapped.metric("action")).fetch(wrapped.metric("nonFinite")).run()) {
                    assertEquals(2.0, ((TFloat64) r.get(0)).getDouble(), "action: skipped (mixed dtypes: " + mixed + ")");
                    assertEquals(3.0, ((TFloat64) r.get(1)).getDouble(), "non-finite values (mixed dtypes: " + mixed + ")");
                }
                wrapped.close();
            }
        }
    }

    @Test
    void theStepAfterTheLimitFailsTheRunNamingTheCauses() {
        try (Kit kit = new Kit(false)) {
            Op train = TfOptimizer.of(kit.session, kit.optimizer, Transforms.skipNonFinite(2)).minimize(kit.loss);
            Batch bad = poisoned(Batch.of(1, 8));
            kit.run(train, bad);
            kit.run(train, bad);
            TFInvalidArgumentException e = assertThrows(TFInvalidArgumentException.class, () -> kit.run(train, bad));
            assertTrue(e.getMessage().contains("maxConsecutive=2"), e.getMessage());
            assertTrue(e.getMessage().contains("input data holds NaN"), e.getMessage());
        }
    }

    /**
     * THROW fails the first non-finite call, before anything is written: the parameters, the
     * optimizer's slots and the counters are those of the call before, and training goes on with
     * the next finite batch. Its failure runs only on a call with non-finite gradients; a finite
     * call runs none of it.
     */
    @Test
    void throwFailsTheNonFiniteCallAndWritesNothing() {
        try (Kit kit = new Kit(true)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.nonFinite(io.gradguard.core.transform.NonFiniteGuard.Policy.THROW));
            Op train = wrapped.minimize(kit.loss);
            kit.run(train, Batch.of(1, 8));
            float[] before = kit.state();
            TFInvalidArgumentException e = assertThrows(TFInvalidArgumentException.class, () -> kit.run(train, poisoned(Batch.of(2, 8))));
            assertTrue(e.getMessage().contains("non-finite policy THROW"), e.getMessage());
            assertArrayEquals(before, kit.state());
            assertEquals(new TfOptimizer.Counters(1, 1, 0, 0), wrapped.counters());
            kit.run(train, Batch.of(3, 8));
            assertEquals(new TfOptimizer.Counters(2, 2, 0, 0), wrapped.counters());
        }
    }

    /** letThroughWhenExhausted (Optax's apply_if_finite): past the limit a bad call applies instead of failing the run. */
    @Test
    void aGuardThatLetsThroughWhenExhaustedAppliesPastTheLimit() {
        try (Kit kit = new Kit(false)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer,
                    io.gradguard.core.transform.NonFiniteGuard.skip(1).letThroughWhenExhausted());
            Op train = wrapped.minimize(kit.loss);
            Batch bad = poisoned(Batch.of(1, 8));
            kit.run(train, bad);
            assertEquals(new TfOptimizer.Counters(1, 0, 1, 0), wrapped.counters(), "the first bad call is skipped");
            kit.run(train, bad);
            assertEquals(new TfOptimizer.Counters(2, 1, 1, 0), wrapped.counters(), "the second in a row is let through");
            float[] state = kit.state();
            assertTrue(Float.isNaN(state[0]) || Float.isNaN(state[1]), "the let-through update carried the NaN");
        }
    }

    @Test
    void accumulationEqualsTheFullBatchWithSgd() {
        try (Kit micro = new Kit(false); Kit full = new Kit(false)) {
            Op train = TfOptimizer.of(micro.session, micro.optimizer, Transforms.accumulate(4)).minimize(micro.loss);
            Op plain = full.optimizer.minimize(full.loss);
            for (int s = 0; s < 3; s++) {
                Batch all = Batch.of(40 + s, 16);
                for (int m = 0; m < 4; m++) {
                    micro.run(train, new Batch(Arrays.copyOfRange(all.x(), 4 * m, 4 * m + 4), Arrays.copyOfRange(all.y(), 4 * m, 4 * m + 4)));
                }
                full.run(plain, all);
                assertArrayEquals(full.state(), micro.state(), 1e-6f, "after step " + s);
            }
        }
    }

    @Test
    void aCheckpointMidWindowResumesExactly(@TempDir Path dir) throws Exception {
        Supplier<GradientTransform[]> stages = () -> new GradientTransform[] {Transforms.skipNonFinite(3), Transforms.accumulate(3),
                Transforms.clipByGlobalNorm(0.1)};
        List<Batch> batches = batches(11, 3);
        float[] straight;
        try (Kit kit = new Kit(true)) {
            Op train = TfOptimizer.of(kit.session, kit.optimizer, stages.get()).minimize(kit.loss);
            for (Batch b : batches) {
                kit.run(train, b);
            }
            straight = kit.state();
        }
        String prefix = dir.resolve("ckpt").toString();
        try (Kit kit = new Kit(true)) {
            Op train = TfOptimizer.of(kit.session, kit.optimizer, stages.get()).minimize(kit.loss);
            for (Batch b : batches.subList(0, 5)) {
                kit.run(train, b);
            }
            kit.session.save(prefix);
        }
        try (Kit kit = new Kit(true)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, stages.get());
            Op train = wrapped.minimize(kit.loss);
            kit.session.restore(prefix);
            assertEquals(new TfOptimizer.Counters(5, 1, 1, 3), wrapped.counters());
            for (Batch b : batches.subList(5, batches.size())) {
                kit.run(train, b);
            }
            assertArrayEquals(straight, kit.state());
        }
    }

    /** A monitor sink that keeps every record. */
    private static MonitorListener into(List<StepRecord> records) {
        return new MonitorListener() {
            @Override
            public void onRecord(StepRecord record) {
                records.add(record);
            }

            @Override
            public void onEvent(MonitorEvent event) {
            }
        };
    }

    @Test
    void drainReadsTheCallsSinceTheLastDrainAndSaysWhatTheRingOverwrote(@TempDir Path dir) throws Exception {
        List<StepRecord> records = new ArrayList<>();
        Monitor monitor = Monitor.builder().sink(into(records)).build();
        String prefix = dir.resolve("ckpt").toString();
        try (Kit kit = new Kit(false)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.clipByGlobalNorm(0.05), monitor).history(4);
            Op train = wrapped.minimize(kit.loss);
            List<Batch> batches = batches(10, 4);
            for (Batch b : batches.subList(0, 3)) {
                kit.run(train, b);
            }
            assertEquals(3, wrapped.drain());
            assertEquals(0, wrapped.drain(), "nothing new");
            for (Batch b : batches.subList(3, 5)) {
                kit.run(train, b);
            }
            kit.session.save(prefix); // 5 calls, 3 of them drained
            for (Batch b : batches.subList(5, 10)) {
                kit.run(train, b);
            }
            // 10 calls, a ring of 4: calls 3..5 were overwritten, 6..9 are read
            assertEquals(4, wrapped.drain());
            assertEquals(List.of(0L, 1L, 2L, 6L, 7L, 8L, 9L), records.stream().map(StepRecord::call).toList());
            // back to call 5 (the ring of then: calls 1..4): everything it still holds is read again
            kit.session.restore(prefix);
            records.clear();
            assertEquals(4, wrapped.drain());
            assertEquals(List.of(1L, 2L, 3L, 4L), records.stream().map(StepRecord::call).toList());
            wrapped.close();
        }
    }

    @Test
    void theMonitorGetsOneRecordPerOptimizerStepAtDrain() {
        List<StepRecord> records = new ArrayList<>();
        Monitor monitor = Monitor.builder().sink(into(records)).build();
        try (Kit kit = new Kit(false)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.skipNonFinite(3), Transforms.accumulate(2),
                    Transforms.clipByGlobalNorm(0.05), monitor);
            Op train = wrapped.minimize(kit.loss);
            List<Batch> batches = batches(9, 4);
            double lastNorm = Double.NaN;
            double badCount = Double.NaN;
            for (Batch b : batches) {
                double[] m = kit.run(train, b, List.of(wrapped.metric("clipByGlobalNorm.norm"), wrapped.metric("nonFinite")));
                lastNorm = m[0];
                badCount = m[1] > 0 ? m[1] : badCount;
            }
            assertEquals(0, records.size(), "nothing reaches the host before drain()");
            assertEquals(9, wrapped.drain());
            wrapped.close();
            // 9 calls: 1 skipped, 8 counted → 4 steps; records: 4 steps + 1 skip
            assertEquals(5, records.size(), records.toString());
            assertEquals(1, records.stream().filter(StepRecord::skipped).count());
            StepRecord lastRecord = records.get(records.size() - 1);
            assertEquals(3, lastRecord.step());
            assertEquals(2, lastRecord.microBatches());
            assertEquals(lastNorm, lastRecord.normBefore(), 1e-9);
            assertEquals(Math.min(0.05, lastRecord.normBefore()), lastRecord.normAfter(), 1e-6);
            assertTrue(lastRecord.clipped());
            assertTrue(lastRecord.hasLoss());
            // per tensor and per layer, before the clip: their squares add up to the record's norm
            assertEquals(4, lastRecord.tensors().size());
            assertEquals(List.of("dense1", "dense2"), lastRecord.layers().stream().map(l -> l.layer()).toList());
            double ss = lastRecord.tensors().stream().mapToDouble(t -> t.norm() * t.norm()).sum();
            assertEquals(lastRecord.normBefore(), Math.sqrt(ss), 1e-9);
            assertTrue(lastRecord.tensors().stream().allMatch(t -> t.maxAbs() > 0 && t.maxAbs() <= t.norm()));
            StepRecord skipped = records.stream().filter(StepRecord::skipped).findFirst().orElseThrow();
            assertEquals("nonFinite", skipped.skippedBy());
            assertTrue(badCount > 1, "the poisoned batch makes several gradient values non-finite: " + badCount);
            assertEquals((long) badCount, skipped.nonFinite(), "the record counts the non-finite values, as on the host");
        }
    }

    /** 10,000 calls with 1% poisoned batches: every one skipped, none missed, parameters finite, no node added after the build. */
    @Test
    void soakWithFaults() {
        try (Kit kit = new Kit(true)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.skipNonFinite(3), Transforms.accumulate(2),
                    Transforms.clipByGlobalNorm(0.5));
            Op train = wrapped.minimize(kit.loss);
            kit.run(train, Batch.of(0, 8));
            int ops = TfOps.operationCount(kit.graph);
            java.util.Random r = new java.util.Random(3);
            int injected = 0;
            for (int i = 1; i < 10_000; i++) {
                Batch b = Batch.of(i, 8);
                if (r.nextDouble() < 0.01) {
                    b = poisoned(b);
                    injected++;
                }
                kit.run(train, b);
            }
            TfOptimizer.Counters c = wrapped.counters();
            assertEquals(injected, c.skipped(), "skipped == injected");
            assertEquals(10_000, c.calls());
            assertEquals((10_000 - injected) / 2, c.steps(), "one update per 2 counted micro-batches");
            for (float v : kit.state()) {
                assertTrue(Float.isFinite(v), "parameters and slots finite");
            }
            assertEquals(ops, TfOps.operationCount(kit.graph), "no node is added per step");
            assertTrue(injected > 50, "faults injected: " + injected);
        }
    }

    /** A stage of the user's own that reads a value on the host cannot run inside the graph: refused, by name. */
    @Test
    void aStageThatDecidesOnTheHostIsRefusedByName() {
        GradientTransform hostReader = new GradientTransform() {
            @Override
            public String name() {
                return "myHostRule";
            }

            @Override
            public <T> io.gradguard.core.Action update(io.gradguard.core.Step<T> step, io.gradguard.core.TransformState state) {
                double n = step.ops().toHost(step.ops().sumOfSquares(step.gradients().get(0).gradient()));
                return n > 1e9 ? io.gradguard.core.Action.skip("too large") : io.gradguard.core.Action.proceed();
            }
        };
        try (Kit kit = new Kit(false)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, hostReader);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> wrapped.minimize(kit.loss));
            assertTrue(e.getMessage().contains("myHostRule"), e.getMessage());
            assertTrue(e.getMessage().contains("TfGuard.attach"), e.getMessage());
        }
        try (Kit kit = new Kit(false)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, io.gradguard.core.transform.Accumulate.schedule(s -> 2));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> wrapped.minimize(kit.loss));
            assertTrue(e.getMessage().contains("schedule"), e.getMessage());
        }
    }

    @Test
    void aSkippedCallLeavesAdamsBetaPowersUntouchedAndAdamIsReproducible() {
        float[][] runs = new float[2][];
        for (int run = 0; run < 2; run++) {
            try (Kit kit = new Kit(false)) {
                org.tensorflow.framework.optimizers.Adam adam = new org.tensorflow.framework.optimizers.Adam(kit.graph, 0.01f);
                Op train = TfOptimizer.of(kit.session, adam, Transforms.skipNonFinite(3)).minimize(kit.loss);
                List<Operand<TFloat32>> watched = new ArrayList<>(kit.variables);
                for (Variable<TFloat32> v : kit.variables) {
                    watched.add(adam.getSlot(v.asOutput(), org.tensorflow.framework.optimizers.Adam.FIRST_MOMENT).get());
                    watched.add(adam.getSlot(v.asOutput(), org.tensorflow.framework.optimizers.Adam.SECOND_MOMENT).get());
                }
                for (int i = 0; i < 5; i++) {
                    kit.run(train, Batch.of(i, 8));
                }
                float[] before = fetchAll(kit, watched);
                float[] powers = fetchAll(kit, betaPowers(kit));
                kit.run(train, poisoned(Batch.of(9, 8)));
                assertArrayEquals(before, fetchAll(kit, watched), "parameters and moments");
                assertArrayEquals(powers, fetchAll(kit, betaPowers(kit)), "beta powers");
                kit.run(train, Batch.of(10, 8));
                assertTrue(fetchAll(kit, betaPowers(kit))[0] < powers[0], "the next applied call advances them");
                runs[run] = fetchAll(kit, watched);
            }
        }
        assertArrayEquals(runs[0], runs[1], "two identical Adam runs are bit-identical");
    }

    @SuppressWarnings("unchecked")
    private static List<Operand<TFloat32>> betaPowers(Kit kit) {
        List<Operand<TFloat32>> out = new ArrayList<>();
        kit.graph.operations().forEachRemaining(o -> {
            if (o.type().equals("VariableV2") && o.name().toLowerCase().contains("power")) {
                out.add((Operand<TFloat32>) (Operand<?>) o.output(0));
            }
        });
        assertEquals(2, out.size(), "Adam's two beta powers");
        return out;
    }

    private static float[] fetchAll(Kit kit, List<Operand<TFloat32>> ops) {
        Session.Runner r = kit.session.runner();
        ops.forEach(r::fetch);
        List<Float> all = new ArrayList<>();
        try (Result res = r.run()) {
            for (int i = 0; i < ops.size(); i++) {
                TFloat32 t = (TFloat32) res.get(i);
                float[] a = new float[(int) t.shape().size()];
                t.copyTo(DataBuffers.of(a, false, false));
                for (float v : a) {
                    all.add(v);
                }
            }
        }
        float[] out = new float[all.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = all.get(i);
        }
        return out;
    }

    @Test
    void anOptimizerThatMovesStateOnEveryRunIsRefusedWhenCallsMaySkip() {
        try (Kit kit = new Kit(false)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, new org.tensorflow.framework.optimizers.Nadam(kit.graph),
                    Transforms.skipNonFinite(3));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> wrapped.minimize(kit.loss));
            assertTrue(e.getMessage().contains("Nadam"), e.getMessage());
        }
        try (Kit kit = new Kit(false)) {
            // a pipeline that never skips or holds: Nadam runs every call, as unwrapped
            TfOptimizer.of(kit.session, new org.tensorflow.framework.optimizers.Nadam(kit.graph), Transforms.clipByGlobalNorm(1))
                    .minimize(kit.loss);
        }
        try (Kit kit = new Kit(false)) {
            for (Optimizer o : List.of(new org.tensorflow.framework.optimizers.Adam(kit.graph), new org.tensorflow.framework.optimizers.RMSProp(kit.graph),
                    new org.tensorflow.framework.optimizers.AdaGrad(kit.graph), new Momentum(kit.graph, 0.1f, 0.9f))) {
                TfOptimizer.of(kit.session, o, Transforms.skipNonFinite(3), Transforms.accumulate(2)).minimize(kit.loss);
            }
        }
    }

    /**
     * Update ratios measured in the graph: per layer ‖θ_after − θ_before‖ / ‖θ_before‖ as the host
     * measures it from the parameters fetched around each call, on the cadence of the monitor's
     * optimizer steps (every 2nd here: steps 0, 2, 4), NaN on the other and on a skipped call, and
     * never for a monitor built with {@code updateRatios(false)}.
     */
    @Test
    void updateRatiosAreMeasuredInTheGraphOnTheMonitorsCadence() {
        List<StepRecord> records = new ArrayList<>();
        List<StepRecord> plain = new ArrayList<>();
        Monitor monitor = Monitor.builder().every(2).sink(into(records)).build();
        Monitor without = Monitor.builder().updateRatios(false).sink(into(plain)).build();
        List<double[]> expected = new ArrayList<>();
        List<double[]> maxAbs = new ArrayList<>();
        try (Kit kit = new Kit(true)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.5),
                    monitor, without);
            Op train = wrapped.minimize(kit.loss);
            List<Operand<?>> grads = new ArrayList<>();
            kit.tf.gradients(kit.loss, kit.variables).dy().forEach(grads::add);
            for (Batch b : batches(6, 3)) {
                List<float[]> before = perVariable(kit);
                maxAbs.add(maxAbsOf(kit, grads, b));
                kit.run(train, b);
                List<float[]> after = perVariable(kit);
                // variables w1, b1 (layer dense1), w2, b2 (dense2)
                double[] ratios = new double[2];
                for (int layer = 0; layer < 2; layer++) {
                    double du = 0;
                    double p = 0;
                    for (int v = 2 * layer; v < 2 * layer + 2; v++) {
                        for (int j = 0; j < before.get(v).length; j++) {
                            double d = (double) after.get(v)[j] - before.get(v)[j];
                            du += d * d;
                            p += (double) before.get(v)[j] * before.get(v)[j];
                        }
                    }
                    ratios[layer] = Math.sqrt(du / p);
                }
                expected.add(ratios);
            }
            wrapped.close();
        }
        assertEquals(6, records.size());
        for (StepRecord r : records) {
            boolean measured = !r.skipped() && r.step() % 2 == 0;
            // layer statistics only on detailed steps: the cadence's and the skipped one
            assertEquals(r.skipped() || r.step() % 2 == 0, r.detailed(), "call " + r.call());
            if (!r.detailed()) {
                assertTrue(r.layers().isEmpty(), "call " + r.call() + ": " + r.layers());
                continue;
            }
            // max|g| per tensor, before the clip, exactly as the host reduces it (measured on the same cadence)
            for (int t = 0; t < 4; t++) {
                assertEquals(maxAbs.get((int) r.call())[t], r.tensors().get(t).maxAbs(), 0.0, "call " + r.call() + ", tensor " + t);
            }
            for (int layer = 0; layer < 2; layer++) {
                double ratio = r.layers().get(layer).updateRatio();
                if (measured) {
                    double e = expected.get((int) r.call())[layer];
                    assertTrue(e > 0, "call " + r.call() + " moved layer " + layer);
                    assertEquals(e, ratio, 1e-5 * e, "call " + r.call() + ", layer " + r.layers().get(layer).layer());
                } else {
                    assertTrue(Double.isNaN(ratio), "call " + r.call() + " (step " + r.step() + ", skipped " + r.skipped()
                            + ") is not measured, got " + ratio);
                }
            }
        }
        assertEquals(List.of(0L, 2L, 5L), records.stream().filter(r -> r.detailed() && !Double.isNaN(r.layers().get(0).updateRatio()))
                .map(StepRecord::call).toList(), "steps 0, 2, 4 are calls 0, 2, 5 (call 3 skipped)");
        assertEquals(6, plain.size());
        assertTrue(plain.stream().allMatch(r -> r.layers().stream().allMatch(l -> Double.isNaN(l.updateRatio()))),
                "no ratios for a monitor that does not want them");
    }

    /**
     * Two monitors on different cadences (every 3rd step, every 4th with update ratios): the graph
     * details the steps both need, so each monitor's own detailed steps carry max|x| and, for the
     * one that wants them, update ratios.
     */
    @Test
    void monitorsOnDifferentCadencesEachGetTheirDetailedSteps() {
        List<StepRecord> everyThird = new ArrayList<>();
        List<StepRecord> everyFourth = new ArrayList<>();
        try (Kit kit = new Kit(true)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.clipByGlobalNorm(0.5),
                    Monitor.builder().every(3).updateRatios(false).sink(into(everyThird)).build(),
                    Monitor.builder().every(4).sink(into(everyFourth)).build());
            Op train = wrapped.minimize(kit.loss);
            for (Batch b : batches(9)) {
                kit.run(train, b);
            }
            wrapped.close();
        }
        assertEquals(List.of(0L, 3L, 6L), everyThird.stream().filter(StepRecord::detailed).map(StepRecord::step).toList());
        assertEquals(List.of(0L, 4L, 8L), everyFourth.stream().filter(StepRecord::detailed).map(StepRecord::step).toList());
        for (StepRecord r : everyThird.stream().filter(StepRecord::detailed).toList()) {
            assertTrue(r.tensors().stream().allMatch(t -> t.maxAbs() > 0), "step " + r.step() + ": " + r.tensors());
        }
        for (StepRecord r : everyFourth.stream().filter(StepRecord::detailed).toList()) {
            assertTrue(r.tensors().stream().allMatch(t -> t.maxAbs() > 0), "step " + r.step() + ": " + r.tensors());
            assertTrue(r.layers().stream().allMatch(l -> l.updateRatio() > 0), "step " + r.step() + ": " + r.layers());
        }
    }

    /** max|g| of each gradient on this batch (NaN where a gradient is not finite, as the graph's max propagates it). */
    private static double[] maxAbsOf(Kit kit, List<Operand<?>> grads, Batch b) {
        Map<Operand<?>, Tensor> f = kit.feeds(b);
        try {
            Session.Runner r = kit.session.runner();
            f.forEach(r::feed);
            grads.forEach(r::fetch);
            try (Result res = r.run()) {
                double[] out = new double[grads.size()];
                for (int i = 0; i < out.length; i++) {
                    TFloat32 g = (TFloat32) res.get(i);
                    float[] v = new float[(int) g.size()];
                    g.copyTo(org.tensorflow.ndarray.buffer.DataBuffers.of(v, false, false));
                    double m = 0;
                    for (float x : v) {
                        m = Float.isNaN(x) || Double.isNaN(m) ? Double.NaN : Math.max(m, Math.abs(x));
                    }
                    out[i] = m;
                }
                return out;
            }
        } finally {
            f.values().forEach(Tensor::close);
        }
    }

    private static List<float[]> perVariable(Kit kit) {
        List<float[]> out = new ArrayList<>();
        for (Variable<TFloat32> v : kit.variables) {
            out.add(fetchAll(kit, List.of(v)));
        }
        return out;
    }

    /**
     * The deciding stage is a node fetched with the step, as {@code StepResult.decidedBy()}; the
     * window and counters are read outside it; the step itself makes no session run of the
     * wrapper's own.
     */
    @Test
    void decidedByIsFetchedWithTheStepAndTheWrapperRunsNothingDuringIt() {
        try (Kit kit = new Kit(false)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.skipNonFinite(3), Transforms.accumulate(3));
            Op train = wrapped.minimize(kit.loss);
            List<Batch> calls = batches(4, 2);
            List<String> decided = new ArrayList<>();
            List<Integer> windows = new ArrayList<>();
            for (Batch b : calls) {
                long own = wrapped.ownRuns();
                Map<Operand<?>, Tensor> f = kit.feeds(b);
                Session.Runner r = kit.session.runner();
                f.forEach(r::feed);
                try (Result res = r.addTarget(train).fetch(wrapped.decidedBy()).run()) {
                    decided.add(((org.tensorflow.types.TString) res.get(0)).getObject());
                } finally {
                    f.values().forEach(Tensor::close);
                }
                assertEquals(own, wrapped.ownRuns(), "no run of the wrapper's own during the step");
                windows.add(wrapped.microStep());
                assertEquals(own + 1, wrapped.ownRuns(), "microStep() is one run");
            }
            assertEquals(List.of("accumulate", "accumulate", "nonFinite", ""), decided);
            assertEquals(List.of(1, 2, 2, 0), windows, "a skip before the window leaves it as it was");
            assertEquals(new TfOptimizer.Counters(4, 1, 1, 2), wrapped.counters());
        }
    }

    /**
     * max|x| costs a pass: measured on the monitor's cadence only (every 3rd step here). Records keep
     * per-tensor statistics on those steps only, as the monitor's own {@code onStep} does.
     */
    @Test
    void perTensorMaxAbsFollowsTheMonitorsCadence() {
        List<StepRecord> records = new ArrayList<>();
        Monitor monitor = Monitor.builder().every(3).sink(into(records)).build();
        try (Kit kit = new Kit(false)) {
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.clipByGlobalNorm(0.05), monitor);
            Op train = wrapped.minimize(kit.loss);
            for (Batch b : batches(7)) {
                kit.run(train, b);
            }
            wrapped.close();
        }
        assertEquals(7, records.size());
        for (StepRecord r : records) {
            boolean detailed = r.step() % 3 == 0;
            assertEquals(detailed, r.detailed(), "step " + r.step());
            assertEquals(detailed ? 4 : 0, r.tensors().size(), "step " + r.step() + ": " + r.tensors());
            assertTrue(r.tensors().stream().allMatch(t -> t.maxAbs() > 0 && t.norm() > 0), "step " + r.step() + ": " + r.tensors());
            assertTrue(r.normBefore() > 0, "the global norm on every step");
        }
    }

    @Test
    void closingAfterTheSessionStillClosesTheMonitor() {
        List<String> closed = new ArrayList<>();
        Monitor monitor = Monitor.builder().sink(new MonitorListener() {
            @Override
            public void onRecord(StepRecord record) {
            }

            @Override
            public void onEvent(MonitorEvent event) {
            }

            @Override
            public void close() {
                closed.add("sink");
            }
        }).build();
        Kit kit = new Kit(false);
        TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.clipByGlobalNorm(1), monitor);
        kit.run(wrapped.minimize(kit.loss), Batch.of(1, 8));
        kit.close();
        wrapped.close();
        assertEquals(List.of("sink"), closed);
    }

    @Test
    void misuseGetsClearErrors() {
        try (Kit kit = new Kit(false)) {
            assertThrows(IllegalArgumentException.class, () -> TfOptimizer.of(null, kit.optimizer, GradientPipeline.of()));
            TfOptimizer wrapped = TfOptimizer.of(kit.session, kit.optimizer, Transforms.dynamicLossScale());
            assertThrows(IllegalStateException.class, wrapped::counters);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> wrapped.applyGradients(List.of(new Optimizer.GradAndVar<>(kit.variables.get(0).asOutput(),
                            kit.variables.get(0).asOutput())), "x"));
            assertTrue(e.getMessage().contains("minimize"), e.getMessage());
            IllegalArgumentException h = assertThrows(IllegalArgumentException.class, () -> wrapped.history(0));
            assertTrue(h.getMessage().contains("capacity"), h.getMessage());
            wrapped.minimize(kit.loss);
            IllegalArgumentException k = assertThrows(IllegalArgumentException.class, () -> wrapped.metric("nope"));
            assertTrue(k.getMessage().contains("nope") && k.getMessage().contains("loss"), k.getMessage());
            assertThrows(IllegalStateException.class, () -> wrapped.minimize(kit.loss));
            assertThrows(IllegalStateException.class, () -> wrapped.layout(kit.variables.get(0), io.gradguard.core.Layout.whole()));
            wrapped.close();
            assertThrows(IllegalStateException.class, wrapped::counters);
        }
    }
}
