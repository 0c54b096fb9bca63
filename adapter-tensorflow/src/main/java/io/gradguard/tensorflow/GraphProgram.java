package io.gradguard.tensorflow;

import io.gradguard.core.GradientSet;
import io.gradguard.core.NormType;
import io.gradguard.core.Norms;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.SwitchCond;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TBool;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.TInt64;
import org.tensorflow.types.family.TType;

/**
 * A guarded step under construction inside a TensorFlow graph ({@link TfOptimizer}): the current
 * gradient nodes, whether a call still reaches the next stage (the gate so far), the decision
 * (applied, held or skipped) and the deciding stage, the state writes, the metrics. Stages add to
 * it in pipeline order ({@link GraphStages}); every state write runs at the end of the run, after
 * every read ({@link #barrier}), so a stage reads the state of the previous call.
 */
final class GraphProgram {
    /** What a call did: the wrapped optimizer applied (0), held (1) or skipped (2). */
    static final double PROCEED = 0, HOLD = 1, SKIP = 2;

    final Ops tf;
    final TfOps ops;
    Output<?>[] g;
    /** Whether this call reaches the current stage (null: always). */
    Operand<TBool> go;
    /** The decision so far: PROCEED (0), HOLD (1) or SKIP (2), and the deciding stage's index. */
    Operand<TFloat64> action;
    Operand<TFloat64> decidedBy;
    Operand<TFloat64> microBatches;
    /** The first accumulate stage's count of micro-batches in the unfinished window (null: no such stage). */
    Variable<TInt64> window;
    /** The exact count of non-finite values (computed only when fetched). */
    Operand<TFloat64> nonFinite;
    /** 1 when a stage found non-finite values, else 0: what a monitor's row records without a non-finite guard's count. */
    Operand<TFloat64> nonFiniteSeen;
    /** The stages that decide a call's hold ({@link #HOLD}) or skip ({@link #SKIP}; a THROW guard too, which never skips), in pipeline order. */
    final Map<Double, List<Integer>> deciders = new java.util.HashMap<>();
    /** Whether a stage skipped / held this call (null: none can). */
    Operand<TBool> skips;
    Operand<TBool> holds;
    /** In-graph failures: every state write waits for them. */
    final List<Op> asserts = new ArrayList<>();
    /**
     * The asserts that can fail on a call that would apply: the update waits for them too. (One that
     * fails only on a call a stage skips needs not: that update is dead anyway.)
     */
    final List<Op> vetoes = new ArrayList<>();
    final List<Operand<?>> computed = new ArrayList<>();
    /** The non-finite test of the gradients {@link #nonFiniteOf} ({@link #nonFinite}), shared by the stages that read them. */
    private NonFinite nonFinitePivot;
    private Output<?>[] nonFiniteOf;
    /** Scalar factors' gated copies ({@link #gated}). */
    private final Map<Output<?>, Output<?>> gatedFactors = new java.util.HashMap<>();
    final List<Object[]> writes = new ArrayList<>();
    final Map<String, Operand<TFloat64>> metrics = new LinkedHashMap<>();
    /** The same metrics ungated, for a monitor's row (the host blanks what a skipped or held call did not reach). */
    final Map<String, Operand<TFloat64>> rawMetrics = new LinkedHashMap<>();

    GraphProgram(Ops tf, TfOps ops, Output<?>[] g) {
        this.tf = tf;
        this.ops = ops;
        this.g = g;
        this.action = tf.constant(PROCEED);
        this.decidedBy = tf.constant(-1.0);
        this.microBatches = tf.constant(1.0);
        this.nonFinite = tf.constant(0.0);
        this.nonFiniteSeen = tf.constant(0.0);
    }

    /**
     * Gradient {@code i} as the wrapped optimizer reads it, dead unless {@code when} holds (the true
     * side of a v1 {@code Switch}). A product by a scalar factor (a clip's {@code x · c}) is rebuilt
     * on the factor's gated copy, one {@code Switch} for every tensor that factor scales instead of
     * one each; the ungated product then has no reader and does not run, and its inputs take its
     * place among the values state writes wait for.
     *
     * @param tf the ops the gated node is built with (its control dependencies)
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    Output<?> gated(int i, Operand<TBool> when, Ops tf) {
        List<Output<?>> product = ops.scalarProduct(g[i]);
        if (product.isEmpty()) {
            return switchOf(tf, g[i], when).outputTrue();
        }
        Output<?> factor = gatedFactors.computeIfAbsent(product.get(1), f -> switchOf(this.tf, f, when).outputTrue());
        g[i] = product.get(0);
        computed.add(product.get(1));
        return tf.math.mul((Operand) product.get(0), (Operand) factor).asOutput();
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
        deciders.computeIfAbsent(kind, k -> new ArrayList<>()).add(stage);
        Operand<TBool> notHit = not(when);
        go = go == null ? notHit : and(go, notHit);
    }

    /** {@code when}, on a call that reaches the current stage. */
    Operand<TBool> reached(Operand<TBool> when) {
        return go == null ? when : and(go, when);
    }

