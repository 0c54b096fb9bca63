package io.gradguard.djl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.EasyTrain;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.ArrayDataset;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The guard inside real DJL training (PyTorch engine, CPU): the optimizer gets what the pipeline made. */
class DjlGuardTest {
    private static final float LR = 0.1f;

    @Test
    void sgd_applies_exactly_the_globally_clipped_gradient() {
        try (Trainer trainer = Nets.trainer(4, 8, 3, Nets.sgd(LR))) {
            DjlGuard guard = DjlGuard.of(Transforms.clipByGlobalNorm(0.05));
            Nets.backward(trainer, Nets.data(1, 16, 4, 3f), Nets.data(2, 16, 3, 3f));
            Map<String, float[]> before = Nets.params(trainer);
            Map<String, float[]> g = Nets.grads(trainer);
            double sq = 0;
            for (float[] v : g.values()) {
                for (float x : v) {
                    sq += (double) x * x;
                }
            }
            double norm = Math.sqrt(sq);
            assertTrue(norm > 0.5, "the test needs a gradient far above the threshold, got norm " + norm);

            StepResult<NDArray> r = guard.step(trainer);

            assertTrue(r.applies());
            assertEquals(norm, r.metric("clipByGlobalNorm.norm").orElseThrow(), 1e-5 * norm);
            double coef = 0.05 / norm;
            Map<String, float[]> after = Nets.params(trainer);
            for (String k : before.keySet()) {
                for (int i = 0; i < before.get(k).length; i++) {
                    double expected = before.get(k)[i] - LR * coef * g.get(k)[i];
                    assertEquals(expected, after.get(k)[i], 1e-6, k + "[" + i + "]");
                }
            }
        }
    }

    @Test
    void value_clip_is_symmetric_while_djl_opt_clip_grad_is_one_sided_on_pytorch() {
        float[][] x = Nets.data(3, 16, 4, 5f);
        float[][] y = Nets.data(4, 16, 3, 50f);
        float c = 0.01f;
        try (Trainer guarded = Nets.trainer(4, 8, 3, Nets.sgd(1f));
                Trainer builtin = Nets.trainer(4, 8, 3, Optimizer.sgd().setLearningRateTracker(Tracker.fixed(1f)).optClipGrad(c).build())) {
            Nets.copyParams(guarded, builtin);
            Map<String, float[]> before = Nets.params(guarded);
            Nets.backward(guarded, x, y);
            Nets.backward(builtin, x, y);
            Map<String, float[]> g = Nets.grads(guarded);
            DjlGuard.of(Transforms.clipByValue(c)).step(guarded);
            builtin.step();

            Map<String, float[]> ours = Nets.params(guarded);
            Map<String, float[]> theirs = Nets.params(builtin);
            boolean sawLargeNegative = false;
            boolean builtinLetItThrough = false;
            for (String k : before.keySet()) {
                for (int i = 0; i < before.get(k).length; i++) {
                    double gi = g.get(k)[i];
                    assertEquals(before.get(k)[i] - Math.max(-c, Math.min(c, gi)), ours.get(k)[i], 1e-6, k + "[" + i + "]");
                    if (gi < -2 * c) {
                        sawLargeNegative = true;
                        builtinLetItThrough |= before.get(k)[i] - theirs.get(k)[i] < -1.5 * c;
                    }
                }
            }
            assertTrue(sawLargeNegative, "the test needs gradients below -c");
            assertTrue(builtinLetItThrough, "DJL's optClipGrad clipped negative gradients: update the README (DJL section)");
        }
    }

    @Test
    void accumulating_k_micro_batches_equals_one_full_batch_step_with_sgd() {
        assertAccumulationMatchesFullBatch(Nets.sgd(LR), Nets.sgd(LR));
    }

    @Test
    void accumulating_k_micro_batches_equals_one_full_batch_step_with_adam() {
        assertAccumulationMatchesFullBatch(Nets.adam(0.01f), Nets.adam(0.01f));
    }

