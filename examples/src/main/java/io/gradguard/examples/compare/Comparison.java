package io.gradguard.examples.compare;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Runs every selected task on every selected backend, unguarded then guarded, for every seed,
 * printing a line per table cell, and tells the story: a table per task, cross-framework parity,
 * where the report is.
 *
 * @param options what to run
 * @param runs    the results, in run order (filled by {@link #run})
 */
public record Comparison(Options options, List<RunResult> runs) {

    /** Runs everything, printing progress to {@code out}. */
    public static Comparison run(Options options, PrintStream out) {
        List<RunResult> runs = new ArrayList<>();
        int total = options.tasks().size() * options.backends().size() * 2;
        int n = 0;
        for (Task task : options.tasks()) {
            for (Backend backend : options.backends()) {
                for (boolean guarded : new boolean[] {false, true}) {
                    n++;
                    List<RunResult> cell = new ArrayList<>();
                    for (long seed : options.seedList()) {
                        cell.add(Runner.run(backend, task, seed, options.steps(),
                                guarded ? Options.guard(options.pipeline(), task) : List.of()));
                    }
                    // one line per finished cell (printed whole: a framework's first load logs natively)
                    out.printf(Locale.ROOT, "[%2d/%d] %-14s %-7s %-9s %s%n", n, total, backend.displayName(), task.id(),
                            guarded ? "guarded" : "unguarded", Table.progress(new Cell(task, backend.id(), guarded, cell)));
                    runs.addAll(cell);
                }
            }
        }
        return new Comparison(options, runs);
    }

    /** The runs of one task, in run order. */
    public List<RunResult> runsOf(Task task) {
        return runs.stream().filter(r -> r.task().id().equals(task.id())).toList();
    }

    /** The rows of a task's table: per backend, unguarded then guarded, each over every seed. */
    public List<Cell> cells(Task task) {
        List<Cell> out = new ArrayList<>();
        for (Backend b : options.backends()) {
            for (boolean guarded : new boolean[] {false, true}) {
                out.add(new Cell(task, b.id(), guarded,
                        runsOf(task).stream().filter(r -> r.backend().equals(b.id()) && r.guarded() == guarded).toList()));
            }
        }
        return out;
    }

    /**
     * The largest relative difference between the backends' step-1 gradient norms (as GradGuard
     * measured them) for a task: {@code max |a - b| / max(|a|, |b|)} over pairs of runs with the
     * same seed; 0 with one backend.
     */
    public double parity(Task task) {
        double worst = 0;
        List<RunResult> rs = runsOf(task);
        for (RunResult a : rs) {
            for (RunResult b : rs) {
                if (a.seed() == b.seed()) {
                    double x = a.firstNorm();
                    double y = b.firstNorm();
                    worst = Math.max(worst, Math.abs(x - y) / Math.max(Math.abs(x), Math.abs(y)));
                }
            }
        }
        return worst;
    }
}
