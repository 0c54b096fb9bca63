package io.gradguard.djl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.EasyTrain;
import ai.djl.training.GradientCollector;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.ArrayDataset;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.StepRecord;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;

/**
 * The drop-in hook ({@link DjlGuard#wrap}) in real DJL training (PyTorch engine, CPU), beyond the
 * {@link DjlOptimizerKitTest}: a learning-rate schedule keyed on the update count, loss scaling,
 * misuse.
 */
class DjlOptimizerTest {

    /** A step-keyed learning rate that records every update count it is asked about. */
    private static final class RecordingTracker implements Tracker {
        final TreeSet<Integer> seen = new TreeSet<>();
        final Tracker schedule = Tracker.factor().setBaseValue(0.05f).setFactor(0.7f).build();

        @Override
        public float getNewValue(int numUpdate) {
            seen.add(numUpdate);
            return schedule.getNewValue(numUpdate);
        }
    }

    /**
     * Adam with a factor schedule, 4 steps of 8 examples: (a) DJL alone on full batches; (b) the
     * guarded optimizer with accumulate(2) on batches of 4 and a NaN batch inside the second window,
     * skipped. The schedule sees update counts 1..4 in both, and the weights agree: held and skipped
     * calls never reach the wrapped optimizer. Data seeds 90, 91, 92.
     */
    @Test
    void a_step_keyed_schedule_sees_only_applied_steps_under_accumulation_and_skips() throws Exception {
        for (long seed = 90; seed < 93; seed++) {
            float[][] x = Nets.data(seed, 32, 4, 1f);
            float[][] y = Nets.data(seed + 100, 32, 3, 1f);
            float[][] xp = new float[36][];
            float[][] yp = new float[36][];
            for (int i = 0, j = 0; i < 36; i++) { // batches of 4: b0, b1, b2, NaN, b3, ..., b7
                boolean poison = i >= 12 && i < 16;
                xp[i] = poison ? new float[] {1f, Float.NaN, 0f, 2f} : x[j];
                yp[i] = poison ? y[0] : y[j++];
            }
            RecordingTracker plainSchedule = new RecordingTracker();
            RecordingTracker guardedSchedule = new RecordingTracker();
            DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.accumulate(2));
            try (NDManager data = NDManager.newBaseManager("PyTorch");
                    Trainer plain = Nets.trainer(4, 8, 3, Optimizer.adam().optLearningRateTracker(plainSchedule).build());
                    Model model = Nets.mlp(4, 8, 3);
                    Trainer guarded = model.newTrainer(Nets.config(
                            guard.wrap(model, Optimizer.adam().optLearningRateTracker(guardedSchedule).build())))) {
                guarded.initialize(new Shape(1, 4));
                Nets.copyParams(plain, guarded);

                EasyTrain.fit(plain, 1, dataset(data, x, y, 8), null);
                EasyTrain.fit(guarded, 1, dataset(data, xp, yp, 4), null);

                assertEquals(new TreeSet<>(List.of(1, 2, 3, 4)), plainSchedule.seen);
                assertEquals(plainSchedule.seen, guardedSchedule.seen, "update counts the schedule saw");
                assertEquals(4, guard.stepCount());
                assertEquals(1, guard.skippedCount());
                assertEquals(4, guard.heldCount());
                assertEquals(0.0, Nets.maxAbsDiff(Nets.params(plain), Nets.params(guarded)), 1e-5, "seed " + seed);
            } finally {
                guard.close();
            }
        }
    }

    /** An Adam that DJL does not know: the wrapper cannot rely on how it reads its gradient rescale. */
    private static final class OwnAdam extends ai.djl.training.optimizer.Adam {
        OwnAdam() {
            super(ai.djl.training.optimizer.Adam.builder().optLearningRateTracker(Tracker.fixed(0.01f)));
        }
    }

    /**
     * An acting clipByGlobalNorm (and a monitor reading each tensor after it) through the wrapper
     * with Adam: the clip's scale reaches Adam as its gradient rescale, with no pass of its own
     * (one folded update per parameter and step), and the parameters equal those of
     * {@code DjlGuard.step(trainer)}, where the clip multiplies the gradients itself, bit for bit;
     * the monitor's norms agree within float rounding (it reads c²·Σg² instead of Σ(c·g)²). A subclass of Adam
     * gets the clip's multiplication instead, with the same parameters. Seeds 70, 71, 72.
     */
    @Test
    void an_acting_clip_is_left_to_adams_gradient_rescale_bit_for_bit() {
        assertWrapperMatchesHook(() -> new GradientTransform[] {Transforms.clipByGlobalNorm(0.05)}, StepRecord::clipped, 4 * 4, 0);
    }

    /**
     * An acting clipByValue through the wrapper with Adam: DJL has no in-place clamp, and the
     * clamped array is handed to Adam as the gradient instead of being copied back (one replaced
     * update per parameter and step; the gradient is filled with 0). The parameters equal those of
     * {@code DjlGuard.step(trainer)} bit for bit, alone and combined with a global clip before or
     * after it (a pending scale applied before the clamp; a clamp's result copied back before a
     * scale), and the monitor reads the clamped values. Seeds 70, 71, 72.
     */
    @Test
    void an_acting_clip_by_value_hands_its_clamped_array_to_adam_bit_for_bit() {
        assertWrapperMatchesHook(() -> new GradientTransform[] {Transforms.clipByValue(0.02)}, clampedAt(0.02), 0, 4 * 4);
        assertWrapperMatchesHook(() -> new GradientTransform[] {Transforms.clipByGlobalNorm(0.05), Transforms.clipByValue(0.005)},
                clampedAt(0.005), 0, 4 * 4);
        assertWrapperMatchesHook(() -> new GradientTransform[] {Transforms.clipByValue(0.02), Transforms.clipByGlobalNorm(0.05)},
                StepRecord::clipped, 4 * 4, 0);
    }

    /**
     * The pipeline (plus a monitor) through the wrapper and through {@code DjlGuard.step(trainer)}
     * on two copies of one model, 4 steps each for seeds 70-72: the parameters are identical, the
     * monitors' norms and max|x| agree within float rounding, the wrapped Adam took the expected
     * number of folded scales and replaced gradients, and a subclass of Adam (never folded or
     * replaced) gives the same parameters.
     */
    private static void assertWrapperMatchesHook(java.util.function.Supplier<GradientTransform[]> stages,
            java.util.function.Predicate<StepRecord> acts, long folded, long replaced) {
        for (long seed = 70; seed < 73; seed++) {
            for (boolean own : new boolean[] {false, true}) {
                var hookRecords = io.gradguard.core.monitor.Sinks.memory();
                var wrapRecords = io.gradguard.core.monitor.Sinks.memory();
                DjlGuard hook = DjlGuard.of(withMonitor(stages.get(), hookRecords));
                DjlGuard guard = DjlGuard.of(withMonitor(stages.get(), wrapRecords));
                Optimizer adam = own ? new OwnAdam() : Nets.adam(0.01f);
                try (Trainer plain = Nets.trainer(4, 8, 3, own ? new OwnAdam() : Nets.adam(0.01f));
                        Model model = Nets.mlp(4, 8, 3)) {
                    DjlOptimizer wrapped = guard.wrap(model, adam);
                    try (Trainer guarded = model.newTrainer(Nets.config(wrapped))) {
                        guarded.initialize(new Shape(1, 4));
                        Nets.copyParams(plain, guarded);
                        for (int s = 0; s < 4; s++) {
                            float[][] x = Nets.data(seed * 10 + s, 8, 4, 1f);
                            float[][] y = Nets.data(seed * 10 + s + 500, 8, 3, 3f);
                            Nets.backward(plain, x, y);
                            hook.step(plain);
                            Nets.backward(guarded, x, y);
                            guarded.step();
                        }
                        Map<String, float[]> a = Nets.params(plain);
                        Map<String, float[]> b = Nets.params(guarded);
                        for (String k : a.keySet()) {
                            org.junit.jupiter.api.Assertions.assertArrayEquals(a.get(k), b.get(k), "seed " + seed + ", " + k);
                        }
                        assertEquals(own ? 0 : folded, wrapped.foldedUpdates(), "updates that took a clip's scale as their rescale");
                        assertEquals(own ? 0 : replaced, wrapped.replacedUpdates(), "updates that read a clamp's result");
                    }
                } finally {
                    hook.close();
                    guard.close();
                }
                var h = hookRecords.recording().records();
                var w = wrapRecords.recording().records();
                assertEquals(4, w.size());
                for (int i = 0; i < 4; i++) {
                    assertTrue(acts.test(h.get(i)), "the clip acts: " + h.get(i));
                    assertEquals(h.get(i).normBefore(), w.get(i).normBefore(), 1e-6 * h.get(i).normBefore(), "record " + i);
                    assertEquals(h.get(i).normAfter(), w.get(i).normAfter(), 1e-6 * h.get(i).normAfter(), "record " + i);
                    for (int t = 0; t < h.get(i).tensors().size(); t++) {
                        var ht = h.get(i).tensors().get(t);
                        var wt = w.get(i).tensors().get(t);
                        assertEquals(ht.norm(), wt.norm(), 1e-6 * ht.norm(), "record " + i + ", " + ht.name());
                        assertEquals(ht.maxAbs(), wt.maxAbs(), 1e-6 * ht.maxAbs(), "record " + i + ", " + ht.name());
                    }
                }
            }
        }
    }

    /**
     * A record (of a monitor after the clamp) where some tensor reaches the bound: the clamp acted.
     * The monitor reports a tensor's max|x| before a global clip (divided by its coefficient).
     */
    private static java.util.function.Predicate<StepRecord> clampedAt(double bound) {
        return r -> r.tensors().stream().anyMatch(t -> Math.abs(t.maxAbs() * r.clipCoefficient() - (float) bound) <= 1e-6 * bound);
    }

    private static GradientTransform[] withMonitor(GradientTransform[] stages, io.gradguard.core.monitor.MonitorListener sink) {
        GradientTransform[] all = java.util.Arrays.copyOf(stages, stages.length + 1);
        all[stages.length] = io.gradguard.core.monitor.Monitor.builder().every(1).updateRatios(false).sink(sink).build();
        return all;
    }

    private static ArrayDataset dataset(NDManager data, float[][] x, float[][] y, int batch) {
        return new ArrayDataset.Builder().setData(data.create(x)).optLabels(data.create(y)).setSampling(batch, false).build();
    }

    /**
     * SGD that keeps a host copy of every gradient it is given, by parameter key (DJL's parameter
     * ids are random, so the order of the calls differs between two models).
     */
    private static final class RecordingSgd extends Optimizer {
        final Optimizer sgd = Nets.sgd(0.1f);
        final Map<String, List<float[]>> grads = new TreeMap<>();
        Model model;

        RecordingSgd() {
            super(new Builder());
        }

        @Override
        public void update(String parameterId, NDArray weight, NDArray grad) {
            String key = model.getBlock().getParameters().stream().filter(p -> p.getValue().getId().equals(parameterId))
                    .findFirst().orElseThrow().getKey();
            grads.computeIfAbsent(key, k -> new ArrayList<>()).add(grad.toFloatArray());
            sgd.update(parameterId, weight, grad);
        }

        private static final class Builder extends OptimizerBuilder<Builder> {
            @Override
            protected Builder self() {
                return this;
            }
        }
    }

    private enum Loop { DJL_TRAINER_FIT, WRAPPED_FIT, WRAPPED_HAND_LOOP }

    /**
     * Three training steps under {@code dynamicLossScale()} (scale 2¹⁶): the optimizer receives the
     * gradients of the unscaled run (relative difference of each gradient ≤ 1e-5), through a
     * {@link DjlTrainer} and {@code EasyTrain.fit}, the wrapped optimizer with {@code guard.loss}
     * and {@code EasyTrain.fit}, and the wrapped optimizer in a hand loop that multiplies the loss
     * by {@code guard.lossScale()} itself.
     */
    @Test
    void the_optimizer_receives_the_unscaled_gradients_under_loss_scaling() throws Exception {
        float[][] x = Nets.data(60, 24, 4, 1f);
        float[][] y = Nets.data(61, 24, 3, 1f);
        for (Loop loop : Loop.values()) {
            RecordingSgd reference = train(loop, x, y);
            RecordingSgd scaled = train(loop, x, y, Transforms.dynamicLossScale());
            List<float[]> ref = reference.grads.values().stream().flatMap(List::stream).toList();
            List<float[]> got = scaled.grads.values().stream().flatMap(List::stream).toList();
            assertEquals(3 * 4, ref.size(), loop + ": 3 steps of 4 parameters");
            assertEquals(ref.size(), got.size(), loop.toString());
            for (int i = 0; i < ref.size(); i++) {
                float[] a = ref.get(i);
                float[] b = got.get(i);
                double diff = 0;
                double norm = 0;
                for (int j = 0; j < a.length; j++) {
                    diff += Math.pow((double) a[j] - b[j], 2);
                    norm += (double) a[j] * a[j];
                }
                assertTrue(norm > 0, loop + ": gradient " + i + " is 0");
                assertTrue(Math.sqrt(diff) <= 1e-5 * Math.sqrt(norm), loop + ": gradient " + i + " differs by "
                        + Math.sqrt(diff / norm) + " (relative)");
            }
        }
    }

    /** Three steps of 8 examples through {@code loop}, guarded by {@code stages}; returns the optimizer. */
    private static RecordingSgd train(Loop loop, float[][] x, float[][] y, GradientTransform... stages) throws Exception {
        RecordingSgd sgd = new RecordingSgd();
        DjlGuard guard = DjlGuard.of(stages);
        try (NDManager data = NDManager.newBaseManager("PyTorch"); Model model = Nets.mlp(4, 8, 3)) {
            sgd.model = model;
            Trainer trainer = switch (loop) {
                case DJL_TRAINER_FIT -> guard.newTrainer(model, Nets.config(sgd));
                case WRAPPED_FIT -> model.newTrainer(Nets.config(guard.loss(Loss.l2Loss()), guard.wrap(model, sgd)));
                case WRAPPED_HAND_LOOP -> model.newTrainer(Nets.config(guard.wrap(model, sgd)));
            };
            try (trainer) {
                trainer.initialize(new Shape(1, 4));
                if (loop == Loop.WRAPPED_HAND_LOOP) {
                    for (int i = 0; i < 24; i += 8) {
                        try (NDManager batch = trainer.getManager().newSubManager(); GradientCollector gc = trainer.newGradientCollector()) {
                            NDList pred = trainer.forward(new NDList(batch.create(Nets.rows(x, i, i + 8))));
                            NDArray loss = trainer.getLoss().evaluate(new NDList(batch.create(Nets.rows(y, i, i + 8))), pred);
                            gc.backward(loss.mul(guard.lossScale())); // the user's one line for loss scaling
                        }
                        trainer.step();
                    }
                } else {
                    EasyTrain.fit(trainer, 1, dataset(data, x, y, 8), null);
                }
                assertEquals(stages.length == 0 ? 1.0 : 65536.0, guard.lossScale(), loop.toString());
                assertEquals(3, guard.stepCount(), loop.toString());
            }
        } finally {
            guard.close();
        }
        return sgd;
    }

    @Test
    void misuse_is_refused_with_what_to_do() {
        try (Model model = Nets.mlp(4, 8, 3); Model other = Nets.mlp(4, 8, 3); DjlGuard guard = DjlGuard.of()) {
            DjlOptimizer wrapped = guard.wrap(model, Nets.sgd(0.1f));
            IllegalArgumentException twice = assertThrows(IllegalArgumentException.class,
                    () -> DjlGuard.of().wrap(model, wrapped));
            assertTrue(twice.getMessage().contains("optimizer"), twice.getMessage());
            assertThrows(IllegalArgumentException.class, () -> guard.wrap(null, Nets.sgd(0.1f)));
            IllegalStateException again = assertThrows(IllegalStateException.class, () -> guard.wrap(other, Nets.sgd(0.1f)));
            assertTrue(again.getMessage().contains("one DjlGuard per model"), again.getMessage());
            assertThrows(IllegalStateException.class, () -> guard.newTrainer(other, Nets.config(Nets.sgd(0.1f))));
            try (Trainer trainer = model.newTrainer(Nets.config(Nets.sgd(0.1f)))) {
                trainer.initialize(new Shape(1, 4));
                Nets.backward(trainer, Nets.data(1, 4, 4, 1f), Nets.data(2, 4, 3, 1f));
                IllegalStateException twiceABatch = assertThrows(IllegalStateException.class, () -> guard.step(trainer));
                assertTrue(twiceABatch.getMessage().contains("trainer.step()"), twiceABatch.getMessage());
            }
            guard.loss(Loss.l2Loss());
            assertThrows(IllegalStateException.class, () -> guard.loss(Loss.l2Loss()));
        }
    }

    /** After an applied step every gradient is 0 (DJL's fused update), after a held one too (the guard's fill). */
    @Test
    void gradients_are_zero_after_applied_and_held_steps() {
        DjlGuard guard = DjlGuard.of(Transforms.accumulate(2));
        try (Model model = Nets.mlp(4, 8, 3);
                Trainer trainer = model.newTrainer(Nets.config(guard.wrap(model, Nets.adam(0.01f))))) {
            trainer.initialize(new Shape(1, 4));
            for (int call = 0; call < 4; call++) {
                Nets.backward(trainer, Nets.data(call, 4, 4, 1f), Nets.data(call + 10, 4, 3, 1f));
                trainer.step();
                for (Map.Entry<String, float[]> g : Nets.grads(trainer).entrySet()) {
                    for (float v : g.getValue()) {
                        assertEquals(0f, v, g.getKey() + " after call " + call);
                    }
                }
            }
            assertEquals(2, guard.stepCount());
        } finally {
            guard.close();
        }
    }
}
