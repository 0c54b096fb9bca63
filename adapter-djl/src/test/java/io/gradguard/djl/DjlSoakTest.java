package io.gradguard.djl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.Trainer;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * 10,000 real training steps of a tiny model with 1% poisoned gradients: every poisoned step is
 * skipped, parameters stay finite, and native memory does not grow (the number of live NDArrays is
 * exactly flat; resident memory outside the Java heap is reported).
 */
class DjlSoakTest {
    private static final Logger LOG = LoggerFactory.getLogger(DjlSoakTest.class);
    private static final int STEPS = 10_000;
    private static final int WARM_UP = 1_000;

    @Test
    void ten_thousand_steps_with_one_percent_non_finite_gradients() throws IOException {
        Random random = new Random(7);
        DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(10), Transforms.clipByGlobalNorm(1.0));
        try (Trainer trainer = Nets.trainer(4, 4, 2, Nets.adam(0.001f))) {
            int injected = 0;
            int arraysAtWarmUp = -1;
            long early = Long.MAX_VALUE;
            long late = Long.MAX_VALUE;
            float[][] x = new float[4][4];
            float[][] y = new float[4][2];
            long start = System.nanoTime();
            for (int step = 0; step < STEPS; step++) {
                for (int i = 0; i < 4; i++) {
                    for (int j = 0; j < 4; j++) {
                        x[i][j] = (float) random.nextGaussian();
                    }
                    y[i][0] = x[i][0] - x[i][1];
                    y[i][1] = 0.5f * x[i][2];
                }
                Nets.backward(trainer, x, y);
                boolean poison = step > 0 && random.nextInt(100) == 0;
                if (poison) {
                    Nets.poison(trainer, injected % 2 == 0 ? Float.NaN : Float.POSITIVE_INFINITY);
                    injected++;
                }
                StepResult<NDArray> r = guard.step(trainer);
                assertEquals(poison, r.skipped(), "step " + step);
                if (step == WARM_UP) {
                    arraysAtWarmUp = liveArrays(trainer);
                }
                if (step % 250 == 0 && step >= WARM_UP && step <= 3 * WARM_UP) {
                    early = Math.min(early, rssKiB());
                } else if (step % 250 == 0 && step >= STEPS - 2 * WARM_UP) {
                    late = Math.min(late, rssKiB());
                }
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            int arraysAtEnd = liveArrays(trainer);
            LOG.info("soak: {} steps in {} s, {} injected, {} skipped; live NDArrays in the process {} at step {} -> {} at the end; "
                    + "resident memory outside the Java heap (min over steps 1000-3000 / 8000-10000) {} KiB -> {} KiB ({} KiB)",
                    STEPS, String.format("%.1f", seconds), injected, guard.pipeline().skippedCount(), arraysAtWarmUp, WARM_UP,
                    arraysAtEnd, early, late, late - early);

            assertTrue(injected >= 50, "the seed should poison about 1% of the steps, got " + injected);
            assertEquals(injected, guard.pipeline().skippedCount());
            assertEquals(STEPS - injected, guard.pipeline().stepCount());
            for (float[] v : Nets.params(trainer).values()) {
                for (float f : v) {
                    assertTrue(Float.isFinite(f), "a parameter became non-finite");
                }
            }
            assertEquals(arraysAtWarmUp, arraysAtEnd, "live NDArrays grew");
            // RSS is noisy (heap sizing, malloc arenas): the exact check is the array count above; this catches gross leaks
            assertTrue(late - early < 64 * 1024, "resident memory grew by " + (late - early) + " KiB");
        }
    }

    /**
     * Every NDArray alive in the process: DJL's system manager holds all base managers (and so the
     * model's, the trainer's and the guard's) and every array detached from its manager.
     */
    private static int liveArrays(Trainer trainer) {
        NDManager m = trainer.getManager();
        while (m.getParentManager() != null) {
            m = m.getParentManager();
        }
        return m.getManagedArrays().size();
    }

    /** Resident memory outside the Java heap: RSS minus the committed heap, after a full GC. */
    private static long rssKiB() throws IOException {
        System.gc();
        long heapKiB = Runtime.getRuntime().totalMemory() / 1024;
        return vmRssKiB() - heapKiB;
    }

    private static long vmRssKiB() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        throw new IllegalStateException("no VmRSS in /proc/self/status");
    }
}
