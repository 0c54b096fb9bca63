package io.gradguard.core.monitor;

import io.gradguard.core.StateFormatException;
import io.gradguard.core.StateInput;
import io.gradguard.core.StateOutput;
import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The monitor's detectors: their configuration here, their running state (medians, counters) in a
 * {@link State} that is part of the monitor's pipeline state. Each looks at a finished measurement
 * (a record without events) and returns what it noticed; none throws on data.
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

    Detectors(boolean enabled, double factor, int window, int warmup, double vanishAbsolute, double vanishRelative,
            int vanishSteps) {
        this.enabled = enabled;
        this.factor = factor;
        this.window = window;
        this.warmup = warmup;
        this.vanishAbsolute = vanishAbsolute;
        this.vanishRelative = vanishRelative;
        this.vanishSteps = vanishSteps;
    }

    /** A fresh running state: no history, every detector armed. */
    State newState() {
        return new State(window);
    }

    /** Reads a running state written by {@link State#write}, sized for this configuration's window. */
    <T> State read(StateInput<T> in) throws IOException {
        return State.read(in, window);
    }

    /** Whether this pre-clip global norm is a spike (so the monitor measures the layers to name one). */
    boolean isSpike(State s, double norm) {
        if (!enabled) {
            return false;
        }
        double med = s.global.median();
        return Double.isInfinite(norm) || s.global.size() >= warmup && med > 0 && norm > factor * med;
    }

    List<MonitorEvent> check(State s, StepRecord r) {
        List<MonitorEvent> events = new ArrayList<>();
        if (r.skipped()) {
            events.add(new MonitorEvent(MonitorEvent.Kind.SKIPPED, r.step(), "", "", r.normBefore(), Double.NaN,
                    "step " + r.step() + " skipped by " + (r.skippedBy().isEmpty() ? "the pipeline" : r.skippedBy()) + ": "
                            + r.skipReason()));
        }
        if (!enabled) {
            return events;
        }
        nonFinite(s, r, events);
        if (!r.skipped()) {
            exploding(s, r, events);
            vanishing(s, r, events);
        }
        return events;
    }

    private void nonFinite(State s, StepRecord r, List<MonitorEvent> events) {
        if (r.nonFinite() <= 0) {
            s.inNonFinite = false;
            return;
        }
        if (s.inNonFinite) {
            return;
        }
        s.inNonFinite = true;
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

    private void exploding(State s, StepRecord r, List<MonitorEvent> events) {
        double norm = r.normBefore();
        if (Double.isNaN(norm) || r.nonFinite() > 0) {
            return; // the non-finite detector speaks for this step
        }
        double med = s.global.median();
        boolean globalSpike = isSpike(s, norm);
        LayerStats offender = null;
        double offenderMedian = Double.NaN;
        boolean newLayerSpike = false;
        Set<String> spikingNow = new LinkedHashSet<>();
        LayerStats largest = null;
        for (LayerStats l : r.layers()) {
            if (largest == null || l.norm() > largest.norm()) {
                largest = l;
            }
            RunningMedian m = s.layerMedians.get(l.layer());
            if (m == null || m.size() < LAYER_MIN_SAMPLES) {
                continue;
            }
            double lm = m.median();
            if (lm > 0 && l.norm() > factor * lm && l.norm() >= MIN_LAYER_SHARE * med) {
                spikingNow.add(l.layer());
                newLayerSpike |= !s.spikingLayers.contains(l.layer());
                if (offender == null) {
                    offender = l;
                    offenderMedian = lm;
                }
            }
        }
        if (globalSpike && s.globalArmed || newLayerSpike) {
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
        s.globalArmed = !globalSpike;
        if (r.detailed()) {
            s.spikingLayers.clear();
            s.spikingLayers.addAll(spikingNow);
            for (LayerStats l : r.layers()) {
                if (Double.isFinite(l.norm())) {
                    s.layerMedians.computeIfAbsent(l.layer(), k -> new RunningMedian(window)).add(l.norm());
                }
            }
        }
        if (Double.isFinite(norm)) {
            s.global.add(norm);
        }
    }

    private void vanishing(State s, StepRecord r, List<MonitorEvent> events) {
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
            int n = belowAbsolute || belowRelative ? s.lowCounts.merge(l.layer(), 1, Integer::sum) : 0;
            if (n == 0) {
                s.lowCounts.remove(l.layer());
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

    /**
     * The detectors' running state: the global and per-layer running medians (of the last
     * {@code window} norms), the layers spiking on the last detailed step, the vanishing counters,
     * and whether the exploding and non-finite detectors are armed. Maps keep the model's layer
     * order, so a checkpoint of the same run is the same bytes.
     */
    static final class State {
        /** More layers, or a longer name, than this in a checkpoint is corruption, not a model. */
        static final int MAX_LAYERS = 1 << 20;
        static final int MAX_NAME = 1 << 16;
        static final int MAX_MEDIAN_VALUES = 1 << 24;

        final RunningMedian global;
        final Map<String, RunningMedian> layerMedians = new LinkedHashMap<>();
        final Set<String> spikingLayers = new LinkedHashSet<>();
        final Map<String, Integer> lowCounts = new LinkedHashMap<>();
        boolean globalArmed = true;
        boolean inNonFinite;

        State(int window) {
            this.global = new RunningMedian(window);
        }

        <T> void write(StateOutput<T> out) throws IOException {
            out.writeBoolean(globalArmed);
            out.writeBoolean(inNonFinite);
            writeMedian(out, global);
            out.writeInt(layerMedians.size());
            for (Map.Entry<String, RunningMedian> e : layerMedians.entrySet()) {
                writeString(out, e.getKey());
                writeMedian(out, e.getValue());
            }
            out.writeInt(spikingLayers.size());
            for (String layer : spikingLayers) {
                writeString(out, layer);
            }
            out.writeInt(lowCounts.size());
            for (Map.Entry<String, Integer> e : lowCounts.entrySet()) {
                writeString(out, e.getKey());
                out.writeInt(e.getValue());
            }
        }

        /**
         * Reads what {@link #write} wrote into a state of {@code window} values per median. A median
         * saved with a longer window keeps its newest {@code window} values.
         */
        static <T> State read(StateInput<T> in, int window) throws IOException {
            State s = new State(window);
            s.globalArmed = in.readBoolean();
            s.inNonFinite = in.readBoolean();
            readMedian(in, s.global, "the global running median");
            int layers = count(in, "layer running medians");
            for (int i = 0; i < layers; i++) {
                String layer = readString(in);
                RunningMedian m = new RunningMedian(window);
                readMedian(in, m, "the running median of layer " + layer);
                if (s.layerMedians.put(layer, m) != null) {
                    throw new StateFormatException("monitor state: layer " + layer + " has two running medians");
                }
            }
            int spiking = count(in, "spiking layers");
            for (int i = 0; i < spiking; i++) {
                s.spikingLayers.add(readString(in));
            }
            int low = count(in, "vanishing counters");
            for (int i = 0; i < low; i++) {
                String layer = readString(in);
                int n = in.readInt();
                if (n < 1) {
                    throw new StateFormatException("monitor state: the vanishing counter of layer " + layer + " is " + n
                            + ", expected >= 1");
                }
                if (s.lowCounts.put(layer, n) != null) {
                    throw new StateFormatException("monitor state: layer " + layer + " has two vanishing counters");
                }
            }
            return s;
        }

        private static <T> void writeMedian(StateOutput<T> out, RunningMedian m) throws IOException {
            double[] v = m.values();
            out.writeInt(v.length);
            for (double x : v) {
                out.writeDouble(x);
            }
        }

        private static <T> void readMedian(StateInput<T> in, RunningMedian m, String what) throws IOException {
            int n = in.readInt();
            if (n < 0 || n > MAX_MEDIAN_VALUES) {
                throw new StateFormatException("monitor state: " + what + " claims " + n + " values, expected 0.."
                        + MAX_MEDIAN_VALUES);
            }
            for (int i = 0; i < n; i++) {
                double x = in.readDouble();
                if (!(x >= 0) || Double.isInfinite(x)) {
                    throw new StateFormatException("monitor state: " + what + " holds the norm " + x
                            + ", expected a finite number >= 0");
                }
                m.add(x);
            }
        }

        private static <T> int count(StateInput<T> in, String what) throws IOException {
            int n = in.readInt();
            if (n < 0 || n > MAX_LAYERS) {
                throw new StateFormatException("monitor state: " + n + " " + what + ", expected 0.." + MAX_LAYERS);
            }
            return n;
        }

        /** A string as its length and one int per UTF-16 unit (StateOutput has no strings; layer names are short). */
        static <T> void writeString(StateOutput<T> out, String s) throws IOException {
            out.writeInt(s.length());
            for (int i = 0; i < s.length(); i++) {
                out.writeInt(s.charAt(i));
            }
        }

        static <T> String readString(StateInput<T> in) throws IOException {
            int n = in.readInt();
            if (n < 0 || n > MAX_NAME) {
                throw new StateFormatException("monitor state: a layer name of " + n + " characters, expected 0.." + MAX_NAME);
            }
            char[] c = new char[n];
            for (int i = 0; i < n; i++) {
                int u = in.readInt();
                if (u < Character.MIN_VALUE || u > Character.MAX_VALUE) {
                    throw new StateFormatException("monitor state: a layer name holds the character code " + u);
                }
                c[i] = (char) u;
            }
            return new String(c);
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
