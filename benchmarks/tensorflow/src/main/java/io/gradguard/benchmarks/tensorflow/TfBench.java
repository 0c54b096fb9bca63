package io.gradguard.benchmarks.tensorflow;

import io.gradguard.benchmarks.Pipelines;
import io.gradguard.benchmarks.Row;
import io.gradguard.benchmarks.Rounds;
import io.gradguard.benchmarks.Scaling;
import io.gradguard.benchmarks.Section;
import io.gradguard.benchmarks.SmallModels;
import io.gradguard.benchmarks.Table;
import io.gradguard.core.GradientPipeline;
import io.gradguard.tensorflow.TfGuard;
import io.gradguard.tensorflow.TfOptimizer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.BiFunction;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.Adam;
import org.tensorflow.framework.optimizers.Optimizer.GradAndVar;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Gradients;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.family.TType;

/**
 * Parts 2-4 on TensorFlow Java (graph mode, CPU): training steps of a ~5M-parameter MLP
 * (1000-2000-1500-10, ReLU, softmax cross-entropy, Adam) on batches of 64, each a single
 * {@code session.run} of the optimizer's apply op. Every variant trains the same variables in one
 * graph and session (each with its own Adam slots); variants are interleaved step by step
 * ({@link Rounds}).
 *
 * <p>Variants, each fetching the loss with its step: unguarded (timed twice as two cases: the A/A
 * control shows the measurement noise); unguarded fetching Σg² as well (one read pass: the floor
 * of any global norm); hand-written TensorFlow clip ops between {@code tf.gradients} and
 * {@code applyGradients} (global-norm clip as {@code g · c / max(‖g‖, c)}, and
 * {@code tf.clipByValue}); GradGuard's {@link TfGuard} with the same clips ({@link Pipelines}), and
 * with a monitor reading per-tensor statistics on every step.
 */
public final class TfBench {
    static final int[] FULL = {1000, 2000, 1500, 10};
    static final int[] TINY = {32, 64, 48, 10};
    static final int BATCH = 64;

    private final Section section;
    private final int[] widths;
    private final List<AutoCloseable> open = new ArrayList<>();
    private static volatile int sink;

    private TfBench(Section section) {
        this.section = section;
        this.widths = section.tiny() ? TINY : FULL;
    }

    public static void main(String[] args) throws Exception {
        try (Section s = Section.fromArgs("tensorflow", args)) {
            TfBench b = new TfBench(s);
            try {
                b.run();
            } finally {
                for (int i = b.open.size() - 1; i >= 0; i--) {
                    b.open.get(i).close();
                }
            }
        }
    }

    /** One way of training: a step. */
    private interface Variant {
        void step();
    }

    /** A guarded way of training, whose last result can be read. */
    private static final class GuardedVariant implements Variant {
        private final TfGuard guard;
        private java.util.OptionalDouble coefficient = java.util.OptionalDouble.empty();

        GuardedVariant(TfGuard guard) {
            this.guard = guard;
        }

        @Override
        public void step() {
            coefficient = guard.step(Map.of(), BATCH).metric(Pipelines.COEFFICIENT);
        }
    }

    /** The MLP in a fresh graph: its loss, its variables, its parameter count. */
    private record Net(Graph graph, Ops tf, Operand<TFloat32> loss, List<Variable<TFloat32>> vars, long params) {
    }

    private void run() {
        if (!section.quick()) {
            parts();
        }
        section.part(5, "tensorflow small models: the guard's fixed cost per step", this::small);
    }

