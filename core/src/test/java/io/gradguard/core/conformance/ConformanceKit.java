package io.gradguard.core.conformance;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.StateFormatException;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.transform.Accumulate;
import io.gradguard.core.transform.NonFiniteGuard;
import io.gradguard.core.transform.SkipSpikes;
import io.gradguard.core.transform.ZClip;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;

/**
 * The GradGuard conformance kit: every transform's numbers, stateless and stateful, and exact
 * checkpoints, on any backend.
 *
 * <p>A backend runs it by extending this class and returning its {@code TensorOps}:
 *
 * <pre>{@code
 * class MyBackendConformanceTest extends ConformanceKit<MyTensor> {
 *     protected TensorOps<MyTensor> ops() { return MyOps.INSTANCE; }
 * }
 * }</pre>
 *
 * <p>The stateful tests drive a tiny simulated SGD optimizer on the host (p ← p − lr·g, applied
 * only when the pipeline says the step applies), so the numbers are those of the reference
 * vectors (Optax apply_if_finite / MultiSteps, Keras gradient accumulation).
 *
 * @param <T> the backend's tensor type
 */
public abstract class ConformanceKit<T> extends StatelessConformance<T> {

    /** A single-parameter model trained by host-side SGD through a pipeline. */
    final class Sgd {
        final GradientPipeline pipeline;
        final double lr;
        final long[] shape;
        double[] p;
        final List<StepResult<T>> results = new ArrayList<>();

        Sgd(GradientPipeline pipeline, double lr, double... p0) {
            this(pipeline, lr, new long[] {p0.length}, p0);
        }

        Sgd(GradientPipeline pipeline, double lr, long[] shape, double... p0) {
            this.pipeline = pipeline;
            this.lr = lr;
            this.shape = shape;
            this.p = p0.clone();
        }

        /** One micro-batch with the given gradient values; returns what the pipeline decided. */
        StepResult<T> step(double... g) {
            return step(StepContext.ofBatch(1), g);
        }

        StepResult<T> step(StepContext ctx, double... g) {
            float[] f = new float[g.length];
            for (int i = 0; i < g.length; i++) {
                f[i] = (float) g[i];
            }
            T t = tensor(shape, f);
            StepResult<T> r = pipeline.step(set(grad("p", t)), ops(), ctx);
            if (r.applies()) {
                float[] out = values(t);
                for (int i = 0; i < p.length; i++) {
                    p[i] -= lr * out[i];
                }
            }
            results.add(r);
            return r;
        }
    }

    // ---- accumulation ------------------------------------------------------------------------

    @Nested
    class Accumulation {
        @Test
        void k_4_holds_three_calls_and_applies_the_mean_2_5_on_the_fourth() {
            List<float[]> applied = new ArrayList<>();
            GradientPipeline pipeline = GradientPipeline.of(Transforms.accumulate(4));
            for (int i = 1; i <= 4; i++) {
                T g = vector(i);
                StepResult<T> r = pipeline.step(set(grad("g", g)), ops(), StepContext.ofBatch(1));
                assertEquals(i < 4, r.held(), "call " + i);
                if (r.applies()) {
                    applied.add(values(g));
                }
            }
            assertEquals(1, applied.size());
            assertEquals(2.5f, applied.get(0)[0], 1e-6f);
            assertEquals(1, pipeline.stepCount());
            assertEquals(3, pipeline.heldCount());
        }

        @Test
        void a_non_finite_micro_batch_is_dropped_alone_and_not_counted() {
            Sgd sgd = new Sgd(GradientPipeline.of(Transforms.accumulate(2).dropNonFinite()), 1.0, 0.0);
            sgd.step(1);
            sgd.step(1);
            assertEquals(-1.0, sgd.p[0], 1e-7);
            assertTrue(sgd.step(Double.POSITIVE_INFINITY).skipped());
            assertTrue(sgd.step(Double.NaN).skipped());
            assertEquals(-1.0, sgd.p[0], 1e-7);
            sgd.step(1);
            sgd.step(1);
            assertEquals(-2.0, sgd.p[0], 1e-7);
            // a bad micro-batch inside a window keeps the rest of the window
            sgd.step(1);
            sgd.step(Double.NaN);
            sgd.step(3);
            assertEquals(-4.0, sgd.p[0], 1e-7);
            assertEquals(3, sgd.pipeline.skippedCount());
        }

