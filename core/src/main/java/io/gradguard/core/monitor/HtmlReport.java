package io.gradguard.core.monitor;

import io.gradguard.core.doctor.DepthProfile;
import io.gradguard.core.doctor.Diagnosis;
import io.gradguard.core.doctor.Doctor;
import io.gradguard.core.doctor.Finding;
import io.gradguard.core.doctor.Remedy;
import io.gradguard.core.internal.Checks;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * A self-contained HTML report of one or more runs: one file with inline SVG charts and CSS, no
 * script, font or image from the network, so it opens anywhere (and in a CI artifact viewer).
 *
 * <p>For several runs (a framework comparison) it starts with an overlay of every run's gradient
 * norm and loss and a summary table; then, per run: the global norm before and after clipping
 * over the steps with the clip threshold, skipped steps and detector events marked on the timeline
 * (hover a marker for its message); the loss; a heat map of per-layer gradient norms (log colour
 * scale); the update-to-parameter ratio per layer where the adapter reported it; the event list;
 * the {@link Doctor}'s diagnosis (what went wrong first, the depth profile, ranked remedies with
 * their evidence, and the suggested guard as Java source).
 * The data behind the charts is embedded as JSON in {@code <script type="application/json"
 * id="gradguard-data">} for reuse.
 *
 * <pre>{@code
 * RunRecorder djl = Sinks.memory(), dl4j = Sinks.memory();
 * ... train each with Monitor.builder().name("djl").sink(djl).build() ...
 * HtmlReport.write(Path.of("report.html"), List.of(djl.recording(), dl4j.recording()));
 * }</pre>
 */