    /** ¬x, without a node where x is itself a negation. */
    @SuppressWarnings("unchecked")
    Operand<TBool> not(Operand<TBool> x) {
        return x.op() instanceof org.tensorflow.GraphOperation o && o.type().equals("LogicalNot") ? (Operand<TBool>) o.input(0)
                : tf.math.logicalNot(x);
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

    /** A graph under construction: the gate so far, the state writes, the metrics. */

    /** Every value the run computes before any state variable is written. */
    static List<Op> barrier(GraphProgram p) {
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

    /** The global L2 norm of the current gradients, built as core builds it (so a later global stage shares the nodes). */
    @SuppressWarnings("unchecked")
    static Operand<TFloat64> norm(GraphProgram p, GradientSet<TfTensor> set) {
        for (int i = 0; i < set.size(); i++) {
            set.get(i).gradient().rebind(p.g[i]);
        }
        return (Operand<TFloat64>) Norms.globalNorm(p.ops, set, NormType.L2).value();
    }

    /** Multiplies every current gradient by the float64 scalar {@code coef}, as core's stages do ({@code scaleInPlace}). */
    static void scale(GraphProgram p, GradientSet<TfTensor> set, Operand<TFloat64> coef) {
        TfTensor c = new TfTensor(new long[0], coef.asOutput(), null, null);
        for (int i = 0; i < set.size(); i++) {
            TfTensor g = set.get(i).gradient();
            g.rebind(p.g[i]);
            p.ops.scaleInPlace(g, c);
            p.g[i] = g.value();
        }
    }

    /** threshold / n when the norm is finite and above a positive threshold, else 1 (core's clip coefficient). */
    static Operand<TFloat64> coefficient(Ops tf, Operand<TBool> finite, Operand<TFloat64> n, Operand<TFloat64> threshold) {
        Operand<TBool> acts = tf.math.logicalAnd(finite, tf.math.logicalAnd(tf.math.greater(threshold, tf.constant(0.0)),
                tf.math.greater(n, threshold)));
        return tf.select(acts, tf.math.div(threshold, n), tf.constant(1.0));
    }

    /**
     * Whether every current gradient is finite, read from Σ over tensors of Σx² (the nodes a global
     * L2 stage on the same gradients builds too, so the test costs one isFinite): NaN or ±Inf
     * anywhere makes the sum NaN or Inf. As in PyTorch's {@code clip_grad_norm_(error_if_nonfinite)},
     * a float32 gradient whose Σx² overflows (|x| beyond about 1.8e19) counts as non-finite too.
     */
    static Operand<TBool> allFinite(GraphProgram p) {
        @SuppressWarnings("unchecked")
        Operand<TFloat64> sum = (Operand<TFloat64>) p.ops.sumOfSquares(tensors(p.g)).value();
        return p.tf.math.isFinite(sum);
    }

    /** The outputs as the ops' tensors (the memo keys on the outputs, so each caller shares the nodes built on them). */
    static List<TfTensor> tensors(Output<?>[] g) {
        List<TfTensor> out = new ArrayList<>(g.length);
        for (Output<?> x : g) {
            out.add(new TfTensor(x.shape().asArray(), x, null, null));
        }
        return out;
    }

    /**
     * What a non-finite test branches on: one pivot ({@code Switch}) on whether every gradient is
     * finite, its two sides, and the number of non-finite values, counted only on a call that has
     * some (0 otherwise). Nodes built with {@link #whenNot} run only on such a call: they depend on
     * the pivot's false side, so on a finite call they are dead (a dead control input makes a node
     * dead) without a switch of their own.
     *
     * @param finite     whether every current gradient is finite ({@link #allFinite})
     * @param finiteSide live only on a finite call
     * @param whenNot    ops whose nodes run only on a call with non-finite values
     * @param badSide    live only on a call with non-finite values
     * @param count      the exact count of non-finite values, as float64; live on every call
     */
    record NonFinite(Operand<TBool> finite, Operand<TBool> finiteSide, Ops whenNot, Operand<TBool> badSide, Operand<TFloat64> count) {
        /**
         * {@code op}, built with {@link #whenNot}, joined back into every call: live on every call,
         * after {@code op} on a call with non-finite values. A write or update that waits for it
         * waits for {@code op} where it runs.
         */
        Op joined(Ops tf, Op op) {
            return tf.merge(List.of(tf.withControlDependencies(List.of(op)).identity(badSide), finiteSide));
        }
    }

    /**
     * The test, the pivot and the count of non-finite values ({@link NonFinite}) of the current
     * gradients, built once for them: stages that test the same gradients (a loss scale, then a
     * non-finite guard) share it. Gradients of one dtype are flattened into one vector in the
     * counting branch and counted once: a run schedules the branch's nodes on every call, dead or
     * not, so it is kept to a few.
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    static NonFinite nonFinite(GraphProgram p) {
        if (p.nonFinitePivot != null && java.util.Arrays.equals(p.nonFiniteOf, p.g)) {
            return p.nonFinitePivot;
        }
        Ops tf = p.tf;
        Operand<TBool> finite = allFinite(p);
        SwitchCond<TBool> sw = tf.switchCond(finite, finite);
        Operand<TBool> badSide = tf.identity(sw.outputFalse());
        Operand<TBool> finiteSide = tf.identity(sw.outputTrue());
        Ops whenNot = tf.withControlDependencies(List.of(badSide));
        boolean oneType = true;
        Object first = p.g.length == 0 ? null : p.g[0].type();
        for (Output<?> x : p.g) {
            oneType &= x.type() == first;
        }
        Operand<TFloat64> found = null;
        if (oneType && p.g.length > 1) {
            // flattened into one vector (vectors as they are); the concat's axis hangs on the pivot, so on a finite call
            // nothing of this runs, its constants included
            List<Operand<?>> flat = new ArrayList<>();
            long size = 0;
            Operand<TInt64> vector = null;
            for (Output<?> x : p.g) {
                if (x.shape().numDimensions() != 1) {
                    vector = vector == null ? whenNot.constant(new long[] {-1}) : vector;
                }
                flat.add(x.shape().numDimensions() == 1 ? x : whenNot.reshape((Operand) x, vector));
                size += TfOps.size(x.shape().asArray());
            }
            found = countNonFinite(p, tf.concat((List) flat, whenNot.constant(0)).asOutput(), new long[] {size});
        } else {
            for (Output<?> x : p.g) {
                Operand<TFloat64> n = countNonFinite(p, whenNot.identity((Operand) x).asOutput(), x.shape().asArray());
                found = found == null ? n : tf.math.add(found, n);
            }
        }
        if (found == null) {
            found = whenNot.constant(0.0);
        }
        Operand<TFloat64> none = tf.withControlDependencies(List.of(finiteSide)).constant(0.0);
        p.nonFiniteOf = p.g.clone();
        p.nonFinitePivot = new NonFinite(finite, finiteSide, whenNot, badSide, tf.merge(List.of(none, found)).output());
        return p.nonFinitePivot;
    }

    /** The backend's exact count of {@code x}'s non-finite values ({@link TfOps#countNonFinite}), as float64. */
    @SuppressWarnings("unchecked")
    private static Operand<TFloat64> countNonFinite(GraphProgram p, Output<?> x, long[] shape) {
        return (Operand<TFloat64>) p.ops.countNonFinite(new TfTensor(shape, x, null, null)).value();
    }

    static int[] allAxes(int rank) {
        int[] axes = new int[rank];
        for (int i = 0; i < rank; i++) {
            axes[i] = i;
        }
        return axes;
    }

    static Operand<TFloat64> globalNorm(GraphProgram p, Output<?>[] g) {
        @SuppressWarnings("unchecked")
        Operand<TFloat64> sum = (Operand<TFloat64>) p.ops.sumOfSquares(tensors(g)).value();
        return p.tf.math.sqrt(sum);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    static <T extends TType> Operand<T> castTo(Ops tf, Operand<?> x, Class<T> type) {
        return x.type() == type ? (Operand<T>) x : tf.dtypes.cast((Operand) x, (Class) type);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    static <T extends TType> Output<T> identity(Ops tf, Operand<T> x) {
        return tf.identity(x).output();
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    static Output<?> identityOf(Ops tf, Output<?> x) {
        return tf.identity((Operand) x).output();
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    static SwitchCond<?> switchOf(Ops tf, Output<?> x, Operand<TBool> pred) {
        return tf.switchCond((Operand) x, pred);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    static Operand<?> zeros(Ops tf, long[] shape, Class<?> type) {
        return tf.zeros(tf.constant(shape), (Class) type);
    }
}
