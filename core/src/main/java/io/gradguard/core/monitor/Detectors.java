package io.gradguard.core.monitor;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The monitor's detectors and their running state. Each looks at a finished measurement (a record
 * without events) and returns what it noticed; none throws on data.
 *
 * <ul>
 *   <li>Exploding: the pre-clip global norm above {@code factor} × the median of the last
 *       {@code window} applied steps (after {@code warmup} of them), or a layer's norm above
 *       {@code factor} × its own running median (from ≥ 3 measurements) while reaching at least a tenth of
 *       the global running median (a layer too small to matter does not "explode"). Fires when a spike starts,
 *       not again until that norm is back under the bound. Names the first layer, in model order,
 *       that is above its own bound.</li>
 *   <li>Vanishing: a layer whose norm is below {@code absolute}, or below {@code relative} × the
 *       largest layer's norm, on {@code steps} measured steps in a row; once per episode.</li>
 *   <li>Non-finite: the first step (of each episode) where NaN/Inf appeared, naming the first
 *       parameter holding one.</li>
 *   <li>Skipped: every step the pipeline skipped, with its reason.</li>
 * </ul>
 */
final class Detectors {
    static final int LAYER_MIN_SAMPLES = 3;
    /** A layer spike counts only if the layer then reaches this share of the global running median. */
    static final double MIN_LAYER_SHARE = 0.1;

    private final boolean enabled;
    private final double factor;
    private final int window;
    private final int warmup;
    private final double vanishAbsolute;
    private final double vanishRelative;
    private final int vanishSteps;

    private final RunningMedian global;
    private final Map<String, RunningMedian> layerMedians = new HashMap<>();
    private final Set<String> spikingLayers = new HashSet<>();
    private final Map<String, Integer> lowCounts = new HashMap<>();
    private boolean globalArmed = true;
    private boolean inNonFinite;

    Detectors(boolean enabled, double factor, int window, int warmup, double vanishAbsolute, double vanishRelative,
            int vanishSteps) {
        this.enabled = enabled;
        this.factor = factor;
        this.window = window;
        this.warmup = warmup;
        this.vanishAbsolute = vanishAbsolute;
        this.vanishRelative = vanishRelative;
        this.vanishSteps = vanishSteps;
        this.global = new RunningMedian(window);
    }

    /** Whether this pre-clip global norm is a spike (so the monitor measures the layers to name one). */
    boolean isSpike(double norm) {
        if (!enabled) {
            return false;
        }
        double med = global.median();
        return Double.isInfinite(norm) || global.size() >= warmup && med > 0 && norm > factor * med;
    }

    List<MonitorEvent> check(StepRecord r) {
        List<MonitorEvent> events = new ArrayList<>();
        if (r.skipped()) {
            events.add(new MonitorEvent(MonitorEvent.Kind.SKIPPED, r.step(), "", "", r.normBefore(), Double.NaN,
                    "step " + r.step() + " skipped by " + (r.skippedBy().isEmpty() ? "the pipeline" : r.skippedBy()) + ": "
                            + r.skipReason()));
        }
        if (!enabled) {
            return events;
        }
        nonFinite(r, events);
        if (!r.skipped()) {
            exploding(r, events);
            vanishing(r, events);
        }
        return events;
    }

    private void nonFinite(StepRecord r, List<MonitorEvent> events) {
        if (r.nonFinite() <= 0) {
            inNonFinite = false;
            return;
        }
        if (inNonFinite) {
            return;
        }
        inNonFinite = true;
        if (Double.isNaN(r.clipCoefficient())) {
            events.add(new MonitorEvent(MonitorEvent.Kind.NON_FINITE, r.step(), "", "", r.nonFinite(), Double.NaN,
                    "non-finite gradient at step " + r.step() + ": clipping spread it to " + r.nonFinite()
                            + " values, so the parameter it started in cannot be named; put Transforms.zeroNonFinite()"
                            + " or a skip policy ahead of clipping"));
            return;
        }
        for (TensorStats t : r.tensors()) {
            if (t.nonFinite() > 0) {
                events.add(new MonitorEvent(MonitorEvent.Kind.NON_FINITE, r.step(), t.layer(), t.name(), t.nonFinite(),
                        Double.NaN, "non-finite gradient at step " + r.step() + ": first in parameter " + t.name()
                                + " (layer " + t.layer() + "), " + t.nonFinite() + " NaN/Inf values; " + r.nonFinite()
                                + " in all"));
                return;
            }
        }
        events.add(new MonitorEvent(MonitorEvent.Kind.NON_FINITE, r.step(), "", "", r.nonFinite(), Double.NaN,
                "non-finite gradient at step " + r.step() + ": " + r.nonFinite()
                        + " NaN/Inf values, replaced by a pipeline stage before the monitor could see where"));
    }

