package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import io.gradguard.core.StateFormatException;
import org.tensorflow.framework.optimizers.Adam;
import org.tensorflow.framework.optimizers.Optimizer;
import org.tensorflow.Operand;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.framework.optimizers.Momentum;
import org.tensorflow.op.Op;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;

/**
 * The core's stateful transforms driven by {@link TfGuard} in real training loops: accumulation
 * against a full-batch step, a real skip under Momentum, and a checkpoint taken in the middle of an
 * accumulation window (GradGuard's state format next to TensorFlow's own saver).
 */
class StatefulTrainingTest {
    private static final float LR = 0.05f;
    private static final int IN = 6;
    private static final int OUT = 3;

    /** A micro-batch of {@code n} examples. */
    private record Batch(float[] xs, float[] ys, int n) {
        static Batch random(int n, Random r) {
            float[] xs = new float[n * IN];
            float[] ys = new float[n * OUT];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = (float) r.nextGaussian();
            }
            for (int i = 0; i < ys.length; i++) {
                ys[i] = (float) r.nextGaussian();
            }
            return new Batch(xs, ys, n);
        }

        static Batch poisoned(int n) {
            float[] xs = new float[n * IN];
            xs[1] = Float.NaN;
            return new Batch(xs, new float[n * OUT], n);
        }

