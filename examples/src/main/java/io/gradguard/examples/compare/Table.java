package io.gradguard.examples.compare;

import java.io.PrintStream;
import java.util.List;
import java.util.Locale;
import io.gradguard.core.monitor.MonitorEvent;

/**
 * The console side of the report: per task, the baseline, a table (one row per run with one seed,
 * per backend and mode with several: median and range of the final loss, how many runs learned,
 * diverged or neither), the verdict over all runs, and the parity line.
 */
final class Table {
    private Table() {
    }

    /** "diverged: loss NaN at step 6" / "final loss 0.2531". */
    static String outcome(RunResult r) {
        int nan = r.nonFiniteStep();
        if (!r.guarded() && nan >= 0) {
            return "diverged: loss " + fmt(r.loss().get(nan)) + " at step " + (nan + 1);
        }
        if (!r.stoppedBy().isEmpty()) {
            return "stopped: " + r.stoppedBy();
        }
        return "final loss " + fmt(r.finalLoss());
    }

    /** The progress line of a finished cell: the run's outcome, or with several seeds their count per verdict. */
    static String progress(Cell cell) {
        List<RunResult> runs = cell.runs();
        if (runs.size() == 1) {
            RunResult r = runs.get(0);
            return String.format(Locale.ROOT, "%5d steps in %5.1f s, %s", r.loss().size(), r.seconds(), outcome(r));
        }
        return String.format(Locale.ROOT, "%d seeds in %5.1f s: %s, median final loss %s", runs.size(), cell.seconds(),
                verdicts(cell), median(cell));
    }

    static void print(Comparison c, PrintStream out) {
        Options o = c.options();
        List<Long> seeds = o.seedList();
        for (Task task : o.tasks()) {
            List<Cell> cells = c.cells(task);
            out.println();
            out.println("== " + task.describe() + " | " + seedText(seeds) + ", " + o.steps() + " steps, guard: " + o.pipeline());
            out.println(baselineText(cells));
            if (seeds.size() == 1) {
                perRun(c, task, out);
            } else {
                perCell(cells, out);
            }
            for (boolean guarded : new boolean[] {false, true}) {
                out.println(summary(cells, guarded));
            }
            if (o.backends().size() > 1) {
                out.printf(Locale.ROOT, "parity: step-1 gradient norm %s; largest relative difference %.1e%n",
                        firstNorms(c, task), c.parity(task));
            }
        }
    }

    /** "seed 42" / "seeds 42-51 (10)". */
    static String seedText(List<Long> seeds) {
        return seeds.size() == 1 ? "seed " + seeds.get(0) : "seeds " + seeds.get(0) + "-" + seeds.get(seeds.size() - 1) + " (" + seeds.size() + ")";
    }

    /** The baseline and what "learned" means. */
    static String baselineText(List<Cell> cells) {
        double[] b = cells.get(0).runs().stream().mapToDouble(RunResult::baseline).sorted().toArray();
        String loss = b.length == 1 ? fmt(b[0]) : "median " + fmt(Cell.median(b)) + " (" + fmt(b[0]) + "-" + fmt(b[b.length - 1]) + ")";
        return String.format(Locale.ROOT, "baseline (always predicting the mean target): loss %s; learned = final loss below %.2f x baseline",
                loss, RunResult.LEARNED_BELOW);
    }

    private static void perRun(Comparison c, Task task, PrintStream out) {
        out.printf(Locale.ROOT, "%-14s %-9s %11s  %-11s %12s %9s %9s  %-26s %8s%n", "backend", "mode", "final loss", "verdict",
                "loss NaN at", "clipped", "skipped", "first exploding layer", "time");
        for (RunResult r : c.runsOf(task)) {
            int nan = r.nonFiniteStep();
            MonitorEvent ex = r.firstExplosion();
            out.printf(Locale.ROOT, "%-14s %-9s %11s  %-11s %12s %9s %9s  %-26s %7.1fs%n",
                    Options.allBackends().get(r.backend()).displayName(),
                    r.guarded() ? "guarded" : "unguarded",
                    fmt(r.finalLoss()),
                    r.verdict().label(),
                    nan < 0 ? "never" : "step " + (nan + 1),
                    r.guarded() ? r.clipped() + "/" + r.loss().size() : "-",
                    r.guarded() ? String.valueOf(r.skipped()) : "-",
                    ex == null ? "none" : layer(ex) + " at step " + (ex.step() + 1),
                    r.seconds());
        }
    }

