package io.gradguard.tensorflow;

import static io.gradguard.tensorflow.GraphProgram.HOLD;
import static io.gradguard.tensorflow.GraphProgram.SKIP;
import static io.gradguard.tensorflow.GraphProgram.identity;
import static io.gradguard.tensorflow.GraphProgram.identityOf;
import static io.gradguard.tensorflow.GraphProgram.switchOf;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Layout;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.StepRecord;
import io.gradguard.core.transform.Accumulate;
import io.gradguard.core.transform.AutoClip;
import io.gradguard.core.transform.SkipSpikes;
import io.gradguard.core.transform.ZClip;
import io.gradguard.core.transform.LossScale;
import io.gradguard.core.transform.NonFiniteGuard;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.tensorflow.Graph;
import org.tensorflow.GraphOperation;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.Optimizer;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.SwitchCond;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TBool;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.TInt32;
import org.tensorflow.types.TInt64;
import org.tensorflow.types.TString;
import org.tensorflow.types.family.TType;

/**
 * GradGuard as a tensorflow-framework {@link Optimizer}: it wraps any optimizer, and
 * {@link #minimize} / {@link #applyGradients} return ONE training op that runs the whole guarded
 * step inside one session run: your {@code session.runner().addTarget(train).run()} loop stays as it
 * is. The pipeline is compiled into the graph when the op is built; every decision is a graph
 * condition and every counter a graph variable:
 *
 * <ul>
 *   <li>stateless stages ({@code clipByGlobalNorm}, {@code clipByValue}, {@code clipByNorm},
 *       {@code clipByLayerNorm}, {@code clipByBlockRms}, {@code adaptiveClip}, {@code normalize},
 *       {@code centralize}, {@code zeroNonFinite}, {@code masked}...) run core's own transform code on
 *       graph nodes, once, at build time;</li>
 *   <li>{@code skipNonFinite(k)}: the wrapped optimizer's update sits behind an all-finite gate
 *       ({@code Switch}): on a bad step neither the variables nor the optimizer's slots (moments, beta
 *       powers) move; the (k+1)-th bad step in a row fails the run with an {@code InvalidArgument}
 *       error naming the likely cause; {@code THROW} fails the first;</li>
 *   <li>{@code accumulate(k)}: the gradients add up in variables and the wrapped optimizer's update
 *       runs on every k-th counted call, with the window's mean (a micro-batch a non-finite stage
 *       before it skipped does not count);</li>
 *   <li>{@code dynamicLossScale()} / {@code lossScale(s)} (first stage, {@link #minimize} only): the
 *       gradients are those of {@code loss · S}, S a graph variable, divided by S again; an overflow
 *       skips the update and backs S off, {@code growthInterval} finite calls grow it;</li>
 *   <li>{@code skipSpikes}, {@code zClip}, {@code autoClip}: their norm histories (a ring of the last
 *       norms, the EMA mean and variance, the warm-up buffer) in graph variables, the z-score or
 *       percentile and the decision as graph ops, with core's formulas;</li>
 *   <li>a {@link Monitor} stage: each call's scalars (loss, norms before and after the pipeline, the
 *       stages' metrics) go to a ring of graph variables that {@link #drain()} hands to the monitor on
 *       the host, when you call it (every N steps, and at {@link #close()}); on the monitors'
 *       detailed steps ({@code every(n)}), each tensor's max|x| and, for a monitor that wants update
 *       ratios ({@code updateRatios(true)}, the default), each layer's ‖θ_after − θ_before‖ /
 *       ‖θ_before‖, θ_before a copy taken before the update (kept for a call that applied).</li>
 * </ul>
 *
 * <p>Optimizers that write state reading no gradient (tensorflow-framework's Adam and Adamax advance
 * their beta powers in {@code finish}) get those writes rebuilt behind the gate and after the
 * per-variable updates: a skipped or held call leaves them untouched, and Adam's race between its
 * beta-power update and the {@code ApplyAdam} ops that read the powers is gone (two wrapped runs are
 * bit-identical, whatever the pipeline).
 *
 * <p>What cannot run in a graph is refused at build time with an {@link IllegalArgumentException}
 * naming the stage: a stage of your own that reads a value on the host, and {@code accumulate} with
 * a schedule or batch-size weights (host facts). Run those with {@link TfGuard#attach} and
 * {@link TfGuard#step}.
 *
 * <pre>{@code
 * TfOptimizer guarded = TfOptimizer.of(session, new Adam(graph, 1e-3f),
 *         Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
 * Op train = guarded.minimize(loss);                      // was: adam.minimize(loss)
 * session.initialize();
 * for (...) {
 *     session.runner().feed(x, xs).feed(y, ys).addTarget(train).run();    // unchanged
 * }
 * TfOptimizer.Counters c = guarded.counters();              // calls, steps, skipped, held
 * }</pre>
 *
 * <p>A step is that one run: the wrapper runs nothing of its own while your loop trains. What a
 * call did is a node you fetch with it ({@link #metric}, {@link #decidedBy()}); the counters, the
 * loss scale, the accumulation window and the monitor's records are read when you call
 * {@link #counters()}, {@link #lossScale()}, {@link #microStep()} or {@link #drain()} (one session
 * run each). One wrapper builds one training op for one model, with a pipeline of its own: a second
 * {@code minimize} or a pipeline that another guard or wrapper runs is refused with an
 * {@link IllegalStateException}.
 *
 * <p>State (counters, accumulators, the loss scale) lives in {@code VariableV2}s of the graph, so
 * {@code session.save(prefix)} / {@code session.restore(prefix)} checkpoint it with the model and
 * the optimizer's slots, and a restored run continues exactly.
 *
 * <p>Formulas and references are those of each stage's class in {@code io.gradguard.core.transform}.
 * Not thread-safe for building; the training op itself may run from any thread as any TensorFlow op.
 */
public final class TfOptimizer extends Optimizer implements AutoCloseable {
        /** Row columns before the stages' metrics. */
    private static final int CALL = 0, STEP = 1, ACTION = 2, DECIDED_BY = 3, LOSS = 4, NORM_BEFORE = 5, NORM_AFTER = 6,
            MICRO_BATCHES = 7, LOSS_SCALE = 8, NON_FINITE = 9, FIXED = 10;

    private final Session session;
    private final Optimizer inner;
    private final GradientPipeline pipeline;
    /** The name scope of this wrapper's nodes, chosen when the op is built (the first free {@code gradguard_opt[_n]}). */
    private String scopeName;
    private final Map<String, Layout> layouts = new LinkedHashMap<>();
    private final List<Monitor> monitors = new ArrayList<>();
    private int historyCapacity = 1000;
    private Built built;
    /** The session runs this wrapper made itself ({@link #counters}, {@link #lossScale}, {@link #microStep}, {@link #drain}). */
    private long ownRuns;
    private long drained;
    /** The monitor rows' constant cells, read at the first drain (null: not read yet). */
    private double[] constants;
    private boolean closed;

    private TfOptimizer(Session session, Optimizer inner, GradientPipeline pipeline) {
        super(graphOf(session), "gradguard_optimizer");
        this.session = session;
        this.inner = Checks.notNull("optimizer", inner);
        this.pipeline = Checks.notNull("pipeline", pipeline);
        Checks.require(inner.getTF().scope().env() == session.graph(), "optimizer", "be built on the session's graph", inner);
        Checks.require(!(inner instanceof TfOptimizer), "optimizer", "be a framework optimizer, not another TfOptimizer", inner);
        for (GradientTransform t : pipeline.transforms()) {
            if (t instanceof Monitor m) {
                monitors.add(m);
            }
        }
        pipeline.claim(this);
    }

