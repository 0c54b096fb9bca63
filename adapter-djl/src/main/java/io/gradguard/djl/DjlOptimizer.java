package io.gradguard.djl;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.util.Pair;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
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
 * <p><b>A clip costs no pass of its own.</b> When the wrapped optimizer is one of DJL's SGD, NAG,
 * Adam or AdamW (built with the default {@code optRescaleGrad(1)}), a clip's scale c of a float32
 * gradient on the CPU is not multiplied in: it stays pending while later stages and the monitor
 * read the gradient (their reductions fold it: Σ(c·g)² = c²·Σg², max|c·g| = c·max|g|; any
 * other use applies it first), and the optimizer then takes it as its gradient rescale for that
 * one update. DJL's update multiplies its copy of the gradient by the rescale before clamping or
 * weight decay ({@code rescaled = clip(rescale · grad) + wd · weight}), so the parameters come out
 * bit for bit as with the clip's own multiplication, one pass over the gradients fewer. Likewise
 * a clamp ({@code clipByValue}), which DJL can only write to a new array: that array is what the
 * optimizer reads as the gradient, and the gradient is filled with 0 (as the fused update would
 * leave it) instead of having the clamped values copied back. Other optimizers (a subclass
 * included), another rescale, float16 and GPU gradients get the multiplication and the copy.
 *
 * <p>Every trainable parameter of the block is updated at each applied step, also one that took
 * no part in the forward pass (DJL's own step would leave it alone).
 *
 * <p><b>Several devices</b> ({@code TrainingConfig.optDevices}). DJL keeps one copy of every
 * parameter per device and, in {@code trainer.step()}, its {@code LocalParameterServer} takes one
 * parameter at a time: it adds the other devices' gradients into the first device's gradient and
 * calls the optimizer once per device copy with that sum. This optimizer then waits until DJL has
 * called it for every trainable parameter on every device (so every first-device gradient holds
 * the sum over the devices, the gradient DJL applies), clears the other devices' gradients, and
 * runs the guard's step once on the summed gradients, on the first device: a non-finite value on
 * any device skips the step for all, a global-norm clip uses the norm of the sum. When the step
 * applies, the wrapped optimizer updates the first device's copy and every other copy is set to
 * it, so all copies stay equal (DJL's own per-device calls advance the wrapped optimizer's update
 * count once per device, so its copies can drift apart under Adam; here the count moves once per
 * step, as on one device). When it is held or skipped, no copy moves and every gradient is 0. The
 * guard learns the trainer's device count from {@link DjlGuard#listeners} (a listener of that set
 * reads {@code trainer.getDevices()} when the trainer is created) or from a {@link DjlTrainer},
 * which uses this optimizer on several devices by itself:
 *
 * <pre>{@code
 * TrainingConfig config = new DefaultTrainingConfig(guard.loss(Loss.l2Loss()))
 *         .optDevices(new Device[] {Device.gpu(0), Device.gpu(1)})
 *         .optOptimizer(guard.wrap(model, Optimizer.adam().build()))
 *         .addTrainingListeners(guard.listeners(TrainingListener.Defaults.logging()));
 * }</pre>
 *
 * <p>Limits: on one device, the trainer's device must be the model's (DJL then updates the model's
 * arrays themselves). A parameter of another model, a copy on another device while the guard does
 * not know the trainer's devices (add {@code guard.listeners(...)}; the first step has then already
 * updated the first device's copies on its own gradients), or a {@code trainer.step()} that does
 * not reach every trainable parameter on every device (call {@code trainer.initialize} first) is
 * refused with an {@link IllegalStateException}. {@code DjlGuard.step(trainer)} and
 * {@link DjlGuard#newTrainer} are refused on a guard that wraps an optimizer (the pipeline would
 * run twice per batch).
 *
 * <p>This optimizer's own builder values ({@code rescaleGrad}, {@code clipGrad}, weight decay) are
 * unused: those of the wrapped optimizer apply (its {@code rescaleGrad} is set to a pending clip
 * scale for the one update that takes it, and back to 1 after).
 */
