package io.gradguard.tensorflow;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Guard;
import io.gradguard.core.Layout;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.transform.LossScale;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.tensorflow.Operand;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.Optimizer;
import org.tensorflow.ndarray.FloatNdArray;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.types.TFloat16;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TFloat64;

/**
 * GradGuard for a TensorFlow Java graph: the gradients of the loss with respect to the variables you
 * name, the pipeline's transforms as graph operations, and the framework optimizer's
 * {@code applyGradients} only when the pipeline says the step applies. It replaces
 * {@code optimizer.minimize(loss)} and the session run of the training op.
 *
 * <pre>{@code
 * try (TfGuard guard = TfGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0))
 *         .attach(session, loss, List.of(w1, b1, w2, b2), new GradientDescent(graph, 0.05f))) {
 *     for (Batch b : batches) {
 *         StepResult<TfTensor> r = guard.step(Map.of(x, b.features(), y, b.labels()), 64);
 *         if (r.skipped()) log.warn("skipped: {}", r.action().reason());
 *         if (step % 1000 == 0) guard.save("/ckpt/model-" + step);
 *     }
 * }
 * }</pre>
 *
 * <p>Each {@link #step} runs core's step sequence ({@link Guard}) on the graph (see the package
 * documentation): one session run when nothing reads a host value during the pipeline, gradient
 * buffers otherwise. On HOLD and SKIP the optimizer's apply op is not run, so the variables and the
 * optimizer's slots (moments, step counters) do not move. When a monitor asks for update ratios, the
 * variables are copied before the update and ‖Δθ‖/‖θ‖ is measured after it.
 *
 * <p>Loss scaling: with a {@code Transforms.dynamicLossScale()} (or {@code lossScale(s)}) stage first
 * in the pipeline, {@link #attach} builds the gradients of {@code loss · S} instead of {@code loss},
 * S a float64 scalar fed on every step with {@link #lossScale()} (cast to the loss's dtype), and the
 * stage divides them by S again before the rest of the pipeline; an overflowing step is skipped
 * and S backs off. {@link #lastLoss()} stays the unscaled loss. For float16 models compute the loss
 * in float32 (cast the logits): a float16 loss cannot be multiplied by 2¹⁶ (float16 ends at 65504),
 * so the first step overflows and the scale starts at 2¹⁵. See {@code docs/mixed-precision.md}.
 *
 * <p>Checkpoints: {@link #save}/{@link #restore} write and read ONE TensorFlow checkpoint holding the
 * model, the optimizer's slots and GradGuard's state; {@link #saveState}/{@link #restoreState} write
 * GradGuard's state alone.
 *
 * <p>Not thread-safe. Close it to free the fed scalars and the kept checkpoint values; the graph and
 * the session stay the caller's.
 */
public final class TfGuard extends Guard<TfTensor, TfGuard> {
    /** The key of GradGuard's state in a checkpoint written by {@link #save}. */
    public static final String STATE_KEY = "gradguard/pipeline_state";

    /** The key of the variables a checkpoint written by {@link #save} holds, one "name TAB dtype" per line. */
    public static final String VARIABLES_KEY = "gradguard/variables";

    private Session session;
    private TfOps ops;
    private TfGraphModel model;
    private TfCheckpoint checkpoint;
    private boolean stepping;
    private final Map<String, Layout> layouts = new LinkedHashMap<>();

    private TfGuard(GradientPipeline pipeline) {
        super(pipeline);
    }

    /**
     * A guard running {@code pipeline}; attach it to a graph with {@link #attach}.
     *
     * @throws IllegalArgumentException if pipeline is null
     * @throws IllegalStateException if another guard already runs this pipeline
     */
    public static TfGuard of(GradientPipeline pipeline) {
        return new TfGuard(pipeline);
    }

    /**
     * A guard running a new pipeline of these transforms ({@link GradientPipeline#of}).
     *
     * @throws IllegalArgumentException if a transform is null
     */
    public static TfGuard of(GradientTransform... transforms) {
        return new TfGuard(GradientPipeline.of(transforms));
    }