    private static Graph graphOf(Session session) {
        return Checks.notNull("session", session).graph();
    }

    /**
     * A wrapper of {@code optimizer} running {@code pipeline} in the training op.
     *
     * @param session   the session that trains (counters and monitor records are read through it)
     * @param optimizer a tensorflow-framework optimizer built on the session's graph
     * @param pipeline  the stages, a pipeline of this wrapper's own: its monitors get this model's records
     * @throws IllegalArgumentException if an argument is null, or the optimizer belongs to another graph
     * @throws IllegalStateException if another guard or TfOptimizer already runs the pipeline (one pipeline per model)
     */
    public static TfOptimizer of(Session session, Optimizer optimizer, GradientPipeline pipeline) {
        return new TfOptimizer(session, optimizer, pipeline);
    }

    /**
     * {@link #of(Session, Optimizer, GradientPipeline)} with a new pipeline of these transforms.
     *
     * @throws IllegalArgumentException if an argument is null, or the optimizer belongs to another graph
     */
    public static TfOptimizer of(Session session, Optimizer optimizer, GradientTransform... transforms) {
        return new TfOptimizer(session, optimizer, GradientPipeline.of(transforms));
    }

    /**
     * Declares which axis of {@code variable} indexes its output units, as {@link TfGuard#layout}.
     *
     * @return this
     * @throws IllegalArgumentException if an argument is null
     * @throws IllegalStateException if the training op is built already
     */
    public TfOptimizer layout(Operand<?> variable, Layout layout) {
        Checks.notNull("variable", variable);
        Checks.notNull("layout", layout);
        requireUnbuilt("layout");
        layouts.put(variable.asOutput().op().name(), layout);
        return this;
    }

    /**
     * How many calls' records the graph keeps for a {@link Monitor} between two {@link #drain()}s
     * (default 1000); older ones are overwritten and counted as lost. A drain reads the whole ring
     * (a row per call: a few numbers, two per tensor and two per layer), so size it to your drain
     * cadence: a little more than the calls between two drains.
     *
     * @return this
     * @throws IllegalArgumentException if capacity &lt; 1
     * @throws IllegalStateException if the training op is built already
     */
    public TfOptimizer history(int capacity) {
        Checks.atLeast("capacity", capacity, 1);
        requireUnbuilt("history");
        this.historyCapacity = capacity;
        return this;
    }

    /**
     * Names this wrapper's scope: the first of {@code gradguard_opt}, {@code gradguard_opt_1}... not
     * used in the graph, so that a graph built the same way gets the same variable names (a
     * checkpoint written by {@code session.save} restores into it).
     */
    private Ops scope() {
        String name = "gradguard_opt";
        for (int n = 1; graph.operation(name + "/calls") != null || graph.operation(name + "_apply") != null; n++) {
            name = "gradguard_opt_" + n;
        }
        scopeName = name;
        return Ops.create(graph).withSubScope(name);
    }

    private void requireUnbuilt(String what) {
        if (built == null) {
            return;
        }
        if (what.equals("minimize") || what.equals("applyGradients")) {
            throw new IllegalStateException("this TfOptimizer has built its training op already (" + built.train.op().name()
                    + "): one TfOptimizer, with a pipeline of its own, per model and training op");
        }
        throw new IllegalStateException("this TfOptimizer has built its training op: call " + what + "(...) before minimize");
    }

    @Override
    public String getOptimizerName() {
        return "GradGuard(" + inner.getOptimizerName() + ")";
    }

    /**
     * The guarded training op for {@code loss} over every trainable variable the loss depends on.
     *
     * @throws IllegalArgumentException if the loss is not a float scalar of the session's graph, or a
     *     stage cannot run inside the graph (the message names it)
     * @throws IllegalStateException if this wrapper already built its op (wrap again for another)
     */
    @Override
    public Op minimize(Operand<?> loss) {
        return minimize(loss, List.of());
    }

    /** {@link #minimize(Operand)}; {@code name} is ignored (GradGuard names its ops under {@code gradguard_opt_<n>}). */
    @Override
    public Op minimize(Operand<?> loss, String name) {
        return minimize(loss, List.of());
    }

    /**
     * The guarded training op for {@code loss} over {@code variables} (empty: every trainable
     * variable the loss depends on).
     *
     * @throws IllegalArgumentException if the loss is not a float scalar of the session's graph, a
     *     variable is not a float trainable variable the loss depends on, or a stage cannot run inside
     *     the graph (the message names it)
     * @throws IllegalStateException if this wrapper already built its op, or is closed
     */
    public Op minimize(Operand<?> loss, List<? extends Operand<?>> variables) {
        requireOpen();
        requireUnbuilt("minimize");
        Output<?> lossOut = TfGraphModel.checkedLoss(graph, loss);
        Checks.notNull("variables", variables);
        Ops tf = scope();
        List<Output<?>> values = new ArrayList<>();
        List<Output<?>> vars = TfGraphModel.checkedVariables(tf, lossOut, variables.isEmpty() ? trainableVariables(lossOut) : variables,
                values);
        LossScale scale = leadingLossScale();
        Variable<TFloat64> s = null;
        Output<?> differentiated = lossOut;
        if (scale != null) {
            s = tf.withName("loss_scale").variable(tf.constant(scale.initialScale()));
            differentiated = TfGraphModel.scaled(tf, lossOut, s);
        }
        Output<?>[] grads = graph.addGradients(differentiated, vars.toArray(new Output<?>[0]));
        for (int i = 0; i < grads.length; i++) {
            Checks.require(grads[i] != null, "variables[" + i + "]", "have a gradient from the loss " + lossOut.op().name(),
                    vars.get(i).op().name());
        }
        return build(tf, lossOut, vars, values, grads, scale, s);
    }

    /**
     * The guarded training op for gradients you computed ({@code computeGradients} or
     * {@code tf.gradients}); {@code name} is ignored. A loss-scale stage needs the loss: use
     * {@link #minimize}.
     *
     * @throws IllegalArgumentException if the list is null or empty, a pair's variable is not a float
     *     trainable variable, a gradient is missing, the pipeline starts with a loss-scale stage, or a
     *     stage cannot run inside the graph
     * @throws IllegalStateException if this wrapper already built its op, or is closed
     */
    @Override
    public Op applyGradients(List<GradAndVar<? extends TType>> gradsAndVars, String name) {
        requireOpen();
        requireUnbuilt("applyGradients");
        Checks.notNull("gradsAndVars", gradsAndVars);
        Checks.require(!gradsAndVars.isEmpty(), "gradsAndVars", "hold at least one gradient", gradsAndVars);
        Checks.require(leadingLossScale() == null, "pipeline", "not start with a loss-scale stage when the gradients come "
                + "from outside (the guard must scale the loss: use minimize(loss))", pipeline);
        Ops tf = scope();
        List<Output<?>> vars = new ArrayList<>();
        List<Output<?>> values = new ArrayList<>();
        Output<?>[] grads = new Output<?>[gradsAndVars.size()];
        for (int i = 0; i < grads.length; i++) {
            GradAndVar<? extends TType> gv = Checks.notNull("gradsAndVars[" + i + "]", gradsAndVars.get(i));
            Output<?> v = gv.getVariable();
            Checks.require(gv.getGradient() != null, "gradsAndVars[" + i + "]", "have a gradient", v.op().name());
            Checks.require(TfOps.isFloat(v.type()), "gradsAndVars[" + i + "]", "be a float16, float32 or float64 variable",
                    v.op().name() + " of dtype " + v.dataType());
            vars.add(v);
            values.add(identityOf(tf.withName(v.op().name().replace('/', '_') + "_value"), v));
            grads[i] = gv.getGradient();
        }
        return build(tf, null, vars, values, grads, null, null);
    }