    /**
     * Part 5: on small models a step costs a fraction of a millisecond, and the guard's fixed cost
     * per step (session runs, host reads, bookkeeping) is what the ratios show. One graph and
     * session per size; plain, clip only, the README's pipeline, and it with a monitor, interleaved.
     */
    private void small() {
        for (int[] w : SmallModels.widths(section)) {
            Net n = net(w);
            Session session = new Session(n.graph());
            open.add(session);
            Variant plain = hand(n, session, "plain", (tf, grads) -> grads);
            Variant handClip = hand(n, session, "hand_clip", TfBench::clipByGlobalNorm);
            Variant handReadme = handReadme(n, session, false);
            Variant handRecorded = handReadme(n, session, true);
            session.initialize();
            Variant clip = guard(n, session, Pipelines.globalClip());
            Variant readme = guard(n, session, Pipelines.readme());
            Variant monitored = guard(n, session, Pipelines.readmeMonitored());
            Wrapped wClip = wrapped(n, session, Pipelines.globalClip());
            Wrapped wReadme = wrapped(n, session, Pipelines.readme());
            Wrapped wMonitored = wrapped(n, session, Pipelines.readmeMonitored());
            Wrapped wNoRatios = wrapped(n, session, Pipelines.readmeMonitoredWithoutRatios());
            session.initialize();
            for (int i = 0; i < SmallModels.warmUpSteps(section); i++) {
                for (Variant v : List.of(plain, handClip, handReadme, handRecorded, clip, readme, monitored, wClip, wReadme, wMonitored,
                        wNoRatios)) {
                    v.step();
                }
            }
            Rounds r = SmallModels.rounds(section);
            r.add("plain", plain::step);
            r.add("clip", clip::step);
            r.add("readme", readme::step);
            r.add("monitored", monitored::step);
            r.add("hand clip", handClip::step);
            r.add("hand readme", handReadme::step);
            r.add("hand recorded", handRecorded::step);
            r.add("w clip", wClip::step);
            r.add("w readme", wReadme::step);
            r.add("w monitored", wMonitored::step);
            r.add("w no ratios", wNoRatios::step);
            List.of(wClip, wReadme, wMonitored, wNoRatios).forEach(Wrapped::resetDrains);
            Map<String, Double> m = r.run();
            // the rounds hold a few drains only, too few for a mean: the monitored variants' drains are timed again alone
            for (Wrapped monitoredVariant : List.of(wMonitored, wNoRatios)) {
                monitoredVariant.timeDrainsAlone(section.tiny() ? 0 : DRAIN_WARM_UP, section.tiny() ? 1 : DRAIN_BLOCKS);
            }
            SmallModels.emit(section, "tensorflow", "TfOptimizer, one training op", n.params(), Map.of("plain", m.get("plain"),
                    "clip", wClip.withDrains(m.get("w clip")), "readme", wReadme.withDrains(m.get("w readme")),
                    "monitored", wMonitored.withDrains(m.get("w monitored"))));
            SmallModels.emit(section, "tensorflow", "TfGuard.step", n.params(), m);
            section.emit(Row.ratio(5, "tensorflow small model, clipByGlobalNorm as hand-written TF ops (context)",
                    Table.count(n.params()) + " params, batch " + SmallModels.BATCH, m.get("hand clip"), "unguarded step", m.get("plain"),
                    Double.NaN, "the floor of any clip in the graph"));
            section.emit(Row.ratio(5, "tensorflow small model, skip on a non-finite Σg² + clipByGlobalNorm as hand-written TF ops (context)",
                    Table.count(n.params()) + " params, batch " + SmallModels.BATCH, m.get("hand readme"), "unguarded step", m.get("plain"),
                    Double.NaN, "the floor of the README's pipeline in the graph: the update gated, nothing counted"));
            section.emit(Row.ratio(5, "tensorflow small model, the same + each step's record written to a ring variable, hand-written "
                    + "TF ops (context)", Table.count(n.params()) + " params, batch " + SmallModels.BATCH, m.get("hand recorded"),
                    "unguarded step", m.get("plain"), Double.NaN,
                    "the floor of the README's pipeline with a monitor in the graph: one row (loss, norm, coefficient, flag, per-tensor Σx²) a step"));
            section.emit(Row.ratio(5, "tensorflow small model, skipNonFinite + clipByGlobalNorm + Monitor without update ratios "
                    + "(TfOptimizer; context)", Table.count(n.params()) + " params, batch " + SmallModels.BATCH,
                    wNoRatios.withDrains(m.get("w no ratios")), "unguarded step", m.get("plain"), Double.NaN,
                    "the README + Monitor row less what its update ratios cost on a step that does not measure them (the join that orders the θ copies before the update, and their reductions, dead on such a step)"));
            section.emit(Row.ratio(5, "tensorflow small model, drain() every " + DRAIN_EVERY + " calls, per call (README + Monitor, "
                    + "TfOptimizer; context)", Table.count(n.params()) + " params, batch " + SmallModels.BATCH,
                    wMonitored.drainMillisPerCall(), "unguarded step", m.get("plain"), Double.NaN,
                    "part of the README + Monitor row: one session run and " + DRAIN_EVERY + " records on the host, per call, JIT-warm (mean of "
                    + DRAIN_BLOCKS + " drains, each after " + DRAIN_EVERY + " steps of the variant alone)"));
        }
    }

