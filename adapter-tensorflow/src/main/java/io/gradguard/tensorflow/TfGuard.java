package io.gradguard.tensorflow;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.internal.AtomicFiles;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.tensorflow.Graph;
import org.tensorflow.GraphOperation;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.Optimizer;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.train.Restore;
import org.tensorflow.ndarray.NdArrays;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.TString;
import org.tensorflow.types.family.TType;

/**
 * A GradGuard-protected training step for a TensorFlow Java graph: gradients of the loss with
 * respect to explicitly named variables, the pipeline's transforms as graph operations, and the
 * framework optimizer's {@code applyGradients} only when the pipeline says the step applies.
 *
 * <pre>{@code
 * GradientPipeline pipeline = GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
 * try (TfGuard guard = TfGuard.create(session, loss, List.of(w1, b1, w2, b2),
 *         new GradientDescent(graph, 0.05f), pipeline)) {
 *     for (Batch b : batches) {
 *         StepResult<TfTensor> r = guard.step(Map.of(x, b.features(), y, b.labels()), StepContext.ofBatch(64));
 *         if (r.skipped()) log.warn("skipped: {}", r.action().reason());
 *     }
 * }
 * }</pre>
 *
 * <p>How a step runs (see the package documentation for the design): the pipeline is replayed on
 * the host over graph nodes (memoized, so the graph stops growing after the first steps). If no
 * transform or listener reads a host value, the whole step is one session run (forward, backward,
 * transforms, apply). On the first host read, the guard switches to gradient buffers: one run
 * computes the gradients into resource variables and fetches the loss, host reads evaluate only
 * the small graphs they need, and a last run transforms and applies. On HOLD and SKIP the apply
 * op is not run: the variables and the optimizer's slots do not move.
 *
 * <p>Not thread-safe. Close it to free the fed scalars; the graph and session stay the caller's.
 */