    /** Not called: {@link #applyGradients} hands the transformed gradients to the wrapped optimizer. */
    @Override
    protected <T extends TType> Op applyDense(Ops opDependencies, Output<T> gradient, Output<T> variable) {
        throw new UnsupportedOperationException("TfOptimizer applies through the wrapped optimizer's applyGradients");
    }

    private LossScale leadingLossScale() {
        List<GradientTransform> ts = pipeline.transforms();
        for (int i = 1; i < ts.size(); i++) {
            Checks.require(!(ts.get(i) instanceof LossScale), "pipeline", "have its loss-scale stage first", pipeline.stageNames());
        }
        return !ts.isEmpty() && ts.get(0) instanceof LossScale l ? l : null;
    }

    /** The trainable variables (VariableV2 of a float type) the loss depends on, in graph order. */
    private List<Output<?>> trainableVariables(Output<?> loss) {
        Set<GraphOperation> reaching = graph.subgraphTo(Set.of(loss));
        List<Output<?>> out = new ArrayList<>();
        for (var it = graph.operations(); it.hasNext(); ) {
            GraphOperation op = (GraphOperation) it.next();
            if (op.type().equals(VARIABLE_V2) && reaching.contains(op) && TfOps.isFloat(op.output(0).type())) {
                out.add(op.output(0));
            }
        }
        Checks.require(!out.isEmpty(), "loss", "depend on at least one float trainable variable", loss.op().name());
        return out;
    }

    // ---- the compiled step ------------------------------------------------------------------------

    /** What the build produced: the training op and the nodes the host reads. */
    private record Built(Op train, Output<TInt64> counters, Map<String, Operand<TFloat64>> metrics,
            Output<TFloat64> ring, int capacity, int width, List<String> rowMetrics, List<String> stageNames,
            Output<TFloat64> lossScale, List<String> tensorNames, Output<TString> decidedBy,
            Output<TInt64> window, boolean ratios, int normMetric, int coefficientMetric, int[] soleDecider,
            int nonFiniteMetric, int[] liveColumns, int[] constantColumns, Output<TFloat64> constants, RecordShape shape) {
    }

