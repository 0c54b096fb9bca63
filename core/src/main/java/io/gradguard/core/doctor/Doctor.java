package io.gradguard.core.doctor;

import io.gradguard.core.internal.Checks;
import io.gradguard.core.monitor.LayerStats;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.MonitorEvent;
import io.gradguard.core.monitor.RunRecorder;
import io.gradguard.core.monitor.RunRecording;
import io.gradguard.core.monitor.Sinks;
import io.gradguard.core.monitor.StepRecord;
import io.gradguard.core.monitor.TensorStats;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The gradient doctor: reads a run's {@link StepRecord}s and says what went wrong first, when and
 * where, and what to change, with the evidence for each number. Works on a finished recording
 * ({@link #diagnose(RunRecording)}, e.g. from {@link RunRecording#readJsonl}) or alongside a live
 * {@link Monitor} ({@link #watch}).
 *
 * <p>How it reads a run:
 * <ol>
 *   <li>Steps before the first problem are the <em>healthy</em> part; medians of their norms and
 *       losses are the baseline every later step is compared with.</li>
 *   <li>Non-finite: NaN/Inf elements, an infinite norm or an infinite loss. Exploding: a pre-clip
 *       global norm above {@link #EXPLODING_FACTOR} × the healthy median. Loss spike: a loss above
 *       {@link #LOSS_SPIKE_FACTOR} × the healthy median. Vanishing: layers below
 *       {@link #VANISHING_RATIO} × the largest layer's norm on {@link #VANISHING_STEPS} measured
 *       steps in a row. Stalled: a layer whose gradient is exactly 0 on {@link #STALLED_STEPS}
 *       measured steps in a row.</li>
 *   <li>Remedies: a clip threshold at the {@link #CLIP_PERCENTILE}-th percentile of the healthy
 *       norms, a learning-rate factor from the size of the loss overshoot, a skip stage where steps
 *       went non-finite or diverged, accumulation where the healthy norms are noisy, and structural
 *       advice where the depth profile or a recurrent layer points to it.</li>
 * </ol>
 *
 * <pre>{@code
 * Doctor doctor = Doctor.watch(monitor);     // before training
 * ... train ...
 * Diagnosis d = doctor.diagnosis();
 * log.info("{}", d.text());
 * }</pre>
 *
 * <p>The diagnosis of a run with no problem and at least {@link #MIN_STEPS} steps is
 * {@link Diagnosis.Status#HEALTHY} with no remedy; with fewer steps it is
 * {@link Diagnosis.Status#CANNOT_JUDGE}.
 */
public final class Doctor {

    /**
     * Steps a run needs before the doctor calls it healthy: the {@link Monitor}'s own exploding
     * detector waits 20 steps for a baseline by default, and a run that has not failed within that
     * many steps may simply not have failed yet.
     */
    public static final int MIN_STEPS = 20;

    /**
     * Healthy norms needed before a norm can count as exploding: the median of fewer is one or two
     * batches, not a baseline (the monitor's per-layer detector waits for 3 as well).
     */
    public static final int MIN_HISTORY = 3;

    /**
     * A pre-clip global norm above this many times the healthy median is exploding. Minibatch
     * gradient norms of a healthy run rarely vary by more than a few times; 10× is the monitor's
     * default exploding factor, so the doctor and the monitor's events agree.
     */
    public static final double EXPLODING_FACTOR = 10;

    /**
     * A loss above this many times the median of the healthy losses is a spike: minibatch losses of
     * a healthy run vary by up to 2-3× between batches (small batches, heavy-tailed targets), and an
     * update that overshoots a minimum multiplies the loss by much more.
     */
    public static final double LOSS_SPIKE_FACTOR = 4;

    /**
     * The percentile of the healthy pre-clip norms the suggested clip threshold starts from. AutoClip
     * (Seetharaman et al. 2020) clips at a low percentile of the norm history and found p = 10 to work
     * across tasks: most steps are then scaled a little, none by a spike, so the step size stays that
     * of the healthy phase.
     */
    public static final double CLIP_PERCENTILE = 10;

    /**
     * A layer whose gradient norm is below this share of the largest layer's is vanishing: with SGD
     * its weights move over a thousand times slower than the largest layer's, so on a training run
     * of thousands of steps they practically stop learning. (A healthy deep ReLU MLP at
     * initialization shows about 1e-2 between its first and its output layer.)
     */
    public static final double VANISHING_RATIO = 1e-3;

    /**
     * Measured steps in a row a layer must stay below {@link #VANISHING_RATIO} (or at 0 for
     * {@link #STALLED_STEPS}) before it counts: one step is one batch, a streak is the network.
     */
    public static final int VANISHING_STEPS = 5;

    /** Measured steps in a row with an exactly zero layer gradient before the layer counts as stalled (as {@link #VANISHING_STEPS}). */
    public static final int STALLED_STEPS = 5;

    /**
     * A depth profile whose gradient grows by more than this factor per layer from the output down
     * points to the initialization or missing normalization: variance-preserving initializations
     * (He, Xavier) keep it near 1, and a 2× per layer is 2^L over L layers.
     */
    public static final double DEPTH_GROWTH = 2;

    /**
     * The healthy norms' coefficient of variation (standard deviation / mean) above which the
     * batches are called noisy and accumulation is suggested: at 1 a step's norm is as likely to be
     * twice the mean as near it, which is batch noise, not signal.
     */
    public static final double NOISE_CV = 1.0;

    /**
     * The coefficient of variation accumulation aims for: averaging k micro-batches divides the noise
     * by √k, so k = ⌈(cv / 0.5)²⌉ brings noisy batches to half their mean.
     */
    public static final double TARGET_CV = 0.5;

    /** Healthy norms needed to measure their noise: fewer do not give a coefficient of variation worth acting on. */
    public static final int MIN_NOISE_SAMPLES = 10;

    /** The largest accumulation the doctor suggests: beyond 8 micro-batches, use a larger batch or a lower learning rate instead. */
    public static final int MAX_ACCUMULATE = 8;

    /**
     * The skip stage's limit on consecutive non-finite steps: one or two poisoned batches are
     * dropped; three in a row means training itself is broken, and the guard should stop loudly.
     */
    public static final int SKIP_MAX_CONSECUTIVE = 3;

    /**
     * Parameter names of a recurrent (hidden-to-hidden) weight as the three frameworks and the
     * common layers name them: DL4J's {@code RW}, {@code Wh}, PyTorch's {@code weight_hh_l0},
     * Keras' {@code recurrent_kernel}. A problem in a layer holding one points to gated cells.
     */
    public static final Pattern RECURRENT_PARAMETER = Pattern.compile("(?i)(^|[/_.:])(RW|Wh|W_hh|weight_hh\\w*|recurrent\\w*)$");

    private final RunRecorder recorder;

    private Doctor(RunRecorder recorder) {
        this.recorder = recorder;
    }

    /**
     * Starts recording a live monitor's steps for a diagnosis (adds a memory sink to it).
     *
     * @throws IllegalArgumentException if monitor is null
     */
    public static Doctor watch(Monitor monitor) {
        RunRecorder r = Sinks.memory();
        Checks.notNull("monitor", monitor).addListener(r);
        return new Doctor(r);
    }

    /** The diagnosis of the steps recorded so far. */
    public Diagnosis diagnosis() {
        return diagnose(recorder.recording());
    }

    /**
     * Diagnoses a run.
     *
     * @throws IllegalArgumentException if run is null
     */
    public static Diagnosis diagnose(RunRecording run) {
        Checks.notNull("run", run);
        return new Reading(run).diagnosis();
    }

    /** The p-th percentile (0..100) of values, interpolated between closest ranks (numpy's default). */
    static double percentile(List<Double> values, double p) {
        double[] v = values.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        if (v.length == 0) {
            return Double.NaN;
        }
        double pos = p / 100 * (v.length - 1);
        int lo = (int) Math.floor(pos);
        int hi = Math.min(v.length - 1, lo + 1);
        return v[lo] + (pos - lo) * (v[hi] - v[lo]);
    }

    static double median(List<Double> values) {
        return percentile(values, 50);
    }

    /** One pass over a run's records, then the conclusions. */
    private static final class Reading {
        final RunRecording run;
        final List<Finding> findings = new ArrayList<>();
        final List<Double> healthyNorms = new ArrayList<>();
        final List<Double> healthyLosses = new ArrayList<>();
        final Map<String, List<Double>> healthyLayers = new LinkedHashMap<>();
        final Set<String> recurrentLayers = new LinkedHashSet<>();
        long firstHealthyStep = -1;
        long lastHealthyStep = -1;
        /** The first loss spike's ratio to its healthy median, and that median (NaN if none). */
        double spikeRatio = Double.NaN;
        double spikeBaseline = Double.NaN;
        double explodingNorm = Double.NaN;
        int applied;

        Reading(RunRecording run) {
            this.run = run;
            scan();
        }

        private void scan() {
            boolean bad = false;
            Finding nonFinite = null;
            Finding exploding = null;
            Finding spike = null;
            Map<String, Integer> lowStreak = new LinkedHashMap<>();
            Map<String, Integer> zeroStreak = new LinkedHashMap<>();
            Set<String> stalled = new LinkedHashSet<>();
            int vanishingStreak = 0;
            Finding vanishing = null;
            for (StepRecord r : run.records()) {
                for (TensorStats t : r.tensors()) {
                    if (RECURRENT_PARAMETER.matcher(t.name()).find()) {
                        recurrentLayers.add(t.layer());
                    }
                }
                if (r.skipped()) {
                    continue;
                }
                applied++;
                double norm = r.normBefore();
                if (nonFinite == null && (r.nonFinite() > 0 || !Double.isFinite(norm) || Double.isInfinite(r.loss()))) {
                    nonFinite = nonFiniteFinding(r);
                    findings.add(nonFinite);
                    break; // the weights are poisoned: nothing after this says anything about the network
                }
                if (exploding == null && healthyNorms.size() >= MIN_HISTORY && norm > EXPLODING_FACTOR * median(healthyNorms)) {
                    exploding = explodingFinding(r);
                    findings.add(exploding);
                    bad = true;
                }
                if (spike == null && !healthyLosses.isEmpty() && r.hasLoss() && r.loss() > LOSS_SPIKE_FACTOR * median(healthyLosses)) {
                    spikeBaseline = median(healthyLosses);
                    spikeRatio = r.loss() / spikeBaseline;
                    spike = new Finding(Finding.Kind.LOSS_SPIKE, r.step(), List.of(), spikeRatio, "loss " + Text.sci(r.loss()) + ", "
                            + Text.factor(spikeRatio) + " the median of the " + healthyLosses.size() + " healthy steps before ("
                            + Text.sci(spikeBaseline) + "): the update before it overshot");
                    findings.add(spike);
                    bad = true;
                }
                boolean measured = r.detailed() && r.layers().size() > 1 && r.layers().stream().allMatch(l -> Double.isFinite(l.norm()));
                if (measured) {
                    stalled(r, zeroStreak, stalled);
                }
                if (bad) {
                    continue;
                }
                if (firstHealthyStep < 0) {
                    firstHealthyStep = r.step();
                }
                lastHealthyStep = r.step();
                healthyNorms.add(norm);
                if (r.hasLoss()) {
                    healthyLosses.add(r.loss());
                }
                if (measured) {
                    for (LayerStats l : r.layers()) {
                        healthyLayers.computeIfAbsent(l.layer(), k -> new ArrayList<>()).add(l.norm());
                    }
                    if (vanishing == null) {
                        List<String> low = lowLayers(r);
                        vanishingStreak = low.isEmpty() ? 0 : vanishingStreak + 1;
                        if (vanishingStreak == VANISHING_STEPS) {
                            vanishing = vanishingFinding(r, low);
                            findings.add(vanishing);
                        }
                    }
                }
            }
            findings.sort(Comparator.comparingLong(Finding::step).thenComparing(Finding::kind));
        }

        private Finding nonFiniteFinding(StepRecord r) {
            String where = "";
            String param = "";
            for (TensorStats t : r.tensors()) {
                if (t.nonFinite() > 0) {
                    where = t.layer();
                    param = t.name();
                    break;
                }
            }
            if (where.isEmpty()) {
                for (LayerStats l : r.layers()) {
                    if (!Double.isFinite(l.norm())) {
                        where = l.layer();
                        break;
                    }
                }
            }
            String what = r.nonFinite() > 0 ? r.nonFinite() + " NaN/Inf gradient values"
                    : !Double.isFinite(r.normBefore()) ? "gradient norm " + r.normBefore() : "loss " + r.loss();
            return new Finding(Finding.Kind.NON_FINITE, r.step(), where.isEmpty() ? List.of() : List.of(where), r.nonFinite(),
                    what + (where.isEmpty() ? "" : ", first in layer " + where + (param.isEmpty() ? "" : " (parameter " + param + ")")));
        }

        private Finding explodingFinding(StepRecord r) {
            double med = median(healthyNorms);
            explodingNorm = r.normBefore();
            String layer = "";
            for (MonitorEvent e : r.events()) {
                if (e.kind() == MonitorEvent.Kind.EXPLODING && !e.layer().isEmpty()) {
                    layer = e.layer();
                    break;
                }
            }
            if (layer.isEmpty()) {
                double worst = 0;
                for (LayerStats l : r.layers()) {
                    List<Double> h = healthyLayers.get(l.layer());
                    double base = h == null || h.isEmpty() ? Double.NaN : median(h);
                    double ratio = base > 0 ? l.norm() / base : Double.NaN;
                    if (ratio > worst) {
                        worst = ratio;
                        layer = l.layer();
                    }
                }
            }
            return new Finding(Finding.Kind.EXPLODING, r.step(), layer.isEmpty() ? List.of() : List.of(layer), r.normBefore(),
                    "gradient norm " + Text.sci(r.normBefore()) + ", " + Text.factor(r.normBefore() / med) + " the median of the "
                            + healthyNorms.size() + " healthy steps before (" + Text.sci(med) + ")"
                            + (layer.isEmpty() ? "" : "; first exploding layer " + layer));
        }

        private static List<String> lowLayers(StepRecord r) {
            double largest = r.layers().stream().mapToDouble(LayerStats::norm).max().orElse(0);
            List<String> low = new ArrayList<>();
            for (LayerStats l : r.layers()) {
                if (largest > 0 && l.norm() < VANISHING_RATIO * largest) {
                    low.add(l.layer());
                }
            }
            return low;
        }

        private Finding vanishingFinding(StepRecord r, List<String> low) {
            LayerStats largest = r.layers().stream().max(Comparator.comparingDouble(LayerStats::norm)).orElseThrow();
            double smallest = r.layers().stream().mapToDouble(LayerStats::norm).min().orElse(0);
            return new Finding(Finding.Kind.VANISHING, r.step(), low, smallest / largest.norm(), "layers " + String.join(", ", low)
                    + " below " + Text.sci(VANISHING_RATIO) + " of the largest layer's gradient norm (" + largest.layer() + ", "
                    + Text.sci(largest.norm()) + ") on " + VANISHING_STEPS + " measured steps in a row; smallest ratio "
                    + Text.sci(smallest / largest.norm()));
        }

        private void stalled(StepRecord r, Map<String, Integer> zeroStreak, Set<String> stalled) {
            for (LayerStats l : r.layers()) {
                int n = l.norm() == 0 ? zeroStreak.merge(l.layer(), 1, Integer::sum) : 0;
                if (n == 0) {
                    zeroStreak.remove(l.layer());
                }
                if (n == STALLED_STEPS && stalled.add(l.layer())) {
                    long from = r.step() - STALLED_STEPS + 1;
                    findings.add(new Finding(Finding.Kind.STALLED, r.step(), List.of(l.layer()), 0, "layer " + l.layer()
                            + " got an exactly zero gradient on " + STALLED_STEPS + " measured steps in a row (from about step "
                            + from + "): its weights no longer change"));
                }
            }
        }

        /** The per-layer norms at the first finding's step, else the nearest measured healthy step before it. */
        private DepthProfile profile() {
            long at = findings.isEmpty() ? Long.MAX_VALUE : findings.get(0).step();
            StepRecord best = null;
            for (StepRecord r : run.records()) {
                if (r.step() > at) {
                    break;
                }
                if (!r.skipped() && r.detailed() && !r.layers().isEmpty() && r.layers().stream().allMatch(l -> Double.isFinite(l.norm()))) {
                    best = r;
                }
            }
            if (best == null) {
                return null;
            }
            return new DepthProfile(best.step(), best.layers().stream().map(LayerStats::layer).toList(),
                    best.layers().stream().map(LayerStats::norm).toList());
        }

        Diagnosis diagnosis() {
            int steps = run.records().size();
            DepthProfile profile = profile();
            if (findings.isEmpty()) {
                if (applied < MIN_STEPS) {
                    return new Diagnosis(run.name(), Diagnosis.Status.CANNOT_JUDGE, steps, applied + " applied steps recorded; the doctor"
                            + " needs at least " + MIN_STEPS + " to tell a healthy run from one that has not failed yet",
                            List.of(), profile, List.of(), Prescription.NONE);
                }
                return new Diagnosis(run.name(), Diagnosis.Status.HEALTHY, steps, "no non-finite value, no exploding norm (above "
                        + Text.factor(EXPLODING_FACTOR) + " its median " + Text.sci(median(healthyNorms)) + "), no loss spike, no"
                        + " vanishing or stalled layer in " + applied + " steps", List.of(), profile, List.of(), Prescription.NONE);
            }
            List<Remedy> remedies = new ArrayList<>();
            boolean diverging = findings.stream().anyMatch(f -> f.kind() == Finding.Kind.NON_FINITE
                    || f.kind() == Finding.Kind.EXPLODING || f.kind() == Finding.Kind.LOSS_SPIKE);
            double lrFactor = Double.NaN;
            double clip = Double.NaN;
            int skip = -1;
            int accumulate = 1;
            if (diverging) {
                if (!Double.isNaN(spikeRatio)) {
                    // one SGD step multiplies the loss along the sharpest direction by (1 - ηλ)²: a ratio r means ηλ = 1 + √r
                    lrFactor = Text.round2(1 / (1 + Math.sqrt(spikeRatio)));
                }
                if (!healthyNorms.isEmpty()) {
                    double p = percentile(healthyNorms, CLIP_PERCENTILE);
                    clip = Text.round2(p * (Double.isNaN(lrFactor) ? 1 : lrFactor));
                    String range = healthyNorms.size() == 1 ? "the one healthy step (" + firstHealthyStep + ")"
                            : "the " + healthyNorms.size() + " healthy steps " + firstHealthyStep + "-" + lastHealthyStep;
                    remedies.add(new Remedy(Remedy.Kind.CLIP_THRESHOLD, clip, "", "clip the global gradient norm at " + Text.literal(clip)
                            + " (Transforms.clipByGlobalNorm(" + Text.literal(clip) + "))",
                            "the " + (int) CLIP_PERCENTILE + "th percentile of the pre-clip norms of " + range + " is " + Text.sci(p)
                                    + " (median " + Text.sci(median(healthyNorms)) + "): a clip there keeps every step the size of a"
                                    + " healthy one" + (Double.isNaN(lrFactor) ? "" : ", times " + Text.literal(lrFactor)
                                    + " for the loss overshoot (a clip bounds an SGD step at learning rate × threshold)")
                                    + (Double.isNaN(explodingNorm) ? "" : "; the exploding step reached " + Text.sci(explodingNorm))
                                    + (healthyNorms.size() < MIN_HISTORY ? "; few healthy steps, so the threshold is rough" : "")));
                }
                if (!Double.isNaN(lrFactor)) {
                    remedies.add(new Remedy(Remedy.Kind.LEARNING_RATE, lrFactor, "", "or multiply the learning rate by "
                            + Text.literal(lrFactor) + " (then clip at " + Text.literal(Text.round2(clip / lrFactor)) + " instead)",
                            "the loss rose " + Text.factor(spikeRatio) + " over its healthy median (" + Text.sci(spikeBaseline)
                                    + ") in one step; on a quadratic that is an overshoot of ηλ = 1 + √" + Text.literal(Text.round2(spikeRatio))
                                    + ", and ηλ ≤ 1 needs the learning rate × 1/(1 + √r)"));
                }
                skip = SKIP_MAX_CONSECUTIVE;
                Finding nf = firstOf(Finding.Kind.NON_FINITE);
                remedies.add(new Remedy(Remedy.Kind.SKIP_NON_FINITE, skip, "", "skip steps with NaN/Inf gradients, giving up after "
                        + skip + " in a row (Transforms.skipNonFinite(" + skip + "))",
                        nf != null ? "step " + nf.step() + ": " + nf.message() + "; one poisoned update ruins every weight"
                                : "the run diverged; a skip stage keeps a single non-finite batch from poisoning the weights"));
                double cv = cv(healthyNorms);
                if (healthyNorms.size() >= MIN_NOISE_SAMPLES && cv > NOISE_CV) {
                    accumulate = (int) Math.min(MAX_ACCUMULATE, Math.ceil(Math.pow(cv / TARGET_CV, 2)));
                    remedies.add(new Remedy(Remedy.Kind.ACCUMULATE, accumulate, "", "average " + accumulate
                            + " micro-batches per step (Transforms.accumulate(" + accumulate + "))", "the healthy norms vary with a"
                            + " coefficient of variation of " + Text.literal(Text.round2(cv)) + " (above " + Text.literal(NOISE_CV)
                            + "): the batches are noisy; averaging k divides the noise by √k"));
                }
            }
            structural(remedies, profile);
            Prescription p = new Prescription(skip, accumulate, clip);
            Finding first = findings.get(0);
            return new Diagnosis(run.name(), Diagnosis.Status.PROBLEMS, steps, "first " + first.kind() + " at step " + first.step()
                    + (first.layers().isEmpty() ? "" : " (" + String.join(", ", first.layers()) + ")"), findings, profile, remedies, p);
        }

        private void structural(List<Remedy> remedies, DepthProfile profile) {
            Finding vanishing = firstOf(Finding.Kind.VANISHING);
            String depth = profile == null || profile.layers().size() < 2 ? "" : "; at step " + profile.step() + " " + profile.describe();
            if (vanishing != null) {
                String layers = String.join(", ", vanishing.layers());
                remedies.add(new Remedy(Remedy.Kind.NORMALIZATION, Double.NaN, layers, "add normalization (BatchNorm or LayerNorm)"
                        + " to layers " + layers + ", so each layer's input keeps a unit scale and the activations' slope does not"
                        + " shrink the gradient", vanishing.message() + depth));
                remedies.add(new Remedy(Remedy.Kind.RESIDUAL, Double.NaN, layers, "add residual connections around layers " + layers
                        + ": an identity path carries the output's gradient down unshrunk", vanishing.message() + depth));
                remedies.add(new Remedy(Remedy.Kind.INITIALIZATION, Double.NaN, layers, "initialize with a variance-preserving scheme"
                        + " (Xavier/Glorot for sigmoid and tanh, He for ReLU), or use ReLU-family activations instead of"
                        + " saturating ones", vanishing.message() + depth));
            }
            Finding exploding = firstOf(Finding.Kind.EXPLODING);
            if (exploding != null && profile != null && profile.meanFactor() > DEPTH_GROWTH) {
                remedies.add(new Remedy(Remedy.Kind.INITIALIZATION, Double.NaN, "", "re-initialize with a variance-preserving scheme"
                        + " (He for ReLU, Xavier/Glorot for tanh) or add normalization: the gradient grows on its way down",
                        "at step " + profile.step() + " " + profile.describe() + " (above " + Text.factor(DEPTH_GROWTH) + ")"));
            }
            Set<String> recurrent = new LinkedHashSet<>();
            for (Finding f : findings) {
                if (f.kind() != Finding.Kind.STALLED) {
                    for (String l : f.layers()) {
                        if (recurrentLayers.contains(l)) {
                            recurrent.add(l);
                        }
                    }
                }
            }
            if (recurrent.isEmpty() && (exploding != null || vanishing != null) && recurrentLayers.size() == 1) {
                recurrent.addAll(recurrentLayers);
            }
            if (!recurrent.isEmpty()) {
                String layers = String.join(", ", recurrent);
                remedies.add(new Remedy(Remedy.Kind.GATED_CELLS, Double.NaN, layers, "replace the vanilla recurrent layer " + layers
                        + " by gated cells (LSTM or GRU): their additive cell state carries gradients across long sequences"
                        + " instead of multiplying them by the recurrent weights at every time step",
                        "the problem sits in " + layers + ", which holds a recurrent weight; vanilla RNN gradients scale like the"
                                + " recurrent weights' spectral radius to the power of the sequence length (Pascanu et al. 2013)"));
            }
            for (Finding f : findings) {
                if (f.kind() == Finding.Kind.STALLED) {
                    remedies.add(new Remedy(Remedy.Kind.REVIVE_LAYER, Double.NaN, f.layers().get(0), "layer " + f.layers().get(0)
                            + " receives no gradient: if it uses ReLU its units died (use LeakyReLU, a lower learning rate or a"
                            + " clip), otherwise check that it is connected to the loss", f.message()));
                }
            }
        }

        private Finding firstOf(Finding.Kind kind) {
            return findings.stream().filter(f -> f.kind() == kind).findFirst().orElse(null);
        }

        private static double cv(List<Double> v) {
            if (v.size() < 2) {
                return 0;
            }
            double mean = v.stream().mapToDouble(Double::doubleValue).average().orElse(0);
            double var = v.stream().mapToDouble(x -> (x - mean) * (x - mean)).sum() / (v.size() - 1);
            return mean > 0 ? Math.sqrt(var) / mean : 0;
        }
    }
}
