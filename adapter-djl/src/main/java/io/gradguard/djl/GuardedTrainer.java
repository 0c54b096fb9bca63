package io.gradguard.djl;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.nn.Parameter;
import ai.djl.training.Trainer;
import ai.djl.training.TrainingConfig;
import ai.djl.training.initializer.Initializer;
import ai.djl.util.Pair;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import java.util.Optional;
import java.util.function.Predicate;

/**
 * A DJL {@link Trainer} whose {@link #step()} runs the gradients through a {@link DjlGuard} first
 * and steps the optimizer only when the guard's pipeline says so: the route for
 * {@code EasyTrain.fit}, which calls {@code trainer.step()} after every batch. Everything else is
 * the plain DJL trainer.
 *
 * <p>Why a trainer and not a {@code TrainingListener}: {@code EasyTrain} notifies
 * {@code onTrainingBatch} after backward and then calls {@code trainer.step()} unconditionally. A
 * listener can change gradients but cannot stop that step, so it can neither accumulate micro-batches
 * nor skip a poisoned step without moving the optimizer's state.
 *
 * <pre>{@code
 * DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
 * try (Trainer trainer = guard.newTrainer(model, config)) {
 *     trainer.initialize(new Shape(64, 784));
 *     EasyTrain.fit(trainer, 5, trainingSet, null);
 *     System.out.println(guard.pipeline().skippedCount() + " steps skipped");
 * }
 * }</pre>
 *
 * <p>The batch size handed to the pipeline ({@link StepContext#batchSize()}) is the number of
 * examples passed to {@code forward} since the last step.
 */
public final class GuardedTrainer extends Trainer {
    private final DjlGuard guard;
    private long examples;
    private StepResult<NDArray> last;

    GuardedTrainer(Model model, TrainingConfig config, DjlGuard guard) {
        super(prepared(model, config), config);
        this.guard = guard;
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

    /** What the guard decided at the last {@link #step()}; empty before the first. */
    public Optional<StepResult<NDArray>> lastResult() {
        return Optional.ofNullable(last);
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
     * Runs the guard's pipeline on the gradients of the last backward pass; steps the optimizer if
     * the result applies, otherwise resets the gradients and leaves the optimizer untouched.
     *
     * @throws IllegalStateException as {@link DjlGuard#step(Trainer)}
     */
    @Override
    public void step() {
        StepContext context = StepContext.ofBatch(examples);
        examples = 0;
        last = guard.run(this, context, super::step);
    }
}