    private Op build(Ops tf, Output<?> loss, List<Output<?>> vars, List<Output<?>> values, Output<?>[] grads, LossScale scale,
            Variable<TFloat64> s) {
        Set<String> names = new java.util.HashSet<>();
        vars.forEach(v -> names.add(v.op().name()));
        Set<String> undeclared = new java.util.TreeSet<>(layouts.keySet());
        undeclared.removeAll(names);
        Checks.require(undeclared.isEmpty(), "layout", "name only variables the training op updates", undeclared);
        TfOps ops = TfOps.graphOnly(graph, tf.withSubScope("stages"));
        GraphProgram p = new GraphProgram(tf, ops, grads.clone());
        List<GradientTransform> stages = pipeline.transforms();
        List<String> stageNames = pipeline.stageNames();
        List<GradientTensor<TfTensor>> tensors = new ArrayList<>();
        for (int i = 0; i < vars.size(); i++) {
            tensors.add(TfGraphModel.gradientTensor(vars.get(i).op().name(), vars.get(i).shape().asArray(), layouts, grads[i],
                    values.get(i)));
        }
        GradientSet<TfTensor> set = GradientSet.of(tensors);
        Variable<TInt64> counters = tf.withName("counters").variable(tf.constant(new long[4]));
        int first = 0;
        Operand<TFloat64> lossScaleUsed = tf.constant(Double.NaN);
        if (scale != null) {
            lossScaleUsed = GraphStages.lossScale(p, scale, s, stageNames.get(0));
            first = 1;
        }
        Output<?>[] input = p.g.clone();
        int changers = 0;
        String lastChanger = null;
        for (int i = first; i < stages.size(); i++) {
            GradientTransform t = stages.get(i);
            String stage = stageNames.get(i);
            if (t instanceof Monitor) {
                continue;
            } else if (t instanceof NonFiniteGuard n && (n.policy() == NonFiniteGuard.Policy.SKIP || n.policy() == NonFiniteGuard.Policy.THROW)) {
                GraphStages.nonFinite(p, n, stage, i, loss);
            } else if (t instanceof SkipSpikes k) {
                GraphStages.skipSpikes(p, k, stage, i, set);
            } else if (t instanceof ZClip z) {
                GraphStages.zClip(p, z, stage, set);
                changers++;
                lastChanger = stage;
            } else if (t instanceof AutoClip a) {
                GraphStages.autoClip(p, a, stage, set);
                changers++;
                lastChanger = stage;
            } else if (t instanceof Accumulate a) {
                GraphStages.accumulate(p, a, stage, i, set);
                input = p.g.clone(); // a record describes the window's gradient, as on the host
                changers = 0;
            } else {
                GraphStages.stateless(p, t, stage, set);
                if (t.changesGradients()) {
                    changers++;
                    lastChanger = stage;
                }
            }
        }
        // the norms a monitor records: before and after the pipeline (Σx² nodes are shared with the stages'); with one global
        // scaling stage they are its norm and norm × coefficient, which the host reads from its metrics (no node of their own)
        Operand<TFloat64> normBefore = null;
        Operand<TFloat64> normAfter = null;
        int normMetric = -1;
        int coefficientMetric = -1;
        List<String> metricKeys = List.copyOf(p.rawMetrics.keySet());
        if (!monitors.isEmpty()) {
            if (changers == 1 && metricKeys.contains(lastChanger + ".norm") && metricKeys.contains(lastChanger + ".coefficient")) {
                normMetric = metricKeys.indexOf(lastChanger + ".norm");
                coefficientMetric = metricKeys.indexOf(lastChanger + ".coefficient");
            } else {
                normBefore = GraphProgram.globalNorm(p, input);
                normAfter = changers > 0 ? GraphProgram.globalNorm(p, p.g) : normBefore;
            }
        }
        Operand<TBool> applies = p.go == null ? tf.constant(true) : p.go;
        if (!p.vetoes.isEmpty()) {
            applies = tf.withControlDependencies(p.vetoes).identity(applies);
        }
        // the scalars a user may fetch with the step (computed only when fetched, or for a monitor's row)
        Map<String, Operand<TFloat64>> named = new LinkedHashMap<>();
        named.put("action", p.action);
        named.put("loss", loss == null ? tf.constant(Double.NaN) : p.f64(loss));
        named.put("microBatches", p.microBatches);
        named.put("lossScale", lossScaleUsed);
        named.put("nonFinite", p.nonFinite);
        named.putAll(p.metrics);
        Output<TString> decidedBy = decidedByName(tf, p.decidedBy, stageNames);
        int capacity = monitors.isEmpty() ? 0 : historyCapacity;
        // a monitor's row (the host's layout and what it derives: logicalRow): the counters before the call, its scalar
        // cells, each tensor's Σx²/2, then the detailed steps' vector (max|x| per tensor, update ratios per layer)
        Map<Integer, Operand<TFloat64>> cells = new LinkedHashMap<>(); // by the record layout's column each fills
        List<Operand<TFloat64>> vectors = new ArrayList<>();
        Detail detail = null;
        List<Operand<?>> maxes = new ArrayList<>();
        Operand<TInt64> slot = null;
        // with at most one stage deciding each kind, the deciding stage follows from the action (no cell of its own)
        int[] soleDecider = {-1, -1, -1};
        boolean decidedByFromAction = true;
        for (var e : p.deciders.entrySet()) {
            soleDecider[(int) (double) e.getKey()] = e.getValue().get(0);
            decidedByFromAction &= e.getValue().size() == 1;
        }
        // the record's non-finite count: the first non-finite guard's count (0 on a finite call), else 1 where a stage saw some
        int nonFiniteMetric = -1;
        for (int i = 0; i < stages.size() && nonFiniteMetric < 0; i++) {
            if (stages.get(i) instanceof NonFiniteGuard) {
                nonFiniteMetric = metricKeys.indexOf(stageNames.get(i) + ".nonFinite");
            }
        }
        if (capacity > 0) {
            // from the counters before this call (calls, steps, skipped, held), in one FloorMod: the call's slot in the ring
            // and its step's place in the cadence of the detailed steps, those divisible by the gcd of the monitors' cadences
            // (the host knows the call from its slot, and counts the steps back from the graph's step count)
            int every = monitors.stream().mapToInt(Monitor::every).reduce(TfOptimizer::gcd).orElse(1);
            List<Output<TInt64>> mod = tf.unstack(tf.math.floorMod(counters, tf.constant(new long[] {capacity, every, 1, 1})), 4L)
                    .output();
            slot = p.computed(mod.get(0));
            cells.put(ACTION, p.action);
            if (!decidedByFromAction) {
                cells.put(DECIDED_BY, p.decidedBy);
            }
            cells.put(LOSS, named.get("loss"));
            if (normBefore != null) {
                cells.put(NORM_BEFORE, normBefore);
                cells.put(NORM_AFTER, normAfter);
            }
            cells.put(MICRO_BATCHES, p.microBatches);
            cells.put(LOSS_SCALE, lossScaleUsed);
            if (nonFiniteMetric < 0) {
                cells.put(NON_FINITE, p.nonFiniteSeen);
            }
            int column = FIXED;
            for (Operand<TFloat64> m : p.rawMetrics.values()) {
                cells.put(column++, m);
            }
            // per tensor, before the pipeline's changes: Σx²/2, the stacked L2Loss nodes a global stage builds anyway
            @SuppressWarnings("unchecked")
            Operand<TFloat64> halves = (Operand<TFloat64>) p.ops.halfSquares(GraphProgram.tensors(input));
            vectors.add(halves);
            detail = Detail.of(tf, every, mod.get(1));
            // max|x| costs a pass of its own: measured on the detailed steps only, behind the detail pivot; reduced in each
            // tensor's dtype, then widened and floored at 0 (an empty tensor) once for all tensors
            Map<Integer, Operand<TInt32>> axes = new java.util.HashMap<>(); // one constant per rank, on the pivot too
            for (Output<?> x : input) {
                int rank = x.shape().asArray().length;
                Detail d = detail;
                maxes.add(d.pivot == null ? p.ops.rawMaxAbs(x, rank) : tf.max((Operand) d.when.math.abs((Operand) x),
                        axes.computeIfAbsent(rank, r -> d.when.constant(GraphProgram.allAxes(r)))));
            }
        }
        // calls, steps, skipped, held: one add of this call's deltas
        boolean gated = p.go != null || !p.asserts.isEmpty();
        Operand<TInt64> delta;
        if (!gated) {
            delta = tf.constant(new long[] {1, 1, 0, 0});
        } else if (p.holds == null || p.skips == null) {
            // where no stage holds (or none skips), a call that does not apply was skipped (held): one select of two deltas
            delta = tf.select(applies, tf.constant(new long[] {1, 1, 0, 0}),
                    tf.constant(p.holds == null ? new long[] {1, 0, 1, 0} : new long[] {1, 0, 0, 1}));
        } else {
            delta = tf.dtypes.cast(tf.stack(List.of(tf.constant(true), applies, p.skips, p.holds)), TInt64.class);
        }
        p.write(counters, tf.math.add(counters, delta));

        // update-to-parameter ratios, for a monitor that wants them, on the detailed calls (the host keeps those of applied
        // calls): a real copy of θ before the update (a ref variable read through Identity aliases the buffer the update
        // changes in place), ordered before the update by a control dependency of the gradients the optimizer reads
        RecordShape shape = RecordShape.of(tensorLayers(set), metricKeys);
        UpdateRatios ratios = capacity > 0 ? UpdateRatios.wanted(tf, monitors, detail, shape, vars, set) : null;

        // the wrapped optimizer's update, behind the gate: its inputs are dead when the call does not apply
        // (tensorflow-framework's applyGradients runs every update after all the gradients it is given)
        List<GradAndVar<? extends TType>> gv = new ArrayList<>();
        Set<GraphOperation> gates = new java.util.HashSet<>();
        // with ratios, the gradients the optimizer reads wait for the copies of θ (through the gate's switch where there is one)
        Ops afterCopies = ratios == null ? tf : tf.withControlDependencies(List.of(ratios.copied));
        for (int i = 0; i < p.g.length; i++) {
            Output<?> x = gated ? p.gated(i, applies, afterCopies) : p.g[i];
            if (ratios != null && !gated) {
                x = identityOf(afterCopies, x);
            }
            gates.add((GraphOperation) x.op());
            gv.add(gradAndVar(x, vars.get(i)));
        }
        Set<String> existing = new java.util.HashSet<>();
        graph.operations().forEachRemaining(o -> existing.add(o.name()));
        Op apply = orderedUpdate(tf, existing, gates, gated ? applies : null, inner.applyGradients(gv, scopeName + "_apply"));
        Operand<TBool> done;
        if (gated) {
            SwitchCond<TBool> sw = tf.switchCond(applies, applies);
            Operand<TBool> whenApplied = tf.withControlDependencies(List.of(apply)).identity(sw.outputTrue());
            Operand<TBool> whenNot = tf.identity(sw.outputFalse());
            done = tf.merge(List.of(whenApplied, whenNot)).output();
        } else {
            done = tf.withControlDependencies(List.of(apply)).identity(applies);
        }
        List<Op> end = new ArrayList<>();
        end.add(done);
        Variable<TFloat64> history = null;
        int width = 0;
        List<Integer> liveColumns = new ArrayList<>();
        List<Integer> constantColumns = new ArrayList<>();
        Output<TFloat64> constants = null;
        if (capacity > 0) {
            // the detailed steps' vector, live only on them (one Merge with NaN between them): max|x|, then the ratios' sums,
            // read after the update (or after a call that did not apply: the host keeps ratios of applied calls only)
            List<Operand<TFloat64>> detailed = new ArrayList<>();
            detailed.add(tf.math.maximum(stackF64(tf, maxes), tf.constant(0.0)));
            if (ratios != null) {
                detailed.add(ratios.after(tf, detail.when, p, done, vars));
            }
            int detailWidth = input.length + (ratios == null ? 0 : 2 * shape.layers.size());
            vectors.add(detail.orNaN(tf, detailed.size() == 1 ? detailed.get(0) : tf.concat(detailed, tf.constant(0)), detailWidth));
            // a cell that is a constant of the graph (no accumulation: 1 micro-batch; no loss scaling; a clip's bound) is the
            // same on every call: the host reads it once per drain, the row leaves it out
            List<Operand<TFloat64>> live = new ArrayList<>();
            List<Operand<TFloat64>> fixed = new ArrayList<>();
            cells.forEach((c, cell) -> {
                boolean constant = cell.op() instanceof GraphOperation o && o.type().equals("Const");
                (constant ? fixed : live).add(cell);
                (constant ? constantColumns : liveColumns).add(c);
            });
            if (!fixed.isEmpty()) {
                constants = tf.stack(fixed).asOutput();
            }
            width = live.size() + input.length + detailWidth;
            List<Operand<TFloat64>> parts = new ArrayList<>(vectors);
            if (!live.isEmpty()) {
                parts.add(0, tf.stack(live));
            }
            Operand<TFloat64> row = tf.concat(parts, tf.constant(0));
            p.computed.add(row);
            history = tf.withName("history").variable(tf.fill(tf.constant(new long[] {capacity, width}), tf.constant(Double.NaN)));
            end.add(tf.withControlDependencies(GraphProgram.barrier(p)).scatterUpdate(history, slot, row)); // row `slot` := row
        }
        Output<TInt64> countersRead = identity(tf, counters);
        // for drain(): the whole ring, read with the counters in one run (the host picks the rows since its last drain)
        Output<TFloat64> ring = history == null ? null : identity(tf, history);
        List<Op> barrier = GraphProgram.barrier(p);
        for (Object[] w : p.writes) {
            end.add(assign(tf.withControlDependencies(barrier), (Variable<?>) w[0], (Operand<?>) w[1]));
        }
        Op train = tf.withName("train").withControlDependencies(end).noOp();
        built = new Built(train, countersRead, java.util.Collections.unmodifiableMap(named), ring, capacity, width, List.copyOf(p.metrics.keySet()),
                List.copyOf(stageNames), s == null ? null : identity(tf, s).asOutput(), tensorNames(set),
                decidedBy, p.window == null ? null : identity(tf, p.window), ratios != null,
                normMetric, coefficientMetric, decidedByFromAction ? soleDecider : null, nonFiniteMetric,
                liveColumns.stream().mapToInt(Integer::intValue).toArray(), constantColumns.stream().mapToInt(Integer::intValue).toArray(),
                constants, shape);
        return train;
    }