    private void parts() {
        section.part(2, "tensorflow training steps", () -> {
            // one graph, one session, one set of model variables for every variant (each with its own
            // optimizer slots): the rows compare the ops between gradients and update, not two graphs
            Net n = net(widths);
            Session session = new Session(n.graph());
            open.add(session);
            long params = n.params();
            Variant plain = hand(n, session, "plain", (tf, grads) -> grads);
            Variant normOnly = handNormOnly(n, session);
            Variant handMonitored = handMonitored(n, session);
            Variant handGlobal = hand(n, session, "hand_global", TfBench::clipByGlobalNorm);
            Variant handGlobal64 = hand(n, session, "hand_global64", TfBench::clipByGlobalNorm64);
            Variant handValue = hand(n, session, "hand_value", (tf, grads) -> {
                List<Operand<TFloat32>> out = new ArrayList<>();
                for (Operand<TFloat32> g : grads) {
                    out.add(tf.clipByValue(g, tf.constant((float) -Pipelines.MAX_VALUE), tf.constant((float) Pipelines.MAX_VALUE)));
                }
                return out;
            });
            session.initialize();
            GuardedVariant guardGlobal = guard(n, session, Pipelines.globalClip());
            GuardedVariant guardIdle = guard(n, session, Pipelines.globalClipIdle());
            Variant guardValue = guard(n, session, Pipelines.valueClip());
            Variant guardMonitored = guard(n, session, Pipelines.globalClipMonitored());
            GuardedVariant guardWatched = guard(n, session, Pipelines.guarded());
            GuardedVariant guardWatchedIdle = guard(n, session, Pipelines.guardedIdle());
            Wrapped wrappedWatched = wrapped(n, session, Pipelines.guarded());
            Wrapped wrappedWatchedIdle = wrapped(n, session, Pipelines.guardedIdle());
            Wrapped wrappedValue = wrapped(n, session, Pipelines.valueClip());
            Wrapped wrappedMonitored = wrapped(n, session, Pipelines.globalClipMonitored());
            session.initialize();
            // JIT warm-up of GradGuard's host code (the rounds' own warm-up gives it a few dozen
            // steps, the interpreter's share of a real run's first seconds): real steps on the shared graph
            for (int i = 0; i < (section.tiny() ? 1 : WARM_UP_STEPS); i++) {
                for (Variant v : List.of(guardGlobal, guardIdle, guardValue, guardMonitored, guardWatched, guardWatchedIdle,
                        wrappedWatched, wrappedWatchedIdle, wrappedValue, wrappedMonitored)) {
                    v.step();
                }
            }
            Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(5, 60);
            r.add("unguarded", plain::step);
            r.add("unguarded again", plain::step);
            r.add("norm only", normOnly::step);
            r.add("hand global", handGlobal::step);
            r.add("hand global f64", handGlobal64::step);
            r.add("hand monitored", handMonitored::step);
            r.add("hand value", handValue::step);
            r.add("guard global", guardGlobal::step);
            r.add("guard global idle", guardIdle::step);
            r.add("guard value", guardValue::step);
            r.add("guard monitored", guardMonitored::step);
            r.add("guard watched", guardWatched::step);
            r.add("guard watched idle", guardWatchedIdle::step);
            r.add("wrapped watched", wrappedWatched::step);
            r.add("wrapped watched idle", wrappedWatchedIdle::step);
            r.add("wrapped value", wrappedValue::step);
            r.add("wrapped monitored", wrappedMonitored::step);
            List.of(wrappedWatched, wrappedWatchedIdle, wrappedValue, wrappedMonitored).forEach(Wrapped::resetDrains);
            Map<String, Double> m = new java.util.LinkedHashMap<>(r.run());
            m.put("wrapped watched", wrappedWatched.withDrains(m.get("wrapped watched")));
            m.put("wrapped watched idle", wrappedWatchedIdle.withDrains(m.get("wrapped watched idle")));
            m.put("wrapped value", wrappedValue.withDrains(m.get("wrapped value")));
            m.put("wrapped monitored", wrappedMonitored.withDrains(m.get("wrapped monitored")));
            String size = Table.count(params) + " params, batch " + BATCH;
            double base = m.get("unguarded");
            section.emit(Row.ratio(2, "tensorflow unguarded step, A/A control (noise)", size, m.get("unguarded again"),
                    "unguarded step", base, Double.NaN, "the same step timed twice: the spread of this machine"));
            section.emit(Row.ratio(2, "tensorflow unguarded step + Σg² only, hand-written (context)", size, m.get("norm only"),
                    "unguarded step", base, Double.NaN, "one read pass over the gradients (l2Loss each, fetched): the least a global norm costs"));
            section.emit(Row.ratio(2, "tensorflow guarded step, clipByGlobalNorm + norm monitor (TfGuard)", size, m.get("guard watched"),
                    "unguarded step", base, 1.03, Pipelines.clipActivity(guardWatched.coefficient)));
            section.emit(Row.ratio(2, "tensorflow guarded step, clipByGlobalNorm + norm monitor, armed, not acting (TfGuard)", size,
                    m.get("guard watched idle"), "unguarded step", base, 1.03, Pipelines.clipActivity(guardWatchedIdle.coefficient)));
            section.emit(Row.ratio(2, "tensorflow guarded step, clipByGlobalNorm + norm monitor (TfOptimizer, one training op)", size,
                    m.get("wrapped watched"), "Σg² only step", m.get("norm only"), 1.01, "clip acting"));
            section.emit(Row.ratio(2, "tensorflow hand-written clip, acting: Σg² + one scale pass (context)", size, m.get("hand global"),
                    "Σg² only step", m.get("norm only"), Double.NaN, "the floor of a clip that acts: tensorflow-framework's "
                    + "optimizers take no gradient scale, so the scale is a pass of its own"));
            section.emit(Row.ratio(2, "tensorflow guarded step, clipByGlobalNorm + norm monitor, acting, vs that floor (TfOptimizer)", size,
                    m.get("wrapped watched"), "hand-written clip step", m.get("hand global"), 1.01, "clip acting"));
            section.emit(Row.ratio(2, "tensorflow guarded step, clipByGlobalNorm + norm monitor, armed, not acting (TfOptimizer)", size,
                    m.get("wrapped watched idle"), "Σg² only step", m.get("norm only"), 1.01, "clip armed, not acting"));
            section.emit(Row.ratio(2, "tensorflow guarded step + monitor every step (TfOptimizer)", size, m.get("wrapped monitored"),
                    "Σg² only step", m.get("norm only"), 1.15, "per-tensor Σx², max|x| and a non-finite flag in the graph every step"));
            section.emit(Row.ratio(2, "tensorflow hand-written clip, acting, + per-tensor Σx², max|x| and an all-finite flag fetched "
                    + "every step (context)", size, m.get("hand monitored"), "Σg² only step", m.get("norm only"), Double.NaN,
                    "the floor of monitoring every step: the clip's scale pass and a max|x| reduction per tensor, as TF ops"));
            section.emit(Row.ratio(2, "tensorflow guarded step + monitor every step, vs that floor (TfOptimizer)", size,
                    m.get("wrapped monitored"), "hand-written monitored clip step", m.get("hand monitored"), Double.NaN,
                    "what GradGuard adds: the record ring, counters and the non-finite policy"));
            section.emit(Row.ratio(3, "tensorflow TfOptimizer clipByValue vs tf.clipByValue", size, m.get("wrapped value"),
                    "tf.clipByValue step", m.get("hand value"), 1.05, ""));
            section.emit(Row.ratio(2, "tensorflow guarded step, clipByGlobalNorm alone, armed, not acting (context)", size,
                    m.get("guard global idle"), "unguarded step", base, Double.NaN, Pipelines.clipActivity(guardIdle.coefficient)));
            section.emit(Row.ratio(2, "tensorflow guarded step + monitor every step", size, m.get("guard monitored"),
                    "unguarded step", base, Double.NaN, "per-tensor statistics each step (gradient buffers, 3 runs)"));
            section.emit(Row.ratio(3, "tensorflow GradGuard clipByGlobalNorm vs hand-written TF ops", size, m.get("guard global"),
                    "hand-written clip step", m.get("hand global"), 1.05, ""));
            section.emit(Row.ratio(3, "tensorflow hand-written clip summing Σg² in float64 (context)", size,
                    m.get("hand global f64"), "hand-written float32 clip step", m.get("hand global"), Double.NaN,
                    "what float64 reductions cost in TF"));
            section.emit(Row.ratio(3, "tensorflow GradGuard clipByValue vs tf.clipByValue", size, m.get("guard value"),
                    "tf.clipByValue step", m.get("hand value"), 1.05, ""));
        });
        section.part(4, "tensorflow guard cost vs model size", this::scaling);
    }