    /**
     * Declares which axis of {@code variable} indexes its output units, for the unit-wise stages
     * ({@link io.gradguard.core.Transforms#adaptiveClip adaptiveClip}). A variable you build yourself
     * has no layer type to read it from, so every variable is {@link Layout#outputLast()} unless declared
     * here: right for Keras-style dense kernels {@code [in, out]} and HWIO convolution kernels
     * {@code [h, w, in, out]}; a rank-0 or rank-1 variable (a bias) is one unit whatever is declared.
     * Declare the others: {@link Layout#outputFirst()} for an embedding {@code [vocab, dim]} (one
     * token's row per unit) or a PyTorch-ordered {@code [out, in]} matrix, {@link Layout#whole()} to
     * norm a tensor as one unit, {@link Layout#outputAxis(int)} for anything else.
     *
     * <pre>{@code
     * TfGuard.of(Transforms.adaptiveClip(0.01))
     *     .layout(embedding, Layout.outputFirst())
     *     .attach(session, loss, List.of(embedding, kernel, bias), optimizer);
     * }</pre>
     *
     * @return this guard
     * @throws IllegalArgumentException if variable or layout is null; at {@link #attach}, if the variable
     *     is not one of those attached, or the layout's axis does not exist at the variable's rank
     * @throws IllegalStateException if the guard is already attached (declare layouts before), or closed
     */
    public TfGuard layout(Operand<?> variable, Layout layout) {
        ensureOpen();
        Checks.notNull("variable", variable);
        Checks.notNull("layout", layout);
        if (model != null) {
            throw new IllegalStateException("this TfGuard is already attached: declare layouts before attach(...)");
        }
        layouts.put(variable.asOutput().op().name(), layout);
        return this;
    }

    /**
     * Attaches the guard to a graph: builds the gradients of {@code loss} with respect to
     * {@code variables} (only those: not every variable of the graph), validating the setup. The
     * optimizer's apply op is built on the first applying step.
     *
     * @param session   the session that trains (its graph holds the model)
     * @param loss      a scalar float loss
     * @param variables the trainable variables ({@code tf.variable(...)}), float16, float32 or float64; give them flat
     *                  names ({@code dense_kernel}) with a slot optimizer (Momentum, Adam): tensorflow-framework
     *                  names slots after them and rejects a '/'
     * @param optimizer a tensorflow-framework optimizer built on the same graph
     * @return this guard
     * @throws IllegalArgumentException if an argument is null, there is no variable, a variable is not a
     *     variable or not float, appears twice, or does not influence the loss, or the loss is not a float
     *     scalar of the session's graph, or a declared {@link #layout} names another variable or an axis
     *     the variable does not have; the message names the variable
     * @throws IllegalStateException if the guard is already attached (one guard per model), or closed
     */
    public TfGuard attach(Session session, Operand<?> loss, List<? extends Operand<?>> variables, Optimizer optimizer) {
        ensureOpen();
        Checks.notNull("session", session);
        if (model != null) {
            throw new IllegalStateException("this TfGuard is already attached to " + (this.session == session ? "this session's graph"
                    : "another session's graph") + ": use one guard per model (TfGuard.of(pipeline) for another)");
        }
        TfOps newOps = new TfOps(session);
        TfCheckpoint newCheckpoint = new TfCheckpoint(session);
        boolean scaled = !pipeline().transforms().isEmpty() && pipeline().transforms().get(0) instanceof LossScale;
        TfGraphModel built = TfGraphModel.build(newOps, loss, variables, optimizer, Map.copyOf(layouts), newCheckpoint::slotsCreated,
                scaled ? this::lossScale : null);
        this.session = session;
        this.ops = newOps;
        this.checkpoint = newCheckpoint;
        this.model = built;
        return this;
    }

