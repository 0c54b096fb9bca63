package io.gradguard.examples.compare;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Trains one backend on one task for a number of steps, unguarded (the pipeline only measures)
 * or guarded, from the shared initial weights and batches, and records what happened.
 */
public final class Runner {
    private Runner() {
    }

    /**
     * @param guard the guard's transforms; empty for an unguarded run (the pipeline then only measures)
     */
    public static RunResult run(Backend backend, Task task, long seed, int steps, List<GradientTransform> guard) {
        boolean guarded = !guard.isEmpty();
        List<GradientTransform> stages = new ArrayList<>();
        stages.add(new LayerNorms());
        stages.addAll(guard);
        GradientPipeline pipeline = GradientPipeline.of(stages);
        List<Double> loss = new ArrayList<>();
        List<Double> global = new ArrayList<>();
        Map<String, List<Double>> layers = RunResult.newLayerMap();
        List<String> events = new ArrayList<>();
        int clipped = 0;
        String stoppedBy = "";
        long t0 = System.nanoTime();
        try (Backend.Model model = backend.build(task, task.initialWeights(seed))) {
            for (int s = 0; s < steps; s++) {
                Backend.Outcome o;
                try {
                    o = model.train(task.batch(seed, s), pipeline);
                } catch (IllegalStateException e) {
                    stoppedBy = "guard gave up: " + e.getMessage();
                    break;
                }
                loss.add(o.loss());
                String event = "";
                for (Map.Entry<String, Double> m : o.metrics().entrySet()) {
                    String k = m.getKey();
                    if (k.equals(LayerNorms.NAME + ".global")) {
                        global.add(m.getValue());
                    } else if (k.startsWith(LayerNorms.NAME + ".")) {
                        layers.computeIfAbsent(k.substring(LayerNorms.NAME.length() + 1), x -> new ArrayList<>()).add(m.getValue());
                    }
                }
                if (o.result().skipped()) {
                    event = "skipped";
                } else if (clipped(o.metrics())) {
                    event = "clipped";
                    clipped++;
                }
                if (!Double.isFinite(o.loss())) {
                    event = event.isEmpty() ? "non-finite loss" : event;
                    if (!guarded) {
                        events.add(event);
                        stoppedBy = "loss became " + o.loss();
                        break;
                    }
                }
                events.add(event);
            }
            return new RunResult(backend.id(), task, guarded, loss, global, layers, events, clipped,
                    (int) pipeline.skippedCount(), stoppedBy, (System.nanoTime() - t0) / 1e9);
        }
    }

    /** Whether a clip stage scaled some gradient down (a recorded coefficient below 1). */
    private static boolean clipped(Map<String, Double> metrics) {
        for (Map.Entry<String, Double> m : metrics.entrySet()) {
            if (m.getKey().contains(".coefficient") && m.getValue() < 1) {
                return true;
            }
        }
        return false;
    }
}
