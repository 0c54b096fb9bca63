package io.gradguard.djl;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.training.Trainer;
import ai.djl.training.TrainingConfig;
import ai.djl.util.Pair;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.monitor.Monitor;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a {@link GradientPipeline} inside a DJL training loop (PyTorch engine): between
 * {@code backward} and the optimizer, on the live gradients of the trainer's model, on their
 * device.
 *
 * <p><b>Hand-written loop:</b> call {@link #step(Trainer)} where you called {@code trainer.step()}.
 *
 * <pre>{@code
 * DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
 * for (Batch batch : trainer.iterateDataset(data)) {
 *     try (GradientCollector gc = trainer.newGradientCollector()) {
 *         NDArray loss = trainer.getLoss().evaluate(batch.getLabels(), trainer.forward(batch.getData()));
 *         gc.backward(loss);
 *     }
 *     guard.step(trainer);          // instead of trainer.step()
 *     batch.close();
 * }
 * }</pre>
 *
 * <p><b>{@code EasyTrain.fit}:</b> create the trainer with {@link #newTrainer(Model, TrainingConfig)}
 * (a {@link GuardedTrainer}, whose {@code step()} goes through this guard). A
 * {@code TrainingListener} cannot do the job: {@code onTrainingBatch} runs before
 * {@code trainer.step()} but cannot prevent it, so it could neither accumulate nor really skip a step.
 *
 * <p><b>Per call</b> (one micro-batch): the gradient of every parameter that requires one
 * ({@code block.getParameters()}, in order) is handed to the pipeline as it lives in PyTorch: name =
 * the parameter's key ({@code "01Linear_weight"}), layer = the key's block path
 * ({@code "01Linear"}), role from {@link Parameter.Type} (WEIGHT, BIAS, else OTHER), layout
 * {@link Layout#outputFirst()} ({@code [out, in, ...]}), the parameter's value attached for
 * adaptive clipping. Then:
 * <ul>
 *   <li>the result {@link StepResult#applies() applies}: {@code trainer.step()} runs the optimizer
 *       on the transformed gradients (and zeroes them, as DJL always does);</li>
 *   <li>it is {@link StepResult#held() held} (accumulation) or {@link StepResult#skipped() skipped}:
 *       the optimizer does not run, so its state (Adam moments, update counts, learning-rate
 *       schedule) does not move, and every gradient is reset to 0 with an in-place fill (a NaN does
 *       not survive it, unlike {@code muli(0)}), so nothing stale leaks into the next micro-batch.</li>
 * </ul>
 * Every array the guard creates during the call (gradient handles, reductions, coefficients,
 * parameter copies) is closed before it returns; the returned result's metrics have been copied to
 * the host (one scalar each), so they stay readable.
 *
 * <p><b>Update-to-parameter ratios.</b> When the pipeline contains a {@link Monitor} and it measures
 * the step in detail ({@link Monitor#wantsUpdates()}), the guard reports each layer's ‖Δθ‖ / ‖θ‖
 * (θ before the step; about 1e-3 is healthy): DJL applies the update inside {@code trainer.step()},
 * so on those steps, and only those, every trainable parameter is copied before the step, the copy
 * becomes Δθ in place after it, and the copies are closed when the call ends. Cost on a measured step:
 * one extra copy of the model's parameters in device memory while the optimizer runs, one
 * subtraction and two reductions per parameter (two scalars each to the host); on other steps, one
 * check per monitor. Use the monitor's {@code every(n)} to keep it rare on big models.
 *
 * <p>One guard guards one trainer, on one device; it is not thread-safe. Its long-lived buffers
 * (accumulators) live under the trainer's manager and are freed when the trainer is closed.
 *
 * <p>Reference: DJL {@code EasyTrain.trainBatch} / {@code Trainer.step}; PyTorch
 * {@code clip_grad_norm_}; docs/design.md, "a skip is a real skip".
 */
public final class DjlGuard {
    private static final Logger LOG = LoggerFactory.getLogger(DjlGuard.class);

    private final GradientPipeline pipeline;
    private final List<Monitor> monitors;
    private Trainer trainer;
    private DjlOps ops;
    private List<Entry> entries;

    /** What the guard knows about one parameter (computed once). */
    private record Entry(String key, Parameter parameter, Role role, String layer) {
    }

    private DjlGuard(GradientPipeline pipeline) {
        this.pipeline = pipeline;
        this.monitors = Monitor.in(pipeline);
    }

    /**
     * A guard running the given pipeline.
     *
     * @throws IllegalArgumentException if {@code pipeline} is null
     */
    public static DjlGuard of(GradientPipeline pipeline) {
        if (pipeline == null) {
            throw new IllegalArgumentException("pipeline must not be null, got null");
        }
        return new DjlGuard(pipeline);
    }

    /**
     * A guard running {@code GradientPipeline.of(transforms)}.
     *
     * @throws IllegalArgumentException if a transform is null
     */
    public static DjlGuard of(GradientTransform... transforms) {
        return new DjlGuard(GradientPipeline.of(transforms));
    }

    /** The pipeline (its counters: {@code stepCount()}, {@code skippedCount()}, {@code heldCount()}). */
    public GradientPipeline pipeline() {
        return pipeline;
    }

    /**
     * A trainer for {@code model} whose {@code step()} runs through this guard: pass it to
     * {@code EasyTrain.fit}. Equivalent to {@code model.newTrainer(config)} (the config's
     * initializers are set on the block), except that a model loaded from disk keeps its frozen
     * parameters frozen: unfreeze them yourself with {@code block.freezeParameters(false)}.
     *
     * <pre>{@code
     * try (Trainer trainer = DjlGuard.of(Transforms.clipByGlobalNorm(1.0)).newTrainer(model, config)) {
     *     trainer.initialize(new Shape(64, 784));
     *     EasyTrain.fit(trainer, 5, trainingSet, validationSet);
     * }
     * }</pre>
     *
     * @throws IllegalArgumentException if {@code model} or {@code config} is null
     * @throws IllegalStateException if the model has no block, or this guard already guards a trainer
     */
    public GuardedTrainer newTrainer(Model model, TrainingConfig config) {
        if (model == null || config == null) {
            throw new IllegalArgumentException("model and config must not be null, got model=" + model + ", config=" + config);
        }
        if (trainer != null) {
            throw new IllegalStateException("this DjlGuard already guards a trainer: create one DjlGuard per trainer");
        }
        GuardedTrainer t = new GuardedTrainer(model, config, this);
        bind(t);
        return t;
    }

    /**
     * Transforms the gradients of the last backward pass, then steps {@code trainer} if the
     * pipeline says so; otherwise resets the gradients and leaves the optimizer alone. Call it
     * instead of {@code trainer.step()} on a plain DJL trainer (a {@link GuardedTrainer} made by
     * {@link #newTrainer} runs the guard in its own {@code step()}).
     *
     * @return what happened; its metrics are host values
     * @throws IllegalArgumentException if {@code trainer} is null
     * @throws IllegalStateException if {@code trainer} is a {@link GuardedTrainer} (its own
     *     {@code step()} already runs the pipeline: call {@code trainer.step()}), the guard was used
     *     with another trainer, the trainer trains on several devices, the model is not initialized,
     *     or a transform gives up (e.g. too many consecutive non-finite steps)
     */
    public StepResult<NDArray> step(Trainer trainer) {
        return step(trainer, StepContext.empty());
    }

    /**
     * As {@link #step(Trainer)}, with what is known about the micro-batch (batch size, loss, weight
     * for weighted accumulation): {@code guard.step(trainer, StepContext.ofBatch(64).withLoss(loss))}.
     *
     * @throws IllegalArgumentException if {@code trainer} or {@code context} is null
     */
    public StepResult<NDArray> step(Trainer trainer, StepContext context) {
        if (trainer == null) {
            throw new IllegalArgumentException("trainer must not be null, got null");
        }
        if (trainer instanceof GuardedTrainer) {
            // its step() is guard.run(...) again: the pipeline would run twice per batch
            throw new IllegalStateException("this trainer already steps through its guard: call trainer.step() instead of"
                    + " DjlGuard.step(trainer), which would run the pipeline twice per batch (clipping twice, counting"
                    + " two micro-batches)");
        }
        return run(trainer, context, trainer::step);
    }

    /** The step, with the optimizer call supplied (a {@link GuardedTrainer} passes {@code super.step()}). */
    StepResult<NDArray> run(Trainer t, StepContext context, Runnable optimizerStep) {
        if (context == null) {
            throw new IllegalArgumentException("context must not be null, got null");
        }
        bind(t);
        StepResult<NDArray> result;
        try {
            GradientSet<NDArray> gradients = gradients();
            result = pipeline.step(gradients, ops, context);
            result.hostMetrics();
            if (result.applies()) {
                if (wantsUpdates()) {
                    stepReportingUpdates(gradients, optimizerStep);
                } else {
                    optimizerStep.run();
                }
            } else {
                for (GradientTensor<NDArray> g : gradients) {
                    ops.fill(g.gradient(), 0.0);
                }
                if (result.skipped()) {
                    LOG.debug("GradGuard skipped step {}: {}", result.context().step(), result.action().reason());
                }
            }
        } finally {
            ops.freeTemporaries();
        }
        return result;
    }

    /** Whether a monitor of the pipeline waits for this step's updates (no allocation: checked on every step). */
    private boolean wantsUpdates() {
        for (Monitor m : monitors) {
            if (m.wantsUpdates()) {
                return true;
            }
        }
        return false;
    }

    /**
     * The optimizer step, with each parameter's update reported to the monitors: the optimizer
     * updates the parameters inside {@code trainer.step()}, so every parameter is copied into the
     * step's scope first (and ‖θ‖² taken), then the copy becomes Δθ = θ_before − θ_after in place.
     * The copies are temporaries of the step, closed with the others.
     */
    private void stepReportingUpdates(GradientSet<NDArray> gradients, Runnable optimizerStep) {
        int n = entries.size();
        NDArray[] deltas = new NDArray[n];
        NDArray[] paramSquares = new NDArray[n];
        for (int i = 0; i < n; i++) {
            deltas[i] = ops.adopt(gradients.get(i).param().duplicate());
            paramSquares[i] = ops.sumOfSquares(deltas[i]);
        }
        optimizerStep.run();
        for (int i = 0; i < n; i++) {
            deltas[i].subi(entries.get(i).parameter().getArray());
            double updateNorm = Math.sqrt(ops.toHost(ops.sumOfSquares(deltas[i])));
            double paramNorm = Math.sqrt(ops.toHost(paramSquares[i]));
            for (Monitor m : monitors) {
                m.recordUpdate(entries.get(i).layer(), updateNorm, paramNorm);
            }
        }
    }

    /**
     * Writes the pipeline's state (counters, accumulators, histories) for a checkpoint; save the
     * model and optimizer with DJL next to it.
     *
     * @throws IOException if the stream fails
     * @see GradientPipeline#saveState
     */
    public void saveState(OutputStream out) throws IOException {
        pipeline.saveState(out);
    }

    /**
     * Restores a state written by {@link #saveState}, into buffers under {@code trainer}'s manager;
     * the guard then guards that trainer. A checkpoint taken in the middle of an accumulation window
     * continues exactly.
     *
     * @throws IllegalArgumentException if {@code in} or {@code trainer} is null
     * @throws IllegalStateException if this guard already guards another trainer
     * @throws io.gradguard.core.StateFormatException if the data is not a valid state of this pipeline
     * @throws IOException if the stream fails
     */
    public void restoreState(InputStream in, Trainer trainer) throws IOException {
        if (trainer == null) {
            throw new IllegalArgumentException("trainer must not be null, got null");
        }
        bind(trainer);
        pipeline.restoreState(in, ops);
    }

    private void bind(Trainer t) {
        if (trainer == t) {
            if (!t.getManager().isOpen()) {
                throw new IllegalStateException("the trainer is closed: create a new trainer and a new DjlGuard");
            }
            return;
        }
        if (trainer != null) {
            throw new IllegalStateException("this DjlGuard guards another trainer (its state belongs to that model):"
                    + " create one DjlGuard per trainer");
        }
        Device[] devices = t.getDevices();
        if (devices.length != 1) {
            throw new IllegalStateException("DjlGuard guards single-device training; this trainer uses "
                    + Arrays.toString(devices) + ": configure one device (optDevices)");
        }
        ops = DjlOps.on(t.getManager());
        trainer = t;
    }

    private GradientSet<NDArray> gradients() {
        if (entries == null) {
            entries = describe(trainer.getModel().getBlock());
        }
        List<GradientTensor<NDArray>> out = new ArrayList<>(entries.size());
        for (Entry e : entries) {
            NDArray value = e.parameter().getArray();
            NDArray grad = ops.adopt(value.getGradient());
            out.add(new GradientTensor<>(e.key(), value.getShape().getShape(), e.role(), e.layer(),
                    Layout.outputFirst(), grad, value));
        }
        return GradientSet.of(out);
    }

    private static List<Entry> describe(Block block) {
        List<Entry> out = new ArrayList<>();
        for (Pair<String, Parameter> pair : block.getParameters()) {
            Parameter p = pair.getValue();
            if (!p.isInitialized()) {
                throw new IllegalStateException("parameter " + pair.getKey()
                        + " is not initialized: call trainer.initialize(inputShapes) before the first step");
            }
            if (p.requiresGradient()) {
                out.add(new Entry(pair.getKey(), p, role(p.getType()), layer(pair.getKey(), p.getName(), block)));
            }
        }
        return out;
    }

    private static Role role(Parameter.Type type) {
        return switch (type) {
            case WEIGHT -> Role.WEIGHT;
            case BIAS -> Role.BIAS;
            default -> Role.OTHER;
        };
    }

    /** "01SequentialBlock_02Linear_weight" with name "weight" belongs to layer "01SequentialBlock_02Linear". */
    private static String layer(String key, String name, Block root) {
        String suffix = "_" + name;
        if (key.endsWith(suffix) && key.length() > suffix.length()) {
            return key.substring(0, key.length() - suffix.length());
        }
        return root.getClass().getSimpleName();
    }

    @Override
    public String toString() {
        return "DjlGuard" + pipeline.stageNames();
    }
}
