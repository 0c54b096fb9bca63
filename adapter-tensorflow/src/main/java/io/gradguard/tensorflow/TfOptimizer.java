package io.gradguard.tensorflow;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Layout;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.StepRecord;
import io.gradguard.core.NormType;
import io.gradguard.core.Norms;
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
import org.tensorflow.ndarray.Shape;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.SwitchCond;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TBool;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.TInt64;
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
 *       the host, when you call it (every N steps, and at {@link #close()}).</li>
 * </ul>
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
    private static final double PROCEED = 0, HOLD = 1, SKIP = 2;

    private final Session session;
    private final Optimizer inner;
    private final GradientPipeline pipeline;
    /** The name scope of this wrapper's nodes, chosen when the op is built (the first free {@code gradguard_opt[_n]}). */
    private String scopeName;
    private final Map<String, Layout> layouts = new LinkedHashMap<>();
    private final List<Monitor> monitors = new ArrayList<>();
    private int historyCapacity = 1000;
    private Built built;
    private long drained;
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
    }

    private static Graph graphOf(Session session) {
        return Checks.notNull("session", session).graph();
    }

    /**
     * A wrapper of {@code optimizer} running {@code pipeline} in the training op.
     *
     * @param session   the session that trains (counters and monitor records are read through it)
     * @param optimizer a tensorflow-framework optimizer built on the session's graph
     * @throws IllegalArgumentException if an argument is null, or the optimizer belongs to another graph
     */
    public static TfOptimizer of(Session session, Optimizer optimizer, GradientPipeline pipeline) {
        return new TfOptimizer(session, optimizer, pipeline);
    }

    /** {@link #of(Session, Optimizer, GradientPipeline)} with a new pipeline of these transforms. */
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
     * (default 1000); older ones are overwritten and counted as lost.
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
        if (built != null) {
            throw new IllegalStateException("this TfOptimizer has built its training op: call " + what + "(...) before minimize");
        }
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
    private record Built(Op train, Output<TInt64> counters, Map<String, Operand<TFloat64>> metrics, List<String> metricOrder,
            Output<TFloat64> history, int capacity, int width, List<String> metricNames, List<String> stageNames,
            Output<TFloat64> lossScale, List<String> tensorNames, List<String> tensorLayers) {
    }

    /** A graph under construction: the gate so far, the state writes, the metrics. */
    private final class Program {
        final Ops tf;
        final TfOps ops;
        Output<?>[] g;
        /** Whether this call reaches the current stage (null: always). */
        Operand<TBool> go;
        /** The decision so far: PROCEED (0), HOLD (1) or SKIP (2), and the deciding stage's index. */
        Operand<TFloat64> action;
        Operand<TFloat64> decidedBy;
        Operand<TFloat64> microBatches;
        /** The exact count of non-finite values (computed only when fetched). */
        Operand<TFloat64> nonFinite;
        /** 1 when a stage found non-finite values, else 0: what a monitor's row records. */
        Operand<TFloat64> nonFiniteSeen;
        /** Whether a stage skipped / held this call (null: none can). */
        Operand<TBool> skips;
        Operand<TBool> holds;
        final List<Op> asserts = new ArrayList<>();
        final List<Operand<?>> computed = new ArrayList<>();
        final List<Object[]> writes = new ArrayList<>();
        final Map<String, Operand<TFloat64>> metrics = new LinkedHashMap<>();
        /** The same metrics ungated, for a monitor's row (the host blanks what a skipped or held call did not reach). */
        final Map<String, Operand<TFloat64>> rawMetrics = new LinkedHashMap<>();

        Program(Ops tf, TfOps ops, Output<?>[] g) {
            this.tf = tf;
            this.ops = ops;
            this.g = g;
            this.action = tf.constant(PROCEED);
            this.decidedBy = tf.constant(-1.0);
            this.microBatches = tf.constant(1.0);
            this.nonFinite = tf.constant(0.0);
            this.nonFiniteSeen = tf.constant(0.0);
        }

        /** A read of state: computed on every run, before any write. */
        <T extends TType> Operand<T> computed(Operand<T> read) {
            computed.add(read);
            return read;
        }

        /** A new value for a state variable, written at the end of the run (after every read). */
        <T extends TType> void write(Variable<T> variable, Operand<T> value) {
            computed.add(value);
            writes.add(new Object[] {variable, value});
        }

        Operand<TBool> reaching() {
            return go == null ? tf.constant(true) : go;
        }

        /** This stage decides {@code kind} when {@code when} holds on a call that reaches it. */
        void decide(Operand<TBool> when, double kind, int stage) {
            Operand<TBool> hit = reached(when);
            if (kind == SKIP) {
                skips = skips == null ? hit : tf.math.logicalOr(skips, hit);
            } else {
                holds = holds == null ? hit : tf.math.logicalOr(holds, hit);
            }
            action = tf.select(hit, tf.constant(kind), action);
            decidedBy = tf.select(hit, tf.constant((double) stage), decidedBy);
            Operand<TBool> notHit = tf.math.logicalNot(when);
            go = go == null ? notHit : and(go, notHit);
        }

        /** {@code when}, on a call that reaches the current stage. */
        Operand<TBool> reached(Operand<TBool> when) {
            return go == null ? when : and(go, when);
        }

        Operand<TBool> and(Operand<TBool> a, Operand<TBool> b) {
            return tf.math.logicalAnd(a, b);
        }

        /** A metric of a stage: NaN on calls that do not reach it. */
        void metric(String key, Operand<TFloat64> value) {
            metrics.put(key, go == null ? value : tf.select(go, value, tf.constant(Double.NaN)));
            rawMetrics.put(key, value);
        }

        Variable<TInt64> counter(String name) {
            return tf.withName(name).variable(tf.constant(0L));
        }

        Operand<TInt64> plusIf(Operand<TInt64> counter, Operand<TBool> when) {
            return tf.math.add(counter, tf.dtypes.cast(when, TInt64.class));
        }

        Operand<TFloat64> f64(Operand<?> x) {
            return castTo(tf, x, TFloat64.class);
        }
    }

    private Op build(Ops tf, Output<?> loss, List<Output<?>> vars, List<Output<?>> values, Output<?>[] grads, LossScale scale,
            Variable<TFloat64> s) {
        Set<String> names = new java.util.HashSet<>();
        vars.forEach(v -> names.add(v.op().name()));
        Set<String> undeclared = new java.util.TreeSet<>(layouts.keySet());
        undeclared.removeAll(names);
        Checks.require(undeclared.isEmpty(), "layout", "name only variables the training op updates", undeclared);
        TfOps ops = TfOps.graphOnly(graph, tf.withSubScope("stages"));
        Program p = new Program(tf, ops, grads.clone());
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
            lossScaleUsed = identity(tf, s);
            p.computed.add(lossScaleUsed);
            unscale(p, scale, s, stageNames.get(0));
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
                nonFinite(p, n, stage, i, loss);
            } else if (t instanceof SkipSpikes k) {
                skipSpikes(p, k, stage, i, set);
            } else if (t instanceof ZClip z) {
                zClip(p, z, stage, set);
                changers++;
                lastChanger = stage;
            } else if (t instanceof AutoClip a) {
                autoClip(p, a, stage, set);
                changers++;
                lastChanger = stage;
            } else if (t instanceof Accumulate a) {
                accumulate(p, a, stage, i, set);
                input = p.g.clone(); // a record describes the window's gradient, as on the host
                changers = 0;
            } else {
                stateless(p, t, stage, set);
                if (t.changesGradients()) {
                    changers++;
                    lastChanger = stage;
                }
            }
        }
        // the norms a monitor records: before and after the pipeline (Σx² nodes are shared with the stages')
        Operand<TFloat64> normBefore = tf.constant(Double.NaN);
        Operand<TFloat64> normAfter = tf.constant(Double.NaN);
        if (!monitors.isEmpty()) {
            Operand<TFloat64> norm = changers == 1 ? p.rawMetrics.get(lastChanger + ".norm") : null;
            Operand<TFloat64> coefficient = changers == 1 ? p.rawMetrics.get(lastChanger + ".coefficient") : null;
            if (norm != null && coefficient != null) {
                // one global scaling stage: its norm and coefficient are the record's (no second pass)
                normBefore = norm;
                normAfter = tf.math.mul(norm, coefficient);
            } else {
                normBefore = globalNorm(p, input);
                normAfter = changers > 0 ? globalNorm(p, p.g) : normBefore;
            }
        }
        Operand<TBool> applies = p.go == null ? tf.constant(true) : p.go;
        if (!p.asserts.isEmpty()) {
            applies = tf.withControlDependencies(p.asserts).identity(applies);
        }
        // the scalars a user may fetch with the step (computed only when fetched, or for a monitor's row)
        Map<String, Operand<TFloat64>> named = new LinkedHashMap<>();
        named.put("action", p.action);
        named.put("loss", loss == null ? tf.constant(Double.NaN) : p.f64(loss));
        named.put("microBatches", p.microBatches);
        named.put("lossScale", lossScaleUsed);
        named.put("nonFinite", p.nonFinite);
        named.putAll(p.metrics);
        Operand<TInt64> before = identity(tf, counters);
        p.computed.add(before);
        Variable<TFloat64> history = null;
        int capacity = monitors.isEmpty() ? 0 : historyCapacity;
        int width = FIXED + p.metrics.size() + (monitors.isEmpty() ? 0 : 2 * input.length);
        Op historyWrite = null;
        if (capacity > 0) {
            // the row this call leaves: its counters before the call, its decision, its scalars
            List<Operand<TFloat64>> cells = new ArrayList<>();
            cells.add(p.f64(tf.gather(before, tf.constant(0), tf.constant(0))));
            cells.add(p.f64(tf.gather(before, tf.constant(1), tf.constant(0))));
            cells.add(p.action);
            cells.add(p.decidedBy);
            cells.add(named.get("loss"));
            cells.add(normBefore);
            cells.add(normAfter);
            cells.add(p.microBatches);
            cells.add(lossScaleUsed);
            cells.add(p.nonFiniteSeen);
            cells.addAll(p.rawMetrics.values());
            // per tensor, before the pipeline's changes: Σx² (the nodes a global stage builds anyway) and max|x|
            for (Output<?> x : input) {
                cells.add(p.f64(p.ops.sumOfSquares(new TfTensor(x.shape().asArray(), x, null, null)).value()));
            }
            for (Output<?> x : input) {
                cells.add(p.f64(p.ops.maxAbs(new TfTensor(x.shape().asArray(), x, null, null)).value()));
            }
            Operand<TFloat64> row = tf.stack(cells);
            p.computed.add(row);
            history = tf.withName("history").variable(tf.fill(tf.constant(new long[] {capacity, width}), tf.constant(Double.NaN)));
            Operand<TInt64> at = tf.math.floorMod(tf.gather(before, tf.constant(0), tf.constant(0)), tf.constant((long) capacity));
            p.computed.add(at);
            historyWrite = tf.withControlDependencies(barrier(p)).scatterUpdate(history, tf.reshape(at, tf.constant(new long[] {1})),
                    tf.reshape(row, tf.constant(new long[] {1, width})));
        }
        // calls, steps, skipped, held: one add of this call's deltas
        boolean gated = p.go != null || !p.asserts.isEmpty();
        Operand<TInt64> delta = !gated ? tf.constant(new long[] {1, 1, 0, 0})
                : tf.dtypes.cast(tf.stack(List.of(tf.constant(true), applies, p.skips == null ? tf.constant(false) : p.skips,
                        p.holds == null ? tf.constant(false) : p.holds)), TInt64.class);
        p.write(counters, tf.math.add(counters, delta));

        // the wrapped optimizer's update, behind the gate: its inputs are dead when the call does not apply
        // (tensorflow-framework's applyGradients runs every update after all the gradients it is given)
        List<GradAndVar<? extends TType>> gv = new ArrayList<>();
        Set<GraphOperation> gates = new java.util.HashSet<>();
        for (int i = 0; i < p.g.length; i++) {
            Output<?> x = gated ? switchOf(tf, p.g[i], applies).outputTrue() : p.g[i];
            gates.add((GraphOperation) x.op());
            gv.add(gradAndVar(x, vars.get(i)));
        }
        Set<String> existing = new java.util.HashSet<>();
        graph.operations().forEachRemaining(o -> existing.add(o.name()));
        Op apply = inner.applyGradients(gv, scopeName + "_apply");
        if (gated) {
            apply = gatedUpdate(tf, existing, gates, applies);
        }
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
        if (historyWrite != null) {
            end.add(historyWrite);
        }
        List<Op> barrier = barrier(p);
        for (Object[] w : p.writes) {
            end.add(assign(tf.withControlDependencies(barrier), (Variable<?>) w[0], (Operand<?>) w[1]));
        }
        Op train = tf.withName("train").withControlDependencies(end).noOp();
        Map<String, Operand<TFloat64>> fetchable = new LinkedHashMap<>();
        named.forEach((k, v) -> fetchable.put(k, v));
        built = new Built(train, identity(tf, counters), Map.copyOf(fetchable), List.copyOf(named.keySet()),
                history == null ? null : identity(tf, history).asOutput(), capacity, width, List.copyOf(p.metrics.keySet()),
                List.copyOf(stageNames), s == null ? null : identity(tf, s).asOutput(), tensorNames(set), tensorLayers(set));
        return train;
    }

    /**
     * The wrapped optimizer's update, all of it behind the gate. Its per-variable updates read the
     * gated gradients, so they do not run on a call that does not apply. Some optimizers also write
     * state that reads no gradient (tensorflow-framework's Adam and Adamax advance their beta powers
     * in {@code finish}, AdaGradDA its global step in {@code prepare}): such a write is rebuilt with
     * its value behind the gate and ordered after the per-variable updates (which read the old
     * value), and the training op targets these instead of the optimizer's own op, so the originals
     * never run. A write the updates read the result of (Nadam's momentum schedule) cannot be moved
     * behind the gate: that optimizer is refused.
     *
     * @throws IllegalArgumentException if the optimizer writes state the gate cannot hold back
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private Op gatedUpdate(Ops tf, Set<String> existing, Set<GraphOperation> gates, Operand<TBool> applies) {
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
            Operand value = switchOf(tf, op.input(1), applies).outputTrue();
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

    /** Every value the run computes before any state variable is written. */
    private static List<Op> barrier(Program p) {
        List<Op> all = new ArrayList<>();
        for (Operand<?> o : p.computed) {
            all.add(o);
        }
        for (Output<?> x : p.g) {
            all.add(x::op);
        }
        all.addAll(p.asserts);
        all.add(p.action);
        return all;
    }

    /** Loss scaling ({@link LossScale}): g ← g / S; an overflow skips and backs S off; growth after the interval. */
    private void unscale(Program p, LossScale scale, Variable<TFloat64> s, String stage) {
        Ops tf = p.tf;
        for (int i = 0; i < p.g.length; i++) {
            p.g[i] = tf.math.div((Operand) p.g[i], castTo(tf, s, p.g[i].type())).asOutput();
        }
        Operand<TBool> finite = allFinite(p);
        Operand<TFloat64> found = nonFiniteCount(p, finite);
        Operand<TBool> overflow = tf.math.logicalNot(finite);
        Variable<TInt64> good = p.counter("loss_scale_good");
        Variable<TInt64> overflows = p.counter("loss_scale_overflows");
        Operand<TInt64> goodNext = tf.math.add(good, tf.constant(1L));
        Operand<TBool> grow = tf.math.logicalAnd(tf.math.logicalNot(overflow),
                tf.math.greaterEqual(goodNext, tf.constant((long) scale.growthInterval())));
        Operand<TFloat64> grown = tf.math.mul(s, tf.constant(scale.growth()));
        Operand<TFloat64> keepGrown = tf.select(tf.math.logicalAnd(tf.math.isFinite(grown),
                tf.math.lessEqual(grown, tf.constant((double) Float.MAX_VALUE))), grown, identity(tf, s));
        Operand<TFloat64> backedOff = tf.math.maximum(tf.math.mul(s, tf.constant(scale.backoff())), tf.constant(Double.MIN_NORMAL));
        p.write(s, tf.select(overflow, backedOff, tf.select(grow, keepGrown, identity(tf, s))));
        p.write(good, tf.select(tf.math.logicalOr(overflow, grow), tf.constant(0L), goodNext));
        p.write(overflows, p.plusIf(overflows, overflow));
        p.metric(stage + ".scale", p.computed(identity(tf, s)));
        p.nonFinite = found;
        p.nonFiniteSeen = p.f64(overflow);
        p.decide(overflow, SKIP, 0);
    }

    /** {@link NonFiniteGuard} SKIP or THROW: the gate, the counters, and an in-graph failure past the limit. */
    private void nonFinite(Program p, NonFiniteGuard n, String stage, int index, Output<?> loss) {
        Ops tf = p.tf;
        Operand<TBool> finite = allFinite(p);
        Operand<TFloat64> found = nonFiniteCount(p, finite);
        Operand<TBool> reached = p.reaching();
        Operand<TBool> bad = p.reached(tf.math.logicalNot(finite));
        Variable<TInt64> consecutive = p.counter(stage + "_consecutive");
        Variable<TInt64> total = p.counter(stage + "_total");
        Operand<TInt64> unchanged = p.go == null ? tf.constant(0L) : tf.select(reached, tf.constant(0L), identity(tf, consecutive));
        Operand<TInt64> next = tf.select(bad, tf.math.add(consecutive, tf.constant(1L)), unchanged);
        p.write(consecutive, next);
        p.write(total, p.plusIf(total, bad));
        p.metric(stage + ".nonFinite", found);
        p.nonFinite = tf.select(reached, found, p.nonFinite);
        p.nonFiniteSeen = tf.select(bad, tf.constant(1.0), p.nonFiniteSeen);
        List<Operand<?>> data = new ArrayList<>();
        Operand<TBool> fail;
        Operand<TBool> skipWhen;
        if (n.policy() == NonFiniteGuard.Policy.THROW) {
            fail = bad;
            skipWhen = tf.constant(false);
            data.add(tf.constant("GradGuard: non-finite gradient (non-finite policy THROW)."));
        } else {
            Operand<TBool> exhausted = p.and(bad, tf.math.greater(next, tf.constant((long) n.maxConsecutive())));
            fail = n.letsThroughWhenExhausted() ? tf.constant(false) : exhausted;
            skipWhen = n.letsThroughWhenExhausted() ? tf.math.logicalAnd(bad, tf.math.logicalNot(exhausted)) : bad;
            data.add(tf.constant("GradGuard: non-finite gradients " + (n.maxConsecutive() + 1) + " calls in a row, more than "
                    + "maxConsecutive=" + n.maxConsecutive() + ". If the loss below is finite, it is a sudden failure rather than "
                    + "divergence: look for NaN/Inf in the inputs or an operation whose gradient is not finite (sqrt, log or a "
                    + "division at 0). If it is not finite, either the input data holds NaN or Inf (check the batches) or "
                    + "training is diverging (lower the learning rate, add clipping); or raise maxConsecutive."));
        }
        if (loss != null) {
            data.add(tf.constant("loss:"));
            data.add(loss);
        }
        p.asserts.add(tf.withName(stage + "_check").assertThat(tf.math.logicalNot(fail), data));
        p.decide(skipWhen, SKIP, index);
    }

    /** {@link Accumulate} with a fixed k: the window's sum in variables; the update on its k-th counted call. */
    private void accumulate(Program p, Accumulate a, String stage, int index, GradientSet<TfTensor> set) {
        Ops tf = p.tf;
        Checks.require(a.fixedK().isPresent(), "pipeline", "accumulate a fixed k inside the graph (a schedule needs the host: "
                + "use TfGuard.attach(...).step(...))", stage);
        Checks.require(a.weighting() == Accumulate.Weighting.UNIFORM, "pipeline", "weight micro-batches uniformly inside the graph "
                + "(the batch size and weight are host facts: use TfGuard.attach(...).step(...))", stage + " " + a.weighting());
        int k = a.fixedK().getAsInt();
        Operand<TBool> counted = p.reaching();
        if (a.dropsNonFinite()) {
            Operand<TBool> finite = allFinite(p);
            p.decide(tf.math.logicalNot(finite), SKIP, index);
            counted = p.reaching();
        }
        Variable<TInt64> count = p.counter(stage + "_count");
        Operand<TInt64> newCount = p.plusIf(count, counted);
        Operand<TBool> complete = tf.math.greaterEqual(newCount, tf.constant((long) k));
        for (int i = 0; i < p.g.length; i++) {
            Output<?> gi = p.g[i];
            long[] shape = gi.shape().hasUnknownDimension() ? set.get(i).shape() : gi.shape().asArray();
            Variable<?> buffer = tf.withName(stage + "_sum_" + i).variable(zeros(tf, shape, gi.type()));
            Operand sum = tf.math.add((Operand) buffer, tf.select(counted, (Operand) gi, tf.zerosLike((Operand) gi)));
            p.write((Variable) buffer, tf.select(complete, tf.zerosLike(sum), sum));
            p.g[i] = (a.averages() ? tf.math.div(sum, castTo(tf, tf.constant((double) k), gi.type())) : sum).asOutput();
        }
        p.write(count, tf.select(complete, tf.constant(0L), newCount));
        p.microBatches = p.f64(newCount);
        p.metric(stage + ".microBatches", p.f64(newCount));
        p.decide(p.and(counted, tf.math.logicalNot(complete)), HOLD, index);
    }

    // ---- the spike handlers: their host history kept in graph variables ----------------------------

    /** The global L2 norm of the current gradients, built as core builds it (so a later global stage shares the nodes). */
    @SuppressWarnings("unchecked")
    private static Operand<TFloat64> norm(Program p, GradientSet<TfTensor> set) {
        for (int i = 0; i < set.size(); i++) {
            set.get(i).gradient().rebind(p.g[i]);
        }
        return (Operand<TFloat64>) Norms.globalNorm(p.ops, set, NormType.L2).value();
    }

    /** Multiplies every current gradient by the float64 scalar {@code coef}, as core's stages do ({@code scaleInPlace}). */
    private static void scale(Program p, GradientSet<TfTensor> set, Operand<TFloat64> coef) {
        TfTensor c = new TfTensor(new long[0], coef.asOutput(), null, null);
        for (int i = 0; i < set.size(); i++) {
            TfTensor g = set.get(i).gradient();
            g.rebind(p.g[i]);
            p.ops.scaleInPlace(g, c);
            p.g[i] = g.value();
        }
    }

    /**
     * A ring of the last {@code capacity} accepted norms in graph variables, as core's norm history:
     * mean and population standard deviation over the valid entries, percentiles with numpy's linear
     * interpolation.
     */
    private final class Ring {
        final Program p;
        final Variable<TFloat64> values;
        final Variable<TInt64> count;
        final int capacity;
        final Operand<TInt64> index;

        Ring(Program p, String name, int capacity) {
            this.p = p;
            this.capacity = capacity;
            Ops tf = p.tf;
            values = tf.withName(name + "_history").variable(tf.fill(tf.constant(new long[] {capacity}), tf.constant(0.0)));
            count = p.counter(name + "_history_count");
            index = tf.range(tf.constant(0L), tf.constant((long) capacity), tf.constant(1L));
        }

        Operand<TFloat64> size(Operand<TInt64> n) {
            return p.f64(p.tf.math.minimum(n, p.tf.constant((long) capacity)));
        }

        Operand<TBool> valid(Operand<TInt64> n) {
            return p.tf.math.less(index, p.tf.math.minimum(n, p.tf.constant((long) capacity)));
        }

        Operand<TFloat64> mean(Operand<TFloat64> h, Operand<TInt64> n) {
            Ops tf = p.tf;
            Operand<TFloat64> sum = tf.reduceSum(tf.select(valid(n), h, tf.zerosLike(h)), tf.constant(0));
            return tf.math.div(sum, size(n));
        }

        Operand<TFloat64> std(Operand<TFloat64> h, Operand<TInt64> n) {
            Ops tf = p.tf;
            Operand<TFloat64> d = tf.math.sub(h, mean(h, n));
            Operand<TFloat64> sum = tf.reduceSum(tf.select(valid(n), tf.math.mul(d, d), tf.zerosLike(h)), tf.constant(0));
            return tf.math.sqrt(tf.math.div(sum, size(n)));
        }

        /** The ring with {@code x} added when {@code when}; writes it and the count at the end of the run. Returns the new values and count. */
        Object[] add(Operand<TFloat64> x, Operand<TBool> when) {
            Ops tf = p.tf;
            Operand<TInt64> at = tf.math.floorMod(identity(tf, count), tf.constant((long) capacity));
            Operand<TBool> slot = tf.math.logicalAnd(tf.math.equal(index, at), when);
            Operand<TFloat64> h = tf.select(slot, tf.fill(tf.constant(new long[] {capacity}), x), identity(tf, values));
            Operand<TInt64> n = p.plusIf(count, when);
            p.write(values, h);
            p.write(count, n);
            return new Object[] {h, n};
        }

        /** The p-th percentile (0..100] of the valid entries, numpy's linear interpolation (as core's NormHistory). */
        Operand<TFloat64> percentile(Operand<TFloat64> h, Operand<TInt64> n, double percent) {
            Ops tf = p.tf;
            Operand<TFloat64> ascending = tf.math.neg(tf.nn.topK(tf.math.neg(tf.select(valid(n), h,
                    tf.fill(tf.constant(new long[] {capacity}), tf.constant(Double.POSITIVE_INFINITY)))), tf.constant(capacity), org.tensorflow.types.TInt32.class).values());
            Operand<TFloat64> rank = tf.math.mul(tf.constant(percent / 100.0), tf.math.sub(size(n), tf.constant(1.0)));
            Operand<TInt64> lo = tf.dtypes.cast(tf.math.floor(rank), TInt64.class);
            Operand<TInt64> hi = tf.math.minimum(tf.math.add(lo, tf.constant(1L)),
                    tf.math.sub(tf.math.minimum(n, tf.constant((long) capacity)), tf.constant(1L)));
            Operand<TFloat64> a = tf.gather(ascending, tf.math.maximum(lo, tf.constant(0L)), tf.constant(0));
            Operand<TFloat64> b = tf.gather(ascending, tf.math.maximum(hi, tf.constant(0L)), tf.constant(0));
            return tf.math.add(a, tf.math.mul(tf.math.sub(b, a), tf.math.sub(rank, p.f64(lo))));
        }
    }

    /** {@link SkipSpikes}: z-score of the norm against the accepted norms' window; a spike skips, up to a limit in a row. */
    private void skipSpikes(Program p, SkipSpikes k, String stage, int index, GradientSet<TfTensor> set) {
        Ops tf = p.tf;
        Operand<TFloat64> n = norm(p, set);
        Ring ring = new Ring(p, stage, k.windowSize());
        Operand<TInt64> count = identity(tf, ring.count);
        Operand<TFloat64> h = identity(tf, ring.values);
        p.computed(count);
        p.computed(h);
        Operand<TBool> finite = tf.math.isFinite(n);
        Operand<TBool> judged = tf.math.greaterEqual(tf.math.minimum(count, tf.constant((long) k.windowSize())),
                tf.constant((long) k.minHistorySize()));
        Operand<TFloat64> z = tf.math.div(tf.math.sub(n, ring.mean(h, count)), tf.math.add(ring.std(h, count), tf.constant(SkipSpikes.EPS)));
        Operand<TBool> spike = tf.math.logicalAnd(tf.math.logicalAnd(finite, judged), tf.math.greater(z, tf.constant(k.zThreshold())));
        Variable<TInt64> consecutive = p.counter(stage + "_consecutive");
        Variable<TInt64> skipped = p.counter(stage + "_skipped");
        Variable<TInt64> letThrough = p.counter(stage + "_let_through");
        Operand<TBool> skipIt = tf.math.logicalAnd(spike, tf.math.less(consecutive, tf.constant((long) k.maxConsecutiveSkips())));
        Operand<TBool> skipHere = p.reached(skipIt);
        Operand<TBool> accept = p.reached(tf.math.logicalAnd(finite, tf.math.logicalNot(skipIt)));
        p.write(consecutive, tf.select(skipHere, tf.math.add(consecutive, tf.constant(1L)),
                tf.select(accept, tf.constant(0L), identity(tf, consecutive))));
        p.write(skipped, p.plusIf(skipped, skipHere));
        p.write(letThrough, p.plusIf(letThrough, p.reached(tf.math.logicalAnd(spike, tf.math.logicalNot(skipIt)))));
        ring.add(n, accept);
        p.metric(stage + ".norm", n);
        p.metric(stage + ".z", z);
        p.decide(skipIt, SKIP, index);
    }

    /** {@link ZClip}: EMA mean and variance of the norm after a warm-up; a spike's z-score sets the bound. */
    private void zClip(Program p, ZClip zc, String stage, GradientSet<TfTensor> set) {
        Ops tf = p.tf;
        Operand<TFloat64> n = norm(p, set);
        Operand<TBool> finite = tf.math.isFinite(n);
        Operand<TBool> on = p.reached(finite);
        int warmup = zc.warmupSteps();
        Variable<TFloat64> mean = tf.withName(stage + "_mean").variable(tf.constant(0.0));
        Variable<TFloat64> var = tf.withName(stage + "_var").variable(tf.constant(0.0));
        Variable<TInt64> collected = p.counter(stage + "_collected");
        Operand<TFloat64> m = p.computed(identity(tf, mean));
        Operand<TFloat64> v = p.computed(identity(tf, var));
        Operand<TInt64> c = p.computed(identity(tf, collected));
        Operand<TBool> warming = tf.math.less(c, tf.constant((long) warmup));
        // warm-up: the norms seed the mean and the variance once `warmup` of them are collected
        Operand<TFloat64> warmMean = m;
        Operand<TFloat64> warmVar = v;
        if (warmup > 0) {
            Variable<TFloat64> buffer = tf.withName(stage + "_warmup").variable(tf.fill(tf.constant(new long[] {warmup}), tf.constant(0.0)));
            Operand<TFloat64> b = p.computed(identity(tf, buffer));
            Operand<TInt64> range = tf.range(tf.constant(0L), tf.constant((long) warmup), tf.constant(1L));
            Operand<TBool> slot = tf.math.logicalAnd(tf.math.equal(range, c), tf.math.logicalAnd(on, warming));
            Operand<TFloat64> filled = tf.select(slot, tf.fill(tf.constant(new long[] {warmup}), n), b);
            p.write(buffer, filled);
            Operand<TFloat64> bm = tf.math.div(tf.reduceSum(filled, tf.constant(0)), tf.constant((double) warmup));
            Operand<TFloat64> d = tf.math.sub(filled, bm);
            Operand<TFloat64> bv = tf.math.div(tf.reduceSum(tf.math.mul(d, d), tf.constant(0)), tf.constant((double) warmup));
            Operand<TBool> seeds = tf.math.logicalAnd(tf.math.logicalAnd(on, warming), tf.math.equal(c, tf.constant((long) warmup - 1)));
            warmMean = tf.select(seeds, bm, m);
            warmVar = tf.select(seeds, bv, v);
        }
        // after it: z-score against the EMA; a spike's bound, and the EMA updated with the bounded norm
        Operand<TFloat64> std = tf.math.sqrt(v);
        Operand<TFloat64> z = tf.math.div(tf.math.sub(n, m), tf.math.add(std, tf.constant(zc.eps())));
        Operand<TBool> spike = tf.math.greater(z, tf.constant(zc.zThreshold()));
        double zt = zc.zThreshold();
        Operand<TFloat64> bound = zc.clipMode() == ZClip.Mode.MEAN ? m
                : tf.math.mul(tf.math.add(m, tf.math.div(tf.math.mul(tf.constant(zt), std), tf.math.div(z, tf.constant(zt)))),
                        tf.constant(zc.clipFactor()));
        Operand<TFloat64> steadyThreshold = tf.select(spike, bound, n);
        Operand<TFloat64> x = steadyThreshold;
        Operand<TFloat64> a = tf.constant(zc.alpha());
        Operand<TFloat64> b1 = tf.constant(1 - zc.alpha());
        Operand<TFloat64> newMean = tf.math.add(tf.math.mul(a, m), tf.math.mul(b1, x));
        Operand<TFloat64> dx = tf.math.sub(x, newMean);
        Operand<TFloat64> newVar = tf.math.add(tf.math.mul(a, v), tf.math.mul(b1, tf.math.mul(dx, dx)));
        Operand<TBool> steady = tf.math.logicalAnd(on, tf.math.logicalNot(warming));
        p.write(mean, tf.select(steady, newMean, warmMean));
        p.write(var, tf.select(steady, newVar, warmVar));
        p.write(collected, p.plusIf(collected, tf.math.logicalAnd(on, warming)));
        Operand<TFloat64> threshold = tf.select(warming, n, steadyThreshold);
        if (!Double.isNaN(zc.capNorm())) {
            threshold = tf.math.minimum(threshold, tf.constant(zc.capNorm()));
        }
        Operand<TFloat64> coef = coefficient(tf, finite, n, threshold);
        p.metric(stage + ".norm", n);
        p.metric(stage + ".z", z);
        p.metric(stage + ".coefficient", coef);
        p.metric(stage + ".threshold", threshold);
        scale(p, set, coef);
    }

    /** {@link AutoClip}: the bound is a percentile of the norms seen so far (the last historySize). */
    private void autoClip(Program p, AutoClip ac, String stage, GradientSet<TfTensor> set) {
        Ops tf = p.tf;
        Operand<TFloat64> n = norm(p, set);
        Operand<TBool> finite = tf.math.isFinite(n);
        Ring ring = new Ring(p, stage, ac.historySize());
        p.computed(identity(tf, ring.count));
        Object[] added = ring.add(n, p.reached(finite));
        @SuppressWarnings("unchecked")
        Operand<TFloat64> h = (Operand<TFloat64>) added[0];
        @SuppressWarnings("unchecked")
        Operand<TInt64> count = (Operand<TInt64>) added[1];
        Operand<TFloat64> threshold = ring.percentile(h, count, ac.percentile());
        Operand<TFloat64> coef = coefficient(tf, finite, n, threshold);
        p.metric(stage + ".norm", n);
        p.metric(stage + ".coefficient", coef);
        p.metric(stage + ".threshold", threshold);
        scale(p, set, coef);
    }

    /** threshold / n when the norm is finite and above a positive threshold, else 1 (core's clip coefficient). */
    private static Operand<TFloat64> coefficient(Ops tf, Operand<TBool> finite, Operand<TFloat64> n, Operand<TFloat64> threshold) {
        Operand<TBool> acts = tf.math.logicalAnd(finite, tf.math.logicalAnd(tf.math.greater(threshold, tf.constant(0.0)),
                tf.math.greater(n, threshold)));
        return tf.select(acts, tf.math.div(threshold, n), tf.constant(1.0));
    }

    /** A stage that decides nothing: core's own transform code, run once on graph nodes. */
    private void stateless(Program p, GradientTransform t, String stage, GradientSet<TfTensor> set) {
        for (int i = 0; i < set.size(); i++) {
            set.get(i).gradient().rebind(p.g[i]);
        }
        GradientPipeline one = GradientPipeline.of(new Named(t, stage));
        StepResult<TfTensor> r;
        try {
            r = one.step(set, p.ops, StepContext.ofBatch(1));
        } catch (TfOps.HostReadException e) {
            throw new IllegalArgumentException("pipeline stage " + stage + " (" + t + ") " + e.getMessage() + " on every step, which a "
                    + "training op that runs inside one session run cannot do: run this pipeline with TfGuard.attach(...).step(...)", e);
        }
        Checks.require(r.applies(), "pipeline", "hold only through accumulate and skip only through skipNonFinite or loss scaling "
                + "inside the graph", stage);
        for (int i = 0; i < set.size(); i++) {
            p.g[i] = set.get(i).gradient().value();
        }
        for (String key : r.metricNames()) {
            var tensor = r.metricTensor(key);
            if (tensor.isPresent()) {
                p.metric(key, p.f64(tensor.get().value()));
            } else {
                p.metric(key, p.tf.constant(r.metric(key).getAsDouble()));
            }
        }
    }

    /**
     * Whether every current gradient is finite, read from Σ over tensors of Σx² (the nodes a global
     * L2 stage on the same gradients builds too, so the test costs one isFinite): NaN or ±Inf
     * anywhere makes the sum NaN or Inf. As in PyTorch's {@code clip_grad_norm_(error_if_nonfinite)},
     * a float32 gradient whose Σx² overflows (|x| beyond about 1.8e19) counts as non-finite too.
     */
    private static Operand<TBool> allFinite(Program p) {
        TfTensor acc = null;
        for (Output<?> x : p.g) {
            TfTensor part = p.ops.sumOfSquares(new TfTensor(x.shape().asArray(), x, null, null));
            acc = acc == null ? part : p.ops.add(acc, part);
        }
        @SuppressWarnings("unchecked")
        Operand<TFloat64> sum = (Operand<TFloat64>) acc.value();
        return p.tf.math.isFinite(sum);
    }

    /** The number of non-finite values, counted only on a call that has some (a cond: 0 otherwise, at no cost). */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Operand<TFloat64> nonFiniteCount(Program p, Operand<TBool> finite) {
        Ops tf = p.tf;
        Operand<TFloat64> found = null;
        for (Output<?> x : p.g) {
            Operand bad = switchOf(tf, x, finite).outputFalse();
            Operand<TFloat64> n = tf.dtypes.cast(tf.reduceSum(tf.dtypes.cast(tf.math.logicalNot(tf.math.isFinite(bad)), TFloat64.class),
                    tf.constant(allAxes(x.shape().numDimensions()))), TFloat64.class);
            found = found == null ? n : tf.math.add(found, n);
        }
        Operand<TFloat64> none = tf.identity(tf.switchCond(tf.constant(0.0), finite).outputTrue());
        return tf.merge(List.of(none, found)).output();
    }

    private static int[] allAxes(int rank) {
        int[] axes = new int[rank];
        for (int i = 0; i < rank; i++) {
            axes[i] = i;
        }
        return axes;
    }

    private static Operand<TFloat64> globalNorm(Program p, Output<?>[] g) {
        Operand<TFloat64> sum = null;
        for (Output<?> x : g) {
            @SuppressWarnings("unchecked")
            Output<TFloat64> n = (Output<TFloat64>) p.ops.sumOfSquares(new TfTensor(x.shape().asArray(), x, null, null)).value();
            sum = sum == null ? n : p.tf.math.add(sum, n);
        }
        return p.tf.math.sqrt(sum);
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
        try (Result r = session.runner().fetch(built.counters).run()) {
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
        Checks.require(m != null, "key", "be one of " + built.metricOrder, key);
        return m;
    }

    /** The names {@link #metric} accepts, in pipeline order. @throws IllegalStateException if the op is not built yet */
    public List<String> metricNames() {
        requireBuilt("metricNames");
        return built.metricOrder;
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
        try (Result r = session.runner().fetch(built.lossScale).run()) {
            return ((TFloat64) r.get(0)).getDouble();
        }
    }

    /**
     * Hands the calls recorded since the last drain to the pipeline's {@link Monitor}s (one record
     * per optimizer step, as on the other adapters: held micro-batches are folded into the step that
     * closes their window) and returns how many calls it read. Call it at your logging cadence (every
     * N steps) and at the end; calls older than the history capacity are lost (logged, counted in
     * the return value's absence). One session run.
     *
     * @return the number of calls read
     * @throws IllegalStateException if the training op is not built yet, or this wrapper is closed
     */
    public int drain() {
        requireBuilt("drain");
        if (built.history == null) {
            return 0;
        }
        double[] rows;
        long calls;
        try (Result r = session.runner().fetch(built.history).fetch(built.counters).run()) {
            rows = new double[built.capacity * built.width];
            ((TFloat64) r.get(0)).copyTo(org.tensorflow.ndarray.buffer.DataBuffers.of(rows, false, false));
            calls = ((TInt64) r.get(1)).getLong(0);
        }
        if (calls < drained) {
            drained = 0; // a checkpoint from before the last drain was restored
        }
        long from = Math.max(drained, calls - built.capacity);
        if (from > drained) {
            org.slf4j.LoggerFactory.getLogger(TfOptimizer.class).warn("GradGuard: {} calls' records were overwritten before drain(): "
                    + "drain more often or raise history(...)", from - drained);
        }
        int width = built.width;
        double lossSum = 0;
        int lossCount = 0;
        for (long c = from; c < calls; c++) {
            int at = (int) (c % built.capacity) * width;
            double[] row = java.util.Arrays.copyOfRange(rows, at, at + width);
            if ((long) row[CALL] != c) {
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
            for (Monitor m : monitors) {
                m.accept(record(row, loss));
            }
        }
        drained = calls;
        return (int) (calls - from);
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

    /** Per tensor and per layer from the row's Σx² and max|x| (a non-finite tensor counts 1: the graph does not count). */
    private List<io.gradguard.core.monitor.TensorStats> tensorStats(double[] row) {
        int n = built.tensorNames.size();
        int at = FIXED + built.metricNames.size();
        List<io.gradguard.core.monitor.TensorStats> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            double ss = row[at + i];
            out.add(new io.gradguard.core.monitor.TensorStats(built.tensorNames.get(i), built.tensorLayers.get(i), Math.sqrt(ss),
                    row[at + n + i], Double.isFinite(ss) ? 0 : 1));
        }
        return out;
    }

    private static List<io.gradguard.core.monitor.LayerStats> layerStats(List<io.gradguard.core.monitor.TensorStats> tensors) {
        Map<String, Double> ss = new LinkedHashMap<>();
        for (var t : tensors) {
            ss.merge(t.layer(), t.norm() * t.norm(), Double::sum);
        }
        List<io.gradguard.core.monitor.LayerStats> out = new ArrayList<>();
        ss.forEach((layer, v) -> out.add(new io.gradguard.core.monitor.LayerStats(layer, Math.sqrt(v), Double.NaN)));
        return out;
    }

    private StepRecord record(double[] row, double loss) {
        boolean skipped = row[ACTION] == SKIP;
        int decider = (int) row[DECIDED_BY];
        String by = skipped && decider >= 0 ? built.stageNames.get(decider) : "";
        double coefficient = row[NORM_BEFORE] > 0 && Double.isFinite(row[NORM_BEFORE]) ? row[NORM_AFTER] / row[NORM_BEFORE] : 1.0;
        double threshold = Double.NaN;
        for (int i = 0; i < built.metricNames.size(); i++) {
            if (built.metricNames.get(i).endsWith(".threshold") && Double.isNaN(threshold)) {
                threshold = row[FIXED + i];
            }
        }
        return new StepRecord("", 0, (long) row[STEP], (long) row[CALL], skipped, skipped ? "skipped in the graph by " + by : "", by,
                (int) row[MICRO_BATCHES], loss, row[NORM_BEFORE], row[NORM_AFTER], coefficient, coefficient < 1, threshold,
                (long) row[NON_FINITE], true, layerStats(tensorStats(row)), tensorStats(row), List.of(), row[LOSS_SCALE]);
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

    /** A transform under the pipeline's name for it (so metric keys match the full pipeline's). */
    private record Named(GradientTransform inner, String name) implements GradientTransform {
        @Override
        public <T> io.gradguard.core.TransformState init(GradientSet<T> gradients, io.gradguard.core.spi.TensorOps<T> ops) {
            return inner.init(gradients, ops);
        }

        @Override
        public <T> io.gradguard.core.Action update(io.gradguard.core.Step<T> step, io.gradguard.core.TransformState state) {
            return inner.update(step, state);
        }

        @Override
        public boolean changesGradients() {
            return inner.changesGradients();
        }

        @Override
        public boolean mayHoldOrSkip() {
            return inner.mayHoldOrSkip();
        }
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static <T extends TType> Operand<T> castTo(Ops tf, Operand<?> x, Class<T> type) {
        return x.type() == type ? (Operand<T>) x : tf.dtypes.cast((Operand) x, (Class) type);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static <T extends TType> Output<T> identity(Ops tf, Operand<T> x) {
        return tf.identity(x).output();
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Output<?> identityOf(Ops tf, Output<?> x) {
        return tf.identity((Operand) x).output();
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static SwitchCond<?> switchOf(Ops tf, Output<?> x, Operand<TBool> pred) {
        return tf.switchCond((Operand) x, pred);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Operand<?> zeros(Ops tf, long[] shape, Class<?> type) {
        return tf.zeros(tf.constant(shape), (Class) type);
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