    /**
     * One training step: forward and backward on {@code feeds}, the pipeline, and the optimizer's
     * update when the pipeline {@link StepResult#applies() applies}.
     *
     * @param feeds   the step's inputs (placeholder → tensor); the caller owns and closes the tensors
     * @param context the batch facts; its loss is filled in when the guard knows it before the pipeline
     *     runs (with gradient buffers), and so is whether the float inputs hold NaN or Inf when that loss
     *     is not finite (so a non-finite stage can name bad input data as the cause)
     * @return the pipeline's result, its metrics already on the host
     * @throws IllegalArgumentException if feeds or context is null; on the first applying step, if a slot
     *     optimizer cannot name its slots after a variable whose name has a '/' (the message lists them)
     * @throws IllegalStateException if the guard is not attached or closed, or a stage gives up (too many
     *     non-finite steps in a row: the message names the likely cause)
     */
    public StepResult<TfTensor> step(Map<? extends Operand<?>, ? extends Tensor> feeds, StepContext context) {
        Checks.notNull("feeds", feeds);
        Checks.notNull("context", context);
        requireAttached("step");
        if (accumulatesInDouble() && !ops.accumulatesInDouble()) {
            ops.accumulateInDouble();
        }
        stepping = true;
        try {
            StepContext ctx = context;
            if (model.begin(feeds)) {
                double loss = model.lastLoss();
                ctx = ctx.hasLoss() ? ctx : ctx.withLoss(loss);
                if (!Double.isFinite(loss) && holdsNonFinite(feeds)) {
                    ctx = ctx.withNonFiniteInputs(true);
                }
            }
            return step(model, ctx);
        } finally {
            stepping = false;
        }
    }

    /** {@link #step(Map, StepContext)} with a batch of {@code batchSize} examples. */
    public StepResult<TfTensor> step(Map<? extends Operand<?>, ? extends Tensor> feeds, long batchSize) {
        return step(feeds, StepContext.ofBatch(batchSize));
    }

    /** Whether a float16, float32 or float64 feed holds NaN or ±Inf (read on the host: only on a step whose loss is not finite). */
    private static boolean holdsNonFinite(Map<? extends Operand<?>, ? extends Tensor> feeds) {
        for (Tensor t : feeds.values()) {
            if (t instanceof TFloat32 || t instanceof TFloat16) {
                FloatNdArray f = (FloatNdArray) t;
                float[] v = new float[Math.toIntExact(f.shape().size())];
                f.copyTo(DataBuffers.of(v, false, false));
                for (float x : v) {
                    if (!Float.isFinite(x)) {
                        return true;
                    }
                }
            } else if (t instanceof TFloat64 d) {
                double[] v = new double[Math.toIntExact(d.shape().size())];
                d.copyTo(DataBuffers.of(v, false, false));
                for (double x : v) {
                    if (!Double.isFinite(x)) {
                        return true;
                    }
                }
            }
        }
        return false;
    }

    /**
     * Writes ONE TensorFlow checkpoint (the V2 format {@code session.save} writes: {@code prefix.index}
     * and {@code prefix.data-*}) that holds every {@code VariableV2} of the graph (the model and the
     * optimizer's slots, under their op names, as {@code session.save} stores them) and GradGuard's whole
     * state (counters, accumulators, histories, monitor state) under {@value #STATE_KEY}. Call it between
     * steps, also right after {@link #restore} (the restored optimizer state is written back even before
     * the first update has created the optimizer's slots). TensorFlow's {@code session.restore(prefix)}
     * reads the model alone from the same file.
     *
     * <pre>{@code
     * guard.save("/ckpt/model-1000");
     * // later, in a new process: the same graph, a new guard with the same stages
     * TfGuard guard = TfGuard.of(pipeline).attach(session, loss, variables, new Momentum(graph, 0.05f, 0.9f));
     * guard.restore("/ckpt/model-1000");   // before the first step
     * }</pre>
     *
     * <p>Why not {@code session.save} alone: tensorflow-core-api 1.1 builds the graph's saver once, at
     * the first {@code save} or {@code restore}, over the {@code VariableV2} ops that exist then;
     * GradGuard's state partly lives on the host, and the optimizer's slots appear with the first
     * applying step.
     *
     * <p>Saving over an existing checkpoint is crash-safe file by file: TensorFlow writes the new
     * files under a temporary prefix in the same directory, they are forced to disk and then each is
     * renamed atomically over its old file, the {@code .index} last. A process killed before the
     * renames keeps the previous checkpoint. The two files cannot be swapped as one: a crash between
     * the renames leaves the new data with the old index, which TensorFlow refuses on restore
     * (checksum). Save to a new prefix per checkpoint (e.g. {@code model-<step>}) and keep the
     * previous one until the new save returns, to be safe against that too.
     *
     * @param prefix the checkpoint path prefix, as for {@code session.save}
     * @throws IllegalArgumentException if prefix is null or empty
     * @throws IllegalStateException if the guard is not attached, or called during a step (from a listener)
     * @throws IOException if the state cannot be serialized
     */
    public void save(String prefix) throws IOException {
        requirePrefix(prefix);
        requireAttached("save");
        requireBetweenSteps("save");
        model.shareOptimizerState();
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        saveState(bytes);
        checkpoint.save(prefix, bytes.toByteArray());
    }

