package io.gradguard.tensorflow;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.tensorflow.GraphOperation;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.Optimizer;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.types.family.TType;

/**
 * The optimizer's apply ops, one per branch of the pipeline, with ONE optimizer state across them.
 *
 * <p>A pipeline whose graph differs from step to step (a transform deciding on the host) ends in
 * other gradient nodes, so each branch needs its own {@code applyGradients} op. tensorflow-framework's
 * optimizers create new slot variables (Momentum's accumulators, Adam's moments and beta powers) on
 * every {@code applyGradients} call; left alone, the optimizer's state would restart on a new branch
 * and split between branches. So before an apply op runs, its slots receive the live state from the
 * slots of the apply op that ran last (one copy, only when the branch changes): the optimizer sees one
 * continuous state, as on DJL and DL4J.
 */
final class OptimizerBranches {
    private static final Logger LOG = LoggerFactory.getLogger(OptimizerBranches.class);
    private static final AtomicLong APPLY_IDS = new AtomicLong();

    private final Session session;
    private final Optimizer optimizer;
    private final List<Output<?>> variables;
    /** Called with the variables an apply op created (its slots), before it first runs. */
    private final Consumer<List<GraphOperation>> onSlotsCreated;
    private final Map<List<Output<?>>, Integer> branchOf = new HashMap<>();
    private final List<Op> applies = new ArrayList<>();
    /** Per branch: the variables the optimizer created for it. */
    private final List<List<GraphOperation>> slotSets = new ArrayList<>();
    private final Map<Long, Op> slotCopies = new HashMap<>();
    /** The branch whose slots hold the optimizer's live state; -1 before the first update. */
    private int live = -1;

    OptimizerBranches(Session session, Optimizer optimizer, List<Output<?>> variables, Consumer<List<GraphOperation>> onSlotsCreated) {
        this.session = session;
        this.optimizer = optimizer;
        this.variables = variables;
        this.onSlotsCreated = onSlotsCreated;
    }

    /** Whether an apply op exists (the optimizer's slots are in the graph). */
    boolean built() {
        return !applies.isEmpty();
    }

    /**
     * The apply op of the branch ending in {@code gradients} (built on first use), its slots made
     * to hold the live optimizer state.
     */
    Op applyFor(List<Output<?>> gradients) {
        Integer k = branchOf.get(gradients);
        if (k == null) {
            k = build(gradients);
            branchOf.put(List.copyOf(gradients), k);
        }
        if (live >= 0 && live != k) {
            copySlots(live, k);
        }
        live = k;
        return applies.get(k);
    }

    /** Copies the live optimizer state into every branch's slots, so that a checkpoint holds it under every name. */
    void shareLiveState() {
        for (int k = 0; k < slotSets.size(); k++) {
            if (live >= 0 && k != live) {
                copySlots(live, k);
            }
        }
    }

    private int build(List<Output<?>> gradients) {
        List<Output<?>> gated = gateAll(gradients);
        List<Optimizer.GradAndVar<? extends TType>> gv = new ArrayList<>();
        for (int i = 0; i < gated.size(); i++) {
            gv.add(gradAndVar(gated.get(i), variables.get(i)));
        }
        if (!applies.isEmpty()) {
            LOG.debug("GradGuard builds apply op #{} (the pipeline took a new branch)", applies.size() + 1);
        }
        Set<String> before = new HashSet<>();
        for (GraphOperation v : TfCheckpoint.graphVariables(session.graph())) {
            before.add(v.name());
        }
        Op op;
        try {
            op = optimizer.applyGradients(gv, "gradguard_apply_" + APPLY_IDS.incrementAndGet());
        } catch (IllegalArgumentException e) {
            throw slotNameError(e);
        }
        List<GraphOperation> slots = new ArrayList<>();
        for (GraphOperation v : TfCheckpoint.graphVariables(session.graph())) {
            if (!before.contains(v.name())) {
                slots.add(v);
            }
        }
        onSlotsCreated.accept(slots);
        requireSameSlots(slots);
        slotSets.add(slots);
        applies.add(op);
        return applies.size() - 1;
    }

