package io.gradguard.djl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Model;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.training.Trainer;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * A small CNN (convolution, batch normalization, dense) trained through {@link DjlGuard} with
 * global-norm clipping, adaptive clipping and accumulation over two micro-batches.
 */
class DjlCnnTest {

    private static GradientPipeline clips() {
        return GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), Transforms.adaptiveClip(0.05));
    }

    private static GradientPipeline accumulated() {
        return GradientPipeline.of(Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0), Transforms.adaptiveClip(0.05));
    }

    /** Batch norm in training mode (batch statistics): the task is learnt on every seed tried (3). */
    @Test
    void trains_guarded_with_clipping_adaptive_clipping_and_accumulation() {
        for (int seed = 1; seed <= 3; seed++) {
            try (NDManager data = NDManager.newBaseManager("PyTorch");
                    Model model = DjlCnn.model(seed);
                    Trainer trainer = DjlCnn.trainer(model, Nets.adam(0.01f));
                    DjlGuard guard = DjlGuard.of(accumulated())) {
                NDList eval = DjlCnn.batch(data, 96, 999);
                double before = DjlCnn.accuracy(trainer, eval);
                for (int s = 0; s < 120; s++) {
                    NDList b = DjlCnn.batch(data, 8, seed * 1000L + s);
                    DjlCnn.backward(trainer, b, 0, 8, true);
                    b.close();
                    StepResult<?> r = guard.step(trainer);
                    assertEquals(s % 2 == 1, r.applies(), "micro-batch " + s);
                }
                assertEquals(60, guard.stepCount());
                assertTrue(guard.clippedCount() > 0, "the clips acted on some step (seed " + seed + ")");
                double after = DjlCnn.accuracy(trainer, eval);
                assertTrue(after > 0.9, "seed " + seed + ": accuracy " + before + " -> " + after);
            }
        }
    }

    /**
     * Accumulating two micro-batches of 4 equals one batch of 8 when the batch norm normalizes by its
     * running statistics (inference-mode forward, {@code block.forward(..., training=false)}: PyTorch's
     * batch norm is then a per-example affine map, and gradients still reach gamma, beta and the
     * convolution). In training mode each micro-batch is normalized by its own statistics and the
     * runs part (checked too): that is the batch norm, not the guard.
     */
    @Test
    void accumulation_equals_the_full_batch_with_batch_norm_on_running_statistics() {
        assertTrue(Nets.maxAbsDiff(train(clips(), 8, false), train(accumulated(), 4, false)) < 1e-5, "inference-mode batch norm: equal");
        assertTrue(Nets.maxAbsDiff(train(clips(), 8, true), train(accumulated(), 4, true)) > 1e-4, "training-mode batch norm parts the runs");
    }

    /** 5 steps of 8 examples with SGD, in micro-batches of {@code micro} examples. */
    private static Map<String, float[]> train(GradientPipeline pipeline, int micro, boolean training) {
        try (NDManager data = NDManager.newBaseManager("PyTorch");
                Model model = DjlCnn.model(5);
                Trainer trainer = DjlCnn.trainer(model, Nets.sgd(0.1f));
                DjlGuard guard = DjlGuard.of(pipeline)) {
            Map<String, float[]> initial = Nets.params(trainer);
            for (int s = 0; s < 5; s++) {
                NDList b = DjlCnn.batch(data, 8, 50 + s);
                for (int from = 0; from < 8; from += micro) {
                    DjlCnn.backward(trainer, b, from, from + micro, training);
                    guard.step(trainer);
                }
            }
            assertEquals(5, guard.stepCount());
            Map<String, float[]> out = Nets.params(trainer);
            assertTrue(Nets.maxAbsDiff(initial, out) > 1e-3, "training moved the parameters");
            return out;
        }
    }
}