public final class TfGuard implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(TfGuard.class);
    private static final java.util.concurrent.atomic.AtomicLong APPLY_IDS = new java.util.concurrent.atomic.AtomicLong();

    private final Session session;
    private final TfOps ops;
    private final GradientPipeline pipeline;
    private final Optimizer optimizer;
    private final Output<?> loss;
    private final List<Output<?>> variables;
    private final Output<?>[] rawGradients;
    private final GradientSet<TfTensor> gradients;
    private final Map<List<Output<?>>, Op> applies = new HashMap<>();
    /** Per apply op, in creation order: the variables the optimizer created for it (slots, Adam's beta powers). */
    private final List<List<GraphOperation>> slotSets = new ArrayList<>();
    private final Map<Op, Integer> slotSetOf = new HashMap<>();
    private final Map<Long, Op> slotCopies = new HashMap<>();
    /** The slot set holding the optimizer's live state; -1 before the first update. */
    private int liveSlots = -1;

    private Saver saver;
    /** A checkpoint restored before the apply op existed: the variables the apply op creates are restored from it. */
    private String pendingRestore;
    /** The variables the pending checkpoint holds that this graph does not have yet (slots of a later apply op). */
    private Set<String> pendingVariables = Set.of();

    private TfTensor[] gradientBuffers;
    private List<Op> fillBuffers;
    private boolean buffered;
    private boolean inPipeline;
    private boolean warnedRecompute;
    private double lastLoss = Double.NaN;
    private long recomputedRuns;

    private TfGuard(Session session, Output<?> loss, List<Output<?>> variables, Output<?>[] rawGradients,
            List<Output<?>> values, Optimizer optimizer, GradientPipeline pipeline) {
        this.session = session;
        this.ops = new TfOps(session);
        this.pipeline = pipeline;
        this.optimizer = optimizer;
        this.loss = loss;
        this.variables = variables;
        this.rawGradients = rawGradients;
        List<GradientTensor<TfTensor>> ts = new ArrayList<>();
        for (int i = 0; i < variables.size(); i++) {
            Output<?> v = variables.get(i);
            String name = v.op().name();
            long[] shape = values.get(i).shape().asArray();
            int slash = name.lastIndexOf('/');
            String layer = slash > 0 ? name.substring(0, slash) : name;
            Role role = shape.length >= 2 ? Role.WEIGHT : shape.length == 1 ? Role.BIAS : Role.OTHER;
            ts.add(new GradientTensor<>(name, shape, role, layer, Layout.outputLast(),
                    new TfTensor(shape, rawGradients[i], null, null), new TfTensor(shape, values.get(i), null, null)));
        }
        this.gradients = GradientSet.of(ts);
    }

    /**
     * Builds the gradients of {@code loss} with respect to {@code variables} (only those: not every
     * variable of the graph) and returns a guarded training step.
     *
     * @param session   the session that trains (its graph holds the model)
     * @param loss      a scalar float loss
     * @param variables the trainable variables ({@code tf.variable(...)}), float32 or float64
     * @param optimizer a tensorflow-framework optimizer built on the same graph
     * @param pipeline  the GradGuard pipeline (one per model)
     * @throws IllegalArgumentException if an argument is null, there is no variable, a variable is
     *     not a variable or not float, appears twice, or does not influence the loss, or the loss is
     *     not a float scalar; the message names the variable
     */
    public static TfGuard create(Session session, Operand<?> loss, List<? extends Operand<?>> variables,
            Optimizer optimizer, GradientPipeline pipeline) {
        require(session != null, "session must not be null");
        require(loss != null, "loss must not be null");
        require(variables != null, "variables must not be null");
        require(optimizer != null, "optimizer must not be null");
        require(pipeline != null, "pipeline must not be null");
        require(!variables.isEmpty(), "variables must name at least one trainable variable, got []");
        Graph graph = session.graph();
        Output<?> lossOut = loss.asOutput();
        require(lossOut.env() == graph, "loss must belong to the session's graph, got " + lossOut.name());
        require(isFloat(lossOut.type()), "loss must be a float32 or float64 scalar, got " + lossOut.dataType() + " (" + lossOut.name() + ")");
        require(lossOut.shape().numDimensions() <= 0, "loss must be a scalar, got shape " + lossOut.shape() + " (" + lossOut.name() + "): reduce it (tf.math.mean)");

        Set<GraphOperation> reaching = graph.subgraphTo(Set.of(lossOut));
        Ops tf = Ops.create(graph).withSubScope("gradguard");
        List<Output<?>> vars = new ArrayList<>();
        List<Output<?>> values = new ArrayList<>();
        Set<String> seen = new HashSet<>();
        for (int i = 0; i < variables.size(); i++) {
            Operand<?> v = variables.get(i);
            require(v != null, "variables[" + i + "] must not be null");
            Output<?> out = v.asOutput();
            String name = out.op().name();
            String type = out.op().type();
            require(type.equals("VariableV2") || type.equals("Variable"),
                    "variables[" + i + "] must be a trainable variable (tf.variable), got " + name + " of op type " + type);
            require(seen.add(name), "variables must be distinct, got " + name + " twice");
            require(reaching.contains((GraphOperation) out.op()),
                    "variable " + name + " does not influence the loss " + lossOut.op().name()
                            + ": pass only the variables the loss depends on");
            @SuppressWarnings({"unchecked", "rawtypes"})
            Output<?> value = tf.withName(name.replace('/', '_') + "_value").identity((Operand) out).asOutput();
            require(isFloat(value.type()), "variable " + name + " has dtype " + value.dataType()
                    + ": only float32 and float64 variables have gradients to guard");
            vars.add(out);
            values.add(value);
        }
        Output<?>[] grads;
        try {
            grads = graph.addGradients(lossOut, vars.toArray(new Output<?>[0]));
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("TensorFlow could not build the gradients of " + lossOut.op().name()
                    + " with respect to " + names(vars) + ": " + e.getMessage(), e);
        }
        for (int i = 0; i < grads.length; i++) {
            require(grads[i] != null, "variable " + vars.get(i).op().name() + " has no gradient from the loss " + lossOut.op().name());
            require(isFloat(grads[i].type()), "the gradient of variable " + vars.get(i).op().name() + " has dtype "
                    + grads[i].dataType() + ": GradGuard needs float32 or float64 gradients");
        }
        return new TfGuard(session, lossOut, List.copyOf(vars), grads, List.copyOf(values), optimizer, pipeline);
    }

    /**
     * One training step: forward and backward on {@code feeds}, the pipeline, and the optimizer's
     * update when the pipeline {@link StepResult#applies() applies}.
     *
     * @param feeds   the step's inputs (placeholder → tensor); the caller owns and closes the tensors
     * @param context the batch facts; its loss is filled in when the guard knows it before the
     *     pipeline runs (gradient-buffer mode)
     * @return the pipeline's result. Read its metrics inside a {@link io.gradguard.core.StepListener}
     *     (any metric; the guard then keeps gradients in buffers, see the class comment) or right
     *     after this call, before the next step: the scalars the update computed (the clip norm and
     *     coefficient...) came back with the step's last run at no extra cost, and other metrics
     *     throw an {@code IllegalStateException}
     * @throws IllegalArgumentException if feeds or context is null; on the first step, if a slot
     *     optimizer (Momentum, Adam...) cannot name its slots after a variable whose name has a '/'
     *     (the message lists them)
     */
    public StepResult<TfTensor> step(Map<? extends Operand<?>, ? extends Tensor> feeds, StepContext context) {
        require(feeds != null, "feeds must not be null");
        require(context != null, "context must not be null");
        ops.beginStep(feeds, this::beforeHostRead);
        try {
            StepContext ctx = context;
            if (buffered) {
                lastLoss = fillGradientBuffers();
                if (!ctx.hasLoss()) {
                    ctx = ctx.withLoss(lastLoss);
                }
            }
            for (int i = 0; i < gradients.size(); i++) {
                gradients.get(i).gradient().rebind(buffered ? gradientBuffers[i].read : rawGradients[i]);
            }
            StepResult<TfTensor> result;
            inPipeline = true;
            try {
                result = pipeline.step(gradients, ops, ctx);
            } finally {
                inPipeline = false;
            }
            List<Output<?>> roots = new ArrayList<>();
            List<Op> targets = new ArrayList<>(ops.commit(roots));
            if (result.applies()) {
                Op apply = applyOp();
                useSlotsOf(apply);
                targets.add(apply);
                for (GradientTensor<TfTensor> g : gradients) {
                    roots.add(g.gradient().value());
                }
            }
            // the scalars this run computes anyway (clip norm, coefficient) come back with it: metrics stay readable after the step
            List<Output<?>> scalars = ops.scalarsComputedBy(roots);
            Output<?> packed = scalars.isEmpty() ? null : ops.packed(scalars);
            if (!buffered || !targets.isEmpty()) {
                try (Result r = ops.run(runner -> {
                    targets.forEach(runner::addTarget);
                    if (!buffered) {
                        runner.fetch(loss);
                    }
                    if (packed != null) {
                        runner.fetch(packed);
                    }
                })) {
                    if (!buffered) {
                        lastLoss = TfOps.hostScalar(r.get(0));
                    }
                    if (packed != null) {
                        ops.keepScalars(scalars, r.get(buffered ? 0 : 1));
                    }
                }
            }
            return result;
        } finally {
            ops.endStep();
        }
    }

    /**
     * Makes the pipeline's reductions accumulate in float64 ({@link TfOps#accumulateInDouble()}):
     * norms of float32 gradients near 1e30 or 1e-30 stay finite and non-zero, at the cost of a
     * float64 copy of every gradient per reduction. The default reduces in the gradients' dtype, as
     * {@code tf.clip_by_global_norm} does.
     *
     * <pre>{@code
     * TfGuard guard = TfGuard.create(session, loss, variables, optimizer, pipeline).accumulateInDouble();
     * }</pre>
     *
     * @return this
     * @throws IllegalStateException after the first step (the precision is part of the built graph)
     */
    public TfGuard accumulateInDouble() {
        if (pipeline.stepCount() > 0 || !applies.isEmpty() || buffered) {
            throw new IllegalStateException("accumulateInDouble() must be called before the first step; this guard already ran "
                    + pipeline.stepCount() + " step(s): create a new TfGuard on a fresh graph to change the precision");
        }
        ops.accumulateInDouble();
        return this;
    }

    /** {@link #step(Map, StepContext)} with a batch of {@code batchSize} examples. */
    public StepResult<TfTensor> step(Map<? extends Operand<?>, ? extends Tensor> feeds, long batchSize) {
        return step(feeds, StepContext.ofBatch(batchSize));
    }

    private Op applyOp() {
        List<Output<?>> finals = new ArrayList<>();
        for (GradientTensor<TfTensor> g : gradients) {
            finals.add(g.gradient().value());
        }
        return applies.computeIfAbsent(finals, k -> {
            List<Output<?>> gated = gateAll(k);
            List<Optimizer.GradAndVar<? extends TType>> gv = new ArrayList<>();
            for (int i = 0; i < k.size(); i++) {
                gv.add(gradAndVar(gated.get(i), variables.get(i)));
            }
            if (!applies.isEmpty()) {
                LOG.debug("GradGuard builds apply op #{} (the pipeline took a new branch)", applies.size() + 1);
            }
            Set<String> before = new HashSet<>();
            for (GraphOperation v : graphVariables()) {
                before.add(v.name());
            }
            Op op;
            try {
                op = optimizer.applyGradients(gv, "gradguard_apply_" + APPLY_IDS.incrementAndGet());
            } catch (IllegalArgumentException e) {
                throw slotNameError(e);
            }
            List<GraphOperation> slots = new ArrayList<>();
            for (GraphOperation v : graphVariables()) {
                if (!before.contains(v.name())) {
                    slots.add(v);
                }
            }
            if (pendingRestore != null) {
                // the optimizer's slots (and Adam's beta powers) appeared just now: restore those the
                // checkpoint holds (one saved before the first update holds none: they keep their
                // initial values, the state of an optimizer that never updated)
                List<GraphOperation> created = new ArrayList<>();
                for (GraphOperation v : graphVariables()) {
                    if (pendingVariables.contains(v.name())) {
                        created.add(v);
                    }
                }
                String prefix = pendingRestore;
                pendingRestore = null;
                pendingVariables = Set.of();
                restoreVariables(prefix, created);
            }
            requireSameSlots(slots);
            slotSetOf.put(op, slotSets.size());
            slotSets.add(slots);
            return op;
        });
    }

    /**
     * The gradients, each passed on only once all of them are computed (Python TensorFlow 1's
     * {@code gate_gradients=GATE_GRAPH}; an Identity forwards its input, nothing is copied).
     * tensorflow-framework does not gate: the update of a later layer's weights could otherwise run
     * while the backward pass still reads those weights for an earlier layer's gradient, and with
     * ref variables the write races with the read. Python TensorFlow's default (GATE_OP) prevents
     * the same race.
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private List<Output<?>> gateAll(List<Output<?>> finals) {
        Ops tf = Ops.create(session.graph()).withSubScope("gradguard_gate");
        List<Op> computed = new ArrayList<>();
        for (Output<?> f : finals) {
            computed.add(tf.identity((Operand) f));
        }
        Ops after = tf.withControlDependencies(computed);
        List<Output<?>> out = new ArrayList<>();
        for (Output<?> f : finals) {
            out.add(after.identity((Operand) f).asOutput());
        }
        return out;
    }

    /**
     * tensorflow-framework's optimizers create new slot variables (Momentum's accumulators, Adam's
     * moments and beta powers) on every {@code applyGradients} call. A pipeline whose ops differ
     * from step to step (a transform deciding on the host, a batch of another size) gets one apply
     * op per branch, each with its own slots; left alone, the optimizer's state would restart on
     * a new branch and split between branches. So before an apply op runs, its slots receive the
     * live state from the slots of the apply op that ran last (one copy of the optimizer state,
     * only when the branch changes): the optimizer sees one continuous state, as on DJL and DL4J.
     */
    private void useSlotsOf(Op apply) {
        int k = slotSetOf.get(apply);
        if (liveSlots >= 0 && liveSlots != k) {
            copySlots(liveSlots, k);
        }
        liveSlots = k;
    }

    /** Copies the optimizer state of slot set {@code from} into slot set {@code to} (one session run). */
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
                assigns.add(assign(tf, dst.get(i).output(0), src.get(i).output(0)));
            }
            return tf.withControlDependencies(assigns).noOp();
        });
        session.runner().addTarget(copy).run().close();
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Op assign(Ops tf, Output<?> ref, Output<?> value) {
        return tf.assign((Operand) ref, (Operand) value);
    }

    /** Every apply op's slots match the first's, variable for variable (same optimizer, same variables). */
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
                    + "for a new branch of the pipeline (" + opNames(slots) + ") than for the first (" + opNames(first) + "), so its state "
                    + "cannot be carried over: use an optimizer that creates the same slots on every applyGradients call");
        }
    }

    private static List<String> opNames(List<GraphOperation> ops) {
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

    /** The run hook: the first host read of a step decides how gradients persist between runs. */
    private void beforeHostRead() {
        if (!inPipeline || buffered) {
            return;
        }
        if (applies.isEmpty()) {
            switchToBuffers();
        } else {
            recomputedRuns++;
            if (!warnedRecompute) {
                warnedRecompute = true;
                LOG.warn("GradGuard: the pipeline read a host value for the first time after the apply op was built "
                        + "(step {}); each such read recomputes the forward and backward pass. Read metrics from the "
                        + "first step on (then the guard keeps gradients in buffers), or less often.", pipeline.stepCount());
            }
        }
    }

    /** Moves this step onto gradient buffers: one run fills them, and every node built so far is rebased onto them. */
    private void switchToBuffers() {
        LOG.debug("GradGuard: the pipeline reads host values; gradients now persist in buffer variables between runs");
        buffered = true;
        boolean was = inPipeline;
        inPipeline = false;
        try {
            lastLoss = fillGradientBuffers();
        } finally {
            inPipeline = was;
        }
        Map<Output<?>, Output<?>> leaves = new HashMap<>();
        for (int i = 0; i < rawGradients.length; i++) {
            leaves.put(rawGradients[i], gradientBuffers[i].read);
        }
        Map<Output<?>, Output<?>> done = new HashMap<>();
        List<TfTensor> handles = ops.liveHandles();
        for (GradientTensor<TfTensor> g : gradients) {
            handles.add(g.gradient());
        }
        for (TfTensor h : handles) {
            h.rebind(ops.rebase(h.value(), leaves, done));
        }
    }

    /** Runs forward and backward into the gradient buffers (created on first use); returns the loss. */
    private double fillGradientBuffers() {
        if (gradientBuffers == null) {
            gradientBuffers = new TfTensor[rawGradients.length];
            fillBuffers = new ArrayList<>();
            Ops tf = Ops.create(session.graph()).withSubScope("gradguard");
            for (int i = 0; i < rawGradients.length; i++) {
                GradientTensor<TfTensor> g = gradients.get(i);
                gradientBuffers[i] = ops.newBuffer(rawGradients[i].type(), g.shape(), null, false);
                fillBuffers.add(tf.assignVariableOp(gradientBuffers[i].variable, rawGradients[i]));
            }
        }
        try (Result r = ops.run(runner -> {
            fillBuffers.forEach(runner::addTarget);
            runner.fetch(loss);
        })) {
            return TfOps.hostScalar(r.get(0));
        }
    }

    /** The GradGuard backend this guard builds with (for listeners that read tensors). */
    public TfOps ops() {
        return ops;
    }

    /** The gradient set the pipeline sees (one entry per variable, in the given order). */
    public GradientSet<TfTensor> gradients() {
        return gradients;
    }

    /** The pipeline. */
    public GradientPipeline pipeline() {
        return pipeline;
    }

    /**
     * Writes ONE TensorFlow checkpoint (the V2 format {@code session.save} writes: {@code prefix.index}
     * and {@code prefix.data-*}) that holds every {@code VariableV2} of the graph (the model and the
     * optimizer's slots, under their op names, as {@code session.save} stores them) and GradGuard's
     * whole state (counters, accumulators, histories, monitor state: the bytes of
     * {@link GradientPipeline#saveState}) under the key {@value #STATE_KEY}. Call it between steps;
     * resume with {@link #restore}. TensorFlow's {@code session.restore(prefix)} reads the same file
     * and restores the model alone.
     *
     * <pre>{@code
     * guard.save("/ckpt/model-1000");
     * // later, in a new process: the same graph, a new guard with the same pipeline
     * TfGuard guard = TfGuard.create(session, loss, variables, new Momentum(graph, 0.05f, 0.9f), pipeline);
     * guard.restore("/ckpt/model-1000");   // before the first step
     * }</pre>
     *
     * <p>Why not {@code session.save} alone: tensorflow-core-api 1.1 builds the graph's saver once,
     * at the first {@code save} or {@code restore}, over the {@code VariableV2} ops that exist then,
     * and GradGuard's state partly lives on the host (step and micro-step counters, skip counts,
     * histories). A fresh graph restored with {@code session.restore} before the guard's first step
     * also lacks the variables the guard builds lazily (the optimizer's slots appear with the apply
     * op, on the first applying step), so they could not be restored; {@link #restore} restores them
     * when they appear.
     *
     * <p>Saving over an existing checkpoint is crash-safe file by file: TensorFlow writes the new
     * files under a temporary prefix in the same directory, they are forced to disk and then each is
     * renamed atomically over its old file, the {@code .index} last. A process killed before the
     * renames keeps the previous checkpoint. The two files cannot be swapped as one: a crash between
     * the renames (microseconds) leaves the new data with the old index, which TensorFlow refuses on
     * restore (checksum). Save to a new prefix per checkpoint (e.g. {@code model-<step>}) and keep the
     * previous one until the new save returns, to be safe against that too.
     *
     * @param prefix the checkpoint path prefix, as for {@code session.save}
     * @throws IllegalArgumentException if prefix is null or empty
     * @throws IllegalStateException if called during a step (from a listener)
     * @throws java.io.IOException if the state cannot be serialized
     */
    public void save(String prefix) throws java.io.IOException {
        require(prefix != null && !prefix.isEmpty(), "prefix must be a checkpoint path prefix, got " + (prefix == null ? "null" : "\"\""));
        requireBetweenSteps("save");
        if (pendingRestore != null && !pendingVariables.isEmpty()) {
            throw new IllegalStateException("save() after restore(" + pendingRestore + ") and before the first applying step would lose "
                    + "the optimizer state that checkpoint holds for variables the guard creates with its first update " + pendingVariables
                    + ": take a step that applies an update first, or keep the restored checkpoint");
        }
        // every branch's slots get the live optimizer state, so a restore that rebuilds the branches
        // in another order still finds it under whichever names come first
        for (int k = 0; k < slotSets.size(); k++) {
            if (liveSlots >= 0 && k != liveSlots) {
                copySlots(liveSlots, k);
            }
        }
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        pipeline.saveState(bytes);
        List<GraphOperation> vars = graphVariables();
        List<String> names = new ArrayList<>();
        for (GraphOperation v : vars) {
            names.add(v.name());
        }
        if (saver == null || !saver.names().equals(names)) {
            saver = buildSaver(names, vars);
        }
        // TensorFlow writes the checkpoint under a temporary prefix beside the target; its files are
        // then forced to disk and renamed over the old ones, the index last
        Path target = Path.of(prefix).toAbsolutePath();
        Files.createDirectories(target.getParent());
        Path marker = AtomicFiles.temporaryFor(target);
        String tmp = marker.toString();
        List<Path> written = new ArrayList<>();
        try {
            try (TString file = TString.scalarOf(tmp);
                    TString state = TString.tensorOfBytes(NdArrays.scalarOfObject(bytes.toByteArray()))) {
                session.runner().addTarget(saver.op()).feed(saver.file(), file).feed(saver.state(), state).run().close();
            }
            try (Stream<Path> files = Files.list(target.getParent())) {
                files.filter(f -> f.getFileName().toString().startsWith(marker.getFileName() + "."))
                        .sorted(Comparator.comparing(f -> f.toString().endsWith(".index")))
                        .forEach(written::add);
            }
            for (Path f : written) {
                AtomicFiles.force(f);
            }
            for (Path f : written) {
                AtomicFiles.replace(f, Path.of(prefix + f.toString().substring(tmp.length())).toAbsolutePath());
            }
        } finally {
            for (Path f : written) {
                Files.deleteIfExists(f);
            }
            Files.deleteIfExists(marker);
        }
    }

    /** The key of GradGuard's state in a checkpoint written by {@link #save}. */
    public static final String STATE_KEY = "gradguard/pipeline_state";

    /** The key of the names of the variables a checkpoint written by {@link #save} holds, one per line. */
    public static final String VARIABLES_KEY = "gradguard/variables";

    private record Saver(List<String> names, Op op, Output<TString> file, Output<TString> state) {
    }

    private Saver buildSaver(List<String> names, List<GraphOperation> vars) {
        Ops tf = Ops.create(session.graph()).withSubScope("gradguard_save");
        Placeholder<TString> file = tf.placeholder(TString.class);
        Placeholder<TString> state = tf.placeholder(TString.class, Placeholder.shape(Shape.scalar()));
        List<String> keys = new ArrayList<>(names);
        keys.add(STATE_KEY);
        keys.add(VARIABLES_KEY);
        List<Operand<?>> tensors = new ArrayList<>();
        for (GraphOperation v : vars) {
            tensors.add(v.output(0));
        }
        tensors.add(state);
        tensors.add(tf.constant(String.join("\n", names)));
        Operand<TString> k = strings(tf, keys.toArray(new String[0]));
        Op save = tf.train.save(file, k, tf.zerosLike(k), tensors);
        return new Saver(List.copyOf(names), save, file.output(), state.output());
    }

    /**
     * Restores a checkpoint written by {@link #save}: GradGuard's state onto this guard's pipeline
     * (checked first: nothing changes if it does not fit), then every {@code VariableV2} of the
     * graph. Call it on a graph built as the saved one was, with a guard created with the same
     * pipeline, before the first step (or between steps). Variables the guard creates later (the
     * optimizer's slots, built with the apply op on the first applying step) are restored from the
     * same checkpoint when they appear, so Momentum and Adam resume exactly; the run continues
     * bit-identically, also in the middle of an accumulation window.
     *
     * @param prefix the prefix given to {@link #save}
     * @throws IllegalArgumentException if prefix is null or empty, or names no checkpoint with
     *     GradGuard's state (one written by {@code session.save}: restore it with
     *     {@code session.restore}), or the checkpoint lacks a variable of this graph
     * @throws io.gradguard.core.StateFormatException if the state was saved from another pipeline
     *     (the message lists both pipelines' stages), or is corrupt; nothing is restored then
     * @throws IllegalStateException if called during a step (from a listener)
     * @throws java.io.IOException if the state cannot be read
     */
    public void restore(String prefix) throws java.io.IOException {
        require(prefix != null && !prefix.isEmpty(), "prefix must be a checkpoint path prefix, got " + (prefix == null ? "null" : "\"\""));
        requireBetweenSteps("restore");
        byte[] state;
        Set<String> saved;
        Ops tf = Ops.create(session.graph()).withSubScope("gradguard_restore");
        Placeholder<TString> file = tf.placeholder(TString.class);
        Operand<TString> key = strings(tf, STATE_KEY, VARIABLES_KEY);
        Restore read = tf.train.restore(file, key, tf.zerosLike(key), List.of(TString.class, TString.class));
        try (TString f = TString.scalarOf(prefix);
                Result r = session.runner().feed(file, f).fetch(read.tensors().get(0)).fetch(read.tensors().get(1)).run()) {
            state = ((TString) r.get(0)).asBytes().getObject();
            saved = new HashSet<>(List.of(((TString) r.get(1)).getObject().split("\n")));
        } catch (org.tensorflow.exceptions.TensorFlowException e) {
            throw new IllegalArgumentException("prefix " + prefix + " names no checkpoint with GradGuard's state (key " + STATE_KEY
                    + "): restore a checkpoint written by TfGuard.save; one written by session.save holds the model alone "
                    + "(restore it with session.restore). TensorFlow says: " + e.getMessage(), e);
        }
        List<GraphOperation> vars = graphVariables();
        List<String> missing = new ArrayList<>();
        for (GraphOperation v : vars) {
            if (!saved.contains(v.name())) {
                missing.add(v.name());
            }
        }
        if (!missing.isEmpty()) {
            // checked before anything changes
            throw new IllegalArgumentException("the checkpoint " + prefix + " lacks variables of this graph " + missing
                    + " (it holds " + new java.util.TreeSet<>(saved) + "): build the graph as the saved one was"
                    + (applies.isEmpty() ? "" : ", and restore before the first step"));
        }
        pipeline.restoreState(new java.io.ByteArrayInputStream(state), ops);
        restoreVariables(prefix, vars);
        if (applies.isEmpty()) {
            pendingRestore = prefix;
            pendingVariables = new HashSet<>(saved);
            for (GraphOperation v : vars) {
                pendingVariables.remove(v.name());
            }
        }
    }

    /** Restores these variables from the checkpoint (running the graph's pending initializers first, so they do not run later). */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private void restoreVariables(String prefix, List<GraphOperation> vars) {
        if (vars.isEmpty()) {
            return;
        }
        session.initialize();
        Ops tf = Ops.create(session.graph()).withSubScope("gradguard_restore");
        Placeholder<TString> file = tf.placeholder(TString.class);
        String[] names = new String[vars.size()];
        List<Class<? extends TType>> types = new ArrayList<>();
        for (int i = 0; i < names.length; i++) {
            names[i] = vars.get(i).name();
            types.add((Class<? extends TType>) vars.get(i).output(0).type());
        }
        Operand<TString> keys = strings(tf, names);
        Restore read = tf.train.restore(file, keys, tf.zerosLike(keys), types);
        List<Op> assigns = new ArrayList<>();
        for (int i = 0; i < names.length; i++) {
            assigns.add(tf.assign((Operand) vars.get(i).output(0), (Operand) read.tensors().get(i)));
        }
        try (TString f = TString.scalarOf(prefix)) {
            Session.Runner runner = session.runner().feed(file, f);
            assigns.forEach(runner::addTarget);
            runner.run().close();
        } catch (org.tensorflow.exceptions.TensorFlowException e) {
            throw new IllegalArgumentException("the checkpoint " + prefix + " does not fit this graph (variables " + List.of(names)
                    + "): build the graph as the saved one was. TensorFlow says: " + e.getMessage(), e);
        }
    }

    private static Operand<TString> strings(Ops tf, String... values) {
        return tf.constant(org.tensorflow.ndarray.StdArrays.ndCopyOf(values));
    }

    /** The graph's {@code VariableV2} ops, as {@code session.save} collects them. */
    private List<GraphOperation> graphVariables() {
        List<GraphOperation> vars = new ArrayList<>();
        for (var it = session.graph().operations(); it.hasNext(); ) {
            GraphOperation op = it.next();
            if (op.type().equals("VariableV2")) {
                vars.add(op);
            }
        }
        return vars;
    }

    private void requireBetweenSteps(String what) {
        if (inPipeline) {
            throw new IllegalStateException(what + "() was called during a step (from a listener): call it between steps");
        }
    }

    /**
     * Writes the pipeline's state (counters, accumulators, histories) as
     * {@link GradientPipeline#saveState} does, for a checkpoint of your own next to the model's
     * ({@link #save} writes both into one TensorFlow checkpoint).
     *
     * @throws java.io.IOException if the stream fails
     */
    public void saveState(java.io.OutputStream out) throws java.io.IOException {
        pipeline().saveState(out);
    }

    /**
     * Restores a state written by {@link #saveState} onto this guard's backend, before the next step
     * (mid-window checkpoints resume bit-identically).
     *
     * @throws io.gradguard.core.StateFormatException if the state is truncated, corrupt, of another version
     *     or from another pipeline; the pipeline is then left untouched
     * @throws java.io.IOException if the stream fails
     */
    public void restoreState(java.io.InputStream in) throws java.io.IOException {
        pipeline().restoreState(in, ops());
    }

    /** The loss of the last step (NaN before the first). */
    public double lastLoss() {
        return lastLoss;
    }

    /** Whether gradients persist in buffer variables between session runs (see the class comment). */
    public boolean usesGradientBuffers() {
        return buffered;
    }

    /** Host reads that had to recompute the forward and backward pass (see the class comment). */
    public long recomputedRuns() {
        return recomputedRuns;
    }

    /** Closes the fed scalar tensors. */
    @Override
    public void close() {
        ops.close();
    }

    private static boolean isFloat(Class<?> type) {
        return type == TFloat32.class || type == TFloat64.class;
    }

    private static String names(List<Output<?>> vars) {
        List<String> n = new ArrayList<>();
        for (Output<?> v : vars) {
            n.add(v.op().name());
        }
        return n.toString();
    }

    private static void require(boolean ok, String message) {
        if (!ok) {
            throw new IllegalArgumentException(message);
        }
    }
}