    private static final long[] SCALE_SIZES = {1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000};
    private static final long[] TINY_SCALE_SIZES = {100_000, 1_000_000};

    /**
     * Part 4: the guard's cost against the number of parameters. A graph whose loss is Σw²/2 over
     * a [n/1000, 1000] variable (its gradient is w: backward costs one pass) trains
     * with plain SGD, with and without {@code clipByGlobalNorm}; the cost is the difference of the
     * median steps.
     */
    private void scaling() {
        long[] sizes = section.tiny() ? TINY_SCALE_SIZES : SCALE_SIZES;
        double[] cost = new double[sizes.length];
        for (int k = 0; k < sizes.length; k++) {
            long n = sizes[k];
            List<AutoCloseable> scope = new ArrayList<>();
            try {
                Variant plain = sumModel(n, null, scope);
                Variant guarded = sumModel(n, Pipelines.globalClip(), scope);
                Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(2, n >= 30_000_000 ? 5 : 9);
                r.add("plain", plain::step);
                r.add("guarded", guarded::step);
                Map<String, Double> m = r.run();
                cost[k] = m.get("guarded") - m.get("plain");
                section.progress("%s params: plain %s, guarded %s", Table.count(n), Table.time(m.get("plain")),
                        Table.time(m.get("guarded")));
            } finally {
                for (int i = scope.size() - 1; i >= 0; i--) {
                    try {
                        scope.get(i).close();
                    } catch (Exception e) {
                        section.progress("closing: %s", e);
                    }
                }
            }
        }
        section.emit(Scaling.row("tensorflow guard cost (clipByGlobalNorm, guarded − plain SGD step)", sizes, cost));
    }