    private static void perCell(List<Cell> cells, PrintStream out) {
        out.printf(Locale.ROOT, "%-14s %-9s %11s  %-15s %8s %9s %12s  %-13s %11s %8s %8s%n", "backend", "mode", "median loss", "range",
                "learned", "diverged", "not learned", "loss NaN at", "clipped/run", "skipped", "time");
        for (Cell cell : cells) {
            double[] f = cell.finiteFinalLosses();
            int n = cell.runs().size();
            out.printf(Locale.ROOT, "%-14s %-9s %11s  %-15s %8s %9s %12s  %-13s %11s %8s %7.1fs%n",
                    Options.allBackends().get(cell.backend()).displayName(),
                    cell.guarded() ? "guarded" : "unguarded",
                    median(cell),
                    f.length == 0 ? "-" : fmt(f[0]) + "-" + fmt(f[f.length - 1]),
                    cell.count(RunResult.Verdict.LEARNED) + "/" + n,
                    cell.count(RunResult.Verdict.DIVERGED) + "/" + n,
                    cell.count(RunResult.Verdict.NEITHER) + "/" + n,
                    cell.nonFiniteSteps(),
                    cell.guarded() ? String.format(Locale.ROOT, "%.0f", cell.medianClipped()) : "-",
                    cell.guarded() ? String.valueOf(cell.skipped()) : "-",
                    cell.seconds());
        }
    }

    /**
     * The verdict over every run of one mode, in words; for runs that neither learned nor diverged,
     * where they ended against the baseline.
     */
    static String summary(List<Cell> cells, boolean guarded) {
        List<RunResult> runs = cells.stream().filter(cell -> cell.guarded() == guarded).flatMap(cell -> cell.runs().stream()).toList();
        Cell all = new Cell(cells.get(0).task(), "all", guarded, runs);
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "%s: %d runs, %s", guarded ? "guarded" : "unguarded", runs.size(),
                verdicts(all)));
        double[] stuck = runs.stream().filter(r -> r.verdict() == RunResult.Verdict.NEITHER).mapToDouble(RunResult::finalLoss).sorted().toArray();
        if (stuck.length > 0) {
            sb.append(String.format(Locale.ROOT, "; the %d not learned ended at %s-%s, baseline %s: %s", stuck.length, fmt(stuck[0]),
                    fmt(stuck[stuck.length - 1]), fmt(all.medianBaseline()),
                    guarded ? "the guard stopped the divergence, the model did not learn the task" : "no better than the mean"));
        }
        return sb.toString();
    }

    /** The cell's median final loss, or "-" when every run diverged. */
    static String median(Cell cell) {
        return cell.finiteFinalLosses().length == 0 ? "-" : fmt(cell.medianFinalLoss());
    }

    /** "learned 3, diverged 0, not learned 2". */
    private static String verdicts(Cell cell) {
        return "learned " + cell.count(RunResult.Verdict.LEARNED) + ", diverged " + cell.count(RunResult.Verdict.DIVERGED)
                + ", not learned " + cell.count(RunResult.Verdict.NEITHER);
    }

    /** The layer as the framework names it (DL4J: its index, shown as "layer 0"). */
    private static String layer(MonitorEvent e) {
        if (e.layer().isEmpty()) {
            return "(global)";
        }
        return e.layer().chars().allMatch(Character::isDigit) ? "layer " + e.layer() : e.layer();
    }

    /** The first seed's step-1 norms, per backend. */
    private static String firstNorms(Comparison c, Task task) {
        StringBuilder sb = new StringBuilder();
        for (RunResult r : c.runsOf(task)) {
            if (!r.guarded() && r.seed() == c.options().seed()) {
                sb.append(sb.length() == 0 ? "" : ", ").append(r.backend()).append(' ').append(String.format(Locale.ROOT, "%.6g", r.firstNorm()));
            }
        }
        return sb.toString();
    }

    static String fmt(double v) {
        if (Double.isNaN(v)) {
            return "NaN";
        }
        if (Double.isInfinite(v)) {
            return v > 0 ? "Inf" : "-Inf";
        }
        return Math.abs(v) >= 1e4 || (v != 0 && Math.abs(v) < 1e-3) ? String.format(Locale.ROOT, "%.3e", v) : String.format(Locale.ROOT, "%.4f", v);
    }
}
