package io.gradguard.djl;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.training.Trainer;
import ai.djl.util.Pair;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepResult;
import io.gradguard.core.spi.GuardedModel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A DJL block's trainable parameters as the guard's step sees it ({@link GuardedModel}): their
 * gradients, the optimizer step (a trainer's {@code step()}, or a {@link DjlOptimizer}'s wrapped
 * optimizer run on every parameter), and the step's scope of temporaries.
 *
 * <p>Gradient access: every parameter of {@code block.getParameters()} that requires a gradient,
 * in that order, described once: name = the parameter's key ({@code "01Linear_weight"}), layer =
 * the key's block path ({@code "01Linear"}), role and layout by the declaring block's type as
 * {@link DjlLayouts} tabulates (PyTorch's {@code [out, in, ...]}: axis 0; normalization scales and
 * biases whole; blocks it does not know get a default and one warning naming them), the parameter's
 * value attached for adaptive clipping. Each step reads a new handle on each live gradient
 * ({@code getGradient()}); stages change the gradients in place.
 */
final class DjlBlockModel implements GuardedModel<NDArray>, AutoCloseable {
    /** Block types already named in the "no known layout" warning: it is given once per type and process. */
    private static final Set<String> WARNED_TYPES = java.util.concurrent.ConcurrentHashMap.newKeySet();

    private static final Logger LOG = LoggerFactory.getLogger(DjlGuard.class);
    private final NDManager manager;
    private final Block block;
    private final OptimizerStep optimizerStep;
    private final boolean foldScales;
    private final Function<Parameter, NDArray> values;
    private final DjlOps ops;
    private List<Entry> entries;
    /** This step's gradient handles, in entry order. */
    private final List<NDArray> handles = new ArrayList<>();

    /** What the guard knows about one parameter (computed once). */
    private record Entry(String key, Parameter parameter, Role role, String layer, Layout layout) {
    }

    /**
     * @param manager the manager the guard's arrays live under (the trainer's or the model's)
     * @param optimizerStep the optimizer's update of every parameter ({@code trainer::step}, {@code super::step}
     *     in a {@link DjlTrainer}, or a {@link DjlOptimizer}'s pass over the parameters)
     * @throws IllegalStateException if {@code manager} is closed
     */
    DjlBlockModel(NDManager manager, Block block, Runnable optimizerStep, boolean accumulateInDouble) {
        this(manager, block, Parameter::getArray, (gradients, replacements, factors) -> optimizerStep.run(), false, accumulateInDouble);
    }

    /**
     * The optimizer's update of every parameter, in the order of {@link #parameters()}, each on its
     * gradient times {@code factors[i]} (a clip's scale left to the optimizer's gradient rescale; 1
     * where nothing is pending).
     */
    @FunctionalInterface
    interface OptimizerStep {
        /**
         * @param gradients per parameter, this step's handle on its gradient (closed with the step)
         * @param replacements per parameter, null, or the array holding its gradient's values (a
         *     clamp's result) for the optimizer to read instead; the gradient itself must then be reset
         * @param factors per parameter, its gradient's pending scale (1 if none)
         */
        void run(NDArray[] gradients, NDArray[] replacements, double[] factors);
    }

    /**
     * As above, with the array that holds each parameter's value and gradient: {@code values} maps a
     * parameter to the array the optimizer updates and whose gradient the step reads (the copy on
     * the first training device when a {@link DjlOptimizer} guards several devices). With
     * {@code foldScales} (an optimizer that reads its gradient through a rescale factor), a clip's
     * scale of a gradient is handed to {@code optimizerStep} as a factor instead of a pass of its own.
     */
    DjlBlockModel(NDManager manager, Block block, Function<Parameter, NDArray> values, OptimizerStep optimizerStep,
            boolean foldScales, boolean accumulateInDouble) {
        this.manager = manager;
        this.block = block;
        this.values = values;
        this.optimizerStep = optimizerStep;
        this.foldScales = foldScales;
        this.ops = DjlOps.on(manager, accumulateInDouble);
    }

    /** A trainer's model, stepped by {@code optimizerStep}: refuses a trainer on several devices (a {@link DjlOptimizer} guards those). */
    static DjlBlockModel of(Trainer trainer, Runnable optimizerStep, boolean accumulateInDouble) {
        Device[] devices = trainer.getDevices();
        if (devices.length != 1) {
            throw new IllegalStateException("DjlGuard.step(trainer) guards single-device training; this trainer uses "
                    + Arrays.toString(devices) + ": on several devices create the trainer with guard.newTrainer(model, config),"
                    + " or put guard.wrap(model, optimizer) and guard.listeners(...) in its config");
        }
        return new DjlBlockModel(trainer.getManager(), trainer.getModel().getBlock(), optimizerStep, accumulateInDouble);
    }

    /** The parameters the guard reads, in block order (described at the first call). */
    List<Parameter> parameters() {
        return described().stream().map(Entry::parameter).toList();
    }

    private List<Entry> described() {
        if (entries == null) {
            entries = describe(block);
        }
        return entries;
    }

    @Override
    public DjlOps ops() {
        return ops;
    }