    /** loss = Σ w²/2 over a [n/1000, 1000] float variable, SGD; guarded by {@code pipeline} unless null. */
    private Variant sumModel(long n, GradientPipeline pipeline, List<AutoCloseable> scope) {
        Graph graph = new Graph();
        scope.add(graph);
        Ops tf = Ops.create(graph);
        Variable<TFloat32> w = tf.variable(tf.fill(tf.constant(new long[] {n / 1000, 1000}), tf.constant(0.5f)));
        // Σ w²/2 (L2Loss): its gradient is w itself, which TensorFlow cannot constant-fold away (the gradient
        // of Σ w is a constant fill, and grappler then folds the whole clip computation)
        Operand<TFloat32> loss = tf.nn.l2Loss(w);
        Session session = new Session(graph);
        scope.add(session);
        if (pipeline != null) {
            TfGuard guard = TfGuard.of(pipeline).attach(session, loss, List.of(w), new org.tensorflow.framework.optimizers.GradientDescent(graph, 1e-6f));
            scope.add(guard);
            return () -> guard.step(Map.of(), 1);
        }
        Gradients g = tf.gradients(loss, List.of(w));
        List<GradAndVar<? extends TType>> pairs = List.of(new GradAndVar<>(g.<TFloat32>dy(0), w.asOutput()));
        Op train = new org.tensorflow.framework.optimizers.GradientDescent(graph, 1e-6f).applyGradients(pairs, "train");
        session.initialize();
        return () -> {
            try (Result r = session.runner().addTarget(train).fetch(loss).run()) {
                sink = r.size();
            }
        };
    }

    /** The gradients of the model's loss with respect to its variables, as graph outputs. */
    private static List<Operand<TFloat32>> gradients(Net n) {
        Gradients gradients = n.tf().gradients(n.loss(), n.vars());
        List<Operand<TFloat32>> grads = new ArrayList<>();
        for (int i = 0; i < n.vars().size(); i++) {
            grads.add(gradients.<TFloat32>dy(i));
        }
        return grads;
    }

    /** An Adam apply op named {@code name} for the (transformed) gradients. */
    private static Op apply(Net n, List<Operand<TFloat32>> grads, String name) {
        List<GradAndVar<? extends TType>> pairs = new ArrayList<>();
        for (int i = 0; i < n.vars().size(); i++) {
            pairs.add(new GradAndVar<>(grads.get(i).asOutput(), n.vars().get(i).asOutput()));
        }
        return new Adam(n.graph(), Pipelines.LEARNING_RATE).applyGradients(pairs, name);
    }

    /** A step with the gradients transformed by hand-written TF ops (identity: unguarded), fetching the loss as the guard does. */
    private Variant hand(Net n, Session session, String name, BiFunction<Ops, List<Operand<TFloat32>>, List<Operand<TFloat32>>> transform) {
        Op train = apply(n, transform.apply(n.tf(), gradients(n)), name);
        return () -> {
            try (Result r = session.runner().addTarget(train).fetch(n.loss()).run()) {
                sink = r.size();
            }
        };
    }