        Batch slice(int part, int of) {
            int m = n / of;
            return new Batch(Arrays.copyOfRange(xs, part * m * IN, (part + 1) * m * IN),
                    Arrays.copyOfRange(ys, part * m * OUT, (part + 1) * m * OUT), m);
        }
    }

    private static List<Batch> batches(int count, int n, long seed) {
        Random r = new Random(seed);
        List<Batch> out = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            out.add(Batch.random(n, r));
        }
        return out;
    }

    private static StepResult<TfTensor> step(TfGuard g, Mlp m, Batch b) {
        Map<Operand<?>, Tensor> f = m.feeds(b.xs(), b.ys(), b.n());
        try {
            return g.step(f, b.n());
        } finally {
            Mlp.close(f);
        }
    }

    private static List<float[]> weights(Mlp m) {
        List<float[]> w = new ArrayList<>();
        for (Variable<TFloat32> v : m.variables) {
            w.add(m.value(v));
        }
        return w;
    }

    private static void assertWeights(List<float[]> expected, Mlp m, float delta, String what) {
        for (int i = 0; i < expected.size(); i++) {
            assertArrayEquals(expected.get(i), m.value(m.variables.get(i)), delta, what + ": " + m.variables.get(i).op().name());
        }
    }

    @Test
    void a_nan_step_is_skipped_without_a_trace_in_variables_or_momentum_slots() {
        List<Batch> data = batches(4, 8, 2);
        Supplier<GradientPipeline> pipeline = () -> GradientPipeline.of(Transforms.skipNonFinite(1), Transforms.clipByGlobalNorm(1.0));
        List<float[]> clean;
        // the same run without the poisoned batch
        try (Mlp m = new Mlp(IN, 16, OUT, 42, false);
                TfGuard g = TfGuard.of(pipeline.get()).attach(m.session, m.loss, m.variables, new Momentum(m.graph, LR, 0.9f))) {
            data.forEach(b -> assertTrue(step(g, m, b).applies()));
            clean = weights(m);
        }
        // flat variable names: tensorflow-framework's slot optimizers reject a '/' (see README)
        try (Mlp m = new Mlp(IN, 16, OUT, 42, false)) {
            Momentum momentum = new Momentum(m.graph, LR, 0.9f);
            try (TfGuard g = TfGuard.of(pipeline.get()).attach(m.session, m.loss, m.variables, momentum)) {
                step(g, m, data.get(0));
                step(g, m, data.get(1));
                List<float[]> before = weights(m);
                List<float[]> slots = slots(m, momentum);
                StepResult<TfTensor> r = step(g, m, Batch.poisoned(8));
                assertTrue(r.skipped(), r.toString());
                assertEquals("nonFinite", r.decidedBy());
                assertWeights(before, m, 0f, "a skipped step leaves the variable");
                List<float[]> slotsAfter = slots(m, momentum);
                for (int i = 0; i < slots.size(); i++) {
                    assertArrayEquals(slots.get(i), slotsAfter.get(i), 0f, "a skipped step leaves the momentum slot " + i);
                }
                assertTrue(step(g, m, data.get(2)).applies(), "training goes on after the skip");
                assertTrue(step(g, m, data.get(3)).applies());
                assertWeights(clean, m, 0f, "the run with a skipped NaN step equals the run without it");
                assertEquals(1, g.pipeline().skippedCount());

                step(g, m, Batch.poisoned(8));
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> step(g, m, Batch.poisoned(8)));
                assertTrue(e.getMessage().startsWith("non-finite gradient at step"), e.getMessage());
                // the guard saw the NaN in the fed inputs: the message names bad data, not divergence
                assertTrue(e.getMessage().endsWith("The inputs of this batch hold NaN or Inf: the input data is bad, not the "
                        + "training; clean or filter the batches (a lower learning rate would not help), or raise maxConsecutive."),
                        e.getMessage());
            }
        }
    }

    private static List<float[]> slots(Mlp m, Momentum momentum) {
        List<float[]> out = new ArrayList<>();
        for (Variable<TFloat32> v : m.variables) {
            out.add(m.value(momentum.getSlot(v.asOutput(), "momentum").orElseThrow()));
        }
        return out;
    }

    private static GradientPipeline checkpointed() {
        return GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.accumulate(3), Transforms.clipByGlobalNorm(0.5));
    }

    private static TfGuard guard(Mlp m, GradientPipeline p) {
        return TfGuard.of(p).attach(m.session, m.loss, m.variables, new GradientDescent(m.graph, LR));
    }

    /** 9 micro-batches (the 5th poisoned): 3 windows of 3 accumulated micro-batches; the checkpoint falls after the 5th. */
    private static List<Batch> checkpointData() {
        List<Batch> data = batches(9, 4, 3);
        data.set(4, Batch.poisoned(4));
        return data;
    }

    @Test
    void a_checkpoint_in_the_middle_of_an_accumulation_window_resumes_exactly(@TempDir Path dir) throws IOException {
        List<Batch> data = checkpointData();
        List<float[]> uninterrupted;
        try (Mlp m = new Mlp(IN, 16, OUT, 42); TfGuard g = guard(m, checkpointed())) {
            data.forEach(b -> step(g, m, b));
            assertEquals(2, g.pipeline().stepCount(), "8 finite micro-batches, 2 complete windows of 3");
            uninterrupted = weights(m);
        }

        byte[] state;
        String prefix = dir.resolve("model").toString();
        try (Mlp m = new Mlp(IN, 16, OUT, 42); TfGuard g = guard(m, checkpointed())) {
            for (int i = 0; i < 5; i++) {
                step(g, m, data.get(i));
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            g.saveState(out);          // counters and the half-filled accumulator
            state = out.toByteArray();
            m.session.save(prefix);               // the model variables
        }

        // a new process: another graph, session, guard and pipeline (and other initial weights)
        try (Mlp m = new Mlp(IN, 16, OUT, 99)) {
            m.session.restore(prefix);
            GradientPipeline p = checkpointed();
            try (TfGuard g = guard(m, p)) {
                g.restoreState(new ByteArrayInputStream(state));
                for (int i = 5; i < data.size(); i++) {
                    step(g, m, data.get(i));
                }
                assertEquals(2, p.stepCount());
                assertWeights(uninterrupted, m, 0f, "resumed from the checkpoint");
            }
        }
    }

    /**
     * TensorFlow's saver ({@code Session.save}) stores only {@code VariableV2} variables: GradGuard's
     * state lives in resource variables and host counters, which it does not capture. Restoring the
     * TensorFlow checkpoint alone loses the accumulation window.
     */
    @Test
    void tensorflows_saver_alone_does_not_capture_the_pipeline_state(@TempDir Path dir) throws IOException {
        List<Batch> data = checkpointData();
        String prefix = dir.resolve("model").toString();
        List<float[]> uninterrupted;
        try (Mlp m = new Mlp(IN, 16, OUT, 42); TfGuard g = guard(m, checkpointed())) {
            for (int i = 0; i < data.size(); i++) {
                step(g, m, data.get(i));
                if (i == 4) {
                    m.session.save(prefix);
                }
            }
            uninterrupted = weights(m);
            for (var it = m.graph.operations(); it.hasNext(); ) {
                var op = it.next();
                assertFalse(op.name().startsWith("gradguard") && op.type().equals("VariableV2"),
                        "GradGuard creates resource variables only, got " + op.name());
            }
        }
        try (Mlp m = new Mlp(IN, 16, OUT, 99); TfGuard g = guard(m, checkpointed())) {
            m.session.restore(prefix);
            for (int i = 5; i < data.size(); i++) {
                step(g, m, data.get(i));
            }
            assertEquals(1, g.pipeline().stepCount(), "a fresh pipeline starts a new window: 4 micro-batches make 1 step");
            assertFalse(Arrays.equals(uninterrupted.get(0), m.value(m.variables.get(0))),
                    "without pipeline.restoreState the run does not resume");
        }
    }

    @Test
    void the_checkpoint_round_trip_works_with_float64_reductions_too(@TempDir Path dir) throws IOException {
        // the same checkpoint round trip with float64 reductions (state buffers keep the gradients' dtype)
        List<Batch> data = checkpointData();
        List<float[]> uninterrupted;
        try (Mlp m = new Mlp(IN, 16, OUT, 42); TfGuard g = guard(m, checkpointed()).accumulateInDouble()) {
            data.forEach(b -> step(g, m, b));
            uninterrupted = weights(m);
        }
        byte[] state;
        String prefix = dir.resolve("model").toString();
        try (Mlp m = new Mlp(IN, 16, OUT, 42); TfGuard g = guard(m, checkpointed()).accumulateInDouble()) {
            for (int i = 0; i < 5; i++) {
                step(g, m, data.get(i));
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            g.pipeline().saveState(out);
            state = out.toByteArray();
            m.session.save(prefix);
            IllegalStateException e = assertThrows(IllegalStateException.class, g::accumulateInDouble);
            assertTrue(e.getMessage().startsWith("accumulateInDouble() must be called before the first step"), e.getMessage());
        }
        try (Mlp m = new Mlp(IN, 16, OUT, 99)) {
            m.session.restore(prefix);
            GradientPipeline p = checkpointed();
            try (TfGuard g = guard(m, p).accumulateInDouble()) {
                p.restoreState(new ByteArrayInputStream(state), g.ops());
                for (int i = 5; i < data.size(); i++) {
                    step(g, m, data.get(i));
                }
                assertWeights(uninterrupted, m, 0f, "resumed with float64 reductions");
            }
        }
    }

    /**
     * {@code guard.save} writes one TensorFlow checkpoint (model, optimizer slots, GradGuard's state);
     * a new graph, a new guard and {@code guard.restore} resume exactly, in the middle of an
     * accumulation window, and TensorFlow's own {@code session.restore} reads the model from it.
     */
    // RMSProp rather than Adam for an optimizer with several slots: tensorflow-framework 1.0's Adam
    // races with itself (its beta powers are updated without waiting for its updates), so two
    // identical Adam runs differ even without GradGuard and no bit-level resume test can hold
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"sgd", "momentum", "rmsprop"})
    void one_tensorflow_checkpoint_resumes_mid_window_exactly(String optimizerName, @TempDir Path dir) throws IOException {
        java.util.function.Function<Mlp, Optimizer> optimizer = m -> switch (optimizerName) {
            case "sgd" -> new GradientDescent(m.graph, LR);
            case "momentum" -> new Momentum(m.graph, LR, 0.9f);
            default -> new org.tensorflow.framework.optimizers.RMSProp(m.graph, LR);
        };
        List<Batch> data = checkpointData();
        List<float[]> uninterrupted;
        try (Mlp m = new Mlp(IN, 16, OUT, 42, false); TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables, optimizer.apply(m))) {
            data.forEach(b -> step(g, m, b));
            uninterrupted = weights(m);
        }
        String prefix = dir.resolve("model").toString();
        List<float[]> atSave;
        try (Mlp m = new Mlp(IN, 16, OUT, 42, false); TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables, optimizer.apply(m))) {
            for (int i = 0; i < 5; i++) {
                step(g, m, data.get(i));
            }
            assertEquals(1, g.pipeline().microStep(), "the checkpoint falls in the middle of the second window");
            g.save(prefix);
            atSave = weights(m);
        }

        // a new process: the same graph, a new guard and pipeline, other initial weights
        GradientPipeline p = checkpointed();
        try (Mlp m = new Mlp(IN, 16, OUT, 99, false); TfGuard g = TfGuard.of(p).attach(m.session, m.loss, m.variables, optimizer.apply(m))) {
            g.restore(prefix);
            assertEquals(1, p.stepCount());
            assertEquals(1, p.microStep());
            assertEquals(1, p.skippedCount());
            assertWeights(atSave, m, 0f, "restored model");
            for (int i = 5; i < data.size(); i++) {
                step(g, m, data.get(i));
            }
            assertEquals(2, p.stepCount());
            assertWeights(uninterrupted, m, 0f, optimizerName + " resumed from one TensorFlow checkpoint");
        }

        // TensorFlow's own restore reads the model from the same checkpoint
        try (Mlp m = new Mlp(IN, 16, OUT, 99, false)) {
            m.session.restore(prefix);
            assertWeights(atSave, m, 0f, "session.restore of a TfGuard checkpoint");
        }
    }

    /** Saving over a checkpoint replaces its two files (renamed from a temporary prefix) and leaves nothing else. */
    @Test
    void saving_over_a_checkpoint_replaces_its_files_and_leaves_no_temporary_files(@TempDir Path dir) throws IOException {
        String prefix = dir.resolve("ckpt").resolve("model").toString();
        List<float[]> second;
        try (Mlp m = new Mlp(IN, 16, OUT, 42); TfGuard g = guard(m, checkpointed())) {
            step(g, m, checkpointData().get(0));
            g.save(prefix);
            checkpointData().subList(1, 4).forEach(b -> step(g, m, b));
            g.save(prefix);
            second = weights(m);
        }
        try (java.util.stream.Stream<Path> files = java.nio.file.Files.list(dir.resolve("ckpt"))) {
            assertEquals(List.of("model.data-00000-of-00001", "model.index"),
                    files.map(f -> f.getFileName().toString()).sorted().collect(java.util.stream.Collectors.toList()));
        }
        GradientPipeline p = checkpointed();
        try (Mlp m = new Mlp(IN, 16, OUT, 99); TfGuard g = guard(m, p)) {
            g.restore(prefix);
            assertEquals(1, p.stepCount(), "4 calls: one window of 3 applied");
            assertEquals(1, p.microStep(), "and one call of the next held");
            assertWeights(second, m, 0f, "the second save");
        }
    }

    @Test
    void restoring_into_a_guard_with_another_pipeline_fails_and_changes_nothing(@TempDir Path dir) throws IOException {
        String prefix = dir.resolve("model").toString();
        try (Mlp m = new Mlp(IN, 16, OUT, 42); TfGuard g = guard(m, checkpointed())) {
            checkpointData().subList(0, 2).forEach(b -> step(g, m, b));
            g.save(prefix);
        }
        try (Mlp m = new Mlp(IN, 16, OUT, 99); TfGuard g = guard(m, GradientPipeline.of(Transforms.accumulate(3)))) {
            List<float[]> before = weights(m);
            StateFormatException e = assertThrows(StateFormatException.class, () -> g.restore(prefix));
            assertTrue(e.getMessage().startsWith("the state was saved from a pipeline with stages [nonFinite"), e.getMessage());
            assertWeights(before, m, 0f, "a refused restore leaves the model");
            assertEquals(0, g.pipeline().microStep());
        }
    }

    @Test
    void restoring_a_checkpoint_without_gradguard_state_names_the_fix(@TempDir Path dir) throws IOException {
        String prefix = dir.resolve("plain").toString();
        try (Mlp m = new Mlp(IN, 16, OUT, 42)) {
            m.value(m.variables.get(0));
            m.session.save(prefix);
        }
        try (Mlp m = new Mlp(IN, 16, OUT, 99); TfGuard g = guard(m, checkpointed())) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> g.restore(prefix));
            assertTrue(e.getMessage().startsWith("prefix " + prefix + " names no checkpoint with GradGuard's state (key gradguard/pipeline_state)"),
                    e.getMessage());
            IllegalArgumentException empty = assertThrows(IllegalArgumentException.class, () -> g.save(""));
            assertEquals("prefix must be a checkpoint path prefix, got \"\"", empty.getMessage());
        }
    }

    /**
     * Scales the gradients by 0.5 on odd steps and, unless {@code uniform}, leaves them alone on even
     * steps: a decision taken on the host, so the non-uniform version builds two graph branches.
     */
    private record HostBranch(boolean uniform) implements io.gradguard.core.GradientTransform {
        @Override
        public String name() {
            return "hostBranch";
        }

        @Override
        public <T> io.gradguard.core.Action update(io.gradguard.core.Step<T> step, io.gradguard.core.TransformState state) {
            boolean odd = step.context().step() % 2 == 1;
            if (odd || uniform) {
                T c = step.ops().scalar(odd ? 0.5 : 1.0);
                for (io.gradguard.core.GradientTensor<T> g : step.gradients()) {
                    step.ops().scaleInPlace(g.gradient(), c);
                }
            }
            return io.gradguard.core.Action.proceed();
        }
    }

    // Adam is left out: tensorflow-framework 1.0's Adam updates its beta powers without waiting for
    // its updates (a race inside its own graph: Adam.minimize alone gives different weights from run
    // to run), so no bit-level comparison can hold for it; its slots are carried over the same way
    @ParameterizedTest
    @ValueSource(strings = {"RMSProp", "Momentum"})
    void a_pipeline_that_branches_on_the_host_keeps_one_optimizer_state(String optimizer) {
        List<Batch> data = batches(7, 4, 11);
        try (Mlp branching = new Mlp(IN, 16, OUT, 42, false); Mlp uniform = new Mlp(IN, 16, OUT, 42, false);
                TfGuard b = TfGuard.of(GradientPipeline.of(new HostBranch(false))).attach(branching.session, branching.loss, branching.variables, optimizer(optimizer, branching));
                TfGuard u = TfGuard.of(GradientPipeline.of(new HostBranch(true))).attach(uniform.session, uniform.loss, uniform.variables, optimizer(optimizer, uniform))) {
            for (Batch batch : data) {
                step(b, branching, batch);
                step(u, uniform, batch);
            }
            assertEquals(2 * slotVariables(uniform), slotVariables(branching), "two branches, two apply ops, two slot sets");
            // the slots of the second branch start from the first's state, and back: the same updates as one apply op
            assertWeights(weights(uniform), branching, 0f, optimizer + " through two branches vs one");
        }
    }

    private static Optimizer optimizer(String name, Mlp m) {
        return name.equals("RMSProp") ? new org.tensorflow.framework.optimizers.RMSProp(m.graph, LR) : new Momentum(m.graph, LR, 0.9f);
    }

    /** The optimizer's state variables in the graph (everything but the model's own variables). */
    private static int slotVariables(Mlp m) {
        int n = 0;
        for (var it = m.graph.operations(); it.hasNext(); ) {
            org.tensorflow.GraphOperation op = it.next();
            if (op.type().equals("VariableV2") && m.variables.stream().noneMatch(v -> v.op().name().equals(op.name()))) {
                n++;
            }
        }
        return n;
    }

    @Test
    void a_checkpoint_from_before_the_first_update_resumes_exactly(@TempDir Path dir) throws IOException {
        List<Batch> data = checkpointData();
        List<float[]> uninterrupted;
        try (Mlp m = new Mlp(IN, 16, OUT, 42, false);
                TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables, new Momentum(m.graph, LR, 0.9f))) {
            data.forEach(b -> step(g, m, b));
            uninterrupted = weights(m);
        }
        String prefix = dir.resolve("early").toString();
        try (Mlp m = new Mlp(IN, 16, OUT, 42, false);
                TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables, new Momentum(m.graph, LR, 0.9f))) {
            step(g, m, data.get(0));
            step(g, m, data.get(1));
            assertEquals(0, g.pipeline().stepCount(), "no update yet: the optimizer has no slots in the graph");
            g.save(prefix);
        }
        // the slots appear with the first update after the restore and keep their initial values
        try (Mlp m = new Mlp(IN, 16, OUT, 99, false);
                TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables, new Momentum(m.graph, LR, 0.9f))) {
            g.restore(prefix);
            for (int i = 2; i < data.size(); i++) {
                step(g, m, data.get(i));
            }
            assertWeights(uninterrupted, m, 0f, "resumed from a checkpoint saved before the first update");
        }
    }

    /**
     * Checkpointing at the top of the loop: a save right after a restore, before the first update
     * has created the optimizer's slots, writes the restored slot values back, and resuming from
     * that second checkpoint equals the uninterrupted run bit for bit.
     */
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"momentum", "rmsprop"})
    void saving_right_after_a_restore_round_trips_the_optimizer_state_exactly(String optimizerName, @TempDir Path dir)
            throws IOException {
        java.util.function.Function<Mlp, Optimizer> optimizer = m -> optimizerName.equals("momentum")
                ? new Momentum(m.graph, LR, 0.9f) : new org.tensorflow.framework.optimizers.RMSProp(m.graph, LR);
        List<Batch> data = checkpointData();
        List<float[]> uninterrupted;
        try (Mlp m = new Mlp(IN, 16, OUT, 42, false); TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables,
                optimizer.apply(m))) {
            data.forEach(b -> step(g, m, b));
            uninterrupted = weights(m);
        }
        String first = dir.resolve("first").toString();
        try (Mlp m = new Mlp(IN, 16, OUT, 42, false); TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables,
                optimizer.apply(m))) {
            for (int i = 0; i < 5; i++) {
                step(g, m, data.get(i));
            }
            g.save(first); // holds the optimizer's slots, mid-window
        }
        String second = dir.resolve("second").toString();
        try (Mlp m = new Mlp(IN, 16, OUT, 99, false); TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables,
                optimizer.apply(m))) {
            g.restore(first);
            g.save(second); // no update yet: the slots are not in this graph, their restored values are
        }
        try (Mlp m = new Mlp(IN, 16, OUT, 7, false); TfGuard g = TfGuard.of(checkpointed()).attach(m.session, m.loss, m.variables,
                optimizer.apply(m))) {
            g.restore(second);
            for (int i = 5; i < data.size(); i++) {
                step(g, m, data.get(i));
            }
            assertEquals(2, g.stepCount());
            assertWeights(uninterrupted, m, 0f, optimizerName + " resumed from a checkpoint saved right after a restore");
        }
    }
}