    private static void assertAccumulationMatchesFullBatch(Optimizer a, Optimizer b) {
        int k = 4;
        int micro = 8;
        try (Trainer accumulated = Nets.trainer(4, 8, 3, a); Trainer full = Nets.trainer(4, 8, 3, b)) {
            Nets.copyParams(accumulated, full);
            DjlGuard guard = DjlGuard.of(Transforms.accumulate(k), Transforms.clipByGlobalNorm(1.0));
            for (int step = 0; step < 3; step++) {
                float[][] x = Nets.data(10 + step, k * micro, 4, 1f);
                float[][] y = Nets.data(20 + step, k * micro, 3, 1f);
                for (int m = 0; m < k; m++) {
                    Nets.backward(accumulated, Nets.rows(x, m * micro, (m + 1) * micro), Nets.rows(y, m * micro, (m + 1) * micro));
                    StepResult<NDArray> r = guard.step(accumulated, StepContext.ofBatch(micro));
                    assertEquals(m < k - 1, r.held(), "micro-batch " + m);
                    if (r.held()) {
                        assertZeroGradients(accumulated);
                    }
                }
                Nets.backward(full, x, y);
                DjlGuard.of(Transforms.clipByGlobalNorm(1.0)).step(full);
                double diff = Nets.maxAbsDiff(Nets.params(accumulated), Nets.params(full));
                assertTrue(diff < 1e-5, "step " + step + ": max |Δparam| = " + diff);
            }
            assertEquals(3, guard.pipeline().stepCount());
            assertEquals(9, guard.pipeline().heldCount());
        }
    }

    @Test
    void a_nan_step_is_really_skipped_adam_state_does_not_move_and_training_continues() {
        try (Trainer guarded = Nets.trainer(4, 8, 3, Nets.adam(0.01f)); Trainer clean = Nets.trainer(4, 8, 3, Nets.adam(0.01f))) {
            Nets.copyParams(guarded, clean);
            DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
            DjlGuard cleanGuard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
            for (int step = 0; step < 6; step++) {
                float[][] x = Nets.data(30 + step, 16, 4, 1f);
                float[][] y = Nets.data(40 + step, 16, 3, 1f);
                if (step == 3) {
                    Map<String, float[]> before = Nets.params(guarded);
                    Nets.backward(guarded, x, y);
                    Nets.poison(guarded, Float.NaN);
                    StepResult<NDArray> r = guard.step(guarded);
                    assertTrue(r.skipped(), r.toString());
                    assertEquals(0.0, Nets.maxAbsDiff(before, Nets.params(guarded)), "parameters moved on a skipped step");
                    assertZeroGradients(guarded);
                    continue;
                }
                Nets.backward(guarded, x, y);
                assertTrue(guard.step(guarded).applies());
                Nets.backward(clean, x, y);
                cleanGuard.step(clean);
            }
            // Adam's moments and its step count t (bias correction) saw exactly the clean steps
            assertEquals(0.0, Nets.maxAbsDiff(Nets.params(guarded), Nets.params(clean)), 1e-7);
            assertEquals(1, guard.pipeline().skippedCount());
            assertEquals(5, guard.pipeline().stepCount());
        }
    }

