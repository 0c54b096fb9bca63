package io.gradguard.examples.compare;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The foundation of the comparison: from the same initial weights and the same batch, the three
 * frameworks compute the same loss and the same gradients (float32 round-off apart).
 */
class ParityTest {

    @ParameterizedTest
    @ValueSource(strings = {"mlp", "adding"})
    void sameLossAndGradientsAtStepOne(String taskId) {
        Task task = Task.all().stream().filter(t -> t.id().equals(taskId)).findFirst().orElseThrow();
        Weights w = task.initialWeights(42);
        Batch batch = task.batch(42, 0);
        List<Backend.Probe> probes = new ArrayList<>();
        List<Backend> backends = List.of(new TfBackend(), new Dl4jBackend(), new DjlBackend());
        for (Backend b : backends) {
            try (Backend.Model m = b.build(task, w)) {
                probes.add(m.probe(batch));
            }
        }
        Backend.Probe ref = probes.get(0);
        assertTrue(ref.loss() > 0 && Double.isFinite(ref.loss()), "loss " + ref.loss());
        for (int k = 1; k < probes.size(); k++) {
            Backend.Probe p = probes.get(k);
            String who = backends.get(k).id() + " vs tf";
            assertEquals(ref.loss(), p.loss(), 1e-5 * ref.loss(), who + " loss");
            assertEquals(ref.gradients().size(), p.gradients().size(), who + " gradient count");
            for (int i = 0; i < ref.gradients().size(); i++) {
                float[] a = ref.gradients().get(i);
                float[] c = p.gradients().get(i);
                assertEquals(a.length, c.length, who + " size of gradient " + i);
                double diff = 0;
                double norm = 0;
                for (int j = 0; j < a.length; j++) {
                    diff += (a[j] - c[j]) * (double) (a[j] - c[j]);
                    norm += a[j] * (double) a[j];
                }
                String name = w.params().get(i).fullName();
                assertTrue(norm > 0, name + " has a zero gradient");
                assertTrue(Math.sqrt(diff / norm) < 1e-4, who + " " + name + ": relative difference " + Math.sqrt(diff / norm));
            }
        }
    }
}
