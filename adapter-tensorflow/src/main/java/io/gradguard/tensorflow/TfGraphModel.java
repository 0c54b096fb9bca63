package io.gradguard.tensorflow;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepResult;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.GuardedModel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Consumer;
import java.util.function.DoubleSupplier;
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
import org.tensorflow.ndarray.Shape;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.types.TFloat64;

/**
 * The {@link GuardedModel} of a TensorFlow graph: the session runs of one guarded step.
 *
 * <p>The gradients are {@code tf.gradients(loss, variables)} nodes. If nothing reads a host value
 * during the pipeline, the whole step is one run at {@link #apply}/{@link #discard}: forward,
 * backward, transforms, the state buffers' assignments, the optimizer's apply op (on PROCEED), and
 * every scalar the stages recorded. On the first host read during the pipeline the model switches
 * to {@link GradientBuffers}: from then on a first run fills them (and returns the loss), host reads
 * evaluate the small graphs they need, and the last run transforms and applies. On HOLD and SKIP
 * the apply op is not run: the variables and the optimizer's slots do not move.
 *
 * <p>Loss scaling: with a loss-scale stage the gradients are those of {@code loss · S}, S a fed
 * float64 scalar ({@code gradguard/loss_scale}, cast to the loss's dtype) whose value is the guard's
 * scale at the start of the step; the stage divides them by S again.
 */
final class TfGraphModel implements GuardedModel<TfTensor> {
    private static final Logger LOG = LoggerFactory.getLogger(TfGraphModel.class);

    private final TfOps ops;
    private final Output<?> loss;
    private final List<Output<?>> values;
    private final Output<?>[] rawGradients;
    private final long[][] shapes;
    private final GradientSet<TfTensor> gradients;
    private final OptimizerBranches branches;
    /** The fed loss scale S (the gradients are those of loss · S), or null without a loss-scale stage. */
    private final Output<TFloat64> lossScale;
    private final DoubleSupplier lossScaleValue;
    private TFloat64 lossScaleTensor;
    private GradientBuffers buffers;
    private UpdateProbe probe;
    private boolean inPipeline;
    private boolean warnedRecompute;
    private double lastLoss = Double.NaN;
    private long recomputedRuns;

    private TfGraphModel(TfOps ops, Output<?> loss, List<Output<?>> variables, List<Output<?>> values, Output<?>[] rawGradients,
            Optimizer optimizer, Map<String, Layout> layouts, Consumer<List<GraphOperation>> onSlotsCreated,
            Output<TFloat64> lossScale, DoubleSupplier lossScaleValue) {
        this.ops = ops;
        this.lossScale = lossScale;
        this.lossScaleValue = lossScaleValue;
        this.loss = loss;
        this.values = values;
        this.rawGradients = rawGradients;
        this.shapes = new long[variables.size()][];
        List<GradientTensor<TfTensor>> ts = new ArrayList<>();
        for (int i = 0; i < variables.size(); i++) {
            shapes[i] = values.get(i).shape().asArray();
            ts.add(gradientTensor(variables.get(i).op().name(), shapes[i], layouts, rawGradients[i], values.get(i)));
        }
        this.gradients = GradientSet.of(ts);
        this.branches = new OptimizerBranches(ops.session(), optimizer, variables, onSlotsCreated);
    }

    /**
     * The pipeline's view of one variable: its role by rank (weight, bias, other), its layer by name,
     * its declared layout (default {@link Layout#outputLast()}), its gradient and value nodes.
     *
     * @throws IllegalArgumentException if the layout's axis does not exist at the variable's rank
     */
    static GradientTensor<TfTensor> gradientTensor(String name, long[] shape, Map<String, Layout> layouts, Output<?> gradient,
            Output<?> value) {
        Role role = shape.length >= 2 ? Role.WEIGHT : shape.length == 1 ? Role.BIAS : Role.OTHER;
        Layout layout = layouts.getOrDefault(name, Layout.outputLast());
        try {
            layout.reductionAxes(shape.length);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("layout of variable " + name + Arrays.toString(shape) + " must have an axis that "
                    + "exists at rank " + shape.length + ", got " + layout, e);
        }
        return new GradientTensor<>(name, shape, role, layerOf(name), layout, new TfTensor(shape, gradient, null, null),
                new TfTensor(shape, value, null, null));
    }