    /**
     * The unguarded step that also fetches Σg² (l2Loss of every gradient, summed): one read pass
     * over the gradients, the least any global norm costs, the gradients themselves unchanged.
     */
    private Variant handNormOnly(Net n, Session session) {
        List<Operand<TFloat32>> grads = gradients(n);
        Operand<TFloat32> sum = null;
        for (Operand<TFloat32> g : grads) {
            Operand<TFloat32> s = n.tf().nn.l2Loss(g);
            sum = sum == null ? s : n.tf().math.add(sum, s);
        }
        Operand<TFloat32> half = sum;
        Op train = apply(n, grads, "norm_only");
        return () -> {
            try (Result r = session.runner().addTarget(train).fetch(n.loss()).fetch(half).run()) {
                sink = r.size();
            }
        };
    }

    /**
     * The global-norm clip written by hand as TF ops, its parts kept for the floors that also record
     * or gate: per gradient Σg²/2 (l2Loss), Σg² = 2 · their sum, ‖g‖, the coefficient
     * c / max(‖g‖, c) with c = {@link Pipelines#MAX_NORM}, and each gradient times it.
     */
    private record HandClip(List<Operand<TFloat32>> halves, Operand<TFloat32> sum, Operand<TFloat32> norm, Operand<TFloat32> coef,
            List<Operand<TFloat32>> clipped) {
        static HandClip of(Ops tf, List<Operand<TFloat32>> grads) {
            List<Operand<TFloat32>> halves = new ArrayList<>();
            for (Operand<TFloat32> g : grads) {
                halves.add(tf.nn.l2Loss(g));
            }
            Operand<TFloat32> sum = tf.math.mul(tf.math.addN(halves), tf.constant(2f));
            Operand<TFloat32> c = tf.constant((float) Pipelines.MAX_NORM);
            Operand<TFloat32> norm = tf.math.sqrt(sum);
            Operand<TFloat32> coef = tf.math.div(c, tf.math.maximum(norm, c));
            List<Operand<TFloat32>> clipped = new ArrayList<>();
            for (Operand<TFloat32> g : grads) {
                clipped.add(tf.math.mul(g, coef));
            }
            return new HandClip(halves, sum, norm, coef, clipped);
        }
    }

    /**
     * The README's pipeline written by hand as TF ops, the least it costs in the graph: Σg² from
     * l2Loss per gradient, the clip from it, and the clipped gradients passed to Adam only when
     * Σg² is finite (a Switch each; Adam's own beta-power updates are left ungated). With
     * {@code recorded}, each step also writes one row (loss, norm, coefficient, the flag and the
     * per-tensor Σx²) to a [1000, width] ring variable at its step number: the least an in-graph
     * per-step record costs.
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private Variant handReadme(Net n, Session session, boolean recorded) {
        Ops tf = n.tf();
        HandClip clip = HandClip.of(tf, gradients(n));
        Operand<org.tensorflow.types.TBool> finite = tf.math.isFinite(clip.sum());
        List<Operand<TFloat32>> gated = new ArrayList<>();
        for (Operand<TFloat32> g : clip.clipped()) {
            gated.add(tf.switchCond(g, finite).outputTrue());
        }
        Op apply = apply(n, gated, recorded ? "hand_recorded" : "hand_readme");
        List<Op> targets = new ArrayList<>(List.of(apply));
        if (recorded) {
            List<Operand<TFloat32>> cells = new ArrayList<>(List.of(n.loss(), clip.norm(), clip.coef(),
                    tf.dtypes.cast(finite, TFloat32.class)));
            cells.addAll(clip.halves());
            Variable<org.tensorflow.types.TInt64> step = tf.variable(tf.constant(0L));
            Variable<TFloat32> ring = tf.variable(tf.fill(tf.constant(new long[] {1000, cells.size()}), tf.constant(Float.NaN)));
            Operand<org.tensorflow.types.TInt64> at = tf.math.floorMod(step, tf.constant(1000L));
            Op write = tf.scatterUpdate(ring, at, tf.stack(cells));
            targets.add(tf.withControlDependencies(List.of(write)).assignAdd(step, tf.constant(1L)));
        }
        return () -> {
            Session.Runner runner = session.runner().fetch(n.loss());
            targets.forEach(runner::addTarget);
            try (Result r = runner.run()) {
                sink = r.size();
            }
        };
    }

    /**
     * The floor of a clip that acts and monitors every step, written by hand: per gradient Σg²/2
     * (l2Loss) and max|g|, the clip g · c / max(‖g‖, c) from their sum, and the statistics with an
     * all-finite flag stacked into one vector fetched with the loss.
     */
    private Variant handMonitored(Net n, Session session) {
        Ops tf = n.tf();
        List<Operand<TFloat32>> grads = gradients(n);
        HandClip clip = HandClip.of(tf, grads);
        List<Operand<TFloat32>> stats = new ArrayList<>();
        for (Operand<TFloat32> g : grads) {
            stats.add(tf.max(tf.math.abs(g), tf.constant(allAxes(g.shape().numDimensions()))));
        }
        stats.addAll(clip.halves());
        stats.add(tf.dtypes.cast(tf.math.isFinite(clip.sum()), TFloat32.class));
        Operand<TFloat32> row = tf.stack(stats);
        Op train = apply(n, clip.clipped(), "hand_monitored");
        return () -> {
            try (Result r = session.runner().addTarget(train).fetch(n.loss()).fetch(row).run()) {
                sink = r.size();
            }
        };
    }