    /**
     * The wrapped optimizer's update, all of it behind the gate ({@code applies}; null: the pipeline
     * never skips or holds). Its per-variable updates read the gated gradients, so they do not run
     * on a call that does not apply. Some optimizers also write state that reads no gradient
     * (tensorflow-framework's Adam and Adamax advance their beta powers in {@code finish}, AdaGradDA
     * its global step in {@code prepare}): such a write is rebuilt with its value behind the gate and
     * ordered after the per-variable updates (which read the old value), and the training op targets
     * these instead of the optimizer's own op, so the originals never run. Without a gate the writes
     * are rebuilt the same way for that order alone: tensorflow-framework's Adam leaves its beta-power
     * update racing the {@code ApplyAdam} ops that read the powers, so some variables would see the
     * next step's bias correction. A write the updates read the result of (Nadam's momentum schedule)
     * cannot be moved behind the gate: with a gate that optimizer is refused, without one its own op
     * runs as unwrapped.
     *
     * @throws IllegalArgumentException if the optimizer writes state the gate cannot hold back
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private Op orderedUpdate(Ops tf, Set<String> existing, Set<GraphOperation> gates, Operand<TBool> applies, Op own) {
        Set<GraphOperation> downstream = graph.subgraphFromOps(gates);
        List<GraphOperation> gatedWrites = new ArrayList<>();
        List<GraphOperation> ungated = new ArrayList<>();
        for (var it = graph.operations(); it.hasNext(); ) {
            GraphOperation op = (GraphOperation) it.next();
            if (existing.contains(op.name()) || graph.isInitializer(op) || !writes(op.type())) {
                continue;
            }
            (downstream.contains(op) ? gatedWrites : ungated).add(op);
        }
        Set<GraphOperation> feeding = gatedWrites.isEmpty() ? Set.of() : graph.subgraphToOps(new java.util.HashSet<>(gatedWrites));
        List<String> refused = new ArrayList<>();
        for (GraphOperation op : ungated) {
            boolean movable = (op.type().equals("Assign") || op.type().equals("AssignAdd") || op.type().equals("AssignSub"))
                    && !feeding.contains(op);
            if (!movable) {
                refused.add(op.name() + " (" + op.type() + ")");
            }
        }
        if (applies == null && (!refused.isEmpty() || ungated.isEmpty())) {
            return own;
        }
        Checks.require(refused.isEmpty(), "optimizer", "write its state in its per-variable updates or in assignments they do not "
                + "read, so that a skipped or held call leaves it untouched; " + inner.getOptimizerName() + " writes " + refused
                + " on every run and reads the result: use another optimizer (Adam, Momentum, RMSProp, AdaGrad...) or a pipeline "
                + "that never skips or holds", inner.getOptimizerName());
        List<Op> all = new ArrayList<>();
        for (GraphOperation w : gatedWrites) {
            all.add(() -> w);
        }
        Ops afterUpdates = tf.withControlDependencies(new ArrayList<>(all));
        for (GraphOperation op : ungated) {
            Operand ref = op.input(0);
            // ordered after the gated updates, the write is dead with them (a dead control input makes a node dead)
            Operand value = applies == null || !gatedWrites.isEmpty() ? op.input(1) : switchOf(tf, op.input(1), applies).outputTrue();
            Op write = switch (op.type()) {
                case "AssignAdd" -> afterUpdates.assignAdd(ref, value);
                case "AssignSub" -> afterUpdates.assignSub(ref, value);
                default -> afterUpdates.assign(ref, value);
            };
            all.add(write);
        }
        return tf.withControlDependencies(all).noOp();
    }

    private static boolean writes(String type) {
        return type.startsWith("Assign") || type.startsWith("Apply") || type.startsWith("ResourceApply") || type.startsWith("Scatter");
    }

    // ---- host reads -------------------------------------------------------------------------------

    /** The training op's counters, read from the graph: calls, optimizer steps applied, skipped and held calls. */
    public record Counters(long calls, long steps, long skipped, long held) {
    }

    /**
     * The counters as the graph holds them now (one session run).
     *
     * @throws IllegalStateException if the training op is not built yet, or this wrapper is closed
     */
    public Counters counters() {
        requireBuilt("counters");
        try (Result r = runner().fetch(built.counters).run()) {
            TInt64 c = (TInt64) r.get(0);
            return new Counters(c.getLong(0), c.getLong(1), c.getLong(2), c.getLong(3));
        }
    }