        @Test
        void keras_k_3_applies_once_after_three_micro_steps_and_counts_one_iteration() {
            Sgd sgd = new Sgd(GradientPipeline.of(Transforms.accumulate(3)), 1.0, new long[] {2, 2}, 1, 2, 3, 4);
            sgd.step(1, 1, 1, 1);
            sgd.step(1, 1, 1, 1);
            assertArrayEquals(new double[] {1, 2, 3, 4}, sgd.p, 1e-7);
            sgd.step(1, 1, 1, 1);
            assertArrayEquals(new double[] {0, 1, 2, 3}, sgd.p, 1e-7);
            assertEquals(1, sgd.pipeline.stepCount());
        }

        @Test
        void batch_size_weights_give_the_true_mean_over_the_window() {
            GradientPipeline pipeline = GradientPipeline.of(Accumulate.every(2).weightedBy(Accumulate.Weighting.BATCH_SIZE));
            pipeline.step(set(grad("g", vector(1))), ops(), StepContext.ofBatch(1));
            T g = vector(4);
            pipeline.step(set(grad("g", g)), ops(), StepContext.ofBatch(3));
            assertEquals(3.25f, values(g)[0], 1e-6f); // (1·1 + 4·3) / 4
        }

        @Test
        void context_weights_are_used_when_asked() {
            GradientPipeline pipeline = GradientPipeline.of(Accumulate.every(2).weightedBy(Accumulate.Weighting.CONTEXT));
            pipeline.step(set(grad("g", vector(2))), ops(), StepContext.ofBatch(8).withWeight(3));
            T g = vector(6);
            pipeline.step(set(grad("g", g)), ops(), StepContext.ofBatch(8).withWeight(1));
            assertEquals(3.0f, values(g)[0], 1e-6f); // (2·3 + 6·1) / 4
        }

        @Test
        void sum_mode_adds_the_micro_batches() {
            GradientPipeline pipeline = GradientPipeline.of(Accumulate.every(2).sum());
            pipeline.step(set(grad("g", vector(1, -1))), ops(), StepContext.ofBatch(1));
            T g = vector(2, 5);
            pipeline.step(set(grad("g", g)), ops(), StepContext.ofBatch(1));
            assertArrayEquals(new float[] {3, 4}, values(g), 1e-6f);
        }

        @Test
        void k_follows_a_schedule_over_real_steps() {
            Sgd sgd = new Sgd(GradientPipeline.of(Accumulate.schedule(step -> step < 1 ? 1 : 2)), 1.0, 0.0);
            assertTrue(sgd.step(1).applies());
            assertTrue(sgd.step(1).held());
            assertTrue(sgd.step(3).applies());
            assertEquals(-3.0, sgd.p[0], 1e-7);
            assertEquals(2, sgd.pipeline.stepCount());
        }

        @Test
        void a_clip_after_the_accumulator_acts_once_on_the_accumulated_gradient() {
            GradientPipeline pipeline = GradientPipeline.of(Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0));
            StepResult<T> first = pipeline.step(set(grad("g", vector(3, 4))), ops(), StepContext.ofBatch(1));
            assertFalse(first.metric("clipByGlobalNorm.norm").isPresent(), "no clip on a held micro-batch");
            T g = vector(9, 12);
            StepResult<T> second = pipeline.step(set(grad("g", g)), ops(), StepContext.ofBatch(1));
            assertClose(10.0, metric(second, "clipByGlobalNorm.norm"), 1e-6); // mean (6, 8)
            assertClose(new double[] {0.6, 0.8}, values(g));
        }

        @Test
        void a_skip_after_a_completed_window_starts_the_next_window_at_micro_step_0() {
            GradientPipeline pipeline = GradientPipeline.of(Transforms.accumulate(2), Transforms.skipNonFinite(5));
            pipeline.step(set(grad("g", vector(1))), ops(), StepContext.empty());
            assertTrue(pipeline.step(set(grad("g", vector(Float.NaN))), ops(), StepContext.empty()).skipped());
            assertEquals(0, pipeline.microStep());
            assertEquals(0, pipeline.step(set(grad("g", vector(1))), ops(), StepContext.empty()).context().microStep());
        }