    @Test
    void a_checkpoint_taken_mid_window_resumes_exactly() throws Exception {
        int k = 3;
        int calls = 8;
        int cut = 4; // 4 = one full window + one micro-batch of the next
        try (Trainer straight = Nets.trainer(4, 8, 3, Nets.sgd(LR)); Trainer first = Nets.trainer(4, 8, 3, Nets.sgd(LR));
                Trainer resumed = Nets.trainer(4, 8, 3, Nets.sgd(LR))) {
            Nets.copyParams(straight, first);
            GradientPipeline p = GradientPipeline.of(Transforms.accumulate(k), Transforms.clipByGlobalNorm(0.5));
            DjlGuard a = DjlGuard.of(p);
            DjlGuard b = DjlGuard.of(GradientPipeline.of(Transforms.accumulate(k), Transforms.clipByGlobalNorm(0.5)));
            DjlGuard c = DjlGuard.of(GradientPipeline.of(Transforms.accumulate(k), Transforms.clipByGlobalNorm(0.5)));
            ByteArrayOutputStream checkpoint = new ByteArrayOutputStream();
            for (int i = 0; i < calls; i++) {
                float[][] x = Nets.data(50 + i, 8, 4, 1f);
                float[][] y = Nets.data(60 + i, 8, 3, 1f);
                Nets.backward(straight, x, y);
                a.step(straight);
                if (i < cut) {
                    Nets.backward(first, x, y);
                    b.step(first);
                    if (i == cut - 1) {
                        assertEquals(1, b.pipeline().microStep(), "the checkpoint must be mid-window");
                        b.saveState(checkpoint);
                        Nets.copyParams(first, resumed);
                        c.restoreState(new ByteArrayInputStream(checkpoint.toByteArray()), resumed);
                    }
                } else {
                    Nets.backward(resumed, x, y);
                    c.step(resumed);
                }
            }
            assertEquals(a.pipeline().stepCount(), c.pipeline().stepCount());
            assertEquals(a.pipeline().microStep(), c.pipeline().microStep());
            assertEquals(0.0, Nets.maxAbsDiff(Nets.params(straight), Nets.params(resumed)), "resumed run differs");
        }
    }

    @Test
    void easy_train_fit_through_a_guarded_trainer_equals_the_hand_written_loop() throws Exception {
        int batch = 8;
        float[][] x = Nets.data(70, 64, 4, 1f);
        float[][] y = Nets.data(71, 64, 3, 1f);
        try (NDManager data = NDManager.newBaseManager("PyTorch")) {
            ArrayDataset dataset = new ArrayDataset.Builder()
                    .setData(data.create(x))
                    .optLabels(data.create(y))
                    .setSampling(batch, false)
                    .build();
            Model model = Nets.mlp(4, 8, 3);
            DjlGuard guard = DjlGuard.of(Transforms.accumulate(2), Transforms.clipByGlobalNorm(0.5));
            try (Trainer fitted = guard.newTrainer(model, Nets.config(Nets.adam(0.01f)));
                    Trainer manual = Nets.trainer(4, 8, 3, Nets.adam(0.01f))) {
                fitted.initialize(new Shape(1, 4));
                Nets.copyParams(fitted, manual);
                DjlGuard manualGuard = DjlGuard.of(Transforms.accumulate(2), Transforms.clipByGlobalNorm(0.5));

                EasyTrain.fit(fitted, 2, dataset, null);
                for (int epoch = 0; epoch < 2; epoch++) {
                    for (int i = 0; i < 64; i += batch) {
                        Nets.backward(manual, Nets.rows(x, i, i + batch), Nets.rows(y, i, i + batch));
                        manualGuard.step(manual);
                    }
                }
                assertEquals(8, guard.pipeline().stepCount());
                assertEquals(8, guard.pipeline().heldCount());
                assertEquals(batch, ((GuardedTrainer) fitted).lastResult().orElseThrow().context().batchSize());
                assertEquals(0.0, Nets.maxAbsDiff(Nets.params(fitted), Nets.params(manual)), 1e-6);
            }
        }
    }