    /**
     * A scalar of the step to fetch with it, as float64: {@code loss}, {@code action} (0 applied, 1
     * held, 2 skipped), {@code nonFinite}, {@code lossScale}, {@code microBatches}, and every stage
     * metric ({@code clipByGlobalNorm.norm}, {@code clipByGlobalNorm.coefficient}...; NaN on a call
     * that does not reach the stage). Fetching it costs nothing more than the node itself; nothing
     * is read unless you fetch it.
     *
     * <pre>{@code
     * Operand<TFloat64> norm = guarded.metric("clipByGlobalNorm.norm");
     * try (Result r = session.runner().feed(x, xs).feed(y, ys).addTarget(train).fetch(norm).run()) {
     *     double n = ((TFloat64) r.get(0)).getDouble();
     * }
     * }</pre>
     *
     * @throws IllegalArgumentException if there is no such metric (the message lists them)
     * @throws IllegalStateException if the training op is not built yet, or this wrapper is closed
     */
    public Operand<TFloat64> metric(String key) {
        requireBuilt("metric");
        Operand<TFloat64> m = built.metrics.get(Checks.notNull("key", key));
        Checks.require(m != null, "key", "be one of " + built.metrics.keySet(), key);
        return m;
    }

    /** The names {@link #metric} accepts, in pipeline order. @throws IllegalStateException if the op is not built yet */
    public List<String> metricNames() {
        requireBuilt("metricNames");
        return List.copyOf(built.metrics.keySet());
    }

    /**
     * The name of the stage that held or skipped the step, to fetch with it as a {@link #metric}:
     * "" on a call that applied, else the stage's name in the pipeline ({@code "dynamicLossScale"}
     * for an overflow, {@code "nonFinite"} for non-finite gradients, {@code "accumulate"} for a held
     * micro-batch), as {@code StepResult.decidedBy()} on the host.
     *
     * <pre>{@code
     * try (Result r = session.runner().feed(x, xs).addTarget(train).fetch(guarded.decidedBy()).run()) {
     *     String by = ((TString) r.get(0)).getObject();
     * }
     * }</pre>
     *
     * @throws IllegalStateException if the training op is not built yet, or this wrapper is closed
     */
    public Operand<TString> decidedBy() {
        requireBuilt("decidedBy");
        return built.decidedBy;
    }

    /**
     * The micro-batches absorbed into the current, unfinished accumulation window, read from the
     * graph (one session run; 0 without an {@code accumulate} stage, and no run).
     *
     * @throws IllegalStateException if the training op is not built yet, or this wrapper is closed
     */
    public int microStep() {
        requireBuilt("microStep");
        if (built.window == null) {
            return 0;
        }
        try (Result r = runner().fetch(built.window).run()) {
            return (int) ((TInt64) r.get(0)).getLong();
        }
    }

    /** A runner of the session for a read of this wrapper's own, counted ({@link #ownRuns}). */
    private Session.Runner runner() {
        ownRuns++;
        return session.runner();
    }

    /** How many session runs this wrapper made itself: none while the user's loop trains, only when a host read is called. */
    long ownRuns() {
        return ownRuns;
    }

    /**
     * The loss scale S the next call multiplies the loss by (one session run).
     *
     * @throws IllegalStateException if the pipeline has no loss-scale stage, the op is not built, or this wrapper is closed
     */
    public double lossScale() {
        requireBuilt("lossScale");
        if (built.lossScale == null) {
            throw new IllegalStateException("this pipeline has no loss-scale stage: put Transforms.dynamicLossScale() first");
        }
        try (Result r = runner().fetch(built.lossScale).run()) {
            return ((TFloat64) r.get(0)).getDouble();
        }
    }

    /**
     * Hands the calls recorded since the last drain to the pipeline's {@link Monitor}s (one record
     * per optimizer step, as on the other adapters: held micro-batches are folded into the step that
     * closes their window) and returns how many calls it read. Call it at your logging cadence (every
     * N steps) and at the end; calls older than the history capacity are lost (logged, counted in
     * the return value's absence). One session run, which reads the ring ({@link #history}) and the
     * counters: call it between training runs (from the training loop's thread, or with the runs
     * held off), as the training op writes the ring in place.
     *
     * @return the number of calls read
     * @throws IllegalStateException if the training op is not built yet, or this wrapper is closed
     */
    public int drain() {
        requireBuilt("drain");
        if (built.ring == null) {
            return 0;
        }
        double[] rows;
        long calls;
        long steps;
        Session.Runner runner = runner().fetch(built.ring).fetch(built.counters);
        boolean readConstants = constants == null && built.constants != null;
        if (readConstants) {
            runner.fetch(built.constants);
        }
        try (Result r = runner.run()) {
            rows = doubles((TFloat64) r.get(0));
            TInt64 counted = (TInt64) r.get(1);
            calls = counted.getLong(0);
            steps = counted.getLong(1);
            if (readConstants) {
                constants = doubles((TFloat64) r.get(2));
            }
        }
        if (calls < drained) {
            drained = 0; // a checkpoint from before the last drain was restored
        }
        long from = Math.max(drained, calls - built.capacity); // the first call read: older ones were overwritten
        if (from > drained) {
            org.slf4j.LoggerFactory.getLogger(TfOptimizer.class).warn("GradGuard: {} calls' records were overwritten before drain(): "
                    + "drain more often or raise history(...)", from - drained);
        }
        // each call's row, its call index from its place, its optimizer step counted back from the graph's step count
        int count = (int) (calls - from);
        double[][] read = new double[count][];
        int unwritten = 0;
        for (int j = count - 1; j >= 0; j--) {
            double[] row = logicalRow(rows, (int) ((from + j) % built.capacity) * built.width);
            if (Double.isNaN(row[ACTION])) { // never written: the ring was restored out of step with the counters
                unwritten++;
                continue;
            }
            row[CALL] = from + j;
            steps -= row[ACTION] == GraphProgram.PROCEED ? 1 : 0;
            row[STEP] = steps;
            read[j] = row;
        }
        double lossSum = 0;
        int lossCount = 0;
        if (unwritten > 0) {
            org.slf4j.LoggerFactory.getLogger(TfOptimizer.class).warn("GradGuard: {} calls have no record in the graph's ring "
                    + "(restored out of step with the counters?): skipped", unwritten);
        }
        for (double[] row : read) {
            if (row == null) {
                continue;
            }
            double action = row[ACTION];
            if (Double.isFinite(row[LOSS])) {
                lossSum += row[LOSS];
                lossCount++;
            }
            if (action == HOLD) {
                continue;
            }
            double loss = lossCount > 0 ? lossSum / lossCount : Double.NaN;
            lossSum = 0;
            lossCount = 0;
            StepRecord withRatios = null;
            StepRecord without = null;
            for (Monitor m : monitors) {
                if (m.updateRatios() && built.ratios) {
                    withRatios = withRatios != null ? withRatios : record(row, loss, action == GraphProgram.PROCEED);
                    m.accept(withRatios);
                } else {
                    without = without != null ? without : record(row, loss, false);
                    m.accept(without);
                }
            }
        }
        drained = calls;
        return count;
    }

    private static int gcd(int a, int b) {
        return b == 0 ? a : gcd(b, a % b);
    }

    /** A fetched tensor's values, read in one bulk copy of its buffer. */
    private static double[] doubles(TFloat64 t) {
        double[] out = new double[(int) t.size()];
        t.asRawTensor().data().asDoubles().read(out);
        return out;
    }

