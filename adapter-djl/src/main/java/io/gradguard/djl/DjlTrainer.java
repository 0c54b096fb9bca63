package io.gradguard.djl;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.ndarray.NDList;
import ai.djl.nn.Parameter;
import ai.djl.training.Trainer;
import ai.djl.training.TrainingConfig;
import ai.djl.training.evaluator.Evaluator;
import ai.djl.training.initializer.Initializer;
import ai.djl.training.listener.TrainingListener;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.util.PairList;
import ai.djl.util.Pair;
import io.gradguard.core.StepContext;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.function.Predicate;

/**
 * A DJL {@link Trainer} whose {@link #step()} runs the gradients through its {@link DjlGuard}
 * first and steps the optimizer only when the guard's pipeline says so: the hook for
 * {@code EasyTrain.fit}, which calls {@code trainer.step()} after every batch. Everything else is
 * the plain DJL trainer. Create it with {@link DjlGuard#newTrainer}. On several devices
 * ({@code optDevices}) the guard runs on the gradients DJL sums over the devices, inside its
 * parameter server's update, and every device's copy gets the same update (see {@link DjlOptimizer}).
 *
 * <p>Why a trainer and not a {@code TrainingListener}: {@code EasyTrain} notifies
 * {@code onTrainingBatch} after backward and then calls {@code trainer.step()} unconditionally. A
 * listener can change gradients but cannot stop that step, so it can neither accumulate
 * micro-batches nor skip a poisoned step without moving the optimizer's state.
 *
 * <p>What the trainer tells the pipeline about each micro-batch ({@link StepContext}): the batch
 * size, the number of examples passed to {@code forward} since the last step; the loss, the value
 * of the last {@code getLoss().evaluate(labels, predictions)} since the last step, copied to the
 * host at the step (one scalar). Monitors record it; NaN when the loss was not evaluated through
 * {@link #getLoss()} or is not a single value.
 *
 * <p>Loss scaling: with a {@code Transforms.dynamicLossScale()} stage, {@link #getLoss()} returns
 * the loss multiplied by {@link DjlGuard#lossScale()}, which is what {@code EasyTrain.trainBatch}
 * backpropagates; the stage divides the gradients by the same scale before anything reads them.
 *
 * <pre>{@code
 * DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
 * try (DjlTrainer trainer = guard.newTrainer(model, config)) {
 *     trainer.initialize(new Shape(64, 784));
 *     EasyTrain.fit(trainer, 5, trainingSet, null);
 * }
 * log.info("{} steps skipped", guard.skippedCount());
 * }</pre>
 */
public final class DjlTrainer extends Trainer {
    private final DjlGuard guard;
    private long examples;
    private GuardedLoss loss;
    private List<Evaluator> evaluators;

    DjlTrainer(Model model, TrainingConfig config, DjlGuard guard) {
        super(prepared(model, config), onDevices(model, config, guard));
        this.guard = guard;
    }

    /**
     * {@code config}, or on several devices the same config with its optimizer wrapped by the
     * guard ({@link DjlOptimizer}): DJL sums the devices' gradients inside {@code step()}, so the
     * guard runs there, on the sum.
     */
    private static TrainingConfig onDevices(Model model, TrainingConfig config, DjlGuard guard) {
        Device[] devices = config.getDevices();
        if (devices.length < 2) {
            return config;
        }
        Optimizer guarded = guard.wrapForDevices(model, config.getOptimizer(), devices.length);
        return new TrainingConfig() {
            @Override
            public Device[] getDevices() {
                return devices;
            }

            @Override
            public PairList<Initializer, Predicate<Parameter>> getInitializers() {
                return config.getInitializers();
            }

            @Override
            public Optimizer getOptimizer() {
                return guarded;
            }

            @Override
            public Loss getLossFunction() {
                return config.getLossFunction();
            }

            @Override
            public ExecutorService getExecutorService() {
                return config.getExecutorService();
            }

            @Override
            public List<Evaluator> getEvaluators() {
                return config.getEvaluators();
            }

            @Override
            public List<TrainingListener> getTrainingListeners() {
                return config.getTrainingListeners();
            }
        };
    }

    /** What {@code PtModel.newTrainer} does before creating a trainer: set the config's initializers. */
    private static Model prepared(Model model, TrainingConfig config) {
        if (model.getBlock() == null) {
            throw new IllegalStateException("the model has no block: call model.setBlock(block) before creating a trainer");
        }
        for (Pair<Initializer, Predicate<Parameter>> pair : config.getInitializers()) {
            if (pair.getKey() != null && pair.getValue() != null) {
                model.getBlock().setInitializer(pair.getKey(), pair.getValue());
            }
        }
        return model;
    }

    /** The guard this trainer steps through. */
    public DjlGuard guard() {
        return guard;
    }

    @Override
    public NDList forward(NDList input) {
        count(input);
        return super.forward(input);
    }

    @Override
    public NDList forward(NDList data, NDList labels) {
        count(data);
        return super.forward(data, labels);
    }

    private void count(NDList data) {
        if (!data.isEmpty() && data.head().getShape().dimension() > 0) {
            examples += data.head().getShape().get(0);
        }
    }

    /**
     * The config's loss, seen through the guard ({@link DjlGuard#loss}): multiplied by the guard's
     * loss scale (1 without a {@code lossScale} stage), and its last value kept for the next
     * {@link #step()}.
     */
    @Override
    public Loss getLoss() {
        if (loss == null) { // lazily: the superclass may ask before this class's fields are set
            Loss configured = super.getLoss();
            loss = configured instanceof GuardedLoss g ? g : new GuardedLoss(configured, () -> guard.lossScale());
        }
        return loss;
    }

    /**
     * DJL's evaluators, the loss among them seen through the same tap as {@link #getLoss()}: DJL's
     * listeners tell the loss from the other evaluators by identity ({@code evaluator == trainer.getLoss()},
     * e.g. for {@code TrainingResult.getTrainLoss()}).
     */
    @Override
    public List<Evaluator> getEvaluators() {
        if (evaluators == null) {
            GuardedLoss tap = (GuardedLoss) getLoss();
            List<Evaluator> out = new ArrayList<>(super.getEvaluators());
            out.replaceAll(e -> e == tap.wrapped() ? tap : e);
            evaluators = List.copyOf(out);
        }
        return evaluators;
    }

    /**
     * Runs the guard's pipeline on the gradients of the last backward pass; steps the optimizer if
     * the result applies, otherwise resets the gradients and leaves the optimizer untouched. On
     * several devices DJL's step runs, and the guard inside it on the gradients summed over the
     * devices (see {@link DjlOptimizer}).
     *
     * @throws IllegalStateException as {@link DjlGuard#step(Trainer, StepContext)}
     */
    @Override
    public void step() {
        StepContext context = StepContext.ofBatch(examples).withLoss(loss == null ? Double.NaN : loss.takeLoss());
        examples = 0;
        if (loss != null) {
            loss.takeExamples(); // this trainer counts what went through forward
        }
        if (getDevices().length > 1) {
            guard.stepInside(context, super::step);
        } else {
            guard.run(this, context, super::step);
        }
    }
}
