package io.gradguard.tensorflow;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.ReduceMax;
import org.tensorflow.op.core.ReduceSum;
import org.tensorflow.op.core.SwitchCond;
import org.tensorflow.op.math.Mean;
import org.tensorflow.types.TBool;
import org.tensorflow.types.family.TNumber;

/**
 * The memo behind {@link TfOps}: every graph node a primitive builds is a pure function of its
 * {@link Kind}, its input nodes and one parameter, and is built once. A pipeline replayed over the
 * same input nodes (gradients or gradient buffers, state reads, fed scalars) therefore returns the
 * nodes of the first replay and the graph stops growing. The memo also knows each node's recipe, so
 * a chain built on some leaves can be rebuilt on others ({@link #rebase}) and the scalars a run
 * computes can be found without walking the graph ({@link #inputsOf}).
 */
final class GraphMemo {

    /** What a node computes; {@code param} is the kind's one parameter (documented per kind), or null. */
    enum Kind {
        /** param: the target dtype class. */
        CAST,
        SQUARE,
        /** Σx²/2 in one fused pass. */
        L2LOSS,
        ABS,
        /** param: an Integer rank (reduce every axis) or a List of axes (reduce those, keep dims). */
        SUM,
        /** param: the rank; reduces every axis. */
        REDUCE_MAX,
        /** param: a List of axes; keeps dims. */
        MEAN,
        NOT_FINITE,
        IS_NAN,
        EQUAL,
        NOT_EQUAL,
        /** inputs: condition, then, else. */
        SELECT,
        /** param: the List of the shape's dimensions; input: the fill value. */
        FILL,
        ADD,
        SUB,
        MUL,
        /** x·f gated by {@code f != 1} (Switch/Merge): at exactly 1 x passes through unchanged. */
        SCALE_UNLESS_ONE,
        DIV,
        MIN,
        MAX,
        SQRT,
        IDENTITY,
        /** Stacks its inputs into one vector. */
        STACK,
        /** param: the Double value; a float64 constant. */
        CONST
    }

    private record Node(Kind kind, List<Output<?>> inputs, Object param) {
    }

    private final Ops tf;
    private final Map<Output<?>, Class<?>> types = new HashMap<>();
    private final Map<Node, Output<?>> built = new HashMap<>();
    private final Map<Output<?>, Node> recipes = new HashMap<>();

    GraphMemo(Ops tf) {
        this.tf = tf;
    }

    /** The node of that kind on these inputs, built on first use. */
    Output<?> node(Kind kind, Object param, Output<?>... inputs) {
        Node key = new Node(kind, List.of(inputs), param);
        Output<?> out = built.get(key);
        if (out == null) {
            out = build(key);
            built.put(key, out);
            recipes.put(out, key);
        }
        return out;
    }

    /** Whether the memo built {@code out}. */
    boolean built(Output<?> out) {
        return recipes.containsKey(out);
    }

    /** The inputs of a node the memo built; empty for any other node. */
    List<Output<?>> inputsOf(Output<?> out) {
        Node n = recipes.get(out);
        return n == null ? List.of() : n.inputs();
    }

    /** The kind of a node the memo built; null for any other node. */
    Kind kindOf(Output<?> out) {
        Node n = recipes.get(out);
        return n == null ? null : n.kind();
    }

    /** Nodes built so far. */
    int size() {
        return built.size();
    }

    /**
     * Rebuilds {@code out} with some leaf nodes replaced (memoized, so a rebased chain is the chain
     * a replay on the new leaves builds). Nodes that depend on no replaced leaf come back unchanged.
     */
    Output<?> rebase(Output<?> out, Map<Output<?>, Output<?>> leaves, Map<Output<?>, Output<?>> done) {
        Output<?> mapped = leaves.get(out);
        if (mapped != null) {
            return mapped;
        }
        Node n = recipes.get(out);
        if (n == null) {
            return out;
        }
        Output<?> cached = done.get(out);
        if (cached != null) {
            return cached;
        }
        Output<?>[] inputs = new Output<?>[n.inputs().size()];
        boolean changed = false;
        for (int i = 0; i < inputs.length; i++) {
            inputs[i] = rebase(n.inputs().get(i), leaves, done);
            changed |= inputs[i] != n.inputs().get(i);
        }
        Output<?> result = changed ? node(n.kind(), n.param(), inputs) : out;
        done.put(out, result);
        return result;
    }