    /**
     * The layer of a variable: its name up to the last '/' ("dense/kernel" → "dense"), or, for the
     * flat names slot optimizers need, up to the last '_' ("dense_1_kernel" → "dense_1"); else the name.
     */
    static String layerOf(String name) {
        int cut = name.lastIndexOf('/');
        if (cut < 0) {
            cut = name.lastIndexOf('_');
        }
        return cut > 0 ? name.substring(0, cut) : name;
    }

    /**
     * Validates the setup and builds the gradients of {@code loss} with respect to {@code variables}
     * (only those: not every variable of the graph); with {@code lossScale} (the guard's current
     * scale; null without a loss-scale stage), the gradients of {@code loss · S}, S fed each step.
     *
     * @throws IllegalArgumentException see {@link TfGuard#attach}
     */
    static TfGraphModel build(TfOps ops, Operand<?> loss, List<? extends Operand<?>> variables, Optimizer optimizer,
            Map<String, Layout> layouts, Consumer<List<GraphOperation>> onSlotsCreated, DoubleSupplier lossScale) {
        Checks.notNull("optimizer", optimizer);
        Graph graph = ops.graph();
        Output<?> lossOut = checkedLoss(graph, loss);
        Checks.require(optimizer.getTF().scope().env() == graph, "optimizer", "be built on the session's graph", optimizer);
        Ops tf = Ops.create(graph).withSubScope("gradguard");
        List<Output<?>> values = new ArrayList<>();
        List<Output<?>> vars = checkedVariables(tf, lossOut, variables, values);
        Set<String> seen = new HashSet<>();
        vars.forEach(v -> seen.add(v.op().name()));
        Set<String> undeclared = new TreeSet<>(layouts.keySet());
        undeclared.removeAll(seen);
        Checks.require(undeclared.isEmpty(), "layout", "name only variables given to attach", undeclared);
        Output<TFloat64> scale = null;
        Output<?> differentiated = lossOut;
        if (lossScale != null) {
            scale = tf.withName("loss_scale").placeholder(TFloat64.class, Placeholder.shape(Shape.scalar())).output();
            differentiated = scaled(tf, lossOut, scale);
        }
        Output<?>[] grads;
        try {
            grads = graph.addGradients(differentiated, vars.toArray(new Output<?>[0]));
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("TensorFlow could not build the gradients of " + lossOut.op().name()
                    + " with respect to " + seen + ": " + e.getMessage(), e);
        }
        for (int i = 0; i < grads.length; i++) {
            Checks.require(grads[i] != null, "variables[" + i + "]", "have a gradient from the loss " + lossOut.op().name(),
                    vars.get(i).op().name());
        }
        return new TfGraphModel(ops, lossOut, List.copyOf(vars), List.copyOf(values), grads, optimizer, layouts, onSlotsCreated,
                scale, lossScale);
    }

    /**
     * The loss's output, checked: a float scalar of {@code graph}.
     *
     * @throws IllegalArgumentException if it is null, of another graph, not float or not a scalar
     */
    static Output<?> checkedLoss(Graph graph, Operand<?> loss) {
        Checks.notNull("loss", loss);
        Output<?> lossOut = loss.asOutput();
        Checks.require(lossOut.env() == graph, "loss", "belong to the session's graph", lossOut.name());
        Checks.require(TfOps.isFloat(lossOut.type()), "loss", "be a float16, float32 or float64 scalar", lossOut.dataType() + " (" + lossOut.name() + ")");
        Checks.require(lossOut.shape().numDimensions() <= 0, "loss", "be a scalar (reduce it: tf.math.mean)",
                "shape " + lossOut.shape() + " (" + lossOut.name() + ")");
        return lossOut;
    }

