package io.gradguard.djl;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.training.Trainer;
import ai.djl.training.TrainingConfig;
import ai.djl.training.listener.DivergenceCheckTrainingListener;
import ai.djl.training.listener.TrainingListener;
import ai.djl.training.listener.TrainingListenerAdapter;
import ai.djl.training.loss.Loss;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Guard;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.transform.NonFiniteGuard;
import io.gradguard.core.transform.ZeroNonFinite;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a {@link GradientPipeline} inside DJL training (PyTorch engine): between {@code backward}
 * and the optimizer, on the live gradients of the trainer's model, on their device. The shared
 * operations (counters, {@link #lastResult()}, {@link #accumulateInDouble()}, checkpoints with
 * {@link #saveState}/{@link #restoreState}, {@link #close()}) come from {@link Guard}; the DJL
 * hooks are:
 *
 * <p><b>{@code EasyTrain.fit}:</b> create the trainer with {@link #newTrainer(Model, TrainingConfig)}
 * (a {@link DjlTrainer}, whose {@code step()} goes through this guard), and pass DJL's listener
 * set through {@link #listeners} so that DJL's divergence check leaves a poisoned batch to the
 * pipeline:
 *
 * <pre>{@code
 * DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
 * TrainingConfig config = new DefaultTrainingConfig(Loss.l2Loss())
 *         .optOptimizer(Optimizer.adam().build())
 *         .addTrainingListeners(guard.listeners(TrainingListener.Defaults.logging()));
 * try (DjlTrainer trainer = guard.newTrainer(model, config)) {
 *     trainer.initialize(new Shape(64, 784));
 *     EasyTrain.fit(trainer, 5, trainingSet, validationSet);
 * }
 * log.info(guard.summary());
 * }</pre>
 *
 * <p><b>Hand-written loop:</b> call {@link #step(Trainer, StepContext)} where you called
 * {@code trainer.step()}:
 *
 * <pre>{@code
 * for (Batch batch : trainer.iterateDataset(data)) {
 *     float loss;
 *     try (GradientCollector gc = trainer.newGradientCollector()) {
 *         NDArray l = trainer.getLoss().evaluate(batch.getLabels(), trainer.forward(batch.getData()));
 *         loss = l.getFloat();
 *         gc.backward(l);
 *     }
 *     guard.step(trainer, StepContext.ofBatch(batch.getSize()).withLoss(loss));  // instead of trainer.step()
 *     batch.close();
 * }
 * }</pre>
 *
 * <p><b>Drop-in optimizer:</b> keep DJL's own trainer ({@code model.newTrainer}) and loop, and
 * wrap the optimizer with {@link #wrap} (a {@link DjlOptimizer}: the pipeline runs at the first
 * per-parameter call of each {@code trainer.step()}); {@link #loss} scales the loss for a
 * {@code lossScale} stage and hands the batch loss to the records:
 *
 * <pre>{@code
 * TrainingConfig config = new DefaultTrainingConfig(guard.loss(Loss.l2Loss()))
 *         .optOptimizer(guard.wrap(model, Optimizer.adam().build()));
 * try (Trainer trainer = model.newTrainer(config)) { ... EasyTrain.fit(trainer, 5, trainingSet, null); }
 * }</pre>
 *
 * <p>One guard uses one of these hooks, for one model.
 *
 * <p><b>Per call</b> (one micro-batch), the step of {@link Guard}: the gradients of the model's
 * parameters are handed to the pipeline as they live in PyTorch (layout {@code [out, in, ...]});
 * when the result {@link StepResult#applies() applies}, {@code trainer.step()} runs the optimizer
 * on the transformed gradients; when it is held (accumulation) or skipped, the optimizer does not
 * run (Adam's moments, update counts and the learning-rate schedule do not move) and every gradient
 * is reset to 0 with an in-place fill. Every array the guard creates during the call (gradient
 * handles, reductions, coefficients, parameter copies) is closed when the call ends; the result's
 * metrics were copied to the host before.
 *
 * <p><b>Update-to-parameter ratios</b> ({@link Monitor#wantsUpdates()}): on a measured step every
 * trainable parameter is copied before {@code trainer.step()} (one extra copy of the parameters in
 * device memory while the optimizer runs), then one subtraction and two reductions per parameter.
 * Use the monitor's {@code every(n)} to keep it rare on big models.
 *
 * <p><b>Several devices</b> ({@code TrainingConfig.optDevices}): {@link #newTrainer} and
 * {@link #wrap} (with {@link #listeners} in the config) guard the gradient DJL applies, the sum
 * over the devices, and decide skip and clip once for all of them; every device's copy of the
 * parameters gets the same update (see {@link DjlOptimizer}). {@link #step(Trainer, StepContext)}
 * refuses a trainer on several devices.
 *
 * <p>One guard guards one trainer; it is not thread-safe. Its long-lived buffers
 * live under the trainer's manager: {@link #close()} frees them (closing the trainer does too).
 *
 * <p>Reference: DJL {@code EasyTrain.trainBatch} / {@code Trainer.step}; PyTorch
 * {@code clip_grad_norm_}; docs/design.md, "a skip is a real skip".
 */
public final class DjlGuard extends Guard<NDArray, DjlGuard> {
    private static final Logger LOG = LoggerFactory.getLogger(DjlGuard.class);

    private Trainer trainer;
    private DjlOptimizer optimizer;
    private GuardedLoss loss;
    private DjlBlockModel model;
    private StepContext pending;

    private DjlGuard(GradientPipeline pipeline) {
        super(pipeline);
    }

    /**
     * A guard running the given pipeline.
     *
     * @throws IllegalArgumentException if {@code pipeline} is null
     * @throws IllegalStateException if another guard already runs {@code pipeline}
     */
    public static DjlGuard of(GradientPipeline pipeline) {
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

    /**
     * A trainer for {@code model} whose {@code step()} runs through this guard: pass it to
     * {@code EasyTrain.fit}. Equivalent to {@code model.newTrainer(config)} (the config's
     * initializers are set on the block), except that a model loaded from disk keeps its frozen
     * parameters frozen: unfreeze them yourself with {@code block.freezeParameters(false)}.
     *
     * <p>A config whose listeners include DJL's {@link DivergenceCheckTrainingListener} while the
     * pipeline decides about non-finite gradients is logged as a warning: that check would stop
     * training at the first NaN batch, before the guard can skip it (see {@link #listeners}).
     *
     * @throws IllegalArgumentException if {@code model} or {@code config} is null
     * @throws IllegalStateException if the model has no block, or this guard already guards a trainer
     */
    public DjlTrainer newTrainer(Model model, TrainingConfig config) {
        Checks.notNull("model", model);
        Checks.notNull("config", config);
        ensureOpen();
        ensureUnbound();
        if (decidesNonFinite() && config.getTrainingListeners().stream().anyMatch(DivergenceCheckTrainingListener.class::isInstance)) {
            LOG.warn("GradGuard: the training config has DJL's DivergenceCheckTrainingListener, which throws on a NaN loss"
                    + " before the guard can skip the batch; pass your listeners through guard.listeners(...), e.g."
                    + " config.addTrainingListeners(guard.listeners(TrainingListener.Defaults.logging()))");
        }
        DjlTrainer t = new DjlTrainer(model, config, this);
        trainer = t;
        return t;
    }

    /**
     * DJL's listener set with its divergence check handed over to this guard: every
     * {@link DivergenceCheckTrainingListener} (in {@code TrainingListener.Defaults.basic()},
     * {@code logging()}, ...) is left out when the pipeline decides about non-finite gradients
     * ({@code skipNonFinite}, {@code nonFinite(SKIP | ZERO | THROW)}, {@code zeroNonFinite()},
     * {@code zeroNaN()}); the other listeners are kept in order. DJL's check throws
     * {@code TrainingDivergedException} from {@code onTrainingBatch} as soon as a batch's loss is
     * NaN, before {@code trainer.step()} where the guard skips the batch; with this set, a poisoned
     * batch is skipped and training goes on, and past {@code skipNonFinite(n)}'s limit the pipeline
     * gives up with its own {@link IllegalStateException}. A pipeline without such a stage keeps
     * DJL's check (nothing else would stop a diverged run).
     *
     * <p>DJL's epoch loss (its evaluator's epoch and progress accumulators, shown by the logging
     * listener) includes the skipped batch's NaN until the epoch ends.
     *
     * <p>The set ends with one listener of the guard's own: when the trainer is created
     * ({@code onTrainingBegin}) it tells the guard the trainer's devices, which a {@link DjlOptimizer}
     * ({@link #wrap}) needs on several devices; it does nothing else.
     *
     * <pre>{@code
     * config.addTrainingListeners(guard.listeners(TrainingListener.Defaults.logging()));
     * }</pre>
     *
     * @return a new array
     * @throws IllegalArgumentException if {@code listeners} or one of them is null
     */
    public TrainingListener[] listeners(TrainingListener... listeners) {
        Checks.notNull("listeners", listeners);
        boolean decides = decidesNonFinite();
        List<TrainingListener> out = new ArrayList<>(listeners.length);
        for (int i = 0; i < listeners.length; i++) {
            TrainingListener l = Checks.notNull("listeners[" + i + "]", listeners[i]);
            if (!(decides && l instanceof DivergenceCheckTrainingListener)) {
                out.add(l);
            }
        }
        out.add(new DeviceListener(this));
        return out.toArray(new TrainingListener[0]);
    }

    /** Whether a stage of the pipeline acts on non-finite gradients (so a NaN batch is its business, not DJL's). */
    boolean decidesNonFinite() {
        for (GradientTransform t : pipeline().transforms()) {
            if (t instanceof ZeroNonFinite || t instanceof NonFiniteGuard g && g.policy() != NonFiniteGuard.Policy.PROPAGATE) {
                return true;
            }
        }
        return false;
    }

    /**
     * Transforms the gradients of the last backward pass, then steps {@code trainer} if the
     * pipeline says so; otherwise resets the gradients and leaves the optimizer alone. Call it
     * instead of {@code trainer.step()} on a plain DJL trainer (a {@link DjlTrainer} runs the guard
     * in its own {@code step()}). Prefer {@link #step(Trainer, StepContext)} with the batch's size
     * and loss: the monitor's records then carry the loss.
     *
     * @return what happened; its metrics are host values
     * @throws IllegalArgumentException if {@code trainer} is null
     * @throws IllegalStateException as {@link #step(Trainer, StepContext)}
     */
    public StepResult<NDArray> step(Trainer trainer) {
        return step(trainer, StepContext.empty());
    }

    /**
     * As {@link #step(Trainer)}, with what is known about the micro-batch (batch size, loss,
     * weight for weighted accumulation): {@code guard.step(trainer, StepContext.ofBatch(64).withLoss(loss))}.
     *
     * @throws IllegalArgumentException if {@code trainer} or {@code context} is null
     * @throws IllegalStateException if {@code trainer} is a {@link DjlTrainer} (its own {@code step()}
     *     already runs the pipeline: call {@code trainer.step()}), the guard guards another trainer or
     *     is closed, the trainer is closed or trains on several devices (use {@link #newTrainer} or
     *     {@link #wrap} there), the model is not initialized,
     *     or a stage gives up (e.g. too many consecutive non-finite steps)
     */
    public StepResult<NDArray> step(Trainer trainer, StepContext context) {
        Checks.notNull("trainer", trainer);
        if (trainer instanceof DjlTrainer) {
            // its step() runs the guard again: the pipeline would run twice per batch
            throw new IllegalStateException("this trainer already steps through its guard: call trainer.step() instead of"
                    + " DjlGuard.step(trainer), which would run the pipeline twice per batch (clipping twice, counting"
                    + " two micro-batches)");
        }
        return run(trainer, context, trainer::step);
    }

    /**
     * {@code optimizer} guarded by this guard, for {@code model}'s training config: DJL's own
     * trainer, {@code EasyTrain.fit} and hand-written loops with plain {@code trainer.step()} then
     * run unchanged, and the pipeline runs once per {@code trainer.step()} (see {@link DjlOptimizer}).
     *
     * <pre>{@code
     * TrainingConfig config = new DefaultTrainingConfig(guard.loss(Loss.l2Loss()))
     *         .optOptimizer(guard.wrap(model, Optimizer.adam().build()));
     * Trainer trainer = model.newTrainer(config);
     * }</pre>
     *
     * @param model the model whose block's trainable parameters the optimizer updates (its block
     *     may be set later, before the first step)
     * @throws IllegalArgumentException if {@code model} or {@code optimizer} is null, or
     *     {@code optimizer} is already a {@link DjlOptimizer}
     * @throws IllegalStateException if the guard is closed or already guards a trainer or an optimizer
     */
    public DjlOptimizer wrap(Model model, ai.djl.training.optimizer.Optimizer optimizer) {
        Checks.notNull("model", model);
        Checks.notNull("optimizer", optimizer);
        if (optimizer instanceof DjlOptimizer) {
            throw new IllegalArgumentException("optimizer must not be a DjlOptimizer (it already runs a guard), got " + optimizer);
        }
        ensureOpen();
        ensureUnbound();
        DjlOptimizer wrapped = new DjlOptimizer(this, model, optimizer);
        this.optimizer = wrapped;
        return wrapped;
    }

    /**
     * {@code loss} as this guard needs it in a training config: multiplied by {@link #lossScale()}
     * (the pipeline's {@code lossScale} stage; 1 without one) in {@code evaluate}, which is what
     * {@code EasyTrain.trainBatch} backpropagates, and its unscaled value and batch size handed to
     * the guard's next step (monitor records) when the guard runs through {@link #wrap}. DJL's
     * epoch and progress losses stay unscaled. A {@link DjlTrainer} scales its config's loss
     * itself; there this is optional. In a hand-written loop that evaluates its own loss, multiply
     * it by {@code guard.lossScale()} before {@code backward} instead.
     *
     * @throws IllegalArgumentException if {@code loss} is null
     * @throws IllegalStateException if this guard already gave out a loss
     */
    public Loss loss(Loss loss) {
        Checks.notNull("loss", loss);
        if (this.loss != null) {
            throw new IllegalStateException("this DjlGuard already gave out a loss (" + this.loss.getName()
                    + "): one loss per guard, use the first one");
        }
        this.loss = new GuardedLoss(loss, this::lossScale);
        return this.loss;
    }

    /**
     * The guarded step of a {@link DjlOptimizer}, inside DJL's {@code trainer.step()}: at its first
     * call on one device, after DJL's last call on several.
     */
    void runWrapped(DjlOptimizer wrapped) {
        ensureOpen();
        if (model == null) {
            Model m = wrapped.model();
            model = new DjlBlockModel(wrapped.manager(), m.getBlock(), wrapped::value, wrapped::updateAll, wrapped.foldsScales(),
                    accumulatesInDouble());
        }
        StepContext context = pending != null ? pending
                : loss == null ? StepContext.empty() : StepContext.ofBatch(loss.takeExamples()).withLoss(loss.takeLoss());
        step(model, context);
    }

    /**
     * A {@link DjlTrainer} on several devices: its config's optimizer, guarded by this guard's
     * {@link DjlOptimizer} (which sees the gradients DJL's parameter server sums over the devices).
     */
    DjlOptimizer wrapForDevices(Model model, ai.djl.training.optimizer.Optimizer optimizer, int devices) {
        DjlOptimizer wrapped = wrap(model, optimizer);
        wrapped.devices(devices);
        return wrapped;
    }

    /** A {@link DjlTrainer}'s step on several devices: DJL's step with {@code context} for the guard's records. */
    void stepInside(StepContext context, Runnable trainerStep) {
        ensureOpen();
        pending = context;
        try {
            trainerStep.run();
        } finally {
            pending = null;
        }
    }

    /** Tells a wrapped optimizer the device count of the trainer being created (see {@link #listeners}). */
    void trainerCreated(Trainer created) {
        if (optimizer != null) {
            optimizer.devices(created.getDevices().length);
        }
    }

    /** The listener {@link #listeners} adds: tells the guard the devices of the trainer it is created for. */
    private static final class DeviceListener extends TrainingListenerAdapter {
        private final DjlGuard guard;

        DeviceListener(DjlGuard guard) {
            this.guard = guard;
        }

        @Override
        public void onTrainingBegin(Trainer trainer) {
            guard.trainerCreated(trainer);
        }
    }

    private void ensureUnbound() {
        if (trainer != null || optimizer != null) {
            throw new IllegalStateException("this DjlGuard already guards " + (trainer != null ? "a trainer" : "an optimizer")
                    + ": create one DjlGuard per model, and use either guard.newTrainer, guard.step(trainer) or guard.wrap");
        }
    }

    /** The guarded step on {@code t}, with the optimizer call supplied (a {@link DjlTrainer} passes {@code super.step()}). */
    StepResult<NDArray> run(Trainer t, StepContext context, Runnable optimizerStep) {
        Checks.notNull("context", context);
        ensureOpen();
        if (optimizer != null) {
            throw new IllegalStateException("this DjlGuard runs inside the optimizer it wrapped (guard.wrap): call"
                    + " trainer.step() on a plain trainer; the pipeline would otherwise run twice per batch");
        }
        if (trainer != null && trainer != t) {
            throw new IllegalStateException("this DjlGuard guards another trainer (its state belongs to that model):"
                    + " create one DjlGuard per trainer");
        }
        if (model == null) {
            model = DjlBlockModel.of(t, optimizerStep, accumulatesInDouble());
            trainer = t;
        }
        return step(model, context);
    }

    @Override
    protected void closeResources() {
        if (model != null) {
            model.close();
        }
    }
}
