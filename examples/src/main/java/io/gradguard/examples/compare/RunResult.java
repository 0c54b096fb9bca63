package io.gradguard.examples.compare;

import io.gradguard.core.monitor.MonitorEvent;
import io.gradguard.core.monitor.RunRecording;
import io.gradguard.core.monitor.StepRecord;
import java.util.List;

/**
 * What one training run did: the batch loss of every step, the monitor's recording (one record per
 * step: norms before and after the guard, clipped, skipped, events), and its summary.
 *
 * @param backend   the backend's id
 * @param task      the task
 * @param seed      the seed of the initial weights and the data
 * @param baseline  the task's {@link Task#baseline baseline} at this seed, the mean predictor's loss
 * @param guarded   whether the guard ran (else the pipeline only monitored)
 * @param loss      the batch loss of every step run
 * @param recording the monitor's records of the run
 * @param stoppedBy why the run ended early ("loss became NaN", "guard gave up: ..."), or ""
 * @param seconds   wall time of the training loop
 */
public record RunResult(String backend, Task task, long seed, double baseline, boolean guarded, List<Double> loss, RunRecording recording, String stoppedBy,
        double seconds) {

    /**
     * A run learned when its final loss is below {@code LEARNED_BELOW × baseline}: at least 25% better
     * than predicting the mean target, more than the batch-to-batch noise of a 10% tail average.
     */
    public static final double LEARNED_BELOW = 0.75;

    /** How a run ended. */
    public enum Verdict {
        /** Final loss below {@link #LEARNED_BELOW} times the baseline. */
        LEARNED,
        /** The loss became NaN or infinite, or the guard gave up. */
        DIVERGED,
        /** Finite, but not clearly better than predicting the mean: trained without learning the task. */
        NEITHER;

        /** "learned", "diverged", "not learned". */
        public String label() {
            return this == NEITHER ? "not learned" : name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** Learned, diverged, or neither (see {@link Verdict}). */
    public Verdict verdict() {
        if (!stoppedBy.isEmpty() || !Double.isFinite(finalLoss())) {
            return Verdict.DIVERGED;
        }
        return finalLoss() < LEARNED_BELOW * baseline ? Verdict.LEARNED : Verdict.NEITHER;
    }

    /** The first step (0-based) whose loss is NaN or infinite, or -1. */
    public int nonFiniteStep() {
        for (int i = 0; i < loss.size(); i++) {
            if (!Double.isFinite(loss.get(i))) {
                return i;
            }
        }
        return -1;
    }

    /** Mean loss of the last 10% of steps (at least 1): NaN or Inf if training diverged. */
    public double finalLoss() {
        int n = Math.max(1, loss.size() / 10);
        double s = 0;
        for (int i = loss.size() - n; i < loss.size(); i++) {
            s += loss.get(i);
        }
        return loss.isEmpty() ? Double.NaN : s / n;
    }

    /** The global gradient norm of the first step, before any clipping, as GradGuard's monitor measured it. */
    public double firstNorm() {
        return recording.records().isEmpty() ? Double.NaN : recording.records().get(0).normBefore();
    }

    /** Steps whose gradient the guard scaled down. */
    public long clipped() {
        return recording.records().stream().filter(StepRecord::clipped).count();
    }

    /** Steps the guard skipped. */
    public long skipped() {
        return recording.records().stream().filter(StepRecord::skipped).count();
    }

    /**
     * The monitor's first exploding-gradient event (it names the layer), or else its first
     * non-finite event; {@code null} if the gradients stayed calm.
     */
    public MonitorEvent firstExplosion() {
        List<MonitorEvent> events = recording.events();
        return events.stream().filter(e -> e.kind() == MonitorEvent.Kind.EXPLODING).findFirst()
                .orElse(events.stream().filter(e -> e.kind() == MonitorEvent.Kind.NON_FINITE).findFirst().orElse(null));
    }
}