    /**
     * Restores a checkpoint written by {@link #save}: GradGuard's state (checked first: nothing changes
     * if it does not fit), then every {@code VariableV2} of the graph. Call it on a graph built as the
     * saved one was, with a guard of the same stages, before the first step. The optimizer's slots, which
     * appear with the first applying step, receive the checkpoint's values then; the run continues
     * bit-identically, also in the middle of an accumulation window.
     *
     * @param prefix the prefix given to {@link #save}
     * @throws IllegalArgumentException if prefix is null or empty, or names no checkpoint with GradGuard's
     *     state (one written by {@code session.save}: restore it with {@code session.restore}), or the
     *     checkpoint lacks a variable of this graph
     * @throws io.gradguard.core.StateFormatException if the state was saved from another pipeline (the
     *     message lists both pipelines' stages), or is corrupt; nothing is restored then
     * @throws IllegalStateException if the guard is not attached, or called during a step
     * @throws IOException if the state cannot be read
     */
    public void restore(String prefix) throws IOException {
        requirePrefix(prefix);
        requireAttached("restore");
        requireBetweenSteps("restore");
        if (accumulatesInDouble() && !ops.accumulatesInDouble()) {
            ops.accumulateInDouble();
        }
        bind(ops);
        checkpoint.restore(prefix, state -> restoreState(new ByteArrayInputStream(state)));
    }

    private static void requirePrefix(String prefix) {
        Checks.require(prefix != null && !prefix.isEmpty(), "prefix", "be a checkpoint path prefix", prefix);
    }

    private void requireAttached(String what) {
        ensureOpen();
        if (model == null) {
            throw new IllegalStateException(what + "() needs a graph: attach the guard first, "
                    + "guard.attach(session, loss, variables, optimizer)");
        }
    }

    private void requireBetweenSteps(String what) {
        if (stepping) {
            throw new IllegalStateException(what + "() was called during a step (from a listener): call it between steps");
        }
    }

    /** The backend this guard builds with (for listeners that read tensors); null before {@link #attach}. */
    public TfOps ops() {
        return ops;
    }

    /**
     * The gradient set the pipeline sees (one entry per variable, in the given order).
     *
     * @throws IllegalStateException if the guard is not attached
     */
    public GradientSet<TfTensor> gradients() {
        requireAttached("gradients");
        return model.gradientSet();
    }

    /** The loss of the last step (NaN before the first). */
    public double lastLoss() {
        return model == null ? Double.NaN : model.lastLoss();
    }

    /** Whether gradients persist in buffer variables between session runs (see the package documentation). */
    public boolean usesGradientBuffers() {
        return model != null && model.buffered();
    }

    /** Host reads that had to recompute the forward and backward pass (see the package documentation). */
    public long recomputedRuns() {
        return model == null ? 0 : model.recomputedRuns();
    }

    @Override
    protected void closeResources() {
        if (ops != null) {
            ops.close();
            checkpoint.close();
            model.closeLossScale();
        }
    }

}