    /**
     * A call's row in the layout the records read (the columns {@link #CALL}..., the metrics, each
     * tensor's Σx² and max|x|, each layer's Σ(Δθ)² and Σθ²) from the graph's row at {@code at}, which
     * leaves out what the host derives exactly: the call and its step (set by {@link #drain}), the
     * cells that are constants of the graph ({@code constants}), the norms before and after a single global scaling
     * stage (its norm and norm × coefficient, from its metrics), the deciding stage where one stage
     * at most decides each action, the non-finite count where a non-finite guard's metric holds it,
     * and the doubling of the Σx²/2 sums.
     */
    private double[] logicalRow(double[] rows, int at) {
        int m = built.rowMetrics.size();
        int n = built.tensorNames.size();
        int l = built.ratios ? built.shape.layers.size() : 0;
        double[] row = new double[FIXED + m + 2 * n + 2 * l];
        int k = at;
        for (int c : built.liveColumns) {
            row[c] = rows[k++];
        }
        for (int i = 0; i < built.constantColumns.length; i++) {
            row[built.constantColumns[i]] = constants[i];
        }
        if (built.soleDecider != null) {
            row[DECIDED_BY] = built.soleDecider[(int) row[ACTION]];
        }
        if (built.nonFiniteMetric >= 0) {
            row[NON_FINITE] = row[FIXED + built.nonFiniteMetric];
        }
        if (built.normMetric >= 0) {
            row[NORM_BEFORE] = row[FIXED + built.normMetric];
            row[NORM_AFTER] = row[NORM_BEFORE] * row[FIXED + built.coefficientMetric];
        }
        for (int i = 0; i < n; i++) {
            row[FIXED + m + i] = 2 * rows[k++];
        }
        System.arraycopy(rows, k, row, FIXED + m + n, n);
        k += n;
        for (int i = 0; i < 2 * l; i++) {
            row[FIXED + m + 2 * n + i] = 2 * rows[k++];
        }
        return row;
    }

    private static List<String> tensorNames(GradientSet<TfTensor> set) {
        List<String> out = new ArrayList<>();
        set.forEach(t -> out.add(t.name()));
        return List.copyOf(out);
    }

    private static List<String> tensorLayers(GradientSet<TfTensor> set) {
        List<String> out = new ArrayList<>();
        set.forEach(t -> out.add(t.layer()));
        return List.copyOf(out);
    }

    /**
     * The shape of a record, fixed when the op is built: the layers in model order (the order of
     * the update ratios too), each tensor's layer, the first clip bound's metric (-1: none).
     */
    private record RecordShape(List<String> layers, int[] layerOf, int threshold) {
        static RecordShape of(List<String> tensorLayers, List<String> metrics) {
            List<String> layers = new ArrayList<>();
            int[] layerOf = new int[tensorLayers.size()];
            for (int i = 0; i < layerOf.length; i++) {
                if (!layers.contains(tensorLayers.get(i))) {
                    layers.add(tensorLayers.get(i));
                }
                layerOf[i] = layers.indexOf(tensorLayers.get(i));
            }
            int threshold = -1;
            for (int i = metrics.size() - 1; i >= 0; i--) {
                threshold = metrics.get(i).endsWith(".threshold") ? i : threshold;
            }
            return new RecordShape(List.copyOf(layers), layerOf, threshold);
        }
    }