    /** Real steps each guarded variant takes before the rounds, to JIT-compile GradGuard's host code. */
    private static final int WARM_UP_STEPS = 300;

    /** A step through the TensorFlow adapter with the given pipeline, on the shared graph and session. */
    private GuardedVariant guard(Net n, Session session, GradientPipeline pipeline) {
        TfGuard guard = TfGuard.of(pipeline).attach(session, n.loss(), n.vars(), new Adam(n.graph(), Pipelines.LEARNING_RATE));
        open.add(guard);
        return new GuardedVariant(guard);
    }

    /** Calls between two {@link TfOptimizer#drain()}s of a wrapped variant with a monitor: a logging cadence. */
    private static final int DRAIN_EVERY = 100;

    /** Drains a small-model variant's drain time is averaged over ({@link Wrapped#timeDrainsAlone}). */
    private static final int DRAIN_BLOCKS = 30;

    /**
     * Drains each monitored variant runs before its drains are timed, so that the JIT has compiled
     * the records' host path (the monitor, its JSON lines) as in a long training run: the rounds
     * before drain only a few thousand records, and the host code runs interpreted or half
     * compiled for the first ten thousand or so.
     */
    private static final int DRAIN_WARM_UP = 150;

    /**
     * A step through the optimizer wrapper: the pipeline compiled into one training op on the shared
     * graph, run by a plain {@code session.runner()} that fetches the loss, as the hand-written steps
     * do; its monitor's records are drained every {@value #DRAIN_EVERY} calls. Call
     * {@code session.initialize()} after building it (its own and Adam's variables).
     */
    private Wrapped wrapped(Net n, Session session, GradientPipeline pipeline) {
        TfOptimizer o = TfOptimizer.of(session, new Adam(n.graph(), Pipelines.LEARNING_RATE), pipeline);
        Op train = o.minimize(n.loss(), n.vars());
        open.add(o);
        return new Wrapped(session, train, n.loss(), o);
    }

    /**
     * A wrapped step that keeps the time of its drains: a median of single steps leaves the one
     * sample in {@value #DRAIN_EVERY} that drains out, so {@link #withDrains} adds the drains' time,
     * amortized over the calls since {@link #resetDrains}, to a step's median.
     */
    private static final class Wrapped implements Variant {
        private final Session session;
        private final Op train;
        private final Operand<TFloat32> loss;
        private final TfOptimizer optimizer;
        private long calls;
        private long counted;
        private long drainNanos;

        Wrapped(Session session, Op train, Operand<TFloat32> loss, TfOptimizer optimizer) {
            this.session = session;
            this.train = train;
            this.loss = loss;
            this.optimizer = optimizer;
        }

        @Override
        public void step() {
            try (Result r = session.runner().addTarget(train).fetch(loss).run()) {
                sink = r.size();
            }
            counted++;
            if (++calls % DRAIN_EVERY == 0) {
                long t0 = System.nanoTime();
                optimizer.drain();
                drainNanos += System.nanoTime() - t0;
            }
        }

        void resetDrains() {
            counted = 0;
            drainNanos = 0;
        }

        /**
         * Times this variant's drains over {@code blocks} drains of its own: {@value #DRAIN_EVERY}
         * steps of it alone, then the drain, as a training loop runs them, after {@code warmUp}
         * such drains untimed (JIT-warm, see {@link #DRAIN_WARM_UP}). The drains' time per call is
         * then their mean over those calls; the steps' time stays the rounds' median.
         */
        void timeDrainsAlone(int warmUp, int blocks) {
            for (int i = 0; i < warmUp * DRAIN_EVERY || calls % DRAIN_EVERY != 0; i++) {
                step();
            }
            resetDrains();
            for (int i = 0; i < blocks * DRAIN_EVERY; i++) {
                step();
            }
        }

