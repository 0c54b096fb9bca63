package io.gradguard.examples.compare;

import java.util.List;
import java.util.Locale;

/**
 * The "Across seeds" section of the comparison's {@code report.html}: per task, the table of
 * {@link Table} (median and range of the final loss, learned / diverged / not learned per backend
 * and mode) and a strip chart with one dot per run's final loss against the baseline and the
 * "learned" threshold, so the spread over seeds is seen, not one run.
 */
final class SpreadSection {
    private static final int WIDTH = 980;
    private static final int LABEL = 190;
    private static final int RIGHT = 110;
    private static final int ROW = 24;

    private SpreadSection() {
    }

    /** The section's HTML. */
    static String render(Comparison c) {
        Options o = c.options();
        StringBuilder h = new StringBuilder("<section><h2>Across seeds</h2>\n<p>")
                .append(esc(Table.seedText(o.seedList()))).append(", ").append(o.steps()).append(" steps, guard: ").append(esc(o.pipeline()))
                .append(". One dot per run: its final loss (mean of the last 10% of steps). Grey line: the baseline, the loss of ")
                .append("always predicting the mean target; dashed: the &ldquo;learned&rdquo; threshold, ")
                .append(RunResult.LEARNED_BELOW).append(" &times; baseline. Diverged runs are counted on the right.");
        if (o.seeds() > 1) {
            h.append(" The per-run charts below show the first seed, ").append(o.seed()).append('.');
        }
        h.append("</p>\n");
        for (Task task : o.tasks()) {
            List<Cell> cells = c.cells(task);
            h.append("<h3>").append(esc(task.describe())).append("</h3>\n<p>").append(esc(Table.baselineText(cells))).append("<br>")
                    .append(esc(Table.summary(cells, false))).append("<br>").append(esc(Table.summary(cells, true))).append("</p>\n");
            table(h, cells);
            chart(h, cells);
        }
        return h.append("</section>\n").toString();
    }

    private static void table(StringBuilder h, List<Cell> cells) {
        h.append("<table class=\"summary\"><tr><th>backend</th><th>mode</th><th>median final loss</th><th>range</th>")
                .append("<th>learned</th><th>diverged</th><th>not learned</th><th>clipped steps per run (median)</th><th>skipped</th></tr>\n");
        for (Cell cell : cells) {
            double[] f = cell.finiteFinalLosses();
            int n = cell.runs().size();
            h.append("<tr><td>").append(esc(Options.allBackends().get(cell.backend()).displayName())).append("</td><td>")
                    .append(cell.guarded() ? "guarded" : "unguarded").append("</td><td>").append(Table.median(cell))
                    .append("</td><td>").append(f.length == 0 ? "–" : Table.fmt(f[0]) + " – " + Table.fmt(f[f.length - 1]))
                    .append("</td><td>").append(cell.count(RunResult.Verdict.LEARNED)).append('/').append(n)
                    .append("</td><td>").append(cell.count(RunResult.Verdict.DIVERGED)).append('/').append(n)
                    .append("</td><td>").append(cell.count(RunResult.Verdict.NEITHER)).append('/').append(n)
                    .append("</td><td>").append(cell.guarded() ? String.format(Locale.ROOT, "%.0f", cell.medianClipped()) : "–")
                    .append("</td><td>").append(cell.guarded() ? String.valueOf(cell.skipped()) : "–").append("</td></tr>\n");
        }
        h.append("</table>\n");
    }

    /** Final losses beyond three baselines are drawn at the right edge (their value is in the tooltip). */
    private static void chart(StringBuilder h, List<Cell> cells) {
        double baseline = cells.get(0).medianBaseline();
        double max = RunResult.LEARNED_BELOW * baseline * 2;
        for (Cell cell : cells) {
            for (double f : cell.finiteFinalLosses()) {
                max = Math.max(max, Math.min(f, 3 * baseline));
            }
        }
        int plot = WIDTH - LABEL - RIGHT;
        int height = ROW * cells.size() + 30;
        double scale = plot / max;
        h.append(String.format(Locale.ROOT, "<svg width=\"%d\" height=\"%d\" role=\"img\" aria-label=\"final loss per run\">", WIDTH, height));
        line(h, LABEL + baseline * scale, height - 24, "#888", "", "baseline " + Table.fmt(baseline));
        line(h, LABEL + RunResult.LEARNED_BELOW * baseline * scale, height - 24, "#888", " stroke-dasharray=\"4 3\"", "learned below");
        for (int i = 0; i < cells.size(); i++) {
            Cell cell = cells.get(i);
            int y = ROW * i + ROW / 2;
            h.append(String.format(Locale.ROOT, "<text x=\"4\" y=\"%d\" font-size=\"12\">%s %s</text>", y + 4,
                    esc(Options.allBackends().get(cell.backend()).displayName()), cell.guarded() ? "guarded" : "unguarded"));
            for (RunResult r : cell.runs()) {
                if (r.verdict() != RunResult.Verdict.DIVERGED) {
                    double x = LABEL + Math.min(r.finalLoss(), max) * scale;
                    String fill = r.verdict() == RunResult.Verdict.LEARNED ? "#2ca02c" : "#ff7f0e";
                    h.append(String.format(Locale.ROOT, "<circle cx=\"%.1f\" cy=\"%d\" r=\"4\" fill=\"%s\" fill-opacity=\"0.7\"><title>seed %d: %s (%s)</title></circle>",
                            x, y, fill, r.seed(), Table.fmt(r.finalLoss()), r.verdict().label()));
                }
            }
            long diverged = cell.count(RunResult.Verdict.DIVERGED);
            h.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"%s\">%d/%d diverged</text>",
                    WIDTH - RIGHT + 8, y + 4, diverged > 0 ? "#d62728" : "#888", diverged, cell.runs().size()));
        }
        int axis = height - 20;
        h.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>", LABEL, axis, LABEL + plot, axis));
        for (int k = 0; k <= 4; k++) {
            double v = max * k / 4;
            h.append(String.format(Locale.ROOT, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>",
                    LABEL + v * scale, axis + 14, Table.fmt(v)));
        }
        h.append("</svg>\n");
    }

    private static void line(StringBuilder h, double x, int bottom, String color, String dash, String title) {
        h.append(String.format(Locale.ROOT, "<line x1=\"%.1f\" y1=\"0\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\"%s><title>%s</title></line>",
                x, x, bottom, color, dash, esc(title)));
    }

    private static String esc(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;");
    }
}
