package io.gradguard.core;

import io.gradguard.core.internal.Checks;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.spi.GuardedModel;
import io.gradguard.core.spi.TensorOps;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.List;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What every framework's guard shares ({@code TfGuard}, {@code Dl4jGuard}, {@code DjlGuard}): a
 * {@link GradientPipeline}, the one step sequence that runs it between backward and the optimizer,
 * the last result, the counters, checkpoints of the pipeline state, and closing its monitors.
 *
 * <pre>{@code
 * DjlGuard guard = DjlGuard.of(GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0)));
 * // ... attach it with the framework's hook, train ...
 * log.info("{} steps, {} clipped, {} skipped", guard.stepCount(), guard.clippedCount(), guard.skippedCount());
 * guard.lastResult().flatMap(r -> r.metric("clipByGlobalNorm.norm")).ifPresent(n -> log.info("norm {}", n));
 * }</pre>
 *
 * <p><b>The step</b> ({@link #step}), the same on every framework: read the model's gradients
 * ({@link GuardedModel#gradients()}), run the pipeline on them, then run the optimizer
 * ({@link GuardedModel#apply}) when the step applies, or leave it alone and reset the gradients
 * ({@link GuardedModel#discard}) when accumulation holds or a stage skips, copy the metrics to the
 * host; finally free the step's temporaries ({@link GuardedModel#endStep()}), also when a stage threw. A skipped
 * step is counted ({@link #skippedCount()}) and logged at DEBUG; a summary (steps, clipped,
 * skipped, held) is logged at INFO every {@link #summaryEvery} applied steps and when the guard is
 * closed.
 *
 * <p><b>Checkpoints.</b> {@link #saveState}/{@link #restoreState} write and read the pipeline's
 * state (counters, accumulators, histories; {@link GradientPipeline#saveState}). A state restored
 * before the guard has seen its model is kept and applied when it does; saving before that writes
 * it back unchanged.
 *
 * <p>A guard is not thread-safe: one guard per model and training thread.
 *
 * @param <T> the framework's tensor type
 * @param <G> the adapter's guard class (so that the withers return it)
 */
public abstract class Guard<T, G extends Guard<T, G>> implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger("io.gradguard");

    private final GradientPipeline pipeline;
    private final List<Monitor> monitors;
    private boolean inDouble;
    private long summaryEvery = 1000;
    private StepResult<T> last;
    private TensorOps<T> ops;
    private byte[] pendingState;
    /** The loss scale {@link #pendingState} holds: the adapter scales the first loss after a restore by it. */
    private double pendingLossScale;
    private boolean closed;

    /**
     * @throws IllegalArgumentException if {@code pipeline} is null
     * @throws IllegalStateException if another guard already runs {@code pipeline}
     */
    protected Guard(GradientPipeline pipeline) {
        this.pipeline = Checks.notNull("pipeline", pipeline);
        pipeline.claim(this);
        this.monitors = Monitor.in(pipeline);
    }

    /** The pipeline this guard runs. */
    public final GradientPipeline pipeline() {
        return pipeline;
    }

    /** The result of the last step, empty before the first. */
    public final Optional<StepResult<T>> lastResult() {
        return Optional.ofNullable(last);
    }

    /** Optimizer steps applied so far ({@link GradientPipeline#stepCount()}). */
    public final long stepCount() {
        return pipeline.stepCount();
    }

    /** Steps skipped on purpose (non-finite, spikes) so far. */
    public final long skippedCount() {
        return pipeline.skippedCount();
    }

    /** Micro-batches held by accumulation so far. */
    public final long heldCount() {
        return pipeline.heldCount();
    }

    /** Applied steps on which a clip acted ({@link GradientPipeline#clippedCount()}). */
    public final long clippedCount() {
        return pipeline.clippedCount();
    }

    /** Every step call so far: the micro-batches fed ({@link GradientPipeline#callCount()}). */
    public final long callCount() {
        return pipeline.callCount();
    }

    /**
     * The loss scale to multiply the next loss by before backward: the pipeline's
     * {@link io.gradguard.core.transform.LossScale} stage's current scale, 1 without one.
     */
    public final double lossScale() {
        return pendingState != null ? pendingLossScale : pipeline.lossScale();
    }

    /** Whether reductions (norms, sums across tensors) run in float64 ({@link #accumulateInDouble()}). */
    public final boolean accumulatesInDouble() {
        return inDouble;
    }

    /**
     * Reductions (norms, sums across tensors) in float64 instead of the gradients' dtype: norms of
     * values near 1e30 or 1e-30 stay finite and non-zero, at the price of a conversion pass on
     * backends that reduce float32 natively.
     *
     * @return this guard
     * @throws IllegalStateException if the guard has already run a step (its backend is bound)
     */
    public final G accumulateInDouble() {
        if (ops != null) {
            throw new IllegalStateException("accumulateInDouble() must be called before the first step: "
                    + "build the guard with it, e.g. " + getClass().getSimpleName() + ".of(pipeline).accumulateInDouble()");
        }
        inDouble = true;
        return self();
    }

    /**
     * How often the INFO summary ({@link #summary()}) is logged: every {@code n} applied steps
     * (default 1000), and always when the guard is closed; 0: only when it is closed.
     *
     * @return this guard
     * @throws IllegalArgumentException if {@code n} is negative
     */
    public final G summaryEvery(long n) {
        Checks.require(n >= 0, "n", "be >= 0 (0: only when the guard is closed)", n);
        summaryEvery = n;
        return self();
    }

    @SuppressWarnings("unchecked")
    private G self() {
        return (G) this;
    }

    /** Whether a monitor of the pipeline waits for this step's updates (no allocation: checked on every step). */
    protected final boolean wantsUpdates() {
        for (Monitor m : monitors) {
            if (m.wantsUpdates()) {
                return true;
            }
        }
        return false;
    }

    /**
     * Binds the guard to its backend once the adapter knows its model; a state restored before is
     * applied now.
     *
     * @throws IllegalStateException if the guard is already bound to another backend, or closed
     * @throws IOException never in practice: the pending state was read from memory
     */
    protected final void bind(TensorOps<T> backend) throws IOException {
        ensureOpen();
        if (ops == backend) {
            return;
        }
        if (ops != null) {
            throw new IllegalStateException("this guard's state lives on " + ops + "; it was used with another model or backend "
                    + backend + ": use one guard per model");
        }
        ops = Checks.notNull("backend", backend);
        if (pendingState != null) {
            byte[] s = pendingState;
            pendingState = null;
            pipeline.restoreState(new ByteArrayInputStream(s), ops);
        }
    }

    /** The backend the guard is bound to, or null before its first step. */
    protected final TensorOps<T> boundOps() {
        return ops;
    }

    /**
     * The step sequence (see the class documentation), once per micro-batch.
     *
     * @throws IllegalStateException if the guard is closed, or a stage gives up (e.g. too many
     *     consecutive non-finite steps)
     */
    protected final StepResult<T> step(GuardedModel<T> model, StepContext context) {
        Checks.notNull("context", context);
        ensureOpen();
        StepResult<T> result;
        try {
            bindUnchecked(model.ops());
            GradientSet<T> gradients = model.gradients();
            result = pipeline.step(gradients, model.ops(), context);
            if (result.applies()) {
                model.apply(gradients, result, wantsUpdates() ? recorder(model.ops()) : null);
            } else {
                model.discard(gradients, result);
                if (result.skipped()) {
                    LOG.debug("GradGuard skipped step {} (call {}): {}", result.context().step(), result.context().call(),
                            result.action().reason());
                }
            }
            // after the optimizer (a graph backend fetches the metrics with its update run), before the
            // temporaries are freed below: the metrics outlive them
            result.hostMetrics();
        } finally {
            model.endStep();
        }
        last = result;
        if (result.applies() && summaryEvery > 0 && pipeline.stepCount() % summaryEvery == 0) {
            LOG.info("{}", summary());
        }
        return result;
    }

    private void bindUnchecked(TensorOps<T> backend) {
        try {
            bind(backend);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private GuardedModel.UpdateRecorder<T> recorder(TensorOps<T> backend) {
        return new GuardedModel.UpdateRecorder<>() {
            @Override
            public void record(GradientTensor<T> parameter, T update) {
                for (Monitor m : monitors) {
                    m.recordUpdate(backend, parameter, update);
                }
            }

            @Override
            public void record(String layer, double updateNorm, double paramNorm) {
                for (Monitor m : monitors) {
                    m.recordUpdate(layer, updateNorm, paramNorm);
                }
            }
        };
    }

    /** One line: steps, calls, clipped, skipped, held. */
    public final String summary() {
        return "GradGuard " + pipeline.stageNames() + ": " + stepCount() + " steps applied from " + callCount()
                + " calls, " + clippedCount() + " clipped, " + skippedCount() + " skipped, " + heldCount() + " held";
    }

    /**
     * Writes the pipeline's state; save the model and optimizer with the framework next to it.
     *
     * @throws IllegalArgumentException if {@code out} is null
     * @throws IOException if the stream fails
     */
    public void saveState(OutputStream out) throws IOException {
        Checks.notNull("out", out);
        if (pendingState != null) {
            out.write(pendingState);
            out.flush();
            return;
        }
        pipeline.saveState(out);
    }

    /**
     * Restores a state written by {@link #saveState}; a checkpoint taken in the middle of an
     * accumulation window continues exactly. Before the guard's first step the state is checked
     * later, when the guard binds to its model (with a loss-scale stage its frame is checked now, to
     * read the scale {@link #lossScale()} returns until then).
     *
     * @throws IllegalArgumentException if {@code in} is null
     * @throws StateFormatException if the data is not a valid state of this pipeline
     * @throws IOException if the stream fails
     */
    public void restoreState(InputStream in) throws IOException {
        Checks.notNull("in", in);
        ensureOpen();
        if (ops != null) {
            pipeline.restoreState(in, ops);
        } else {
            byte[] state = in.readAllBytes();
            pendingLossScale = pipeline.lossScaleIn(state);
            pendingState = state;
        }
    }

    /**
     * Writes the pipeline's state to a file, crash-safe: a temporary file beside it, forced to disk,
     * then renamed over the previous one (a process killed mid-save keeps the previous checkpoint).
     *
     * @throws IllegalArgumentException if {@code file} is null or a directory
     * @throws IOException if the file cannot be written; the previous file is then unchanged
     */
    public void saveState(java.nio.file.Path file) throws IOException {
        io.gradguard.core.internal.AtomicFiles.write(file, this::saveState);
    }

    /**
     * Restores a state file written by {@link #saveState(java.nio.file.Path)}, as
     * {@link #restoreState(InputStream)} does.
     *
     * @throws IllegalArgumentException if {@code file} is null
     * @throws StateFormatException if the file is not a complete state of this pipeline
     * @throws IOException if the file cannot be read
     */
    public void restoreState(java.nio.file.Path file) throws IOException {
        Checks.notNull("file", file);
        try (InputStream in = java.nio.file.Files.newInputStream(file)) {
            restoreState(in);
        }
    }

    /** Whether {@link #close()} was called. */
    public final boolean isClosed() {
        return closed;
    }

    /**
     * Throws if the guard is closed.
     *
     * @throws IllegalStateException if it is
     */
    protected final void ensureOpen() {
        if (closed) {
            throw new IllegalStateException("this " + getClass().getSimpleName() + " is closed: create a new guard");
        }
    }

    /**
     * Closes the pipeline's monitors (their sinks write what they hold, e.g. the HTML report), logs
     * the summary, and frees what the adapter holds ({@link #closeResources()}). Idempotent.
     */
    @Override
    public final void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            closeResources();
        } finally {
            for (Monitor m : monitors) {
                try {
                    m.close();
                } catch (RuntimeException e) {
                    LOG.warn("GradGuard: closing monitor {} failed", m, e);
                }
            }
            if (callCount() > 0) {
                LOG.info("{}", summary());
            }
        }
    }

    /** Frees what the adapter holds (buffers, fed scalars); called once by {@link #close()}. */
    protected void closeResources() {
    }

    @Override
    public String toString() {
        return getClass().getSimpleName() + pipeline.stageNames();
    }
}