        @Test
        void a_schedule_returning_zero_is_a_clear_error() {
            GradientPipeline pipeline = GradientPipeline.of(Accumulate.schedule(step -> 0));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> pipeline.step(set(grad("g", vector(1))), ops(), StepContext.ofBatch(1)));
            assertTrue(e.getMessage().contains("k at step 0 must be >= 1, got 0"), e.getMessage());
        }
    }

    // ---- non-finite policy --------------------------------------------------------------------

    @Nested
    class NonFinitePolicy {
        @Test
        void apply_if_finite_with_two_consecutive_matches_optax() {
            Sgd sgd = new Sgd(GradientPipeline.of(Transforms.skipNonFinite(2).letThroughWhenExhausted()), 1.0, 0.0);
            sgd.step(1);
            assertEquals(-1.0, sgd.p[0], 1e-7);
            StepResult<T> a = sgd.step(Double.NaN);
            StepResult<T> b = sgd.step(Double.NaN);
            assertEquals(-1.0, sgd.p[0], 1e-7);
            assertEquals(1.0, metric(a, "nonFinite.consecutive"));
            assertEquals(2.0, metric(b, "nonFinite.consecutive"));
            sgd.step(1);
            assertEquals(-2.0, sgd.p[0], 1e-7);
            sgd.step(Double.NaN);
            sgd.step(Double.NaN);
            assertEquals(-2.0, sgd.p[0], 1e-7);
            StepResult<T> third = sgd.step(Double.NaN);
            assertTrue(third.applies(), "the third NaN in a row is let through");
            assertTrue(Double.isNaN(sgd.p[0]));
            assertEquals(5.0, metric(third, "nonFinite.total"));
            assertEquals(4, sgd.pipeline.skippedCount());
        }

        @Test
        void by_default_exhausting_the_skips_throws_naming_parameter_and_step() {
            Sgd sgd = new Sgd(GradientPipeline.of(Transforms.skipNonFinite(2)), 1.0, 0.0);
            sgd.step(1);
            sgd.step(Double.NaN);
            sgd.step(Double.POSITIVE_INFINITY);
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> sgd.step(Double.NaN));
            assertTrue(e.getMessage().contains("parameter p"), e.getMessage());
            assertTrue(e.getMessage().contains("step 1"), e.getMessage());
            assertTrue(e.getMessage().contains("maxConsecutive=2"), e.getMessage());
            assertEquals(-1.0, sgd.p[0], 1e-7);
        }

        @Test
        void infinities_and_nan_skip_and_large_finite_values_do_not() {
            GradientPipeline p = GradientPipeline.of(Transforms.skipNonFinite(10));
            assertTrue(p.step(set(grad("g", vector(Float.POSITIVE_INFINITY, 0))), ops(), StepContext.empty()).skipped());
            assertTrue(p.step(set(grad("g", vector(Float.NEGATIVE_INFINITY, 0))), ops(), StepContext.empty()).skipped());
            StepResult<T> r = p.step(set(grad("g", vector(Float.NaN, 0))), ops(), StepContext.empty());
            assertTrue(r.skipped());
            assertEquals(1.0, metric(r, "nonFinite.nonFinite"));
            assertTrue(r.action().reason().contains("non-finite"), r.action().reason());
            assertTrue(p.step(set(grad("g", vector(11, 0))), ops(), StepContext.empty()).applies());
            // Σg² overflows (in float32 on backends that reduce in float32): the values are counted, none is bad
            GradientPipeline two = GradientPipeline.of(Transforms.skipNonFinite(10));
            StepResult<T> large = two.step(set(grad("a", vector(1, 0)), grad("b", vector(3e38f, 3e38f, 0))), ops(), StepContext.empty());
            assertTrue(large.applies());
            assertEquals(0.0, metric(large, "nonFinite.nonFinite"));
            assertEquals(0.0, metric(large, "nonFinite.consecutive"));
            StepResult<T> second = two.step(set(grad("a", vector(1, 2)), grad("b", vector(3, Float.NaN, Float.POSITIVE_INFINITY))),
                    ops(), StepContext.empty());
            assertTrue(second.skipped(), "a bad value in the second tensor only");
            assertEquals(2.0, metric(second, "nonFinite.nonFinite"));
        }

        @Test
        void a_global_clip_after_the_skip_reads_the_same_sums_until_the_values_change() {
            GradientPipeline idle = GradientPipeline.of(Transforms.skipNonFinite(1), Transforms.clipByGlobalNorm(10.0));
            GradientPipeline acting = GradientPipeline.of(Transforms.skipNonFinite(1), Transforms.clipByGlobalNorm(1.0));
            T a = vector(3, 0);
            T b = vector(0, 4);
            assertEquals(5.0, metric(idle.step(set(grad("a", a), grad("b", b)), ops(), StepContext.empty()), "clipByGlobalNorm.norm"), 1e-6);
            // new values written through the backend: what was measured of the old ones is not reused
            ops().assign(a, vector(0, 0));
            ops().assign(b, vector(0, 2));
            StepResult<T> r = acting.step(set(grad("a", a), grad("b", b)), ops(), StepContext.empty());
            assertTrue(r.applies());
            assertEquals(2.0, metric(r, "clipByGlobalNorm.norm"), 1e-6);
            assertArrayEquals(new float[] {0, 1}, values(b), 1e-6f);
            StepResult<T> again = acting.step(set(grad("a", a), grad("b", b)), ops(), StepContext.empty());
            assertEquals(1.0, metric(again, "clipByGlobalNorm.norm"), 1e-6);
        }

        @Test
        void the_throw_policy_names_the_first_offending_parameter_and_what_it_holds() {
            GradientPipeline p = GradientPipeline.of(Transforms.nonFinite(NonFiniteGuard.Policy.THROW));
            GradientSet<T> g = set(grad("fine", vector(1, 2)), grad("bad", vector(Float.POSITIVE_INFINITY, Float.NaN)),
                    grad("worse", vector(Float.NaN)));
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> p.step(g, ops(), StepContext.empty()));
            assertTrue(e.getMessage().contains("parameter bad holds 2 non-finite values (NaN among them), 3 in all"), e.getMessage());
        }

        @Test
        void the_zero_policy_zeroes_and_proceeds() {
            GradientPipeline p = GradientPipeline.of(Transforms.nonFinite(NonFiniteGuard.Policy.ZERO));
            T t = vector(Float.NaN, 2, Float.NEGATIVE_INFINITY);
            StepResult<T> r = p.step(set(grad("g", t)), ops(), StepContext.empty());
            assertTrue(r.applies());
            assertArrayEquals(new float[] {0, 2, 0}, values(t));
            assertEquals(2.0, metric(r, "nonFinite.nonFinite"));
        }

        @Test
        void the_propagate_policy_changes_nothing_but_counts() {
            GradientPipeline p = GradientPipeline.of(Transforms.nonFinite(NonFiniteGuard.Policy.PROPAGATE));
            T t = vector(Float.NaN, 2);
            StepResult<T> r = p.step(set(grad("g", t)), ops(), StepContext.empty());
            assertTrue(r.applies());
            assertTrue(Float.isNaN(values(t)[0]));
            assertEquals(1.0, metric(r, "nonFinite.nonFinite"));
        }
    }

    // ---- adaptive clipping and spikes ---------------------------------------------------------

    /** The p-th percentile with linear interpolation, written independently of the library. */
    static double percentile(List<Double> values, double p) {
        double[] s = values.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        double rank = p / 100 * (s.length - 1);
        int lo = (int) Math.floor(rank);
        int hi = Math.min(lo + 1, s.length - 1);
        return s[lo] + (s[hi] - s[lo]) * (rank - lo);
    }

    @Nested
    class AdaptiveClipping {
        @Test
        void autoclip_clips_at_the_percentile_of_the_history_including_the_current_norm() {
            GradientPipeline p = GradientPipeline.of(Transforms.autoClip(50));
            double[] norms = {1, 2, 3, 4, 100, 0.5};
            List<Double> history = new ArrayList<>();
            for (double n : norms) {
                history.add(n);
                double threshold = percentile(history, 50);
                T g = vector((float) n);
                StepResult<T> r = p.step(set(grad("g", g)), ops(), StepContext.empty());
                assertEquals(threshold, metric(r, "autoClip.threshold"), 1e-12, "threshold after " + history);
                assertEquals(Math.min(n, threshold), values(g)[0], 1e-5 * n, "clipped norm for " + n);
            }
        }

        @Test
        void autoclip_forgets_norms_beyond_its_history_size() {
            GradientPipeline p = GradientPipeline.of(Transforms.autoClip(100, 3));
            for (double n : new double[] {10, 10, 10, 1, 1}) {
                p.step(set(grad("g", vector((float) n))), ops(), StepContext.empty());
            }
            T g = vector(5);
            StepResult<T> r = p.step(set(grad("g", g)), ops(), StepContext.empty());
            assertEquals(5.0, metric(r, "autoClip.threshold"), 1e-12); // history {1, 1, 5}
            assertEquals(5f, values(g)[0], 1e-6f);
        }

        @Test
        void zclip_adaptive_scaling_matches_the_paper_formula() {
            GradientPipeline p = GradientPipeline.of(Transforms.zClip().warmup(2));
            p.step(set(grad("g", vector(1))), ops(), StepContext.empty());
            p.step(set(grad("g", vector(3))), ops(), StepContext.empty());
            // warm-up done: mean 2, variance 1
            T g = vector(10);
            StepResult<T> r = p.step(set(grad("g", g)), ops(), StepContext.empty());
            double z = (10 - 2) / (1 + 1e-6);
            double threshold = 2 + 2.5 * 1 / (z / 2.5);
            assertEquals(z, metric(r, "zClip.z"), 1e-9);
            assertEquals(threshold, values(g)[0], 1e-5);
            // the EMA moved with the clipped value, the variance with the updated mean
            double mean = 0.97 * 2 + 0.03 * threshold;
            double var = 0.97 * 1 + 0.03 * (threshold - mean) * (threshold - mean);
            T calm = vector((float) mean);
            StepResult<T> r2 = p.step(set(grad("g", calm)), ops(), StepContext.empty());
            assertEquals(0.0, metric(r2, "zClip.z"), 1e-6 / Math.sqrt(var));
            assertEquals(mean, values(calm)[0], 1e-6);
        }

        @Test
        void zclip_mean_mode_clips_to_the_mean_and_the_cap_applies_from_the_start() {
            GradientPipeline p = GradientPipeline.of(Transforms.zClip().warmup(2).mode(ZClip.Mode.MEAN).cap(2.5));
            T w1 = vector(4);
            p.step(set(grad("g", w1)), ops(), StepContext.empty());
            assertEquals(2.5f, values(w1)[0], 1e-6f, "the cap clips during warm-up");
            p.step(set(grad("g", vector(2))), ops(), StepContext.empty());
            // warm-up norms 4 and 2 (raw): mean 3, variance 1
            T g = vector(30);
            p.step(set(grad("g", g)), ops(), StepContext.empty());
            assertEquals(2.5f, values(g)[0], 1e-6f, "mean 3, then the cap 2.5");
        }

        @Test
        void spike_skip_drops_an_outlier_and_keeps_training() {
            GradientPipeline p = GradientPipeline.of(SkipSpikes.zAbove(3).window(5).minHistory(3));
            for (double n : new double[] {1, 1.1, 0.9, 1, 1.05}) {
                assertTrue(p.step(set(grad("g", vector((float) n))), ops(), StepContext.empty()).applies());
            }
            StepResult<T> spike = p.step(set(grad("g", vector(50))), ops(), StepContext.empty());
            assertTrue(spike.skipped());
            assertTrue(spike.action().reason().contains("standard deviations above the mean"), spike.action().reason());
            assertTrue(p.step(set(grad("g", vector(1))), ops(), StepContext.empty()).applies());
            assertEquals(1, p.skippedCount());
        }

        @Test
        void spike_skip_accepts_a_lasting_level_shift_after_max_consecutive_skips() {
            GradientPipeline p = GradientPipeline.of(SkipSpikes.zAbove(3).window(5).minHistory(3).maxConsecutive(2));
            for (double n : new double[] {1, 1.1, 0.9}) {
                p.step(set(grad("g", vector((float) n))), ops(), StepContext.empty());
            }
            assertTrue(p.step(set(grad("g", vector(50))), ops(), StepContext.empty()).skipped());
            assertTrue(p.step(set(grad("g", vector(50))), ops(), StepContext.empty()).skipped());
            StepResult<T> third = p.step(set(grad("g", vector(50))), ops(), StepContext.empty());
            assertTrue(third.applies());
            assertEquals(1.0, metric(third, "skipSpikes.letThrough"));
        }
    }

    // ---- checkpoints --------------------------------------------------------------------------

    private static GradientTransform[] checkpointStages() {
        return new GradientTransform[] {Transforms.skipNonFinite(5), Transforms.accumulate(3), Transforms.autoClip(50, 16),
            Transforms.zClip().warmup(2), SkipSpikes.zAbove(4).window(8).minHistory(3), Transforms.clipByGlobalNorm(2.0)};
    }

    /** Deterministic gradients with occasional spikes and NaNs. */
    private static double[] gradientAt(int i) {
        Random r = new Random(1000 + i);
        double scale = i % 7 == 5 ? 40 : 1;
        double[] g = new double[6];
        for (int k = 0; k < g.length; k++) {
            g[k] = r.nextGaussian() * scale;
        }
        if (i % 11 == 4) {
            g[2] = Double.NaN;
        }
        return g;
    }

    private Sgd checkpointModel(GradientPipeline p) {
        return new Sgd(p, 0.1, new long[] {2, 3}, 0, 0, 0, 0, 0, 0);
    }

    private static byte[] save(GradientPipeline p) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        p.saveState(out);
        return out.toByteArray();
    }

    @Nested
    class Checkpoints {
        @Test
        void a_run_restored_mid_window_continues_bit_identically() throws IOException {
            Sgd straight = checkpointModel(GradientPipeline.of(checkpointStages()));
            for (int i = 0; i < 40; i++) {
                straight.step(gradientAt(i));
            }
            Sgd first = checkpointModel(GradientPipeline.of(checkpointStages()));
            int cut = 0;
            while (cut < 15 || first.pipeline.microStep() == 0) {
                first.step(gradientAt(cut++));
            }
            assertTrue(cut < 30, "a mid-window point was found");
            byte[] state = save(first.pipeline);
            Sgd resumed = checkpointModel(GradientPipeline.of(checkpointStages()));
            resumed.pipeline.restoreState(new ByteArrayInputStream(state), ops());
            resumed.p = first.p.clone();
            for (int i = cut; i < 40; i++) {
                resumed.step(gradientAt(i));
            }
            assertArrayEquals(straight.p, resumed.p, 0.0, "bit-identical parameters");
            assertEquals(straight.pipeline.stepCount(), resumed.pipeline.stepCount());
            assertEquals(straight.pipeline.skippedCount(), resumed.pipeline.skippedCount());
            assertEquals(straight.pipeline.heldCount(), resumed.pipeline.heldCount());
            assertTrue(straight.pipeline.skippedCount() > 0, "the run exercised skips");
        }

        @Test
        void a_state_saved_before_the_first_step_restores_counters_only() throws IOException {
            GradientPipeline fresh = GradientPipeline.of(checkpointStages());
            GradientPipeline other = GradientPipeline.of(checkpointStages());
            other.restoreState(new ByteArrayInputStream(save(fresh)), ops());
            assertEquals(0, other.stepCount());
            Sgd sgd = checkpointModel(other);
            sgd.step(gradientAt(0));
            assertEquals(1, other.heldCount());
        }

        private Sgd halfway() {
            Sgd sgd = checkpointModel(GradientPipeline.of(checkpointStages()));
            for (int i = 0; i < 10; i++) {
                sgd.step(gradientAt(i));
            }
            return sgd;
        }

        /** Restoring {@code bad} into a used pipeline fails with the message and leaves it untouched. */
        private void assertRejectedAndUntouched(byte[] bad, String message) throws IOException {
            Sgd sgd = halfway();
            byte[] before = save(sgd.pipeline);
            StateFormatException e = assertThrows(StateFormatException.class,
                    () -> sgd.pipeline.restoreState(new ByteArrayInputStream(bad), ops()));
            assertTrue(e.getMessage().contains(message), e.getMessage());
            assertArrayEquals(before, save(sgd.pipeline), "the pipeline is untouched");
            sgd.step(gradientAt(10)); // and still works
        }

        @Test
        void a_truncated_state_is_rejected_and_the_pipeline_untouched() throws IOException {
            byte[] good = save(halfway().pipeline);
            assertRejectedAndUntouched(Arrays.copyOf(good, good.length - 20), "checksum");
            assertRejectedAndUntouched(Arrays.copyOf(good, 10), "too short");
        }

        @Test
        void a_corrupt_state_is_rejected_by_its_checksum() throws IOException {
            byte[] bad = save(halfway().pipeline);
            bad[bad.length / 2] ^= 0x5A;
            assertRejectedAndUntouched(bad, "checksum");
        }

        @Test
        void a_state_of_another_version_is_rejected_naming_both_versions() throws IOException {
            byte[] bad = save(halfway().pipeline);
            bad[7] = 9;
            assertRejectedAndUntouched(bad, "version 9 is not supported; this GradGuard reads versions 2 and 3");
        }

        @Test
        void a_state_from_another_pipeline_is_rejected_listing_the_stages() throws IOException {
            GradientPipeline other = GradientPipeline.of(Transforms.accumulate(3));
            Sgd sgd = checkpointModel(other);
            sgd.step(gradientAt(0));
            assertRejectedAndUntouched(save(other), "saved from a pipeline with stages [accumulate");
        }

        @Test
        void a_float64_accumulator_round_trips_exactly() throws IOException {
            org.junit.jupiter.api.Assumptions.assumeTrue(ops().supportsFloat64(), "backend has no float64 tensors");
            GradientPipeline straight = GradientPipeline.of(Transforms.accumulate(2).sum());
            GradientPipeline first = GradientPipeline.of(Transforms.accumulate(2).sum());
            T a1 = ops().fromHost(new double[] {0.1, 1e-40}, new long[] {2});
            T a2 = ops().fromHost(new double[] {0.1, 1e-40}, new long[] {2});
            created.add(a1);
            created.add(a2);
            straight.step(set(grad("g", a1)), ops(), StepContext.empty());
            first.step(set(grad("g", a2)), ops(), StepContext.empty());
            GradientPipeline resumed = GradientPipeline.of(Transforms.accumulate(2).sum());
            resumed.restoreState(new ByteArrayInputStream(save(first)), ops());
            T b1 = ops().fromHost(new double[] {0.2, 3e-40}, new long[] {2});
            T b2 = ops().fromHost(new double[] {0.2, 3e-40}, new long[] {2});
            created.add(b1);
            created.add(b2);
            straight.step(set(grad("g", b1)), ops(), StepContext.empty());
            resumed.step(set(grad("g", b2)), ops(), StepContext.empty());
            assertArrayEquals(ops().toHostDoubles(b1), ops().toHostDoubles(b2), 0.0);
            assertEquals(0.1 + 0.2, ops().toHostDoubles(b2)[0], 0.0);
        }

        @Test
        void not_a_state_at_all_is_rejected() throws IOException {
            assertRejectedAndUntouched("this is not a GradGuard checkpoint".getBytes(), "GGST");
        }

        @Test
        void a_state_restored_for_another_model_fails_at_the_next_step() throws IOException {
            byte[] state = save(halfway().pipeline);
            GradientPipeline p = GradientPipeline.of(checkpointStages());
            p.restoreState(new ByteArrayInputStream(state), ops());
            IllegalStateException e = assertThrows(IllegalStateException.class,
                    () -> p.step(set(grad("q", vector(1, 2, 3))), ops(), StepContext.empty()));
            assertTrue(e.getMessage().contains("initialised with 1 gradients") || e.getMessage().contains("q[3]"), e.getMessage());
        }
    }
}
