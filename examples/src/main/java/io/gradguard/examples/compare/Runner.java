package io.gradguard.examples.compare;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.RunRecorder;
import io.gradguard.core.monitor.Sinks;
import java.util.ArrayList;
import java.util.List;

/**
 * Trains one backend on one task for a number of steps from the shared initial weights and
 * batches, unguarded (the pipeline is only a {@link Monitor}) or guarded (the guard's stages, then
 * the monitor), and records what happened.
 */
public final class Runner {
    private Runner() {
    }

    /**
     * @param guard the guard's transforms; empty for an unguarded run
     */
    public static RunResult run(Backend backend, Task task, long seed, int steps, List<GradientTransform> guard) {
        boolean guarded = !guard.isEmpty();
        RunRecorder recorder = Sinks.memory();
        Monitor monitor = Monitor.builder()
                .name(backend.id() + " " + task.id() + (guarded ? " guarded" : " unguarded") + " seed " + seed)
                .warmup(3)                      // the deep MLP blows up within ten steps
                .exploding(10, 20)
                .updateRatios(false)
                .sink(recorder)
                .build();
        List<GradientTransform> stages = new ArrayList<>(guard);
        stages.add(monitor);
        GradientPipeline pipeline = GradientPipeline.of(stages);
        List<Double> loss = new ArrayList<>();
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
                if (!guarded && !Double.isFinite(o.loss())) {
                    stoppedBy = "loss became " + o.loss();
                    break;
                }
            }
        } finally {
            monitor.close();
        }
        return new RunResult(backend.id(), task, seed, task.baseline(seed), guarded, loss, recorder.recording(), stoppedBy, (System.nanoTime() - t0) / 1e9);
    }
}