    /**
     * The variables' outputs, checked: distinct float trainable variables that influence the loss.
     * Adds to {@code values} one identity per variable (its value, for the unit-wise stages).
     *
     * @throws IllegalArgumentException naming the variable that is not one
     */
    static List<Output<?>> checkedVariables(Ops tf, Output<?> lossOut, List<? extends Operand<?>> variables, List<Output<?>> values) {
        Checks.notNull("variables", variables);
        Checks.require(!variables.isEmpty(), "variables", "name at least one trainable variable", variables);
        Graph graph = (Graph) lossOut.env();
        Set<GraphOperation> reaching = graph.subgraphTo(Set.of(lossOut));
        List<Output<?>> vars = new ArrayList<>();
        Set<String> seen = new HashSet<>();
        for (int i = 0; i < variables.size(); i++) {
            Operand<?> v = Checks.notNull("variables[" + i + "]", variables.get(i));
            Output<?> out = v.asOutput();
            String name = out.op().name();
            String type = out.op().type();
            Checks.require(type.equals("VariableV2") || type.equals("Variable"), "variables[" + i + "]",
                    "be a trainable variable (tf.variable)", name + " of op type " + type);
            Checks.require(seen.add(name), "variables", "be distinct", name + " twice");
            Checks.require(reaching.contains((GraphOperation) out.op()), "variables[" + i + "]",
                    "influence the loss " + lossOut.op().name() + " (pass only the variables the loss depends on)", name);
            @SuppressWarnings({"unchecked", "rawtypes"})
            Output<?> value = tf.withName(name.replace('/', '_') + "_value").identity((Operand) out).asOutput();
            Checks.require(TfOps.isFloat(value.type()), "variables[" + i + "]", "be float16, float32 or float64 (only those have gradients to guard)",
                    name + " of dtype " + value.dataType());
            vars.add(out);
            values.add(value);
        }
        return vars;
    }

    /** {@code loss · S}, S cast to the loss's dtype. */
    @SuppressWarnings({"unchecked", "rawtypes"})
    static Output<?> scaled(Ops tf, Output<?> loss, Operand<TFloat64> scale) {
        Operand s = loss.type() == TFloat64.class ? scale : tf.dtypes.cast(scale, (Class) loss.type());
        return tf.withName("scaled_loss").math.mul((Operand) loss, s).asOutput();
    }

    /**
     * Starts a step on these feeds. With gradient buffers, runs forward and backward into them and
     * returns true: {@link #lastLoss()} is this step's loss; otherwise false (the loss comes with the
     * step's one run).
     */
    boolean begin(Map<? extends Operand<?>, ? extends Tensor> feeds) {
        ops.beginStep(lossScale == null ? feeds : withLossScale(feeds), this::beforeHostRead);
        if (buffers != null) {
            lastLoss = buffers.fill(ops, loss);
            return true;
        }
        return false;
    }

    /** The step's feeds and the loss scale S (its tensor kept while S does not change). */
    private Map<Operand<?>, Tensor> withLossScale(Map<? extends Operand<?>, ? extends Tensor> feeds) {
        double s = lossScaleValue.getAsDouble();
        if (lossScaleTensor == null || Double.doubleToRawLongBits(lossScaleTensor.getDouble()) != Double.doubleToRawLongBits(s)) {
            closeLossScale();
            lossScaleTensor = TFloat64.scalarOf(s);
        }
        Map<Operand<?>, Tensor> all = new java.util.HashMap<>(feeds);
        all.put(lossScale, lossScaleTensor);
        return all;
    }

