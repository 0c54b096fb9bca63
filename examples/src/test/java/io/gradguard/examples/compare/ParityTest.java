package io.gradguard.examples.compare;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Transforms;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The foundation of the comparison: from the same initial weights and the same batch, the three
 * frameworks compute the same loss and the same gradients (float32 round-off apart), for every
 * task, the LSTM's gate blocks mapped to DL4J's order and PyTorch's layout and TensorFlow's
 * hand-built cell included. The global gradient norm, what the guard clips by, agrees within 1e-5.
 */
class ParityTest {
    private static final List<Backend> BACKENDS = List.of(new TfBackend(), new Dl4jBackend(), new DjlBackend());

    @ParameterizedTest
    @ValueSource(strings = {"mlp", "adding", "lstm"})
    void sameLossAndGradientsAtStepOne(String taskId) {
        Task task = Task.all().stream().filter(t -> t.id().equals(taskId)).findFirst().orElseThrow();
        Weights w = task.initialWeights(42);
        Batch batch = task.batch(42, 0);
        List<Backend.Probe> probes = new ArrayList<>();
        for (Backend b : BACKENDS) {
            try (Backend.Model m = b.build(task, w)) {
                probes.add(m.probe(batch));
            }
        }
        Backend.Probe ref = probes.get(0);
        assertTrue(ref.loss() > 0 && Double.isFinite(ref.loss()), "loss " + ref.loss());
        for (int k = 1; k < probes.size(); k++) {
            Backend.Probe p = probes.get(k);
            String who = BACKENDS.get(k).id() + " vs tf";
            assertEquals(ref.loss(), p.loss(), 1e-5 * ref.loss(), who + " loss");
            assertEquals(globalNorm(ref), globalNorm(p), 1e-5 * globalNorm(ref), who + " global gradient norm");
            assertClose(ref, p, 1e-4, who, w);
        }
    }

    /**
     * The adapters' LSTM layouts, used: one step of adaptive clipping (a unit is one gate of one
     * cell: a column of TensorFlow's and DL4J's {@code [in, 4·hidden]}, a row of DJL's
     * {@code [4·hidden, in]}) leaves the three frameworks with the same weights, seen through the
     * gradients at the next batch; a wrong unit axis in one adapter would clip other numbers. The
     * clipping changed the step (the gradients differ from those after an unclipped step).
     */
    @Test
    void adaptiveClipStepAgreesOnTheLstm() {
        Task task = Task.addingLstm();
        Weights w = task.initialWeights(42);
        List<Backend.Probe> clipped = new ArrayList<>();
        for (Backend b : BACKENDS) {
            clipped.add(probeAfterOneStep(b, task, w, Transforms.adaptiveClip(0.01)));
        }
        for (int k = 1; k < BACKENDS.size(); k++) {
            assertClose(clipped.get(0), clipped.get(k), 1e-4, BACKENDS.get(k).id() + " vs tf after an adaptiveClip step", w);
        }
        Backend.Probe plain = probeAfterOneStep(BACKENDS.get(2), task, w, Transforms.clipByGlobalNorm(1e9));
        double change = relativeDifference(plain.gradients(), clipped.get(2).gradients());
        assertTrue(change > 1e-2, "adaptiveClip changed the step: relative difference " + change);
    }

    private static Backend.Probe probeAfterOneStep(Backend b, Task task, Weights w, GradientTransform stage) {
        try (Backend.Model m = b.build(task, w)) {
            m.train(task.batch(42, 0), GradientPipeline.of(stage));
            return m.probe(task.batch(42, 1));
        }
    }

    /** Every parameter's gradient is non-zero and within {@code tolerance} of the reference (relative L2). */
    private static void assertClose(Backend.Probe ref, Backend.Probe p, double tolerance, String who, Weights w) {
        assertEquals(ref.gradients().size(), p.gradients().size(), who + " gradient count");
        for (int i = 0; i < ref.gradients().size(); i++) {
            String name = w.params().get(i).fullName();
            assertEquals(ref.gradients().get(i).length, p.gradients().get(i).length, who + " size of gradient " + name);
            assertTrue(globalNorm(List.of(ref.gradients().get(i))) > 0, name + " has a zero gradient");
            double d = relativeDifference(List.of(ref.gradients().get(i)), List.of(p.gradients().get(i)));
            assertTrue(d < tolerance, who + " " + name + ": relative difference " + d);
        }
    }

    /** ‖a − b‖ / ‖a‖ over all arrays. */
    private static double relativeDifference(List<float[]> a, List<float[]> b) {
        double diff = 0;
        for (int i = 0; i < a.size(); i++) {
            for (int j = 0; j < a.get(i).length; j++) {
                double d = a.get(i)[j] - (double) b.get(i)[j];
                diff += d * d;
            }
        }
        return Math.sqrt(diff) / globalNorm(a);
    }

    private static double globalNorm(Backend.Probe p) {
        return globalNorm(p.gradients());
    }

    private static double globalNorm(List<float[]> gradients) {
        double sum = 0;
        for (float[] g : gradients) {
            for (float x : g) {
                sum += x * (double) x;
            }
        }
        return Math.sqrt(sum);
    }
}