public final class DjlOptimizer extends Optimizer {
    private static final NDIndex ALL = new NDIndex("...");
    private final DjlGuard guard;
    private final Model model;
    private final Optimizer optimizer;
    private final Set<String> seen = new HashSet<>();
    private Map<String, Parameter> parameters;
    /** The trainer's device count; 0 while unknown (one device is assumed, and checked). */
    private int devices;
    /** On several devices: each parameter's copies, in DJL's device order (learned from DJL's calls). */
    private final Map<String, NDArray[]> copies = new HashMap<>();
    /** On several devices: this step's calls per parameter, and in all. */
    private final Map<String, Integer> calls = new HashMap<>();
    private int stepCalls;
    private NDManager firstDevice;
    private long folded;
    private long replaced;

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
     * Tells this optimizer how many devices its trainer trains on (from {@code trainer.getDevices()}).
     *
     * @throws IllegalStateException if it was told another count before (a second trainer)
     */
    void devices(int count) {
        if (devices != 0 && devices != count) {
            throw new IllegalStateException("this DjlOptimizer serves a trainer on " + devices + " device(s), not "
                    + count + ": wrap a new optimizer, with a new DjlGuard, for each trainer");
        }
        devices = count;
    }

    /** The array holding {@code p}'s value and gradient for the guard: the first device's copy. */
    NDArray value(Parameter p) {
        return devices > 1 ? copies.get(p.getId())[0] : p.getArray();
    }

    /** On several devices, {@code p}'s copies in DJL's device order (learned at the first step); else none. */
    List<NDArray> copies(Parameter p) {
        NDArray[] c = copies.get(p.getId());
        return c == null ? List.of() : List.of(c);
    }

    /** The manager the guard's arrays live under: the model's, or a sub-manager on the first device. */
    NDManager manager() {
        NDManager m = model.getNDManager();
        if (devices <= 1) {
            return m;
        }
        if (firstDevice == null) {
            ai.djl.Device first = copies.values().iterator().next()[0].getDevice();
            firstDevice = first.equals(m.getDevice()) ? m : m.newSubManager(first);
        }
        return firstDevice;
    }