    /**
     * @throws IllegalStateException if the trainer or model is closed, or the model is not initialized
     */
    @Override
    public GradientSet<NDArray> gradients() {
        if (!manager.isOpen()) {
            throw new IllegalStateException("the trainer or model is closed: create a new trainer and a new DjlGuard");
        }
        List<GradientTensor<NDArray>> out = new ArrayList<>(described().size());
        handles.clear();
        for (Entry e : described()) {
            NDArray value = values.apply(e.parameter());
            NDArray grad = foldScales ? ops.adoptDeferrable(value.getGradient()) : ops.adopt(value.getGradient());
            handles.add(grad);
            out.add(new GradientTensor<>(e.key(), value.getShape().getShape(), e.role(), e.layer(), e.layout(), grad, value));
        }
        return GradientSet.of(out);
    }

    /**
     * Runs the optimizer (DJL's fused updates also zero the gradients), with the scales left
     * pending on the gradients as its rescale factors. When a
     * monitor wants update ratios, DJL updates the parameters inside that call, so each parameter
     * is copied into the step's scope first (and ‖θ‖² taken), and the copy becomes
     * Δθ = θ_before − θ_after in place afterwards.
     */
    @Override
    public void apply(GradientSet<NDArray> gradients, StepResult<NDArray> result, UpdateRecorder<NDArray> updates) {
        int n = entries.size();
        NDArray[] grads = handles.toArray(new NDArray[0]);
        NDArray[] replacements = new NDArray[n];
        double[] factors = new double[n];
        for (int i = 0; i < n; i++) {
            replacements[i] = ops.takeReplacement(handles.get(i)); // the arrays the optimizer reads
            factors[i] = ops.takePending(handles.get(i));
        }
        if (updates == null) {
            optimizerStep.run(grads, replacements, factors);
            return;
        }
        NDArray[] deltas = new NDArray[n];
        NDArray[] paramSquares = new NDArray[n];
        for (int i = 0; i < n; i++) {
            deltas[i] = ops.adopt(gradients.get(i).param().duplicate());
            paramSquares[i] = ops.sumOfSquares(deltas[i]);
        }
        optimizerStep.run(grads, replacements, factors);
        for (int i = 0; i < n; i++) {
            ops.changes(deltas[i]).subi(values.apply(entries.get(i).parameter()));
            double updateNorm = Math.sqrt(ops.toHost(ops.sumOfSquares(deltas[i])));
            updates.record(entries.get(i).layer(), updateNorm, Math.sqrt(ops.toHost(paramSquares[i])));
        }
    }

    /**
     * The optimizer does not run, so its state (Adam's moments, update counts, learning-rate
     * schedule) does not move; DJL's collector does not zero gradients, so each is filled with 0
     * (a NaN does not survive a fill, unlike {@code muli(0)}).
     */
    @Override
    public void discard(GradientSet<NDArray> gradients, StepResult<NDArray> result) {
        for (GradientTensor<NDArray> g : gradients) {
            ops.fill(g.gradient(), 0.0);
        }
    }

    /** Closes every array the step created: gradient handles, reductions, coefficients, parameter copies. */
    @Override
    public void endStep() {
        handles.clear();
        ops.freeTemporaries();
    }

    /** Frees the guard's long-lived buffers (accumulators, histories). */
    @Override
    public void close() {
        ops.close();
    }

    private static List<Entry> describe(Block block) {
        Map<Parameter, Block> owners = DjlLayouts.owners(block);
        List<Entry> out = new ArrayList<>();
        Set<String> unknown = new LinkedHashSet<>();
        for (Pair<String, Parameter> pair : block.getParameters()) {
            Parameter p = pair.getValue();
            if (!p.isInitialized()) {
                throw new IllegalStateException("parameter " + pair.getKey()
                        + " is not initialized: call trainer.initialize(inputShapes) before the first step");
            }
            if (p.requiresGradient()) {
                String layer = layer(pair.getKey(), p.getName(), block);
                Block owner = owners.getOrDefault(p, block);
                DjlLayouts.Kind kind = DjlLayouts.of(owner, p);
                if (!kind.known() && WARNED_TYPES.add(owner.getClass().getName())) { // once per type and process
                    unknown.add(layer + " (" + owner.getClass().getSimpleName() + ")");
                }
                out.add(new Entry(pair.getKey(), p, kind.role(), layer, kind.layout()));
            }
        }
        if (!unknown.isEmpty()) {
            LOG.warn("GradGuard: no known layout for the parameters of block(s) {}: their roles come from the parameter "
                    + "types and their output units are axis 0 (PyTorch's [out, in, ...]). Unit-wise stages (adaptiveClip) "
                    + "use that default; see docs/djl.md, \"Layouts\".", unknown);
        }
        return out;
    }

    /** "01SequentialBlock_02Linear_weight" with name "weight" belongs to layer "01SequentialBlock_02Linear". */
    private static String layer(String key, String name, Block root) {
        String suffix = "_" + name;
        if (key.endsWith(suffix) && key.length() > suffix.length()) {
            return key.substring(0, key.length() - suffix.length());
        }
        return root.getClass().getSimpleName();
    }
}
