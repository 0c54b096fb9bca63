package io.gradguard.examples.compare;

import java.io.PrintStream;
import java.util.Locale;
import io.gradguard.core.monitor.MonitorEvent;

/** The console side of the report: one table per task and the parity line. */
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

    static void print(Comparison c, PrintStream out) {
        for (Task task : c.options().tasks()) {
            out.println();
            out.println("== " + task.describe() + " | seed " + c.options().seed() + ", " + c.options().steps() + " steps, guard: "
                    + c.options().pipeline());
            out.printf(Locale.ROOT, "%-14s %-9s %11s %12s %9s %9s  %-26s %8s%n", "backend", "mode", "final loss", "loss NaN at",
                    "clipped", "skipped", "first exploding layer", "time");
            for (RunResult r : c.runsOf(task)) {
                int nan = r.nonFiniteStep();
                MonitorEvent ex = r.firstExplosion();
                out.printf(Locale.ROOT, "%-14s %-9s %11s %12s %9s %9s  %-26s %7.1fs%n",
                        Options.allBackends().get(r.backend()).displayName(),
                        r.guarded() ? "guarded" : "unguarded",
                        fmt(r.finalLoss()),
                        nan < 0 ? "never" : "step " + (nan + 1),
                        r.guarded() ? r.clipped() + "/" + r.loss().size() : "-",
                        r.guarded() ? String.valueOf(r.skipped()) : "-",
                        ex == null ? "none" : layer(ex) + " at step " + (ex.step() + 1),
                        r.seconds());
            }
            if (c.options().backends().size() > 1) {
                out.printf(Locale.ROOT, "parity: step-1 gradient norm %s; largest relative difference %.1e%n",
                        firstNorms(c, task), c.parity(task));
            }
        }
    }

    /** The layer as the framework names it (DL4J: its index, shown as "layer 0"). */
    private static String layer(MonitorEvent e) {
        if (e.layer().isEmpty()) {
            return "(global)";
        }
        return e.layer().chars().allMatch(Character::isDigit) ? "layer " + e.layer() : e.layer();
    }

    private static String firstNorms(Comparison c, Task task) {
        StringBuilder sb = new StringBuilder();
        for (RunResult r : c.runsOf(task)) {
            if (!r.guarded()) {
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