public final class HtmlReport {
    static final String[] PALETTE = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
        "#7f7f7f", "#bcbd22", "#17becf"};
    private static final int WIDTH = 980;
    private static final int MAX_CELLS_WITH_TITLES = 6000;
    private static final int MAX_MARKERS = 400;

    private HtmlReport() {
    }

    /**
     * Writes the report of the given runs to {@code path} (parent directories are created).
     *
     * @throws IllegalArgumentException if runs is empty or null, or the file cannot be written
     */
    public static void write(Path path, List<RunRecording> runs) {
        Checks.notNull("path", path);
        String html = render(runs);
        try {
            Path parent = path.toAbsolutePath().getParent();
            if (parent != null) {
                Files.createDirectories(parent);
            }
            Files.writeString(path, html, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalArgumentException("path must be a writable file, got " + path + ": " + e, e);
        }
    }

    /**
     * The report as an HTML string.
     *
     * @throws IllegalArgumentException if runs is empty or null
     */
    public static String render(List<RunRecording> runs) {
        Checks.require(runs != null && !runs.isEmpty(), "runs", "hold at least one run", runs);
        StringBuilder h = new StringBuilder(64 * 1024);
        h.append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
                .append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
                .append("<title>GradGuard gradient report</title>\n<style>").append(CSS).append("</style></head>\n<body>\n")
                .append("<h1>GradGuard gradient report</h1>\n<p class=\"meta\">")
                .append(runs.size()).append(runs.size() == 1 ? " run" : " runs").append(", generated ")
                .append(Instant.now().truncatedTo(ChronoUnit.SECONDS)).append("</p>\n");
        summaryTable(h, runs);
        if (runs.size() > 1) {
            overview(h, runs);
        }
        for (int i = 0; i < runs.size(); i++) {
            runSection(h, runs.get(i), i);
        }
        h.append("<script type=\"application/json\" id=\"gradguard-data\">").append(data(runs)).append("</script>\n");
        return h.append("</body></html>\n").toString();
    }

    // ---- sections ----------------------------------------------------------------------------------

    private static void summaryTable(StringBuilder h, List<RunRecording> runs) {
        h.append("<table class=\"summary\"><tr><th>run</th><th>steps</th><th>skipped</th><th>clipped</th>")
                .append("<th>median norm</th><th>max norm</th><th>final loss</th><th>events</th></tr>\n");
        for (int i = 0; i < runs.size(); i++) {
            RunRecording run = runs.get(i);
            long applied = 0;
            long skipped = 0;
            long clipped = 0;
            double lastLoss = Double.NaN;
            List<Double> norms = new ArrayList<>();
            for (StepRecord r : run.records()) {
                if (r.skipped()) {
                    skipped++;
                    continue;
                }
                applied++;
                clipped += r.clipped() ? 1 : 0;
                if (Double.isFinite(r.normBefore())) {
                    norms.add(r.normBefore());
                }
                if (r.hasLoss()) {
                    lastLoss = r.loss();
                }
            }
            norms.sort(null);
            Map<MonitorEvent.Kind, Integer> kinds = new EnumMap<>(MonitorEvent.Kind.class);
            for (MonitorEvent e : run.events()) {
                kinds.merge(e.kind(), 1, Integer::sum);
            }
            StringBuilder ev = new StringBuilder();
            kinds.forEach((k, n) -> ev.append(ev.length() == 0 ? "" : ", ").append(n).append(' ').append(k.name().toLowerCase(Locale.ROOT)));
            h.append("<tr><td><a href=\"#run-").append(i).append("\"><span class=\"swatch\" style=\"background:")
                    .append(color(i)).append("\"></span>").append(esc(run.name())).append("</a></td><td>").append(applied)
                    .append("</td><td>").append(skipped).append("</td><td>")
                    .append(applied == 0 ? "–" : String.format(Locale.ROOT, "%.0f%%", 100.0 * clipped / applied)).append("</td><td>")
                    .append(norms.isEmpty() ? "–" : Detectors.sci(norms.get(norms.size() / 2))).append("</td><td>")
                    .append(norms.isEmpty() ? "–" : Detectors.sci(norms.get(norms.size() - 1))).append("</td><td>")
                    .append(Double.isNaN(lastLoss) ? "–" : String.format(Locale.ROOT, "%.4g", lastLoss)).append("</td><td>")
                    .append(ev.length() == 0 ? "none" : esc(ev.toString())).append("</td></tr>\n");
        }
        h.append("</table>\n");
    }

    /** How many times the largest positive value must exceed the smallest for a log axis. */
    static final double LOG_AXIS_RANGE = 100;

    /**
     * Whether a chart of {@code value} needs a log axis: its positive finite values span more than
     * {@link #LOG_AXIS_RANGE}x (a diverging loss of 4e36 next to a healthy 0.1 flattens a linear axis).
     */
    static boolean wideRange(List<StepRecord> records, java.util.function.ToDoubleFunction<StepRecord> value) {
        double lo = Double.POSITIVE_INFINITY;
        double hi = 0;
        for (StepRecord r : records) {
            double v = value.applyAsDouble(r);
            if (!r.skipped() && Double.isFinite(v) && v > 0) {
                lo = Math.min(lo, v);
                hi = Math.max(hi, v);
            }
        }
        return hi > 0 && hi / lo > LOG_AXIS_RANGE;
    }

    private static void overview(StringBuilder h, List<RunRecording> runs) {
        h.append("<section><h2>All runs</h2>\n");
        Chart norms = new Chart(WIDTH, 300, 70, true, "gradient L2 norm before clipping");
        List<StepRecord> all = new java.util.ArrayList<>();
        runs.forEach(run -> all.addAll(run.records()));
        Chart losses = new Chart(WIDTH, 220, 70, wideRange(all, StepRecord::loss), "loss");
        boolean anyLoss = false;
        for (RunRecording run : runs) {
            for (StepRecord r : run.records()) {
                if (!r.skipped()) {
                    norms.include(r.step(), r.normBefore());
                    if (r.hasLoss()) {
                        losses.include(r.step(), r.loss());
                        anyLoss = true;
                    }
                }
            }
        }
        norms.axes();
        losses.axes();
        for (int i = 0; i < runs.size(); i++) {
            Series s = Series.of(runs.get(i), r -> r.normBefore());
            norms.line(s.xs, s.ys, color(i), 1.3, null, runs.get(i).name());
            Series l = Series.of(runs.get(i), StepRecord::loss);
            losses.line(l.xs, l.ys, color(i), 1.3, null, runs.get(i).name());
        }
        h.append(norms.svg());
        legend(h, runs);
        if (anyLoss) {
            h.append(losses.svg());
            legend(h, runs);
        }
        h.append("</section>\n");
    }

    private static void legend(StringBuilder h, List<RunRecording> runs) {
        h.append("<p class=\"legend\">");
        for (int i = 0; i < runs.size(); i++) {
            h.append("<span><span class=\"swatch\" style=\"background:").append(color(i)).append("\"></span>")
                    .append(esc(runs.get(i).name())).append("</span> ");
        }
        h.append("</p>\n");
    }

    private static void runSection(StringBuilder h, RunRecording run, int index) {
        h.append("<section id=\"run-").append(index).append("\"><h2>Run: ").append(esc(run.name())).append("</h2>\n");
        if (run.records().isEmpty()) {
            h.append("<p>No steps recorded.</p></section>\n");
            return;
        }
        List<String> layers = layerNames(run);
        int left = Math.max(70, Math.min(230, 12 + 7 * longest(layers)));

        Chart norm = new Chart(WIDTH, 320, left, true, "global gradient L2 norm");
        boolean anyThreshold = false;
        for (StepRecord r : run.records()) {
            norm.include(r.step(), Double.NaN);
            if (!r.skipped()) {
                norm.include(r.step(), r.normBefore());
                norm.include(r.step(), r.normAfter());
                norm.include(r.step(), r.clipThreshold());
                anyThreshold |= Double.isFinite(r.clipThreshold());
            }
        }
        norm.axes();
        Series before = Series.of(run, StepRecord::normBefore);
        Series after = Series.of(run, StepRecord::normAfter);
        Series threshold = Series.of(run, StepRecord::clipThreshold);
        norm.line(before.xs, before.ys, "#1f77b4", 1.4, null, "before clipping");
        norm.line(after.xs, after.ys, "#2ca02c", 1.2, null, "after clipping");
        if (anyThreshold) {
            norm.line(threshold.xs, threshold.ys, "#444", 1.2, "6 4", "clip threshold");
        }
        events(norm, run);
        h.append(norm.svg());
        h.append("<p class=\"legend\"><span><span class=\"swatch\" style=\"background:#1f77b4\"></span>before clipping</span> ")
                .append("<span><span class=\"swatch\" style=\"background:#2ca02c\"></span>after clipping</span> ")
                .append(anyThreshold ? "<span><span class=\"swatch dashed\"></span>clip threshold</span> " : "")
                .append(eventLegend()).append("</p>\n");

        Series loss = Series.of(run, StepRecord::loss);
        if (loss.finite > 0) {
            Chart lc = new Chart(WIDTH, 200, left, wideRange(run.records(), StepRecord::loss), "loss");
            for (StepRecord r : run.records()) {
                lc.include(r.step(), Double.NaN);
            }
            for (int i = 0; i < loss.xs.length; i++) {
                lc.include(loss.xs[i], loss.ys[i]);
            }
            lc.axes();
            lc.line(loss.xs, loss.ys, "#d62728", 1.3, null, "loss");
            events(lc, run);
            h.append(lc.svg());
        }

        List<StepRecord> scaled = run.records().stream().filter(r -> Double.isFinite(r.lossScale())).toList();
        if (!scaled.isEmpty()) { // every call's scale, overflows (skipped steps) included: that is where it backs off
            Chart sc = new Chart(WIDTH, 160, left, true, "loss scale");
            double[] xs = new double[scaled.size()];
            double[] ys = new double[scaled.size()];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = scaled.get(i).step();
                ys[i] = scaled.get(i).lossScale();
                sc.include(xs[i], ys[i]);
            }
            sc.axes();
            sc.line(xs, ys, "#9467bd", 1.3, null, "loss scale");
            events(sc, run);
            h.append(sc.svg());
        }

        if (!layers.isEmpty()) {
            h.append("<h3>Per-layer gradient norm before clipping (log scale)</h3>\n");
            heatMap(h, run, layers, left, index);
            ratios(h, run, layers, left);
        }
        eventTable(h, run);
        diagnosis(h, Doctor.diagnose(run));
        h.append("</section>\n");
    }

    /** The doctor's conclusions: status, findings, depth profile, ranked remedies, the suggested guard. */
    private static void diagnosis(StringBuilder h, Diagnosis d) {
        h.append("<h3>Diagnosis</h3>\n<p class=\"diag ").append(d.status().name().toLowerCase(Locale.ROOT)).append("\"><b>")
                .append(d.status()).append("</b>: ").append(esc(d.reason())).append("</p>\n");
        if (d.status() != Diagnosis.Status.PROBLEMS) {
            return;
        }
        h.append("<ol class=\"findings\">");
        for (Finding f : d.findings()) {
            h.append("<li><b>").append(f.kind()).append("</b> at step ").append(f.step()).append(": ").append(esc(f.message())).append("</li>");
        }
        h.append("</ol>\n");
        DepthProfile p = d.profile();
        if (p != null && p.layers().size() > 1) {
            h.append("<p>Gradient norm per layer at step ").append(p.step()).append(", output first: ").append(esc(p.describe()))
                    .append("</p>\n<table class=\"profile\"><tr><th>layer</th><th>norm</th><th>factor vs the layer above</th></tr>");
            List<Double> factors = p.factors();
            for (int i = p.layers().size() - 1; i >= 0; i--) {
                h.append("<tr><td>").append(esc(p.layers().get(i))).append("</td><td>").append(Detectors.sci(p.norms().get(i)))
                        .append("</td><td>").append(i == p.layers().size() - 1 ? "output end"
                                : String.format(Locale.ROOT, "x%.2f", factors.get(i))).append("</td></tr>");
            }
            h.append("</table>\n");
        }
        h.append("<table class=\"remedies\"><tr><th>#</th><th>remedy</th><th>evidence</th></tr>");
        for (int i = 0; i < d.remedies().size(); i++) {
            Remedy r = d.remedies().get(i);
            h.append("<tr><td>").append(i + 1).append("</td><td>").append(esc(r.advice())).append("</td><td>").append(esc(r.evidence()))
                    .append("</td></tr>");
        }
        h.append("</table>\n<p>Suggested guard:</p><pre>").append(esc(d.prescription().javaSource())).append("</pre>\n");
    }

    private static void events(Chart c, RunRecording run) {
        int n = 0;
        for (StepRecord r : run.records()) {
            for (MonitorEvent e : r.events()) {
                if (n++ < MAX_MARKERS) {
                    c.marker(e.step(), kindColor(e.kind()), e.kind() + " at step " + e.step() + ": " + e.message());
                }
            }
        }
    }

    private static String eventLegend() {
        StringBuilder b = new StringBuilder();
        for (MonitorEvent.Kind k : MonitorEvent.Kind.values()) {
            b.append("<span><span class=\"swatch bar\" style=\"background:").append(kindColor(k)).append("\"></span>")
                    .append(k.name().toLowerCase(Locale.ROOT).replace('_', '-')).append("</span> ");
        }
        return b.toString();
    }

    private static void heatMap(StringBuilder h, RunRecording run, List<String> layers, int left, int runIndex) {
        List<StepRecord> cols = new ArrayList<>();
        double lo = Double.POSITIVE_INFINITY;
        double hi = Double.NEGATIVE_INFINITY;
        long firstStep = Long.MAX_VALUE;
        long lastStep = Long.MIN_VALUE;
        for (StepRecord r : run.records()) {
            firstStep = Math.min(firstStep, r.step());
            lastStep = Math.max(lastStep, r.step());
            if (r.skipped() || !r.detailed()) {
                continue;
            }
            cols.add(r);
            for (LayerStats l : r.layers()) {
                if (l.norm() > 0 && Double.isFinite(l.norm())) {
                    lo = Math.min(lo, Math.log10(l.norm()));
                    hi = Math.max(hi, Math.log10(l.norm()));
                }
            }
        }
        if (cols.isEmpty()) {
            h.append("<p>No step was measured in detail.</p>\n");
            return;
        }
        if (!(hi > lo)) {
            lo = Double.isFinite(lo) ? lo - 1 : -3;
            hi = lo + 2;
        }
        int maxCols = 400;
        int per = (cols.size() + maxCols - 1) / maxCols;
        int nCols = (cols.size() + per - 1) / per;
        int rowH = Math.max(6, Math.min(22, 360 / layers.size()));
        int top = 14;
        int plotW = WIDTH - left - 90;
        int height = top + rowH * layers.size() + 34;
        boolean titles = nCols * layers.size() <= MAX_CELLS_WITH_TITLES;
        Chart axis = new Chart(WIDTH, height, left, false, "");
        axis.include(firstStep, 0);
        axis.include(lastStep, 1);
        StringBuilder s = new StringBuilder();
        s.append("<svg class=\"chart\" width=\"").append(WIDTH).append("\" height=\"").append(height).append("\" viewBox=\"0 0 ")
                .append(WIDTH).append(' ').append(height).append("\" role=\"img\" aria-label=\"per-layer gradient norm heat map\">\n");
        Map<String, Integer> row = new LinkedHashMap<>();
        for (int i = 0; i < layers.size(); i++) {
            row.put(layers.get(i), i);
            String name = layers.get(i);
            String shown = name.length() > 30 ? "…" + name.substring(name.length() - 29) : name;
            s.append("<text x=\"").append(left - 6).append("\" y=\"").append(top + rowH * i + rowH / 2 + 4)
                    .append("\" text-anchor=\"end\" class=\"lbl\"").append(rowH < 10 ? " font-size=\"8\"" : "").append('>')
                    .append("<title>").append(esc(name)).append("</title>").append(esc(shown)).append("</text>\n");
        }
        for (int c = 0; c < nCols; c++) {
            int from = c * per;
            int to = Math.min(cols.size(), from + per);
            double x0 = axis.x(cols.get(from).step());
            double x1 = c + 1 < nCols ? axis.x(cols.get(to).step()) : left + plotW;
            if (c + 1 == nCols && nCols > 1) {
                x1 = Math.max(x1, x0 + (left + plotW - axis.x(cols.get(0).step())) / nCols);
            }
            double w = Math.max(1, x1 - x0);
            double[] max = new double[layers.size()];
            java.util.Arrays.fill(max, Double.NaN);
            boolean[] bad = new boolean[layers.size()];
            for (int k = from; k < to; k++) {
                for (LayerStats l : cols.get(k).layers()) {
                    Integer i = row.get(l.layer());
                    if (i == null) {
                        continue;
                    }
                    if (!Double.isFinite(l.norm())) {
                        bad[i] = true;
                    } else if (!(max[i] >= l.norm())) {
                        max[i] = l.norm();
                    }
                }
            }
            for (int i = 0; i < layers.size(); i++) {
                String fill = bad[i] ? "#ff0040" : Double.isNaN(max[i]) ? "#eeeeee" : max[i] == 0 ? "#000000"
                        : viridis((Math.log10(max[i]) - lo) / (hi - lo));
                s.append("<rect x=\"").append(f(x0)).append("\" y=\"").append(top + rowH * i).append("\" width=\"").append(f(w + 0.3))
                        .append("\" height=\"").append(rowH).append("\" fill=\"").append(fill).append('"');
                if (titles) {
                    s.append("><title>").append(esc(layers.get(i))).append(", step ").append(cols.get(from).step())
                            .append(to - from > 1 ? "–" + cols.get(to - 1).step() : "").append(": ")
                            .append(bad[i] ? "non-finite" : Double.isNaN(max[i]) ? "not measured" : Detectors.sci(max[i]))
                            .append("</title></rect>\n");
                } else {
                    s.append("/>\n");
                }
            }
        }
        int n = 0;
        for (MonitorEvent e : run.events()) {
            if (e.layer().isEmpty() || !row.containsKey(e.layer()) || n++ >= MAX_MARKERS) {
                continue;
            }
            double x = axis.x(e.step());
            int y = top + rowH * row.get(e.layer()) + rowH / 2;
            s.append("<path d=\"M").append(f(x)).append(' ').append(y - 5).append("l5 5l-5 5l-5 -5z\" fill=\"")
                    .append(kindColor(e.kind())).append("\" stroke=\"#fff\" stroke-width=\"1\"><title>").append(esc(e.kind() + ": "
                            + e.message())).append("</title></path>\n");
        }
        int axisY = top + rowH * layers.size();
        s.append(axis.xTicks(axisY));
        int lx = left + plotW + 24;
        int barH = Math.max(60, rowH * layers.size());
        for (int k = 0; k < 20; k++) {
            s.append("<rect x=\"").append(lx).append("\" y=\"").append(f(top + barH - (k + 1) * barH / 20.0)).append("\" width=\"14\" height=\"")
                    .append(f(barH / 20.0 + 0.5)).append("\" fill=\"").append(viridis(k / 19.0)).append("\"/>\n");
        }
        s.append("<text x=\"").append(lx + 18).append("\" y=\"").append(top + 8).append("\" class=\"lbl\">").append(Detectors.sci(Math.pow(10, hi)))
                .append("</text><text x=\"").append(lx + 18).append("\" y=\"").append(top + barH).append("\" class=\"lbl\">")
                .append(Detectors.sci(Math.pow(10, lo))).append("</text>\n");
        s.append("</svg>\n");
        h.append(s);
        h.append("<p class=\"legend\"><span>").append(cols.size()).append(" measured steps").append(per > 1 ? ", " + per + " per column (maximum shown)" : "")
                .append("</span> <span><span class=\"swatch\" style=\"background:#000\"></span>zero</span> ")
                .append("<span><span class=\"swatch\" style=\"background:#ff0040\"></span>non-finite</span> ")
                .append("<span><span class=\"swatch\" style=\"background:#eeeeee;border:1px solid #ccc\"></span>not measured</span></p>\n");
    }

    private static void ratios(StringBuilder h, RunRecording run, List<String> layers, int left) {
        Map<String, List<double[]>> byLayer = new LinkedHashMap<>();
        Chart c = new Chart(WIDTH, 260, left, true, "update / parameter norm ratio");
        for (StepRecord r : run.records()) {
            c.include(r.step(), Double.NaN);
            for (LayerStats l : r.layers()) {
                if (!Double.isNaN(l.updateRatio())) {
                    byLayer.computeIfAbsent(l.layer(), k -> new ArrayList<>()).add(new double[] {r.step(), l.updateRatio()});
                    c.include(r.step(), l.updateRatio());
                }
            }
        }
        if (byLayer.isEmpty()) {
            return;
        }
        c.include(run.records().get(0).step(), 1e-3);
        h.append("<h3>Update-to-parameter ratio per layer (about 1e-3 is healthy)</h3>\n");
        c.axes();
        c.line(new double[] {c.xMin, c.xMax}, new double[] {1e-3, 1e-3}, "#2ca02c", 1, "2 3", "1e-3");
        StringBuilder legend = new StringBuilder("<p class=\"legend\">");
        for (Map.Entry<String, List<double[]>> e : byLayer.entrySet()) {
            int i = layers.indexOf(e.getKey());
            double[] xs = new double[e.getValue().size()];
            double[] ys = new double[xs.length];
            for (int k = 0; k < xs.length; k++) {
                xs[k] = e.getValue().get(k)[0];
                ys[k] = e.getValue().get(k)[1];
            }
            c.line(xs, ys, color(Math.max(0, i)), 1.2, null, e.getKey());
            legend.append("<span><span class=\"swatch\" style=\"background:").append(color(Math.max(0, i))).append("\"></span>")
                    .append(esc(e.getKey())).append("</span> ");
        }
        h.append(c.svg()).append(legend).append("</p>\n");
    }

    private static void eventTable(StringBuilder h, RunRecording run) {
        List<MonitorEvent> events = run.events();
        h.append("<h3>Events</h3>\n");
        if (events.isEmpty()) {
            h.append("<p>None: no exploding, vanishing or non-finite gradient detected, no step skipped.</p>\n");
            return;
        }
        h.append("<table class=\"events\"><tr><th>step</th><th>kind</th><th>message</th></tr>\n");
        int shown = Math.min(events.size(), 200);
        for (int i = 0; i < shown; i++) {
            MonitorEvent e = events.get(i);
            h.append("<tr><td>").append(e.step()).append("</td><td><span class=\"swatch bar\" style=\"background:")
                    .append(kindColor(e.kind())).append("\"></span>").append(e.kind().name().toLowerCase(Locale.ROOT).replace('_', '-'))
                    .append("</td><td>").append(esc(e.message())).append("</td></tr>\n");
        }
        h.append("</table>\n");
        if (events.size() > shown) {
            h.append("<p>… and ").append(events.size() - shown).append(" more (see the JSON Lines or CSV output).</p>\n");
        }
    }

    // ---- data ---------------------------------------------------------------------------------------

    private static String data(List<RunRecording> runs) {
        StringBuilder b = new StringBuilder("{\"runs\":[");
        for (int i = 0; i < runs.size(); i++) {
            RunRecording run = runs.get(i);
            List<String> layers = layerNames(run);
            StringBuilder steps = new StringBuilder();
            StringBuilder before = new StringBuilder();
            StringBuilder after = new StringBuilder();
            StringBuilder threshold = new StringBuilder();
            StringBuilder loss = new StringBuilder();
            StringBuilder skipped = new StringBuilder();
            StringBuilder layerSteps = new StringBuilder();
            StringBuilder layerNorms = new StringBuilder();
            StringBuilder events = new StringBuilder();
            for (StepRecord r : run.records()) {
                for (MonitorEvent e : r.events()) {
                    events.append(events.length() == 0 ? "" : ",").append(Json.event(e));
                }
                if (r.skipped()) {
                    skipped.append(skipped.length() == 0 ? "" : ",").append(r.step());
                    continue;
                }
                String sep = steps.length() == 0 ? "" : ",";
                steps.append(sep).append(r.step());
                before.append(sep).append(Json.num(r.normBefore()));
                after.append(sep).append(Json.num(r.normAfter()));
                threshold.append(sep).append(Json.num(r.clipThreshold()));
                loss.append(sep).append(Json.num(r.loss()));
                if (r.detailed()) {
                    String sep2 = layerSteps.length() == 0 ? "" : ",";
                    layerSteps.append(sep2).append(r.step());
                    layerNorms.append(sep2).append('[');
                    for (int k = 0; k < layers.size(); k++) {
                        double v = Double.NaN;
                        for (LayerStats l : r.layers()) {
                            if (l.layer().equals(layers.get(k))) {
                                v = l.norm();
                            }
                        }
                        layerNorms.append(k == 0 ? "" : ",").append(Json.num(v));
                    }
                    layerNorms.append(']');
                }
            }
            StringBuilder names = new StringBuilder();
            for (String l : layers) {
                names.append(names.length() == 0 ? "" : ",").append(Json.str(l));
            }
            b.append(i == 0 ? "" : ",").append("{\"name\":").append(Json.str(run.name())).append(",\"steps\":[").append(steps)
                    .append("],\"normBefore\":[").append(before).append("],\"normAfter\":[").append(after)
                    .append("],\"clipThreshold\":[").append(threshold).append("],\"loss\":[").append(loss)
                    .append("],\"skippedSteps\":[").append(skipped).append("],\"layers\":[").append(names)
                    .append("],\"layerSteps\":[").append(layerSteps).append("],\"layerNorms\":[").append(layerNorms)
                    .append("],\"events\":[").append(events).append("]}");
        }
        return b.append("]}").toString();
    }

    private static List<String> layerNames(RunRecording run) {
        Set<String> names = new LinkedHashSet<>();
        for (StepRecord r : run.records()) {
            for (LayerStats l : r.layers()) {
                names.add(l.layer());
            }
        }
        return new ArrayList<>(names);
    }

    private static int longest(List<String> names) {
        int n = 0;
        for (String s : names) {
            n = Math.max(n, Math.min(30, s.length()));
        }
        return n;
    }

    static String color(int i) {
        return PALETTE[i % PALETTE.length];
    }

    static String kindColor(MonitorEvent.Kind k) {
        return switch (k) {
            case EXPLODING -> "#ff7f0e";
            case VANISHING -> "#9467bd";
            case NON_FINITE -> "#d62728";
            case SKIPPED -> "#7f7f7f";
        };
    }

    /** Viridis, interpolated between 6 anchors; t in [0, 1]. */
    static String viridis(double t) {
        int[][] a = {{68, 1, 84}, {65, 68, 135}, {42, 120, 142}, {34, 168, 132}, {122, 209, 81}, {253, 231, 37}};
        double x = Math.max(0, Math.min(1, t)) * (a.length - 1);
        int i = Math.min(a.length - 2, (int) x);
        double u = x - i;
        return String.format(Locale.ROOT, "#%02x%02x%02x", Math.round(a[i][0] + u * (a[i + 1][0] - a[i][0])),
                Math.round(a[i][1] + u * (a[i + 1][1] - a[i][1])), Math.round(a[i][2] + u * (a[i + 1][2] - a[i][2])));
    }

    static String esc(String s) {
        StringBuilder b = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '<' -> b.append("&lt;");
                case '>' -> b.append("&gt;");
                case '&' -> b.append("&amp;");
                case '"' -> b.append("&quot;");
                case '\'' -> b.append("&#39;");
                default -> b.append(c);
            }
        }
        return b.toString();
    }

    static String f(double v) {
        return String.format(Locale.ROOT, "%.1f", v);
    }

    /** One run's values over its applied steps. */
    private static final class Series {
        double[] xs;
        double[] ys;
        int finite;

        static Series of(RunRecording run, java.util.function.ToDoubleFunction<StepRecord> value) {
            List<StepRecord> applied = new ArrayList<>();
            for (StepRecord r : run.records()) {
                if (!r.skipped()) {
                    applied.add(r);
                }
            }
            Series s = new Series();
            s.xs = new double[applied.size()];
            s.ys = new double[applied.size()];
            for (int i = 0; i < applied.size(); i++) {
                s.xs[i] = applied.get(i).step();
                s.ys[i] = value.applyAsDouble(applied.get(i));
                s.finite += Double.isFinite(s.ys[i]) ? 1 : 0;
            }
            return s;
        }
    }

    /** A minimal SVG line chart: linear x, linear or log10 y, gaps at values it cannot plot. */
    static final class Chart {
        final int width;
        final int height;
        final int left;
        int right = 90; // room for the heat map's colour scale, so every chart of a run shares its x axis
        final int top = 22;
        final int bottom = 30;
        final boolean log;
        final String title;
        double xMin = Double.POSITIVE_INFINITY;
        double xMax = Double.NEGATIVE_INFINITY;
        double yMin = Double.POSITIVE_INFINITY;
        double yMax = Double.NEGATIVE_INFINITY;
        private final StringBuilder body = new StringBuilder();

        Chart(int width, int height, int left, boolean log, String title) {
            this.width = width;
            this.height = height;
            this.left = left;
            this.log = log;
            this.title = title;
        }

        /** Widens the ranges to show this point (a NaN y widens x only). */
        void include(double x, double y) {
            xMin = Math.min(xMin, x);
            xMax = Math.max(xMax, x);
            if (plottable(y)) {
                double v = log ? Math.log10(y) : y;
                yMin = Math.min(yMin, v);
                yMax = Math.max(yMax, v);
            }
        }

        boolean plottable(double y) {
            return Double.isFinite(y) && (!log || y > 0);
        }

        /** Rounds the ranges and draws grid and ticks. */
        void axes() {
            if (!(xMax >= xMin)) {
                xMin = 0;
                xMax = 1;
            }
            if (xMax == xMin) {
                xMax = xMin + 1;
            }
            if (!(yMax >= yMin)) {
                yMin = log ? -3 : 0;
                yMax = log ? 0 : 1;
            }
            if (log) {
                yMin = Math.floor(yMin);
                yMax = Math.ceil(yMax);
                if (yMax == yMin) {
                    yMax = yMin + 1;
                }
                int stepDecades = (int) Math.max(1, Math.ceil((yMax - yMin) / 8));
                for (double d = yMin; d <= yMax + 1e-9; d += stepDecades) {
                    double y = yRaw(d);
                    body.append("<line x1=\"").append(left).append("\" x2=\"").append(width - right).append("\" y1=\"").append(f(y))
                            .append("\" y2=\"").append(f(y)).append("\" class=\"grid\"/><text x=\"").append(left - 6).append("\" y=\"")
                            .append(f(y + 4)).append("\" text-anchor=\"end\" class=\"lbl\">1e").append((int) d).append("</text>\n");
                }
            } else {
                if (yMax == yMin) {
                    yMax = yMin + 1;
                }
                double[] t = nice(yMin, yMax, 5);
                yMin = Math.min(yMin, t[0]);
                yMax = Math.max(yMax, t[1]);
                for (double v = t[0]; v <= t[1] + t[2] / 2; v += t[2]) {
                    double y = yRaw(v);
                    body.append("<line x1=\"").append(left).append("\" x2=\"").append(width - right).append("\" y1=\"").append(f(y))
                            .append("\" y2=\"").append(f(y)).append("\" class=\"grid\"/><text x=\"").append(left - 6).append("\" y=\"")
                            .append(f(y + 4)).append("\" text-anchor=\"end\" class=\"lbl\">").append(label(v)).append("</text>\n");
                }
            }
            body.append(xTicks(height - bottom));
        }

        String xTicks(int y) {
            StringBuilder b = new StringBuilder();
            b.append("<line x1=\"").append(left).append("\" x2=\"").append(width - right).append("\" y1=\"").append(y).append("\" y2=\"")
                    .append(y).append("\" class=\"axis\"/>\n");
            double[] t = nice(xMin, xMax, 8);
            for (double v = t[0]; v <= xMax + 1e-9; v += t[2]) {
                if (v < xMin - 1e-9) {
                    continue;
                }
                double x = x(v);
                b.append("<line x1=\"").append(f(x)).append("\" x2=\"").append(f(x)).append("\" y1=\"").append(y).append("\" y2=\"")
                        .append(y + 4).append("\" class=\"axis\"/><text x=\"").append(f(x)).append("\" y=\"").append(y + 16)
                        .append("\" text-anchor=\"middle\" class=\"lbl\">").append(label(v)).append("</text>\n");
            }
            b.append("<text x=\"").append(width - right).append("\" y=\"").append(y + 28)
                    .append("\" text-anchor=\"end\" class=\"lbl\">optimizer step</text>\n");
            return b.toString();
        }

        double x(double v) {
            return left + (v - xMin) / (xMax - xMin) * (width - left - right);
        }

        private double yRaw(double v) {
            return top + (1 - (v - yMin) / (yMax - yMin)) * (height - top - bottom);
        }

        double y(double v) {
            return yRaw(log ? Math.log10(v) : v);
        }

        /** A polyline with gaps; above ~2 points per pixel it keeps each pixel column's min and max. */
        void line(double[] xs, double[] ys, String color, double strokeWidth, String dash, String label) {
            StringBuilder d = new StringBuilder();
            boolean pen = false;
            int plotW = width - left - right;
            boolean decimate = xs.length > 2 * plotW;
            int i = 0;
            while (i < xs.length) {
                if (!plottable(ys[i])) {
                    pen = false;
                    i++;
                    continue;
                }
                if (!decimate) {
                    d.append(pen ? "L" : "M").append(f(x(xs[i]))).append(' ').append(f(y(ys[i])));
                    pen = true;
                    i++;
                    continue;
                }
                int px = (int) x(xs[i]);
                double lo = ys[i];
                double hi = ys[i];
                int j = i;
                while (j < xs.length && (int) x(xs[j]) == px && plottable(ys[j])) {
                    lo = Math.min(lo, ys[j]);
                    hi = Math.max(hi, ys[j]);
                    j++;
                }
                d.append(pen ? "L" : "M").append(px).append(' ').append(f(y(hi)));
                if (hi != lo) {
                    d.append('L').append(px).append(' ').append(f(y(lo)));
                }
                pen = true;
                i = j;
            }
            if (d.length() == 0) {
                return;
            }
            body.append("<path d=\"").append(d).append("\" fill=\"none\" stroke=\"").append(color).append("\" stroke-width=\"")
                    .append(strokeWidth).append('"').append(dash == null ? "" : " stroke-dasharray=\"" + dash + "\"")
                    .append(" stroke-linejoin=\"round\"><title>").append(esc(label)).append("</title></path>\n");
        }

        /** A vertical line at step x with a hover text. */
        void marker(double x, String color, String text) {
            double px = x(x);
            body.append("<g class=\"marker\"><line x1=\"").append(f(px)).append("\" x2=\"").append(f(px)).append("\" y1=\"").append(top)
                    .append("\" y2=\"").append(height - bottom).append("\" stroke=\"").append(color)
                    .append("\" stroke-width=\"1.5\" opacity=\"0.75\"/><path d=\"M").append(f(px)).append(' ').append(top)
                    .append("l-5 -8h10z\" fill=\"").append(color).append("\"/><title>").append(esc(text)).append("</title></g>\n");
        }

        String svg() {
            return "<svg class=\"chart\" width=\"" + width + "\" height=\"" + height + "\" viewBox=\"0 0 " + width + " " + height
                    + "\" role=\"img\" aria-label=\"" + esc(title) + "\">\n<text x=\"" + left + "\" y=\"12\" class=\"ttl\">" + esc(title)
                    + (log ? " (log scale)" : "") + "</text>\n" + body + "</svg>\n";
        }

        /** Tick start, end and spacing: 1, 2 or 5 times a power of ten. */
        static double[] nice(double lo, double hi, int count) {
            double raw = (hi - lo) / count;
            double mag = Math.pow(10, Math.floor(Math.log10(raw)));
            double step = raw / mag >= 5 ? 5 * mag : raw / mag >= 2 ? 2 * mag : mag;
            return new double[] {Math.floor(lo / step) * step, Math.ceil(hi / step) * step, step};
        }

        static String label(double v) {
            if (Math.abs(v) < 1e-12) {
                return "0";
            }
            if (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3) {
                return Detectors.sci(v);
            }
            String s = String.format(Locale.ROOT, "%.4f", v);
            return s.indexOf('.') >= 0 ? s.replaceAll("0+$", "").replaceAll("\\.$", "") : s;
        }
    }

    private static final String CSS = "body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;"
            + "color:#222;margin:24px auto;max-width:1010px;padding:0 12px}"
            + "h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-top:1px solid #ddd;padding-top:14px}"
            + "h3{font-size:15px;margin:18px 0 4px}.meta{color:#666;margin:0 0 12px}"
            + "table{border-collapse:collapse;margin:8px 0}th,td{border-bottom:1px solid #e4e4e4;padding:3px 10px;text-align:left;"
            + "vertical-align:top}th{background:#f6f6f6}table.events td:first-child{text-align:right;font-variant-numeric:tabular-nums}"
            + ".chart{display:block;margin:6px 0;max-width:100%;height:auto}.grid{stroke:#e8e8e8}.axis{stroke:#888}"
            + ".lbl{font-size:11px;fill:#555}.ttl{font-size:12px;font-weight:600;fill:#333}"
            + ".legend{font-size:12px;color:#444;margin:0 0 10px}.legend>span{margin-right:12px;white-space:nowrap}"
            + ".swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}"
            + ".swatch.bar{width:4px}.swatch.dashed{height:0;border-top:2px dashed #444;vertical-align:3px}"
            + ".marker:hover line{stroke-width:3}a{color:inherit}"
            + "pre{background:#f6f6f6;padding:8px 10px;overflow-x:auto}.diag.healthy b{color:#2ca02c}.diag.problems b{color:#d62728}"
            + "table.remedies td:nth-child(3){color:#555;font-size:12px}";
}