        /** The drains' time per call since {@link #resetDrains}, in milliseconds. */
        double drainMillisPerCall() {
            return counted == 0 ? 0 : drainNanos / 1e6 / counted;
        }

        /** {@code stepMillis} plus {@link #drainMillisPerCall}. */
        double withDrains(double stepMillis) {
            return stepMillis + drainMillisPerCall();
        }
    }

    /** Σ over tensors of Σ g², then g · c / max(√Σ, c) with c = {@link Pipelines#MAX_NORM}, all as graph ops. */
    static List<Operand<TFloat32>> clipByGlobalNorm(Ops tf, List<Operand<TFloat32>> grads) {
        Operand<TFloat32> sum = null;
        for (Operand<TFloat32> g : grads) {
            Operand<TFloat32> s = tf.sum(tf.math.square(g), tf.constant(allAxes(g.shape().numDimensions())));
            sum = sum == null ? s : tf.math.add(sum, s);
        }
        Operand<TFloat32> c = tf.constant((float) Pipelines.MAX_NORM);
        Operand<TFloat32> coef = tf.math.div(c, tf.math.maximum(tf.math.sqrt(sum), c));
        List<Operand<TFloat32>> out = new ArrayList<>();
        for (Operand<TFloat32> g : grads) {
            out.add(tf.math.mul(g, coef));
        }
        return out;
    }

    /** The same clip with Σg² accumulated in float64, as GradGuard's backends do. */
    static List<Operand<TFloat32>> clipByGlobalNorm64(Ops tf, List<Operand<TFloat32>> grads) {
        Operand<TFloat64> sum = null;
        for (Operand<TFloat32> g : grads) {
            Operand<TFloat64> s = tf.sum(tf.math.square(tf.dtypes.cast(g, TFloat64.class)),
                    tf.constant(allAxes(g.shape().numDimensions())));
            sum = sum == null ? s : tf.math.add(sum, s);
        }
        Operand<TFloat64> c = tf.constant(Pipelines.MAX_NORM);
        Operand<TFloat32> coef = tf.dtypes.cast(tf.math.div(c, tf.math.maximum(tf.math.sqrt(sum), c)), TFloat32.class);
        List<Operand<TFloat32>> out = new ArrayList<>();
        for (Operand<TFloat32> g : grads) {
            out.add(tf.math.mul(g, coef));
        }
        return out;
    }

    private static int[] allAxes(int rank) {
        int[] a = new int[rank];
        for (int i = 0; i < rank; i++) {
            a[i] = i;
        }
        return a;
    }

    private Net net(int[] widths) {
        Graph graph = new Graph();
        open.add(graph);
        Ops tf = Ops.create(graph);
        SplittableRandom rnd = new SplittableRandom(42);
        float[][] xs = new float[BATCH][widths[0]];
        float[][] ys = new float[BATCH][widths[widths.length - 1]];
        for (int i = 0; i < BATCH; i++) {
            for (int j = 0; j < widths[0]; j++) {
                xs[i][j] = (float) rnd.nextDouble();
            }
            ys[i][i % ys[i].length] = 1f;
        }
        Operand<TFloat32> h = tf.constant(xs);
        List<Variable<TFloat32>> vars = new ArrayList<>();
        long params = 0;
        for (int l = 1; l < widths.length; l++) {
            int in = widths[l - 1];
            int out = widths[l];
            float limit = (float) Math.sqrt(6.0 / (in + out));
            float[][] w = new float[in][out];
            for (float[] row : w) {
                for (int j = 0; j < out; j++) {
                    row[j] = (float) ((rnd.nextDouble() * 2 - 1) * limit);
                }
            }
            Variable<TFloat32> wv = tf.variable(tf.constant(w));
            Variable<TFloat32> bv = tf.variable(tf.constant(new float[out]));
            vars.add(wv);
            vars.add(bv);
            params += (long) in * out + out;
            Operand<TFloat32> z = tf.math.add(tf.linalg.matMul(h, wv), bv);
            h = l < widths.length - 1 ? tf.nn.relu(z) : z;
        }
        Operand<TFloat32> loss = tf.math.mean(tf.nn.softmaxCrossEntropyWithLogits(h, tf.constant(ys)).loss(), tf.constant(0));
        return new Net(graph, tf, loss, vars, params);
    }
}
