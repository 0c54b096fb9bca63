package io.gradguard.examples.compare;

import java.util.List;

/**
 * One row of a task's table: one backend, guarded or unguarded, over every seed of the comparison,
 * summarised the way a claim about training must be (the spread, not one run).
 *
 * @param task    the task
 * @param backend the backend's id
 * @param guarded whether the guard ran
 * @param runs    one run per seed, in seed order
 */
public record Cell(Task task, String backend, boolean guarded, List<RunResult> runs) {

    public Cell {
        runs = List.copyOf(runs);
    }

    /** Runs that ended with this verdict. */
    public long count(RunResult.Verdict verdict) {
        return runs.stream().filter(r -> r.verdict() == verdict).count();
    }

    /** The final losses of the runs that did not diverge, ascending (empty if all diverged). */
    public double[] finiteFinalLosses() {
        return runs.stream().filter(r -> r.verdict() != RunResult.Verdict.DIVERGED).mapToDouble(RunResult::finalLoss).sorted().toArray();
    }

    /** "4-7": the first and last step (1-based) at which a run's loss became NaN or infinite; "never". */
    public String nonFiniteSteps() {
        int[] at = runs.stream().mapToInt(RunResult::nonFiniteStep).filter(s -> s >= 0).sorted().toArray();
        if (at.length == 0) {
            return "never";
        }
        return at[0] == at[at.length - 1] ? "step " + (at[0] + 1) : "steps " + (at[0] + 1) + "-" + (at[at.length - 1] + 1);
    }

    /** Median final loss of the runs that did not diverge; NaN if all diverged. */
    public double medianFinalLoss() {
        return median(finiteFinalLosses());
    }

    /** Median of the runs' baselines (the mean predictor's loss). */
    public double medianBaseline() {
        return median(runs.stream().mapToDouble(RunResult::baseline).sorted().toArray());
    }

    /** Median number of steps the guard clipped, per run. */
    public double medianClipped() {
        return median(runs.stream().mapToDouble(RunResult::clipped).sorted().toArray());
    }

    /** Steps the guard skipped, over all runs. */
    public long skipped() {
        return runs.stream().mapToLong(RunResult::skipped).sum();
    }

    /** Wall time of all runs. */
    public double seconds() {
        return runs.stream().mapToDouble(RunResult::seconds).sum();
    }

    /** The median of sorted values (the mean of the middle two for an even count); NaN if empty. */
    static double median(double[] sorted) {
        int n = sorted.length;
        if (n == 0) {
            return Double.NaN;
        }
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