    /** Closes the fed loss-scale tensor (with the guard). */
    void closeLossScale() {
        if (lossScaleTensor != null) {
            lossScaleTensor.close();
            lossScaleTensor = null;
        }
    }

    @Override
    public TfOps ops() {
        return ops;
    }

    @Override
    public GradientSet<TfTensor> gradients() {
        for (int i = 0; i < gradients.size(); i++) {
            gradients.get(i).gradient().rebind(buffers != null ? buffers.read(i) : rawGradients[i]);
        }
        inPipeline = true;
        return gradients;
    }

    @Override
    public void apply(GradientSet<TfTensor> g, StepResult<TfTensor> result, UpdateRecorder<TfTensor> updates) {
        finish(true, updates);
    }

    @Override
    public void discard(GradientSet<TfTensor> g, StepResult<TfTensor> result) {
        finish(false, null);
    }

    @Override
    public void endStep() {
        inPipeline = false;
        ops.endStep();
    }

    /**
     * The step's last run: the state buffers' assignments, the apply op when the step applies, and
     * every scalar the stages recorded (so reading the metrics costs no run of its own).
     */
    private void finish(boolean applies, UpdateRecorder<TfTensor> updates) {
        inPipeline = false;
        List<Op> targets = new ArrayList<>(ops.commit(new ArrayList<>()));
        if (applies) {
            List<Output<?>> finals = new ArrayList<>();
            for (GradientTensor<TfTensor> g : gradients) {
                finals.add(g.gradient().value());
            }
            targets.add(branches.applyFor(finals));
        }
        List<Output<?>> scalars = ops.pendingScalars();
        Output<?> packed = scalars.isEmpty() ? null : ops.packed(scalars);
        if (updates != null) {
            if (probe == null) {
                probe = new UpdateProbe(ops, values, shapes);
            }
            probe.before();
        }
        boolean buffered = buffers != null;
        if (!buffered || !targets.isEmpty() || packed != null) {
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
        if (updates != null) {
            probe.after(gradients, updates);
        }
    }

    /** The run hook: the first host read during the pipeline decides how gradients persist between runs. */
    private void beforeHostRead() {
        if (!inPipeline || buffers != null) {
            return;
        }
        if (!branches.built()) {
            switchToBuffers();
        } else {
            recomputedRuns++;
            if (!warnedRecompute) {
                warnedRecompute = true;
                LOG.warn("GradGuard: the pipeline read a host value for the first time after the apply op was built; "
                        + "each such read recomputes the forward and backward pass. Read metrics from the first step on "
                        + "(then the guard keeps gradients in buffers), or less often.");
            }
        }
    }

    /** Moves this step onto gradient buffers: one run fills them, and every node built so far is rebased onto them. */
    private void switchToBuffers() {
        LOG.debug("GradGuard: the pipeline reads host values; gradients now persist in buffer variables between runs");
        inPipeline = false;
        try {
            buffers = new GradientBuffers(ops, rawGradients, shapes);
            lastLoss = buffers.fill(ops, loss);
        } finally {
            inPipeline = true;
        }
        List<TfTensor> handles = new ArrayList<>();
        for (GradientTensor<TfTensor> g : gradients) {
            handles.add(g.gradient());
        }
        ops.rebase(buffers.leaves(rawGradients), handles);
    }

    /** The gradient set the pipeline sees. */
    GradientSet<TfTensor> gradientSet() {
        return gradients;
    }

    /** Whether gradients persist in buffers between runs. */
    boolean buffered() {
        return buffers != null;
    }

    /** Whether the optimizer's apply op (and its slots) exists. */
    boolean optimizerBuilt() {
        return branches.built();
    }

    /** Gives every branch's slots the live optimizer state (before a checkpoint). */
    void shareOptimizerState() {
        branches.shareLiveState();
    }

    double lastLoss() {
        return lastLoss;
    }

    long recomputedRuns() {
        return recomputedRuns;
    }
}