    /**
     * The gradients, each passed on only once all of them are computed (Python TensorFlow 1's
     * {@code gate_gradients=GATE_GRAPH}; an Identity forwards its input, nothing is copied).
     * tensorflow-framework does not gate: the update of a later layer's weights could otherwise run
     * while the backward pass still reads those weights for an earlier layer's gradient.
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private List<Output<?>> gateAll(List<Output<?>> gradients) {
        Ops tf = Ops.create(session.graph()).withSubScope("gradguard_gate");
        List<Op> computed = new ArrayList<>();
        for (Output<?> g : gradients) {
            computed.add(tf.identity((Operand) g));
        }
        Ops after = tf.withControlDependencies(computed);
        List<Output<?>> out = new ArrayList<>();
        for (Output<?> g : gradients) {
            out.add(after.identity((Operand) g).asOutput());
        }
        return out;
    }

    /** Copies the optimizer state of branch {@code from} into branch {@code to} (one session run). */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private void copySlots(int from, int to) {
        if (slotSets.get(from).isEmpty()) {
            return; // a stateless optimizer (GradientDescent)
        }
        Op copy = slotCopies.computeIfAbsent(((long) from << 32) | to, key -> {
            Ops tf = Ops.create(session.graph()).withSubScope("gradguard_slots");
            List<Op> assigns = new ArrayList<>();
            List<GraphOperation> src = slotSets.get(from);
            List<GraphOperation> dst = slotSets.get(to);
            for (int i = 0; i < src.size(); i++) {
                assigns.add(tf.assign((Operand) dst.get(i).output(0), (Operand) src.get(i).output(0)));
            }
            return tf.withControlDependencies(assigns).noOp();
        });
        session.runner().addTarget(copy).run().close();
    }

    /** Every branch's slots match the first's, variable for variable (same optimizer, same variables). */
    private void requireSameSlots(List<GraphOperation> slots) {
        if (slotSets.isEmpty()) {
            return;
        }
        List<GraphOperation> first = slotSets.get(0);
        boolean same = first.size() == slots.size();
        for (int i = 0; same && i < slots.size(); i++) {
            Output<?> a = first.get(i).output(0);
            Output<?> b = slots.get(i).output(0);
            same = a.dataType() == b.dataType() && a.shape().equals(b.shape());
        }
        if (!same) {
            throw new IllegalStateException("optimizer " + optimizer.getClass().getSimpleName() + " created other state variables "
                    + "for a new branch of the pipeline (" + names(slots) + ") than for the first (" + names(first) + "), so its state "
                    + "cannot be carried over: use an optimizer that creates the same slots on every applyGradients call");
        }
    }

    private static List<String> names(List<GraphOperation> ops) {
        List<String> out = new ArrayList<>();
        for (GraphOperation o : ops) {
            out.add(o.name());
        }
        return out;
    }

    /**
     * tensorflow-framework's slot optimizers (Momentum, Adam...) name a slot variable
     * {@code <variable name>-<slot>}, which TensorFlow rejects when the variable name has a '/'.
     */
    private IllegalArgumentException slotNameError(IllegalArgumentException e) {
        List<String> scoped = new ArrayList<>();
        for (Output<?> v : variables) {
            if (v.op().name().contains("/")) {
                scoped.add(v.op().name());
            }
        }
        if (scoped.isEmpty()) {
            return e;
        }
        return new IllegalArgumentException("optimizer " + optimizer.getClass().getSimpleName() + " could not build its update: "
                + "it names its slot variables after the trainable variables, and TensorFlow rejects the '/' in " + scoped
                + "; give the trainable variables flat names (tf.withName(\"dense_kernel\").variable(...)). Cause: " + e.getMessage(), e);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Optimizer.GradAndVar<? extends TType> gradAndVar(Output<?> grad, Output<?> var) {
        return new Optimizer.GradAndVar(grad, var);
    }
}
