package io.gradguard.examples.compare;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The comparison's HTML report: for every task and backend, the raw global gradient norm and the
 * loss over the steps, unguarded and guarded on one chart (log scale), with the events marked
 * (clipped steps as ticks, skipped steps as crosses, the step the unguarded loss became non-finite
 * as a vertical line). One self-contained file, no scripts.
 */
final class HtmlReport {
    private static final int W = 520;
    private static final int H = 200;
    private static final int PAD = 36;
    private static final String UNGUARDED = "#d62728";
    private static final String GUARDED = "#1f77b4";

    private HtmlReport() {
    }

    static Path write(Comparison c) throws IOException {
        StringBuilder h = new StringBuilder();
        h.append("<!doctype html><html><head><meta charset=\"utf-8\"><title>GradGuard framework comparison</title><style>")
                .append("body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}")
                .append("td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}")
                .append(".charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #ddd}")
                .append(".k{display:inline-block;width:12px;height:3px;margin:0 4px 3px 12px}</style></head><body>")
                .append("<h1>GradGuard framework comparison</h1><p>seed ").append(c.options().seed()).append(", ")
                .append(c.options().steps()).append(" steps per run, guard: <code>").append(esc(c.options().pipeline()))
                .append("</code>. <span class=k style=\"background:").append(UNGUARDED).append("\"></span>unguarded")
                .append("<span class=k style=\"background:").append(GUARDED).append("\"></span>guarded")
                .append(" &nbsp; ticks: clipped steps, ×: skipped steps, red line: unguarded loss non-finite.</p>");
        for (Task task : c.options().tasks()) {
            h.append("<h2>").append(esc(task.describe())).append("</h2>");
            table(h, c, task);
            if (c.options().backends().size() > 1) {
                h.append(String.format(Locale.ROOT, "<p>Parity: largest relative difference of the step-1 gradient norms across backends: %.1e</p>",
                        c.parity(task)));
            }
            h.append("<div class=charts>");
            for (Backend b : c.options().backends()) {
                List<RunResult> rs = c.runsOf(task).stream().filter(r -> r.backend().equals(b.id())).toList();
                h.append(chart(b.displayName() + ": gradient norm (log10, raw)", rs, true));
                h.append(chart(b.displayName() + ": loss (log10)", rs, false));
            }
            h.append("</div>");
        }
        h.append("</body></html>\n");
        Path file = c.options().out().resolve("report.html");
        Files.writeString(file, h, StandardCharsets.UTF_8);
        return file;
    }

    private static void table(StringBuilder h, Comparison c, Task task) {
        h.append("<table><tr><th>backend</th><th>mode</th><th>final loss</th><th>loss NaN at</th><th>clipped</th>")
                .append("<th>skipped</th><th>first exploding layer</th><th>time</th></tr>");
        for (RunResult r : c.runsOf(task)) {
            int nan = r.nonFiniteStep();
            Map.Entry<String, Integer> ex = r.firstExplodingLayer();
            h.append("<tr><td>").append(esc(Options.allBackends().get(r.backend()).displayName())).append("</td><td>")
                    .append(r.guarded() ? "guarded" : "unguarded").append("</td><td>").append(Table.fmt(r.finalLoss()))
                    .append("</td><td>").append(nan < 0 ? "never" : "step " + (nan + 1)).append("</td><td>")
                    .append(r.guarded() ? r.clipped() + "/" + r.loss().size() : "-").append("</td><td>")
                    .append(r.guarded() ? r.skipped() : "-").append("</td><td>")
                    .append(ex == null ? "none" : esc(ex.getKey()) + " at step " + (ex.getValue() + 1)).append("</td><td>")
                    .append(String.format(Locale.ROOT, "%.1f s", r.seconds())).append("</td></tr>");
        }
        h.append("</table>");
    }

    private static String chart(String title, List<RunResult> runs, boolean norms) {
        int steps = 1;
        double lo = Double.POSITIVE_INFINITY;
        double hi = Double.NEGATIVE_INFINITY;
        for (RunResult r : runs) {
            List<Double> ys = norms ? r.globalNorm() : r.loss();
            steps = Math.max(steps, ys.size());
            for (double y : ys) {
                if (Double.isFinite(y) && y > 0) {
                    lo = Math.min(lo, Math.log10(y));
                    hi = Math.max(hi, Math.log10(y));
                }
            }
        }
        if (!(lo <= hi)) {
            lo = -1;
            hi = 1;
        }
        hi = Math.min(hi, lo + 40) + 0.1;
        lo -= 0.1;
        StringBuilder s = new StringBuilder();
        s.append("<svg class=chart width=").append(W).append(" height=").append(H).append(" viewBox=\"0 0 ").append(W).append(' ').append(H)
                .append("\"><text x=").append(PAD).append(" y=14 font-size=12>").append(esc(title)).append("</text>");
        s.append(String.format(Locale.ROOT, "<text x=2 y=%d font-size=10>%.1f</text><text x=2 y=%d font-size=10>%.1f</text>", PAD - 4, hi,
                H - PAD + 12, lo));
        s.append(String.format(Locale.ROOT, "<text x=%d y=%d font-size=10>step %d</text>", W - PAD - 30, H - 4, steps));
        s.append(String.format(Locale.ROOT, "<rect x=%d y=%d width=%d height=%d fill=none stroke=#aaa />", PAD, PAD - 12, W - 2 * PAD, H - 2 * PAD + 12));
        for (RunResult r : runs) {
            String color = r.guarded() ? GUARDED : UNGUARDED;
            List<Double> ys = norms ? r.globalNorm() : r.loss();
            StringBuilder pts = new StringBuilder();
            for (int i = 0; i < ys.size(); i++) {
                double y = ys.get(i);
                if (Double.isFinite(y) && y > 0) {
                    pts.append(String.format(Locale.ROOT, "%.1f,%.1f ", x(i, steps), y(Math.min(Math.log10(y), hi), lo, hi)));
                }
            }
            s.append("<polyline fill=none stroke-width=1.2 stroke=\"").append(color).append("\" points=\"").append(pts).append("\"/>");
            for (int i = 0; i < r.events().size(); i++) {
                String e = r.events().get(i);
                double x = x(i, steps);
                if (e.equals("clipped")) {
                    s.append(String.format(Locale.ROOT, "<line x1=%.1f x2=%.1f y1=%d y2=%d stroke=\"%s\" stroke-opacity=0.5 />", x, x, H - PAD, H - PAD + 5, color));
                } else if (e.equals("skipped")) {
                    s.append(String.format(Locale.ROOT, "<text x=%.1f y=%d font-size=11 fill=\"%s\" text-anchor=middle>×</text>", x, PAD - 2, color));
                }
            }
            int nan = r.nonFiniteStep();
            if (!r.guarded() && nan >= 0) {
                double x = x(nan, steps);
                s.append(String.format(Locale.ROOT, "<line x1=%.1f x2=%.1f y1=%d y2=%d stroke=\"%s\" stroke-dasharray=3 /><text x=%.1f y=%d font-size=10 fill=\"%s\">NaN/Inf at %d</text>",
                        x, x, PAD - 12, H - PAD, UNGUARDED, x + 3, PAD + 10, UNGUARDED, nan + 1));
            }
        }
        return s.append("</svg>").toString();
    }

    private static double x(int step, int steps) {
        return PAD + (W - 2.0 * PAD) * step / Math.max(1, steps - 1);
    }

    private static double y(double v, double lo, double hi) {
        return H - PAD - (H - 2.0 * PAD) * (v - lo) / (hi - lo);
    }

    private static String esc(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;");
    }
}