    /** {@code o} in dtype {@code type} (a memoized cast unless it already is). */
    Output<?> as(Output<?> o, Class<?> type) {
        return type(o) == type ? o : node(Kind.CAST, type, o);
    }

    /**
     * The dtype of {@code o}, remembered: {@link Output#type()} asks the native graph and allocates
     * a native handle on every call, and a step asks it for the same few outputs dozens of times.
     */
    Class<?> type(Output<?> o) {
        return types.computeIfAbsent(o, Output::type);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private Output<?> build(Node n) {
        List<Output<?>> in = n.inputs();
        Operand a = in.isEmpty() ? null : in.get(0);
        Operand b = in.size() < 2 ? null : in.get(1);
        return switch (n.kind()) {
            case CAST -> tf.dtypes.cast(a, (Class) n.param()).asOutput();
            case SQUARE -> tf.math.square(a).asOutput();
            case L2LOSS -> tf.nn.l2Loss(a).asOutput();
            case ABS -> tf.math.abs(a).asOutput();
            case SUM -> tf.reduceSum(a, axes(n.param()), ReduceSum.keepDims(n.param() instanceof List<?>)).asOutput();
            case REDUCE_MAX -> tf.reduceMax(a, axes(n.param()), ReduceMax.keepDims(false)).asOutput();
            case MEAN -> tf.math.mean(a, axes(n.param()), Mean.keepDims(true)).asOutput();
            case NOT_FINITE -> tf.math.logicalNot(tf.math.isFinite(a)).asOutput();
            case IS_NAN -> tf.math.isNan(a).asOutput();
            case EQUAL -> tf.math.equal(a, b).asOutput();
            case NOT_EQUAL -> tf.math.notEqual(a, b).asOutput();
            case SELECT -> tf.select((Operand<TBool>) a, b, (Operand) in.get(2)).asOutput();
            case FILL -> tf.fill(tf.constant(((List<Long>) n.param()).stream().mapToLong(Long::longValue).toArray()), a).asOutput();
            case ADD -> tf.math.add(a, b).asOutput();
            case SUB -> tf.math.sub(a, b).asOutput();
            case MUL -> tf.math.mul(a, b).asOutput();
            case SCALE_UNLESS_ONE -> {
                Output<?> one = as(node(Kind.CONST, 1.0), type(b.asOutput()));
                SwitchCond<?> gate = tf.switchCond(a, (Operand<TBool>) node(Kind.NOT_EQUAL, null, b.asOutput(), one));
                Operand scaled = tf.math.mul(gate.outputTrue(), b);
                yield tf.merge(List.of((Operand) gate.outputFalse(), scaled)).output().asOutput();
            }
            case DIV -> tf.math.div(a, b).asOutput();
            case MIN -> tf.math.minimum(a, b).asOutput();
            case MAX -> tf.math.maximum(a, b).asOutput();
            case SQRT -> tf.math.sqrt(a).asOutput();
            case IDENTITY -> tf.identity(a).asOutput();
            case STACK -> tf.stack((List) in).asOutput();
            case CONST -> tf.constant((Double) n.param()).asOutput();
        };
    }

    /** A List of axes, or an Integer rank meaning every axis. */
    private Operand<? extends TNumber> axes(Object param) {
        if (param instanceof List<?> l) {
            int[] ax = new int[l.size()];
            for (int i = 0; i < ax.length; i++) {
                ax[i] = (Integer) l.get(i);
            }
            return tf.constant(ax);
        }
        int[] all = new int[(Integer) param];
        for (int i = 0; i < all.length; i++) {
            all[i] = i;
        }
        return tf.constant(all);
    }
}