    /** Per tensor from the row's Σx² and max|x| (a non-finite tensor counts 1: the graph does not count). */
    private List<io.gradguard.core.monitor.TensorStats> tensorStats(double[] row) {
        int n = built.tensorNames.size();
        int at = FIXED + built.rowMetrics.size();
        List<io.gradguard.core.monitor.TensorStats> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            double ss = row[at + i];
            out.add(new io.gradguard.core.monitor.TensorStats(built.tensorNames.get(i), built.shape.layers.get(built.shape.layerOf[i]), Math.sqrt(ss),
                    row[at + n + i], Double.isFinite(ss) ? 0 : 1));
        }
        return out;
    }

    /**
     * Per layer from the row's per-tensor Σx²; with {@code ratios}, each layer's update ratio from
     * the row's Σ(Δθ)² and Σθ² (θ before the update), as the host monitor computes it: √(Σ(Δθ)² /
     * Σθ²); for a layer of zeros 0 if it did not move, +∞ if it did; NaN on a call that was not measured.
     */
    private List<io.gradguard.core.monitor.LayerStats> layerStats(double[] row, boolean ratios) {
        RecordShape shape = built.shape;
        double[] ss = new double[shape.layers.size()];
        int at = FIXED + built.rowMetrics.size();
        for (int i = 0; i < shape.layerOf.length; i++) {
            ss[shape.layerOf[i]] += row[at + i];
        }
        int ratiosAt = at + 2 * built.tensorNames.size();
        int count = ss.length;
        List<io.gradguard.core.monitor.LayerStats> out = new ArrayList<>(ss.length);
        for (int l = 0; l < ss.length; l++) {
            double ratio = Double.NaN;
            if (ratios) {
                double du = row[ratiosAt + l];
                double p = row[ratiosAt + count + l];
                ratio = Double.isNaN(du) || Double.isNaN(p) ? Double.NaN : p > 0 ? Math.sqrt(du / p) : du == 0 ? 0 : Double.POSITIVE_INFINITY;
            }
            out.add(new io.gradguard.core.monitor.LayerStats(shape.layers.get(l), Math.sqrt(ss[l]), ratio));
        }
        return out;
    }

    private StepRecord record(double[] row, double loss, boolean ratios) {
        boolean skipped = row[ACTION] == SKIP;
        int decider = (int) row[DECIDED_BY];
        String by = skipped && decider >= 0 ? built.stageNames.get(decider) : "";
        double coefficient = row[NORM_BEFORE] > 0 && Double.isFinite(row[NORM_BEFORE]) ? row[NORM_AFTER] / row[NORM_BEFORE] : 1.0;
        double threshold = built.shape.threshold < 0 ? Double.NaN : row[FIXED + built.shape.threshold];
        return new StepRecord("", 0, (long) row[STEP], (long) row[CALL], skipped, skipped ? "skipped in the graph by " + by : "", by,
                (int) row[MICRO_BATCHES], loss, row[NORM_BEFORE], row[NORM_AFTER], coefficient, coefficient < 1, threshold,
                (long) row[NON_FINITE], true, layerStats(row, ratios), tensorStats(row), List.of(), row[LOSS_SCALE]);
    }

    private void requireBuilt(String what) {
        requireOpen();
        if (built == null) {
            throw new IllegalStateException("build the training op first (minimize or applyGradients), then call " + what + "()");
        }
    }

    private void requireOpen() {
        if (closed) {
            throw new IllegalStateException("this TfOptimizer is closed");
        }
    }

    /**
     * Drains the last records to the monitors (when the training op was built and the session is
     * still open) and closes them, so their reports are written. The graph and session stay yours.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        try {
            if (built != null) {
                drain();
            }
        } catch (RuntimeException e) {
            // e.g. the session was closed first: the monitors still close and write what they have
            org.slf4j.LoggerFactory.getLogger(TfOptimizer.class).warn("GradGuard: the last records could not be read from the "
                    + "graph at close ({}); close the TfOptimizer before its session to keep them", e.toString());
        } finally {
            closed = true;
            for (Monitor m : monitors) {
                m.close();
            }
        }
    }

    @Override
    public String toString() {
        return getOptimizerName() + pipeline.stageNames();
    }

    // ---- graph helpers ----------------------------------------------------------------------------

    /**
     * The monitors' detailed steps (per-tensor statistics and update ratios): every optimizer step
     * divisible by the gcd of the monitors' cadences ({@link Monitor#every}), so that each monitor's
     * own detailed steps are among them, decided from the step count before the call. One pivot
     * ({@code Switch}) makes the detailed work dead on the other calls: the nodes built with
     * {@link #when} wait for its true side, so they need no switch of their own (a dead control
     * input makes a node dead). Every call detailed: no pivot.
     */
    private static final class Detail {
        /** The pivot on the cadence; null when every call is detailed. */
        final SwitchCond<TBool> pivot;
        /** Ops whose nodes run on detailed calls only. */
        final Ops when;
        /** Live only on the other calls. */
        final Operand<TBool> otherwise;

        private Detail(SwitchCond<TBool> pivot, Ops when, Operand<TBool> otherwise) {
            this.pivot = pivot;
            this.when = when;
            this.otherwise = otherwise;
        }

        /** @param place the step's place in the cadence: the optimizer step count before the call, modulo {@code every} */
        static Detail of(Ops tf, int every, Operand<TInt64> place) {
            if (every == 1) {
                return new Detail(null, tf, null);
            }
            Operand<TBool> detailed = tf.math.equal(place, tf.constant(0L));
            SwitchCond<TBool> pivot = tf.switchCond(detailed, detailed);
            return new Detail(pivot, tf.withControlDependencies(List.of(tf.identity(pivot.outputTrue()))),
                    tf.identity(pivot.outputFalse()));
        }

        /** {@code value} (a vector of {@code n}, built with {@link #when}) on a detailed call, n NaN on the others. */
        Operand<TFloat64> orNaN(Ops tf, Operand<TFloat64> value, int n) {
            if (pivot == null) {
                return value;
            }
            double[] nan = new double[n];
            java.util.Arrays.fill(nan, Double.NaN);
            return tf.merge(List.of(value, tf.withControlDependencies(List.of(otherwise)).constant(nan))).output();
        }
    }

    /** Scalars stacked into one vector and widened to float64 once (each widened first where their dtypes differ). */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Operand<TFloat64> stackF64(Ops tf, List<? extends Operand<?>> xs) {
        if (xs.stream().allMatch(x -> x.type() == xs.get(0).type())) {
            return GraphProgram.castTo(tf, tf.stack((List) xs), TFloat64.class);
        }
        return tf.stack(xs.stream().map(x -> GraphProgram.castTo(tf, x, TFloat64.class)).toList());
    }

    /** The deciding stage's name from its index (-1: none, ""). */
    private static Output<TString> decidedByName(Ops tf, Operand<TFloat64> index, List<String> stageNames) {
        String[] names = new String[stageNames.size() + 1];
        names[0] = "";
        for (int i = 0; i < stageNames.size(); i++) {
            names[i + 1] = stageNames.get(i);
        }
        Operand<TInt32> at = tf.dtypes.cast(tf.math.add(index, tf.constant(1.0)), TInt32.class);
        return tf.withName("decided_by").gather(tf.constant(java.nio.charset.StandardCharsets.UTF_8, names), at, tf.constant(0)).output();
    }

    /**
     * Update-to-parameter ratios measured in the graph, for the monitors built with
     * {@code updateRatios(true)} (the default), on the monitor's detailed calls ({@link Detail}): per
     * layer Σ(θ_after − θ_before)² and Σθ_before², the host monitor's ‖Δθ‖ / ‖θ‖. θ_before is a real
     * copy ({@code DeepCopy}) taken before the update: a ref variable read through {@code Identity}
     * aliases the buffer that the update changes in place. The gradients the optimizer reads wait
     * for the copies ({@link #copied}); θ_after is read when the call's update is done, whether it
     * applied or not (the host keeps the ratios of applied calls only, so a skipped detailed call
     * costs its reductions and nothing more).
     */
    private static final class UpdateRatios {
        /** θ before the update, live only on a detailed call. */
        final Output<?>[] before;
        /** Live on every call; on a detailed call, after the copies. */
        final Op copied;
        /** The record's layers (ratios per layer, in its order) and each variable's. */
        final RecordShape shape;
        final long[][] shapes;

        private UpdateRatios(Output<?>[] before, Op copied, RecordShape shape, long[][] shapes) {
            this.before = before;
            this.copied = copied;
            this.shape = shape;
            this.shapes = shapes;
        }

        /** The copies, where a monitor wants ratios; null where none does. */
        @SuppressWarnings({"unchecked", "rawtypes"})
        static UpdateRatios wanted(Ops tf, List<Monitor> monitors, Detail detail, RecordShape shape, List<Output<?>> vars,
                GradientSet<TfTensor> set) {
            if (monitors.stream().noneMatch(Monitor::updateRatios)) {
                return null;
            }
            int n = vars.size();
            long[][] shapes = new long[n][];
            Output<?>[] before = new Output<?>[n];
            List<Op> copies = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                shapes[i] = set.get(i).shape();
                before[i] = detail.when.deepCopy((Operand) vars.get(i)).asOutput(); // θ read by the copy itself
                Output<?> copy = before[i];
                copies.add(copy::op);
            }
            Op copied = detail.pivot == null ? tf.withControlDependencies(copies).noOp()
                    : tf.merge(List.of(tf.withControlDependencies(copies).identity(detail.pivot.outputTrue()), detail.otherwise));
            return new UpdateRatios(before, copied, shape, shapes);
        }

        /**
         * Per layer Σ(Δθ)²/2, then per layer Σθ²/2 (the host doubles them), read after {@code done};
         * live only on a detailed call. Each variable's Σx²/2 is reduced in its accumulation dtype;
         * the halves are stacked, widened and summed per layer once.
         */
        @SuppressWarnings({"unchecked", "rawtypes"})
        Operand<TFloat64> after(Ops tf, Ops whenDetailed, GraphProgram p, Operand<?> done, List<Output<?>> vars) {
            Ops afterUpdate = tf.withControlDependencies(List.of(done));
            List<Operand<?>> halves = new ArrayList<>();
            int n = before.length;
            for (int i = 0; i < n; i++) {
                // θ read after the update; dead with the copy on a call not detailed
                Output<?> delta = afterUpdate.math.sub((Operand) vars.get(i), (Operand) before[i]).asOutput();
                halves.add(p.ops.halfSumOfSquares(new TfTensor(shapes[i], delta, null, null)));
            }
            for (int i = 0; i < n; i++) {
                halves.add(p.ops.halfSumOfSquares(new TfTensor(shapes[i], before[i], null, null)));
            }
            // segment of variable i: its layer for Σ(Δθ)², the layer count plus its layer for Σθ²
            int layers = shape.layers.size();
            int[] segments = new int[2 * n];
            for (int i = 0; i < n; i++) {
                segments[i] = shape.layerOf[i];
                segments[n + i] = layers + shape.layerOf[i];
            }
            // the constants too hang on the detail pivot: between detailed steps nothing of this runs
            return tf.math.unsortedSegmentSum(stackF64(tf, halves), whenDetailed.constant(segments),
                    whenDetailed.constant(2 * layers));
        }
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Op assign(Ops tf, Variable<?> v, Operand<?> value) {
        return tf.assign((Operand) v, (Operand) value);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static GradAndVar<? extends TType> gradAndVar(Output<?> grad, Output<?> var) {
        return new GradAndVar(grad, var);
    }
}