    @Test
    void easy_train_fit_skips_a_batch_with_a_nan_input_and_keeps_training() throws Exception {
        float[][] x = Nets.data(80, 32, 4, 1f);
        float[][] y = Nets.data(81, 32, 3, 1f);
        x[9][2] = Float.NaN; // poisons the second batch of 8
        try (NDManager data = NDManager.newBaseManager("PyTorch")) {
            ArrayDataset dataset = new ArrayDataset.Builder()
                    .setData(data.create(x)).optLabels(data.create(y)).setSampling(8, false).build();
            DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(2), Transforms.clipByGlobalNorm(1.0));
            try (GuardedTrainer trainer = guard.newTrainer(Nets.mlp(4, 8, 3), Nets.config(Nets.sgd(LR)))) {
                trainer.initialize(new Shape(1, 4));
                EasyTrain.fit(trainer, 1, dataset, null);
                assertEquals(1, guard.pipeline().skippedCount());
                assertEquals(3, guard.pipeline().stepCount());
                for (float[] v : Nets.params(trainer).values()) {
                    for (float f : v) {
                        assertTrue(Float.isFinite(f));
                    }
                }
            }
        }
    }

    // ---- misuse ---------------------------------------------------------------------------------

    @Test
    void one_guard_refuses_a_second_trainer() {
        try (Trainer a = Nets.trainer(4, 8, 3, Nets.sgd(LR)); Trainer b = Nets.trainer(4, 8, 3, Nets.sgd(LR))) {
            DjlGuard guard = DjlGuard.of(Transforms.clipByGlobalNorm(1.0));
            Nets.backward(a, Nets.data(1, 4, 4, 1f), Nets.data(2, 4, 3, 1f));
            guard.step(a);
            Nets.backward(b, Nets.data(1, 4, 4, 1f), Nets.data(2, 4, 3, 1f));
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> guard.step(b));
            assertTrue(e.getMessage().contains("one DjlGuard per trainer"), e.getMessage());
        }
    }

    @Test
    void a_guarded_trainer_is_refused_by_guard_step_and_steps_once_through_its_own_step() {
        DjlGuard guard = DjlGuard.of(Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0));
        try (GuardedTrainer trainer = guard.newTrainer(Nets.mlp(4, 8, 3), Nets.config(Nets.sgd(LR)))) {
            trainer.initialize(new Shape(1, 4));
            Nets.backward(trainer, Nets.data(1, 4, 4, 1f), Nets.data(2, 4, 3, 1f));
            Map<String, float[]> grads = Nets.grads(trainer);
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> guard.step(trainer));
            assertTrue(e.getMessage().contains("this trainer already steps through its guard: call trainer.step()"),
                    e.getMessage());
            e = assertThrows(IllegalStateException.class, () -> guard.step(trainer, StepContext.ofBatch(4)));
            assertTrue(e.getMessage().contains("call trainer.step()"), e.getMessage());
            assertEquals(0, guard.pipeline().heldCount(), "the refused calls ran nothing");
            assertEquals(0, guard.pipeline().stepCount());
            Map<String, float[]> untouched = Nets.grads(trainer);
            for (String k : grads.keySet()) {
                assertArrayEquals(grads.get(k), untouched.get(k), "gradient of " + k);
            }

            trainer.step(); // the first of two micro-batches: held once, not applied
            assertEquals(1, guard.pipeline().heldCount());
            assertEquals(0, guard.pipeline().stepCount());
            assertTrue(trainer.lastResult().orElseThrow().held());
        }
    }

    @Test
    void an_uninitialized_model_is_a_clear_error() {
        Model model = Nets.mlp(4, 8, 3);
        try (Trainer t = model.newTrainer(Nets.config(Nets.sgd(LR)))) {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> DjlGuard.of(Transforms.clipByValue(1)).step(t));
            assertTrue(e.getMessage().contains("trainer.initialize"), e.getMessage());
        }
    }

    @Test
    void null_arguments_are_named() {
        DjlGuard guard = DjlGuard.of(Transforms.clipByValue(1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> guard.step(null));
        assertTrue(e.getMessage().startsWith("trainer"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> DjlGuard.of((GradientPipeline) null));
        assertTrue(e.getMessage().startsWith("pipeline"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> guard.newTrainer(null, null));
        assertTrue(e.getMessage().startsWith("model and config"), e.getMessage());
    }

    private static void assertZeroGradients(Trainer trainer) {
        for (Map.Entry<String, float[]> e : Nets.grads(trainer).entrySet()) {
            assertArrayEquals(new float[e.getValue().length], e.getValue(), "gradient of " + e.getKey() + " not reset");
        }
        assertFalse(Nets.grads(trainer).isEmpty());
    }
}
