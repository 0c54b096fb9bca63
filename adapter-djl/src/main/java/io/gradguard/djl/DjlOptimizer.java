package io.gradguard.djl;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.util.Pair;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * A DJL {@link Optimizer} that runs its {@link DjlGuard}'s pipeline before the optimizer it wraps:
 * the drop-in hook. Put it in the training config and keep DJL's own trainer, {@code EasyTrain.fit}
 * or a hand-written loop with plain {@code trainer.step()}:
 *
 * <pre>{@code
 * DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.accumulate(4), Transforms.clipByGlobalNorm(1.0));
 * TrainingConfig config = new DefaultTrainingConfig(guard.loss(Loss.l2Loss()))    // loss scale, loss in the records
 *         .optOptimizer(guard.wrap(model, Optimizer.adam().build()))
 *         .addTrainingListeners(guard.listeners(TrainingListener.Defaults.logging()));
 * try (Trainer trainer = model.newTrainer(config)) {
 *     trainer.initialize(new Shape(64, 784));
 *     EasyTrain.fit(trainer, 5, trainingSet, validationSet);
 * }
 * }</pre>
 *
 * <p><b>How.</b> DJL calls an optimizer once per parameter inside {@code trainer.step()}
 * ({@code ParameterStore.updateAllParameters()}), in the order of its parameter map. At the first
 * call of a step this optimizer reads the gradients of every trainable parameter of the model's
 * block, runs the guard's step once, and, if the result applies, runs the wrapped optimizer on
 * every one of those parameters right then (with a copy of the transformed gradient, as DJL's
 * {@code LocalParameterServer} passes a copy); the step's other calls do nothing. When the result
 * is held (accumulation) or skipped, the wrapped optimizer is called for no parameter (Adam's
 * moments, its update counts and the learning-rate tracker keyed on them do not move) and every
 * gradient is reset to 0 with an in-place fill (DJL zeroes gradients inside the optimizer's fused
 * update, which did not run). A new step begins at a call for a parameter already seen since the
 * last one began, or once every trainable parameter has been seen.
 *
 * <p>Every trainable parameter of the block is updated at each applied step, also one that took
 * no part in the forward pass (DJL's own step would leave it alone).
 *
 * <p>Limits: one model on one device, the model's own (the trainer's device must be the model's:
 * DJL then updates the model's arrays themselves); a trainer on several devices, or a parameter of
 * another model, is refused at {@code trainer.step()} with an {@link IllegalStateException}.
 * {@code DjlGuard.step(trainer)} and {@link DjlGuard#newTrainer} are refused on a guard that wraps
 * an optimizer (the pipeline would run twice per batch).
 *
 * <p>This optimizer's own builder values ({@code rescaleGrad}, {@code clipGrad}, weight decay) are
 * unused: those of the wrapped optimizer apply.
 */
public final class DjlOptimizer extends Optimizer {
    private final DjlGuard guard;
    private final Model model;
    private final Optimizer optimizer;
    private final Set<String> seen = new HashSet<>();
    private Map<String, Parameter> parameters;

    DjlOptimizer(DjlGuard guard, Model model, Optimizer optimizer) {
        super(new Unused());
        this.guard = guard;
        this.model = model;
        this.optimizer = optimizer;
    }

    /** The optimizer this one guards (its state: Adam's moments and update counts). */
    public Optimizer wrapped() {
        return optimizer;
    }

    /** The guard whose pipeline runs before the wrapped optimizer. */
    public DjlGuard guard() {
        return guard;
    }

    Model model() {
        return model;
    }

    /**
     * Called by DJL once per parameter in {@code trainer.step()}: the first call of a step runs the
     * guard (and, if the step applies, the wrapped optimizer on every parameter); the others do
     * nothing.
     *
     * @throws IllegalStateException if {@code parameterId} is not a trainable parameter of the
     *     bound model, {@code weight} is not that parameter's own array (training on another or
     *     several devices), the model is not initialized, the guard is closed, or a stage gives up
     */
    @Override
    public void update(String parameterId, NDArray weight, NDArray grad) {
        Parameter p = parameters().get(parameterId);
        if (p == null) {
            throw new IllegalStateException("this DjlOptimizer got parameter " + parameterId
                    + ", which is not a trainable parameter of its model " + model.getName()
                    + ": wrap a new optimizer for each model, with a new DjlGuard");
        }
        if (weight != p.getArray()) {
            throw new IllegalStateException("parameter " + p.getName() + " is updated on a copy on device "
                    + weight.getDevice() + ", not on the model's array (device " + p.getArray().getDevice()
                    + "): a DjlOptimizer guards training on the model's own device only; configure that one device (optDevices)");
        }
        if (startsStep(parameterId)) {
            guard.runWrapped(this);
        }
    }

    /** Whether the call for {@code id} begins a new step (records it as seen). */
    private boolean startsStep(String id) {
        boolean starts = seen.isEmpty() || seen.contains(id) || seen.size() == parameters.size();
        if (starts) {
            seen.clear();
        }
        seen.add(id);
        return starts;
    }

    /**
     * The wrapped optimizer's update of every trainable parameter, on its (transformed) gradient in
     * place: no copy of the gradient (DJL's fused update leaves it at 0, as after a plain step).
     */
    void updateAll() {
        for (Parameter p : parameters().values()) {
            NDArray value = p.getArray();
            try (NDArray g = value.getGradient()) {
                optimizer.update(p.getId(), value, g);
            }
        }
    }

    /** The block's trainable parameters by id, in block order (the order {@link DjlBlockModel} reads them in). */
    private Map<String, Parameter> parameters() {
        if (parameters == null) {
            Block block = model.getBlock();
            if (block == null) {
                throw new IllegalStateException("the model has no block: call model.setBlock(block) before training");
            }
            Map<String, Parameter> out = new LinkedHashMap<>();
            for (Pair<String, Parameter> pair : block.getParameters()) {
                if (pair.getValue().requiresGradient()) {
                    out.put(pair.getValue().getId(), pair.getValue());
                }
            }
            parameters = out;
        }
        return parameters;
    }

    /** The builder {@link Optimizer}'s constructor wants; its values are never used. */
    private static final class Unused extends OptimizerBuilder<Unused> {
        @Override
        protected Unused self() {
            return this;
        }
    }
}
