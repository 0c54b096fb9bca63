package io.gradguard.core.conformance;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Guard;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.LayerStats;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.RunRecorder;
import io.gradguard.core.monitor.StepRecord;
import java.io.IOException;
import java.nio.file.Path;
import java.util.OptionalDouble;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What every adapter must show on a real small model of its framework, trained through its guard
 * and the framework's own optimizer: the optimizer receives exactly the transformed gradient,
 * accumulation equals the full batch, a non-finite step is really skipped, a checkpoint taken in
 * the middle of an accumulation window resumes bit for bit, loss scaling trains as the unscaled run
 * and skips an overflow, update ratios are reported, a long run with injected faults stays finite
 * and flat, and misuse gets a clear error.
 *
 * <p>An adapter runs it with a subclass that builds the kit's model ({@link KitModel}) in its
 * framework and trains it through its guard:
 *
 * <pre>{@code
 * class DjlGuardKitTest extends GuardKit {
 *     protected Trainee newTrainee(GradientPipeline pipeline, Optimizer optimizer) { return new DjlTrainee(...); }
 *     protected Trainee restore(Path dir, GradientPipeline pipeline, Optimizer optimizer) { ... }
 *     protected void useWithAnotherModel(Trainee trainee) { ... }
 * }
 * }</pre>
 *
 * <p>The kit's model: {@code x[4] → dense(8, tanh) → dense(2)}, loss the mean over the batch of a
 * per-example squared error (any constant factor), initial weights from {@link KitModel#initial()},
 * the optimizer plain SGD ({@link #SGD_LR}) or Adam ({@link #ADAM_LR}, the framework's defaults
 * otherwise).
 */
public abstract class GuardKit {
    /** SGD's learning rate. */
    public static final float SGD_LR = 0.1f;
    /** Adam's learning rate. */
    public static final float ADAM_LR = 0.01f;
    /** The soak's length. */
    protected static final int SOAK_STEPS = 10_000;

    /** The optimizer a trainee trains with. */
    public enum Optimizer { SGD, ADAM }

    /**
     * The kit's model weights, row-major {@code [in][out]} (map them to the framework's layout):
     * {@code w1[4][8], b1[8], w2[8][2], b2[2]}.
     */
    public record KitModel(float[][] w1, float[] b1, float[][] w2, float[] b2) {
        /** The weights every trainee starts from. */
        public static KitModel initial() {
            Random r = new Random(7);
            return new KitModel(matrix(r, 4, 8, 0.6f), vector(r, 8, 0.1f), matrix(r, 8, 2, 0.6f), vector(r, 2, 0.1f));
        }

        private static float[][] matrix(Random r, int rows, int cols, float scale) {
            float[][] m = new float[rows][cols];
            for (float[] row : m) {
                for (int j = 0; j < cols; j++) {
                    row[j] = (float) (r.nextGaussian() * scale);
                }
            }
            return m;
        }

        private static float[] vector(Random r, int n, float scale) {
            float[] v = new float[n];
            for (int j = 0; j < n; j++) {
                v[j] = (float) (r.nextGaussian() * scale);
            }
            return v;
        }
    }

    /** A batch of the kit's regression task: {@code x[n][4]}, {@code y[n][2]}. */
    public record Batch(float[][] x, float[][] y) {
        /** A batch of {@code n} examples, the same for the same {@code seed}. */
        public static Batch of(long seed, int n) {
            Random r = new Random(seed);
            float[][] x = new float[n][4];
            float[][] y = new float[n][2];
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < 4; j++) {
                    x[i][j] = (float) (r.nextDouble() * 2 - 1);
                }
                y[i][0] = x[i][0] * x[i][1] + 0.5f * x[i][2];
                y[i][1] = (float) Math.sin(x[i][3]) - x[i][0];
            }
            return new Batch(x, y);
        }

        /** Examples {@code from} (inclusive) to {@code to} (exclusive). */
        public Batch slice(int from, int to) {
            return new Batch(java.util.Arrays.copyOfRange(x, from, to), java.util.Arrays.copyOfRange(y, from, to));
        }

        /** The same batch with one input NaN: every gradient of the step becomes non-finite. */
        public Batch poisoned() {
            float[][] px = new float[x.length][];
            for (int i = 0; i < x.length; i++) {
                px[i] = x[i].clone();
            }
            px[0][0] = Float.NaN;
            return new Batch(px, y);
        }
    }

    /**
     * What the kit reads of the guard of a trainee: a core {@link Guard} ({@link #of}), or what an
     * adapter without a host step offers instead (TensorFlow's one-op training step keeps its
     * counters in the graph).
     */
    public interface GuardView {
        /** Every train call so far: the micro-batches fed, held and skipped ones included. */
        long callCount();

        /** Optimizer steps applied so far. */
        long stepCount();

        /** Micro-batches held by accumulation so far. */
        long heldCount();

        /** Steps skipped on purpose (non-finite, overflow, spikes) so far. */
        long skippedCount();

        /** The loss scale the next train call multiplies the loss by. */
        double lossScale();

        /** Micro-batches absorbed into the current, unfinished accumulation window. */
        int microStep();

        /**
         * Closes the guard: its monitors get their last records and write them; a later train call
         * throws IllegalStateException naming "closed".
         */
        void close();

        /** The view of a core guard. */
        static GuardView of(Guard<?, ?> guard) {
            java.util.Objects.requireNonNull(guard, "guard");
            return new GuardView() {
                @Override
                public long callCount() {
                    return guard.callCount();
                }

                @Override
                public long stepCount() {
                    return guard.stepCount();
                }

                @Override
                public long heldCount() {
                    return guard.heldCount();
                }

                @Override
                public long skippedCount() {
                    return guard.skippedCount();
                }

                @Override
                public double lossScale() {
                    return guard.lossScale();
                }

                @Override
                public int microStep() {
                    return guard.pipeline().microStep();
                }

                @Override
                public void close() {
                    guard.close();
                }

                @Override
                public String toString() {
                    return guard.toString();
                }
            };
        }
    }

    /**
     * What the kit reads of one train call's outcome: a core {@link StepResult} ({@link #of}), or
     * the values an adapter without a host step fetched with the step.
     */
    public interface StepView {
        /** Whether the optimizer applied this call's (or its window's) gradient. */
        boolean applies();

        /** Whether a stage skipped the call on purpose. */
        boolean skipped();

        /** The stage that held or skipped the call, "" when it applied. */
        String decidedBy();

        /** A stage's metric (e.g. {@code clipByGlobalNorm.norm}), empty if no stage recorded it on this call. */
        OptionalDouble metric(String key);

        /** The scale the call's loss was multiplied by, empty without a loss-scale stage. */
        OptionalDouble lossScale();

        /** The view of a core step result. */
        static StepView of(StepResult<?> result) {
            java.util.Objects.requireNonNull(result, "result");
            return new StepView() {
                @Override
                public boolean applies() {
                    return result.applies();
                }

                @Override
                public boolean skipped() {
                    return result.skipped();
                }

                @Override
                public String decidedBy() {
                    return result.decidedBy();
                }

                @Override
                public OptionalDouble metric(String key) {
                    return result.metric(key);
                }

                @Override
                public OptionalDouble lossScale() {
                    return result.lossScale();
                }

                @Override
                public String toString() {
                    return result.toString();
                }
            };
        }
    }

    /** The kit's model in one framework, trained through the adapter's guard by the framework's own loop. */
    public interface Trainee extends AutoCloseable {
        /** The guard that guards this model ({@link GuardView#of} for a core guard). */
        GuardView guard();

        /**
         * One micro-batch: forward, backward, the guarded step (the framework's optimizer runs if it
         * applies); {@link StepView#of} for a core step result.
         */
        StepView train(Batch batch);

        /** Every parameter's value, flattened in a fixed order. */
        float[] parameters();

        /**
         * The optimizer's state (Adam's moments), flattened in a fixed order; null where the
         * framework does not expose it (the kit then checks the state by its effect on later steps).
         */
        float[] optimizerState();

        /** Writes model, optimizer and guard into {@code dir}. */
        void checkpoint(Path dir) throws IOException;

        /**
         * Native memory the framework holds now, in bytes, or -1 where nothing native is held. Prefer
         * the framework's own counter (JavaCPP's {@code Pointer.totalBytes()}); the default,
         * {@link #residentOffHeap()}, also moves with the JIT and the collector.
         */
        default long nativeBytes() {
            return residentOffHeap();
        }

        @Override
        void close();
    }

    /** A trainee of the kit's model (from {@link KitModel#initial()}) guarded by {@code pipeline}. */
    protected abstract Trainee newTrainee(GradientPipeline pipeline, Optimizer optimizer);

    /** A trainee restored from what {@link Trainee#checkpoint} wrote, guarded by a new guard on {@code pipeline}. */
    protected abstract Trainee restore(Path dir, GradientPipeline pipeline, Optimizer optimizer) throws IOException;

    /** Uses the trainee's guard on another model of the framework; must throw IllegalStateException. */
    protected abstract void useWithAnotherModel(Trainee trainee);

    /**
     * Whether two runs of the same training with this optimizer give bit-identical results (true by
     * default). Return false only for a framework optimizer that is not reproducible run to run, and
     * name the cause in the override: the kit then still checks what one run shows (a skipped step
     * leaves parameters and optimizer state bit-identical, counters, restored parameters) and reports
     * its comparisons between two runs as skipped by an assumption, never as passed.
     */
    protected boolean reproducible(Optimizer optimizer) {
        return true;
    }

    private void assumeReproducible(Optimizer optimizer, String comparison) {
        assumeTrue(reproducible(optimizer), () -> optimizer + " is not reproducible run to run on this framework: " + comparison
                + " cannot be compared");
    }

    /** How much {@link Trainee#nativeBytes()} may grow over the soak's last 80% (a leak of 1 KiB a step would be 8 MB). */
    protected long allowedNativeGrowth() {
        return 4L << 20;
    }

    /** Resident memory of the process outside the Java heap, in bytes (Linux; -1 elsewhere). */
    public static long residentOffHeap() {
        try {
            for (String line : java.nio.file.Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmRSS:")) {
                    long rss = Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
                    Runtime rt = Runtime.getRuntime();
                    return rss - rt.totalMemory();
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }

    // ---- the optimizer receives exactly the transformed gradient --------------------------------

    @Test
    void sgd_receives_exactly_the_clipped_gradient() {
        Batch b = Batch.of(1, 8);
        float[] before;
        float[] plain;
        try (Trainee t = newTrainee(GradientPipeline.of(), Optimizer.SGD)) {
            before = t.parameters();
            t.train(b);
            plain = t.parameters();
        }
        double c = 0.01;
        float[] clipped;
        double measured;
        try (Trainee t = newTrainee(GradientPipeline.of(Transforms.clipByGlobalNorm(c)), Optimizer.SGD)) {
            StepView r = t.train(b);
            assertTrue(r.applies(), "a plain clip applies every step");
            measured = r.metric("clipByGlobalNorm.norm").orElseThrow();
            clipped = t.parameters();
        }
        // SGD: Δθ = -lr·g. The plain step gives g; the clipped one must be exactly g·c/‖g‖.
        double[] g = new double[before.length];
        double sq = 0;
        for (int i = 0; i < g.length; i++) {
            g[i] = (before[i] - plain[i]) / SGD_LR;
            sq += g[i] * g[i];
        }
        double norm = Math.sqrt(sq);
        assertEquals(norm, measured, 1e-4 * norm, "the guard measured the gradient the optimizer would have received");
        double coefficient = c / (norm + 1e-6);
        for (int i = 0; i < g.length; i++) {
            double expected = before[i] - SGD_LR * g[i] * coefficient;
            assertEquals(expected, clipped[i], 1e-6 + 1e-5 * Math.abs(SGD_LR * g[i] * coefficient),
                    "parameter " + i + " moved by the clipped gradient");
        }
    }

    // ---- accumulation equals the full batch -----------------------------------------------------

    @Test
    void accumulation_equals_the_full_batch_with_sgd() {
        accumulationEqualsFullBatch(Optimizer.SGD);
    }

    @Test
    void accumulation_equals_the_full_batch_with_adam() {
        accumulationEqualsFullBatch(Optimizer.ADAM);
    }

    private void accumulationEqualsFullBatch(Optimizer optimizer) {
        int k = 4;
        try (Trainee full = newTrainee(GradientPipeline.of(Transforms.clipByGlobalNorm(0.5)), optimizer);
                Trainee acc = newTrainee(GradientPipeline.of(Transforms.accumulate(k), Transforms.clipByGlobalNorm(0.5)),
                        optimizer)) {
            for (int s = 0; s < 5; s++) {
                Batch b = Batch.of(100 + s, 8);
                assertTrue(full.train(b).applies());
                for (int m = 0; m < k; m++) {
                    StepView r = acc.train(b.slice(2 * m, 2 * m + 2));
                    assertEquals(m == k - 1, r.applies(), "micro-batch " + m + " of step " + s);
                }
            }
            assertEquals(5, acc.guard().stepCount());
            assertEquals(15, acc.guard().heldCount());
            assertEquals(20, acc.guard().callCount());
            assumeReproducible(optimizer, "the accumulated run and the full-batch run");
            assertClose(full.parameters(), acc.parameters(), 1e-5, "parameters after 5 steps");
            float[] fs = full.optimizerState();
            float[] as = acc.optimizerState();
            if (fs != null && as != null) {
                assertClose(fs, as, 1e-5, "optimizer state after 5 steps");
            }
        }
    }

    // ---- a non-finite step is really skipped ----------------------------------------------------

    @Test
    void a_non_finite_step_is_really_skipped_with_adam() {
        GradientPipeline p = GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
        try (Trainee t = newTrainee(p, Optimizer.ADAM);
                Trainee clean = newTrainee(GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0)),
                        Optimizer.ADAM)) {
            for (int s = 0; s < 3; s++) {
                t.train(Batch.of(200 + s, 8));
                clean.train(Batch.of(200 + s, 8));
            }
            float[] params = t.parameters();
            float[] state = t.optimizerState();
            StepView r = t.train(Batch.of(999, 8).poisoned());
            assertTrue(r.skipped(), "a NaN step is skipped, got " + r);
            assertArrayEquals(params, t.parameters(), "parameters untouched by the skipped step");
            if (state != null) {
                assertArrayEquals(state, t.optimizerState(), "optimizer state untouched by the skipped step");
            }
            assertEquals(1, t.guard().skippedCount());
            assertEquals(3, t.guard().stepCount());
            // Adam's step counter and moments did not move: the next steps equal a run that never saw the batch
            assumeReproducible(Optimizer.ADAM, "the run with a skipped batch and the run without it");
            for (int s = 3; s < 6; s++) {
                t.train(Batch.of(200 + s, 8));
                clean.train(Batch.of(200 + s, 8));
            }
            assertClose(clean.parameters(), t.parameters(), 1e-6, "the run after the skip equals a run without the batch");
            assertAllFinite(t.parameters(), "parameters");
        }
    }

    // ---- loss scaling ---------------------------------------------------------------------------

    /** 2¹¹⁰: the kit's gradients (|g| &lt; 10) times it stay finite in float32; gradients near 1e6 overflow. */
    private static final double BIG_SCALE = 0x1p110;

    /** Dynamic loss scaling at {@link #BIG_SCALE} (×2 after 3 finite steps, ×2⁻¹⁰ on overflow), then a non-finite limit of 0. */
    private static GradientPipeline lossScaled() {
        // skipNonFinite(0) throws on the first non-finite step it sees: an overflow must never reach it
        return GradientPipeline.of(Transforms.dynamicLossScale(BIG_SCALE, 2, 0x1p-10, 3), Transforms.skipNonFinite(0));
    }

    /** The batch with labels 1e6 times larger: gradients near 1e6, which overflow float32 at {@link #BIG_SCALE}. */
    private static Batch loud(Batch b) {
        float[][] y = new float[b.y().length][];
        for (int i = 0; i < y.length; i++) {
            y[i] = b.y()[i].clone();
            for (int j = 0; j < y[i].length; j++) {
                y[i][j] = y[i][j] * 1e6f + 1e6f;
            }
        }
        return new Batch(b.x(), y);
    }

    /**
     * The adapter multiplies the loss by the guard's scale before backward and the stage divides the
     * gradients back: with power-of-two scales both are exact, so SGD under loss scaling moves the
     * parameters bit for bit as the unscaled run. An overflowing step is skipped (parameters
     * untouched) and backs the scale off; three finite steps grow it; a checkpoint taken in between
     * resumes the same scale sequence and parameters.
     */
    @Test
    void loss_scaling_trains_as_unscaled_skips_an_overflow_and_resumes_exactly(@TempDir Path dir) throws IOException {
        double[] scales = {BIG_SCALE, BIG_SCALE, BIG_SCALE, 0x1p100, 0x1p100, 0x1p100, 0x1p101, 0x1p101};
        int overflowAt = 2;
        int checkpointAfter = 3;
        float[] expected;
        try (Trainee t = newTrainee(lossScaled(), Optimizer.SGD); Trainee plain = newTrainee(GradientPipeline.of(), Optimizer.SGD)) {
            for (int i = 0; i < scales.length; i++) {
                assertEquals(scales[i], t.guard().lossScale(), "the scale before step " + i);
                float[] before = t.parameters();
                Batch b = Batch.of(500 + i, 8);
                StepView r = t.train(i == overflowAt ? loud(b) : b);
                assertEquals(scales[i], r.lossScale().orElseThrow(), "step " + i + " reports the scale its loss was multiplied by");
                if (i == overflowAt) {
                    assertTrue(r.skipped(), "the overflowing step is skipped, got " + r);
                    assertEquals("dynamicLossScale", r.decidedBy(), "the loss scale skipped it, not skipNonFinite");
                    assertArrayEquals(before, t.parameters(), "parameters untouched by the overflowing step");
                } else {
                    assertTrue(r.applies(), "step " + i + " applies, got " + r);
                    plain.train(b);
                    assertArrayEquals(plain.parameters(), t.parameters(), "after step " + i + ": the scaled run equals the unscaled one");
                }
                if (i == checkpointAfter) {
                    t.checkpoint(dir);
                }
            }
            assertEquals(0x1p101, t.guard().lossScale());
            assertEquals(1, t.guard().skippedCount());
            expected = t.parameters();
        }
        try (Trainee r = restore(dir, lossScaled(), Optimizer.SGD)) {
            for (int i = checkpointAfter + 1; i < scales.length; i++) {
                assertEquals(scales[i], r.guard().lossScale(), "the restored run's scale before step " + i);
                r.train(Batch.of(500 + i, 8));
            }
            assertEquals(0x1p101, r.guard().lossScale());
            assertArrayEquals(expected, r.parameters(), "the resumed run equals the uninterrupted one bit for bit");
        }
    }

    @Test
    void a_loss_scale_overflow_leaves_parameters_and_adam_state_untouched() {
        try (Trainee t = newTrainee(lossScaled(), Optimizer.ADAM)) {
            for (int s = 0; s < 2; s++) {
                assertTrue(t.train(Batch.of(600 + s, 8)).applies());
            }
            float[] params = t.parameters();
            float[] state = t.optimizerState();
            StepView r = t.train(loud(Batch.of(602, 8)));
            assertTrue(r.skipped(), "the overflowing step is skipped, got " + r);
            assertArrayEquals(params, t.parameters(), "parameters untouched by the overflowing step");
            if (state != null) {
                assertArrayEquals(state, t.optimizerState(), "Adam's moments untouched by the overflowing step");
            }
            assertEquals(0x1p100, t.guard().lossScale(), "the scale backed off");
            assertEquals(2, t.guard().stepCount());
            assertTrue(t.train(Batch.of(603, 8)).applies(), "the next step applies at the smaller scale");
            assertAllFinite(t.parameters(), "parameters");
        }
    }

    // ---- a checkpoint taken mid-window resumes exactly ------------------------------------------

    @Test
    void a_checkpoint_taken_mid_window_resumes_exactly_with_adam(@TempDir Path dir) throws IOException {
        java.util.function.Supplier<GradientPipeline> pipeline = () -> GradientPipeline.of(Transforms.skipNonFinite(3),
                Transforms.accumulate(3), Transforms.clipByGlobalNorm(0.5));
        float[] expected;
        float[] expectedState;
        float[] atCheckpoint;
        try (Trainee t = newTrainee(pipeline.get(), Optimizer.ADAM)) {
            for (int m = 0; m < 5; m++) { // one step applied, two micro-batches of the next held
                t.train(Batch.of(300 + m, 4));
            }
            assertEquals(2, t.guard().microStep(), "the checkpoint is taken mid-window");
            t.checkpoint(dir);
            atCheckpoint = t.parameters();
            for (int m = 5; m < 12; m++) {
                t.train(Batch.of(300 + m, 4));
            }
            expected = t.parameters();
            expectedState = t.optimizerState();
        }
        try (Trainee r = restore(dir, pipeline.get(), Optimizer.ADAM)) {
            assertArrayEquals(atCheckpoint, r.parameters(), "the restored parameters are those checkpointed");
            assumeReproducible(Optimizer.ADAM, "the resumed run and the uninterrupted one");
            for (int m = 5; m < 12; m++) {
                r.train(Batch.of(300 + m, 4));
            }
            assertArrayEquals(expected, r.parameters(), "the resumed run equals the uninterrupted one bit for bit");
            if (expectedState != null) {
                assertArrayEquals(expectedState, r.optimizerState(), "Adam's moments came back");
            }
            assertEquals(4, r.guard().stepCount());
        }
    }

    // ---- update ratios --------------------------------------------------------------------------

    @Test
    void update_to_parameter_ratios_are_reported() {
        RunRecorder recorder = io.gradguard.core.monitor.Sinks.memory();
        Monitor monitor = Monitor.builder().every(1).updateRatios(true).sink(recorder).build();
        try (Trainee t = newTrainee(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), monitor), Optimizer.SGD)) {
            for (int s = 0; s < 3; s++) {
                t.train(Batch.of(400 + s, 8));
            }
            t.guard().close(); // a record is complete once the next step or the close has its update
        }
        var records = recorder.recording().records();
        assertFalse(records.isEmpty(), "the monitor recorded steps");
        StepRecord first = records.get(0);
        assertEquals(2, first.layers().size(), "two layers: " + first.layers());
        for (LayerStats l : first.layers()) {
            assertTrue(Double.isFinite(l.updateRatio()) && l.updateRatio() > 0 && l.updateRatio() < 1,
                    "layer " + l.layer() + " has an update ratio, got " + l.updateRatio());
        }
    }

    // ---- soak -----------------------------------------------------------------------------------

    @Test
    void a_long_run_with_injected_faults_skips_each_and_stays_flat() {
        try (Trainee t = newTrainee(GradientPipeline.of(Transforms.skipNonFinite(2), Transforms.clipByGlobalNorm(1.0)),
                Optimizer.SGD)) {
            Batch good = Batch.of(500, 8);
            Batch bad = good.poisoned();
            int injected = 0;
            long memoryAtWarmup = 0;
            for (int i = 0; i < SOAK_STEPS; i++) {
                boolean poison = i % 100 == 37;
                injected += poison ? 1 : 0;
                StepView r = t.train(poison ? bad : good);
                assertEquals(poison, r.skipped(), "step " + i);
                if (i == SOAK_STEPS / 5) {
                    System.gc();
                    memoryAtWarmup = t.nativeBytes();
                }
            }
            System.gc();
            long memoryAtEnd = t.nativeBytes();
            assertEquals(injected, t.guard().skippedCount(), "skipped == injected");
            assertEquals(SOAK_STEPS - injected, t.guard().stepCount());
            assertAllFinite(t.parameters(), "parameters after the soak");
            long growth = memoryAtEnd - memoryAtWarmup;
            System.out.printf("GuardKit soak (%s): %d steps, %d injected and skipped, native memory %d -> %d bytes (%+d)%n",
                    getClass().getSimpleName(), SOAK_STEPS, injected, memoryAtWarmup, memoryAtEnd, growth);
            if (memoryAtWarmup >= 0 && memoryAtEnd >= 0) {
                assertTrue(growth < allowedNativeGrowth(), "native memory grew by " + growth + " bytes over "
                        + (SOAK_STEPS - SOAK_STEPS / 5) + " steps");
            }
        }
    }

    // ---- misuse ---------------------------------------------------------------------------------

    @Test
    void a_closed_guard_refuses_to_step() {
        try (Trainee t = newTrainee(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0)), Optimizer.SGD)) {
            t.train(Batch.of(600, 4));
            t.guard().close();
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> t.train(Batch.of(601, 4)));
            assertTrue(e.getMessage().contains("closed"), e.getMessage());
        }
    }

    @Test
    void one_pipeline_cannot_guard_two_models() {
        GradientPipeline shared = GradientPipeline.of(Transforms.accumulate(2));
        try (Trainee a = newTrainee(shared, Optimizer.SGD)) {
            a.train(Batch.of(700, 4));
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> newTrainee(shared, Optimizer.SGD).close());
            assertTrue(e.getMessage().contains("one pipeline per model"), e.getMessage());
        }
    }

    @Test
    void a_guard_refuses_another_model() {
        try (Trainee t = newTrainee(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0)), Optimizer.SGD)) {
            t.train(Batch.of(800, 4));
            assertThrows(IllegalStateException.class, () -> useWithAnotherModel(t));
        }
    }

    // ---- helpers --------------------------------------------------------------------------------

    static void assertClose(float[] expected, float[] actual, double tolerance, String what) {
        assertEquals(expected.length, actual.length, what + ": length");
        for (int i = 0; i < expected.length; i++) {
            double scale = Math.max(1, Math.abs(expected[i]));
            assertTrue(Math.abs(expected[i] - actual[i]) <= tolerance * scale,
                    what + "[" + i + "]: expected " + expected[i] + ", got " + actual[i]);
        }
    }

    static void assertAllFinite(float[] values, String what) {
        for (int i = 0; i < values.length; i++) {
            assertTrue(Float.isFinite(values[i]), what + "[" + i + "] is " + values[i]);
        }
    }
}