    private void exploding(StepRecord r, List<MonitorEvent> events) {
        double norm = r.normBefore();
        if (Double.isNaN(norm) || r.nonFinite() > 0) {
            return; // the non-finite detector speaks for this step
        }
        double med = global.median();
        boolean globalSpike = isSpike(norm);
        LayerStats offender = null;
        double offenderMedian = Double.NaN;
        boolean newLayerSpike = false;
        Set<String> spikingNow = new HashSet<>();
        LayerStats largest = null;
        for (LayerStats l : r.layers()) {
            if (largest == null || l.norm() > largest.norm()) {
                largest = l;
            }
            RunningMedian m = layerMedians.get(l.layer());
            if (m == null || m.size() < LAYER_MIN_SAMPLES) {
                continue;
            }
            double lm = m.median();
            if (lm > 0 && l.norm() > factor * lm && l.norm() >= MIN_LAYER_SHARE * med) {
                spikingNow.add(l.layer());
                newLayerSpike |= !spikingLayers.contains(l.layer());
                if (offender == null) {
                    offender = l;
                    offenderMedian = lm;
                }
            }
        }
        if (globalSpike && globalArmed || newLayerSpike) {
            String message;
            if (offender != null) {
                message = "layer " + offender.layer() + " gradient norm " + sci(offender.norm()) + " at step " + r.step() + ": "
                        + times(offender.norm() / offenderMedian) + " its running median"
                        + (globalSpike ? " (global norm " + sci(norm) + ", " + times(norm / med) + ")" : "");
                events.add(new MonitorEvent(MonitorEvent.Kind.EXPLODING, r.step(), offender.layer(), "", offender.norm(),
                        offenderMedian, message));
            } else {
                message = "gradient norm " + sci(norm) + " at step " + r.step() + ": " + times(norm / med) + " its running median"
                        + (largest != null ? "; largest layer " + largest.layer() + " (" + sci(largest.norm()) + ")" : "");
                events.add(new MonitorEvent(MonitorEvent.Kind.EXPLODING, r.step(), largest == null ? "" : largest.layer(), "",
                        norm, med, message));
            }
        }
        globalArmed = !globalSpike;
        if (r.detailed()) {
            spikingLayers.clear();
            spikingLayers.addAll(spikingNow);
            for (LayerStats l : r.layers()) {
                if (Double.isFinite(l.norm())) {
                    layerMedians.computeIfAbsent(l.layer(), k -> new RunningMedian(window)).add(l.norm());
                }
            }
        }
        if (Double.isFinite(norm)) {
            global.add(norm);
        }
    }

    private void vanishing(StepRecord r, List<MonitorEvent> events) {
        if (!r.detailed() || r.layers().isEmpty()) {
            return;
        }
        LayerStats largest = null;
        for (LayerStats l : r.layers()) {
            if (Double.isFinite(l.norm()) && (largest == null || l.norm() > largest.norm())) {
                largest = l;
            }
        }
        for (LayerStats l : r.layers()) {
            boolean belowAbsolute = l.norm() < vanishAbsolute;
            boolean belowRelative = largest != null && l != largest && l.norm() < vanishRelative * largest.norm();
            int n = belowAbsolute || belowRelative ? lowCounts.merge(l.layer(), 1, Integer::sum) : 0;
            if (n == 0) {
                lowCounts.remove(l.layer());
            }
            if (n == vanishSteps) {
                String why = belowAbsolute ? "below " + sci(vanishAbsolute)
                        : "below " + sci(vanishRelative) + " of the largest layer's (" + largest.layer() + ", " + sci(largest.norm()) + ")";
                events.add(new MonitorEvent(MonitorEvent.Kind.VANISHING, r.step(), l.layer(), "", l.norm(),
                        belowAbsolute ? vanishAbsolute : vanishRelative * largest.norm(),
                        "layer " + l.layer() + " gradient norm " + sci(l.norm()) + " at step " + r.step() + ": " + why + " for "
                                + vanishSteps + " measured steps in a row"));
            }
        }
    }

    /** 4.1e+05 */
    static String sci(double v) {
        return Double.isFinite(v) ? String.format(Locale.ROOT, "%.1e", v) : Double.toString(v);
    }

    /** 37x, 2.5x */
    static String times(double ratio) {
        if (!Double.isFinite(ratio)) {
            return "infinitely above";
        }
        return String.format(Locale.ROOT, ratio >= 10 ? "%.0fx" : "%.1fx", ratio);
    }
}
