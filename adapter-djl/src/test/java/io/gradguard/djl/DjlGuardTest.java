package io.gradguard.djl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.TrainingDivergedException;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.listener.DivergenceCheckTrainingListener;
import ai.djl.training.listener.TrainingListener;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.RunRecorder;
import io.gradguard.core.monitor.Sinks;
import io.gradguard.core.monitor.StepRecord;
import java.util.List;
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
                assertEquals(batch, guard.lastResult().orElseThrow().context().batchSize());
                assertEquals(0.0, Nets.maxAbsDiff(Nets.params(fitted), Nets.params(manual)), 1e-6);
            }
        }
    }

    // ---- EasyTrain with DJL's default listeners (issue #21) --------------------------------------

    /** 32 examples in batches of 8; the batches listed get a NaN input. */
    private static ArrayDataset dataset(NDManager data, int... poisonedBatches) {
        float[][] x = Nets.data(80, 32, 4, 1f);
        float[][] y = Nets.data(81, 32, 3, 1f);
        for (int b : poisonedBatches) {
            x[8 * b + 1][2] = Float.NaN;
        }
        return new ArrayDataset.Builder().setData(data.create(x)).optLabels(data.create(y)).setSampling(8, false).build();
    }

    private static DefaultTrainingConfig withListeners(DjlGuard guard, Optimizer optimizer) {
        return Nets.config(optimizer).addTrainingListeners(guard.listeners(TrainingListener.Defaults.logging()));
    }

    @Test
    void easy_train_with_the_default_logging_listeners_skips_a_poisoned_batch_and_keeps_training() throws Exception {
        RunRecorder recorder = Sinks.memory();
        Monitor monitor = Monitor.builder().every(1).sink(recorder).build();
        DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(2), Transforms.clipByGlobalNorm(1.0), monitor);
        try (NDManager data = NDManager.newBaseManager("PyTorch");
                DjlTrainer trainer = guard.newTrainer(Nets.mlp(4, 8, 3), withListeners(guard, Nets.adam(0.01f)))) {
            trainer.initialize(new Shape(1, 4));
            EasyTrain.fit(trainer, 2, dataset(data, 1), null);
            assertEquals(2, guard.skippedCount(), "the poisoned batch, once per epoch");
            assertTrue(trainer.getTrainingResult().getTrainLoss() != null, "DJL still finds its loss among the evaluators");
            assertEquals(6, guard.stepCount());
            for (float[] v : Nets.params(trainer).values()) {
                for (float f : v) {
                    assertTrue(Float.isFinite(f));
                }
            }
        }
        guard.close();
        List<StepRecord> records = recorder.recording().records();
        assertEquals(8, records.size());
        for (StepRecord r : records) {
            // issue #21: the trainer passes the loss EasyTrain computed; a skipped batch's loss is NaN
            assertEquals(!r.skipped(), Double.isFinite(r.loss()) && r.loss() > 0, "loss of record " + r.index() + ": " + r.loss());
        }
    }

    @Test
    void past_max_consecutive_the_user_gets_gradguards_error_not_djls() throws Exception {
        DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(2), Transforms.clipByGlobalNorm(1.0));
        try (NDManager data = NDManager.newBaseManager("PyTorch");
                DjlTrainer trainer = guard.newTrainer(Nets.mlp(4, 8, 3), withListeners(guard, Nets.sgd(LR)))) {
            trainer.initialize(new Shape(1, 4));
            IllegalStateException e = assertThrows(IllegalStateException.class,
                    () -> EasyTrain.fit(trainer, 1, dataset(data, 0, 1, 2, 3), null));
            assertTrue(e.getMessage().contains("more than maxConsecutive=2"), e.getMessage());
            assertEquals(2, guard.skippedCount());
            assertEquals(0, guard.stepCount());
        }
    }

    @Test
    void without_a_non_finite_stage_djls_divergence_check_stays() throws Exception {
        DjlGuard guard = DjlGuard.of(Transforms.clipByGlobalNorm(1.0));
        TrainingListener[] listeners = guard.listeners(TrainingListener.Defaults.logging());
        assertEquals(5, listeners.length); // DJL's 4 and the guard's device listener
        try (NDManager data = NDManager.newBaseManager("PyTorch");
                DjlTrainer trainer = guard.newTrainer(Nets.mlp(4, 8, 3), Nets.config(Nets.sgd(LR)).addTrainingListeners(listeners))) {
            trainer.initialize(new Shape(1, 4));
            assertThrows(TrainingDivergedException.class, () -> EasyTrain.fit(trainer, 1, dataset(data, 1), null));
        }
        DjlGuard skipping = DjlGuard.of(Transforms.skipNonFinite(3));
        TrainingListener[] adapted = skipping.listeners(TrainingListener.Defaults.logging());
        assertEquals(4, adapted.length); // DJL's 4 less the divergence check, and the guard's device listener
        for (TrainingListener l : adapted) {
            assertFalse(l instanceof DivergenceCheckTrainingListener);
        }
    }

    // ---- precision ------------------------------------------------------------------------------

    @Test
    void accumulate_in_double_measures_a_norm_that_overflows_float32() {
        double[] norms = new double[2];
        for (int i = 0; i < 2; i++) {
            try (Trainer trainer = Nets.trainer(4, 8, 3, Nets.sgd(LR))) {
                DjlGuard guard = DjlGuard.of(Transforms.clipByGlobalNorm(1.0));
                if (i == 1) {
                    assertTrue(guard.accumulateInDouble().accumulatesInDouble());
                }
                Nets.backward(trainer, Nets.data(1, 16, 4, 1f), Nets.data(2, 16, 3, 1f));
                guard.step(trainer); // DJL refuses an all-zero gradient on the first step: a clean one first
                Nets.backward(trainer, Nets.data(1, 16, 4, 1f), Nets.data(2, 16, 3, 1f));
                Nets.poison(trainer, 1e25f); // Σg² of the first parameter ~1e50: beyond float32
                norms[i] = guard.step(trainer).metric("clipByGlobalNorm.norm").orElseThrow();
                guard.close();
            }
        }
        assertEquals(Double.POSITIVE_INFINITY, norms[0], "float32 reductions overflow, as PyTorch's");
        assertTrue(Double.isFinite(norms[1]) && norms[1] > 1e24, "float64 reductions: " + norms[1]);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> {
            try (Trainer t = Nets.trainer(4, 8, 3, Nets.sgd(LR))) {
                DjlGuard g = DjlGuard.of(Transforms.clipByGlobalNorm(1.0));
                Nets.backward(t, Nets.data(1, 4, 4, 1f), Nets.data(2, 4, 3, 1f));
                g.step(t);
                g.accumulateInDouble();
            }
        });
        assertTrue(e.getMessage().contains("before the first step"), e.getMessage());
    }

    // ---- misuse ---------------------------------------------------------------------------------

    @Test
    void a_djl_trainer_is_refused_by_guard_step_and_steps_once_through_its_own_step() {
        DjlGuard guard = DjlGuard.of(Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0));
        try (DjlTrainer trainer = guard.newTrainer(Nets.mlp(4, 8, 3), Nets.config(Nets.sgd(LR)))) {
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
            assertTrue(guard.lastResult().orElseThrow().held());
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
        assertTrue(e.getMessage().startsWith("model"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> guard.listeners((TrainingListener) null));
        assertTrue(e.getMessage().startsWith("listeners[0]"), e.getMessage());
    }

    private static void assertZeroGradients(Trainer trainer) {
        for (Map.Entry<String, float[]> e : Nets.grads(trainer).entrySet()) {
            assertArrayEquals(new float[e.getValue().length], e.getValue(), "gradient of " + e.getKey() + " not reset");
        }
        assertFalse(Nets.grads(trainer).isEmpty());
    }
}