    /**
     * Called by DJL once per parameter (and device copy) in {@code trainer.step()}: on one device
     * the first call of a step runs the guard (and, if the step applies, the wrapped optimizer on
     * every parameter), on several the last call does; the others do nothing.
     *
     * @throws IllegalStateException if {@code parameterId} is not a trainable parameter of the
     *     bound model, {@code weight} is not that parameter's own array on one device (training on
     *     another device, or on several without {@code guard.listeners(...)}), a step misses a
     *     parameter or device, the model is not initialized, the guard is closed, or a stage gives up
     */
    @Override
    public void update(String parameterId, NDArray weight, NDArray grad) {
        Parameter p = parameters().get(parameterId);
        if (p == null) {
            throw new IllegalStateException("this DjlOptimizer got parameter " + parameterId
                    + ", which is not a trainable parameter of its model " + model.getName()
                    + ": wrap a new optimizer for each model, with a new DjlGuard");
        }
        if (devices > 1) {
            collect(parameterId, weight);
            return;
        }
        if (weight != p.getArray() && seen.contains(parameterId)) {
            throw new IllegalStateException("parameter " + p.getName() + " has a copy on device " + weight.getDevice()
                    + ": the trainer trains on several devices, and the guard did not learn them before the first step"
                    + " (which updated the first device's copies alone): add guard.listeners(...) to the training config"
                    + " (config.addTrainingListeners(guard.listeners(TrainingListener.Defaults.logging()))), or create"
                    + " the trainer with guard.newTrainer(model, config)");
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

    /**
     * On several devices: records the call; once DJL has called for every trainable parameter on
     * every device, runs the guard's step on the summed gradients.
     */
    private void collect(String id, NDArray weight) {
        int k = calls.merge(id, 1, Integer::sum) - 1;
        if (k >= devices) {
            calls.clear();
            stepCalls = 0;
            throw new IllegalStateException("trainer.step() did not update every trainable parameter on each of its "
                    + devices + " devices (parameter " + id + " came again): call trainer.initialize(inputShapes)"
                    + " before training, so that DJL's parameter store holds every parameter on every device");
        }
        NDArray[] c = copies.computeIfAbsent(id, x -> new NDArray[devices]);
        if (c[k] == null) {
            c[k] = weight;
        } else if (c[k] != weight) {
            throw new IllegalStateException("the copy of parameter " + id + " on device " + weight.getDevice()
                    + " changed between steps: one DjlOptimizer serves one trainer");
        }
        if (++stepCalls == parameters.size() * devices) {
            calls.clear();
            stepCalls = 0;
            for (NDArray[] each : copies.values()) {
                for (int d = 1; d < each.length; d++) { // DJL added them into the first copy's gradient
                    try (NDArray g = each[d].getGradient()) {
                        g.set(ALL, 0f);
                    }
                }
            }
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
     * place ({@code gradients[i]}, the step's handle, which the step closes): no copy of the
     * gradient (DJL's fused update leaves it at 0, as after a plain step), times {@code factors[i]} through the gradient rescale where a clip's scale is pending on it
     * (see {@link #foldsScales()}), or on {@code replacements[i]} where a clamp left the gradient's
     * values in a new array (the gradient is then filled with 0, as the fused update would have
     * left it). On several devices the first device's copy is updated and the other copies are set to it.
     */
    void updateAll(NDArray[] gradients, NDArray[] replacements, double[] factors) {
        int i = 0;
        for (Parameter p : parameters().values()) {
            NDArray value = value(p);
            NDArray g = gradients[i];
            NDArray replacement = replacements[i];
            double factor = factors[i++];
            NDArray read = replacement == null ? g : replacement;
            if (factor == 1.0) {
                optimizer.update(p.getId(), value, read);
            } else {
                updateRescaled(p.getId(), value, read, (float) factor);
            }
            if (replacement != null) {
                g.set(ALL, 0f);
                replaced++;
            }
            if (devices > 1) {
                NDArray[] c = copies.get(p.getId());
                for (int d = 1; d < c.length; d++) {
                    try (NDArray moved = value.toDevice(c[d].getDevice(), true)) {
                        c[d].set(ALL, moved);
                    }
                }
            }
        }
    }

    /**
     * The wrapped optimizer's update with its gradient rescale set to {@code factor} for this one
     * call: the optimizer multiplies its copy of the gradient by it first
     * ({@code rescaled = clip(rescale · grad) + wd · weight}), exactly the multiplication the clip
     * would have made in a pass of its own.
     */
    private void updateRescaled(String id, NDArray value, NDArray grad, float factor) {
        try {
            RESCALE_GRAD.setFloat(optimizer, factor);
            optimizer.update(id, value, grad);
            folded++;
        } catch (IllegalAccessException e) {
            throw new IllegalStateException("cannot set the gradient rescale of " + optimizer.getClass().getName(), e);
        } finally {
            try {
                RESCALE_GRAD.setFloat(optimizer, 1f);
            } catch (IllegalAccessException ignored) {
                // set just above: cannot fail here
            }
        }
    }

    /**
     * Whether a clip's scale can be left to the wrapped optimizer's gradient rescale: one of DJL's
     * built-in optimizers that multiply the gradient by {@code rescaleGrad} before anything else
     * (SGD, NAG, Adam, AdamW; not a subclass, which may not), with its rescale at the default 1 (so
     * the product is the clip's own multiplication, bit for bit).
     */
    boolean foldsScales() {
        if (RESCALE_GRAD == null || !FOLDING.contains(optimizer.getClass())) {
            return false;
        }
        try {
            return RESCALE_GRAD.getFloat(optimizer) == 1f;
        } catch (IllegalAccessException e) {
            return false;
        }
    }

    /** How many parameter updates read a clamp's result instead of the gradient (for tests). */
    long replacedUpdates() {
        return replaced;
    }

    /** How many parameter updates took a clip's scale through the gradient rescale (for tests). */
    long foldedUpdates() {
        return folded;
    }

    private static final Set<Class<?>> FOLDING = Set.of(ai.djl.training.optimizer.Sgd.class, ai.djl.training.optimizer.Nag.class,
            ai.djl.training.optimizer.Adam.class, ai.djl.training.optimizer.AdamW.class);

    /** {@code Optimizer.rescaleGrad} (protected), or null where the runtime does not let it be set. */
    private static final java.lang.reflect.Field RESCALE_GRAD = rescaleGrad();

    private static java.lang.reflect.Field rescaleGrad() {
        try {
            java.lang.reflect.Field f = Optimizer.class.getDeclaredField("rescaleGrad");
            f.setAccessible(true);
            return f;
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null;
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
