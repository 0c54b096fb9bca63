package io.gradguard.core.monitor;

import java.io.OutputStream;
import java.util.ArrayList;
import java.util.List;

/**
 * Writes one CSV row per record (RFC 4180 quoting): the scalar fields of {@link StepRecord}, then
 * {@code norm:<layer>} and {@code update_ratio:<layer>} for every layer of the first record (the
 * first step is always measured in detail; cells are empty on steps that were not), then the step's event messages joined by
 * " | ". The header is written with the first record. Create with {@link Sinks#csv}.
 */
final class CsvSink extends TextSink {
    static final String FIXED = "run,index,step,skipped,skip_reason,skipped_by,micro_batches,loss,norm_before,norm_after,"
            + "clip_coefficient,clipped,clip_threshold,non_finite,detailed";
    private List<String> layers;

    CsvSink(OutputStream out, String where) {
        super(out, where);
    }

    @Override
    public void onRecord(StepRecord r) {
        if (layers == null) {
            layers = new ArrayList<>();
            for (LayerStats l : r.layers()) {
                layers.add(l.layer());
            }
            StringBuilder h = new StringBuilder(FIXED);
            for (String l : layers) {
                h.append(',').append(cell("norm:" + l));
            }
            for (String l : layers) {
                h.append(',').append(cell("update_ratio:" + l));
            }
            writeLine(h.append(",events").toString());
        }
        writeLine(row(r));
    }

    private String row(StepRecord r) {
        StringBuilder b = new StringBuilder(200);
        b.append(cell(r.run())).append(',').append(r.index()).append(',').append(r.step()).append(',').append(r.skipped())
                .append(',').append(cell(r.skipReason())).append(',').append(cell(r.skippedBy())).append(',')
                .append(r.microBatches()).append(',').append(num(r.loss())).append(',').append(num(r.normBefore())).append(',')
                .append(num(r.normAfter())).append(',').append(num(r.clipCoefficient())).append(',').append(r.clipped())
                .append(',').append(num(r.clipThreshold())).append(',').append(r.nonFinite()).append(',').append(r.detailed());
        StringBuilder ratios = new StringBuilder();
        for (String l : layers) {
            LayerStats s = find(r, l);
            b.append(',').append(s == null ? "" : num(s.norm()));
            ratios.append(',').append(s == null || Double.isNaN(s.updateRatio()) ? "" : num(s.updateRatio()));
        }
        b.append(ratios).append(',');
        StringBuilder ev = new StringBuilder();
        for (MonitorEvent e : r.events()) {
            ev.append(ev.length() == 0 ? "" : " | ").append(e.kind()).append(": ").append(e.message());
        }
        return b.append(cell(ev.toString())).toString();
    }

    private static LayerStats find(StepRecord r, String layer) {
        for (LayerStats s : r.layers()) {
            if (s.layer().equals(layer)) {
                return s;
            }
        }
        return null;
    }

    /** NaN, Infinity and -Infinity are written as such (Java, pandas and R read them). */
    private static String num(double v) {
        return Double.isNaN(v) ? "NaN" : Double.isInfinite(v) ? (v > 0 ? "Infinity" : "-Infinity") : Double.toString(v);
    }

    static String cell(String s) {
        if (s.indexOf(',') < 0 && s.indexOf('"') < 0 && s.indexOf('\n') < 0 && s.indexOf('\r') < 0) {
            return s;
        }
        return '"' + s.replace("\"", "\"\"") + '"';
    }
}
