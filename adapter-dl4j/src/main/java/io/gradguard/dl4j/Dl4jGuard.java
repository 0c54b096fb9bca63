package io.gradguard.dl4j;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Guard;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.GuardedModel;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.Map;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.graph.util.ComputationGraphUtil;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.api.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.dataset.api.iterator.MultiDataSetIterator;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Guards a DL4J {@code MultiLayerNetwork} or {@code ComputationGraph}: runs a {@link GradientPipeline}
 * on the network's gradient between backprop and DL4J's updater, on ND4J's own arrays
 * ({@link Nd4jOps}). Three hooks ({@code install} shares its guard with no other hook):
 *
 * <ul>
 *   <li>{@link #install(MultiLayerNetwork)} / {@link #install(ComputationGraph)}: {@code net.fit(...)}
 *       unchanged, for every pipeline. The guard replaces the network's updater by DL4J's own
 *       updater class on the same state, guarded: accumulation over micro-batches and real skips
 *       (on a held or skipped call the updater does not run and the update DL4J subtracts is
 *       exactly 0); DL4J's updater sees the applied-step count as its iteration, so schedules and
 *       Adam's bias correction advance per applied step. An acting clip costs no pass of its own:
 *       it rides in the division by the batch size, which the guard makes for DL4J's updater.</li>
 *   <li>{@link #listener()}: a {@code TrainingListener} for {@code net.fit(...)} unchanged. A listener
 *       cannot stop DL4J's updater, so it runs pipelines that never hold or skip a step (clips,
 *       {@code zeroNonFinite}, monitors).</li>
 *   <li>{@link #step(MultiLayerNetwork, DataSet)} / {@link #fit(MultiLayerNetwork, DataSetIterator)}
 *       (and the {@code ComputationGraph} forms): a step driver with DL4J's own updater, for
 *       every pipeline, where DL4J's own iteration count and listeners' {@code iterationDone}
 *       should count applied steps only (with {@code install}, DL4J counts every fit call).</li>
 * </ul>
 *
 * <pre>{@code
 * Dl4jGuard guard = Dl4jGuard.of(Transforms.skipNonFinite(3), Transforms.accumulate(4), Transforms.clipByGlobalNorm(1.0))
 *         .install(net);
 * net.fit(trainIterator, 10);                  // unchanged
 * // or drive the steps: guard.fit(net, trainIterator) per epoch, guard.step(net, dataSet) per micro-batch
 * }</pre>
 *
 * <p><b>Thresholds mean the norm of the mean gradient</b> over the minibatch, as DL4J's own
 * {@code GradientNormalization} does, although DL4J's gradient holds the SUM at that point (its
 * updater divides afterwards): the pipeline sees the mean through a pending factor of 1/batch, with
 * no pass over the gradient ({@link PendingFactorOps}). Per-layer stages group parameters by layer
 * (index in a {@code MultiLayerNetwork}, name in a {@code ComputationGraph}); see
 * {@link Dl4jGradients} for names and {@link Dl4jLayouts} for the role and output-unit layout of
 * each layer type's parameters. A warning is logged once if the network also has DL4J's
 * {@code GradientNormalization} configured (both would apply), and once naming the layers of a type
 * without a known layout (a default by rank applies).
 *
 * <p><b>Loss scaling</b>: with a {@code LossScale} stage ({@code Transforms.dynamicLossScale()}),
 * {@code install} and the step driver multiply each output layer's loss gradient by
 * {@link #lossScale()} before backprop goes on ({@link ScaledLoss}); the stage divides it back.
 *
 * <p><b>Update-to-parameter ratios</b> reach a {@link io.gradguard.core.monitor.Monitor Monitor}
 * in the pipeline on the steps it measures in detail: the update DL4J subtracts (regularization and
 * DL4J's own normalization included) against θ before the step, per layer.
 *
 * <p><b>Checkpoints</b>: {@code ModelSerializer.writeModel(net, file, true)} (updater included) and
 * {@link #saveState} next to it; a restored guard continues a half-full accumulation window exactly.
 * The step driver sends listeners attached to the network {@code onEpochStart}, {@code iterationDone}
 * (per applied step) and {@code onEpochEnd}; with accumulation a window open at the end of an epoch
 * carries over. One guard per network and training thread.
 *
 * @throws IllegalArgumentException (from the factories and hooks) for a null pipeline, network or
 *     batch, or a batch without features or labels
 * @throws IllegalStateException (from the hooks) when a guard meets a second network, is closed, or
 *     (listener) its pipeline holds or skips a step
 */
public final class Dl4jGuard extends Guard<INDArray, Dl4jGuard> {
    /** Layer types already named in the "no known layout" warning: it is given once per type and process. */
    private static final Set<String> WARNED_TYPES = java.util.concurrent.ConcurrentHashMap.newKeySet();

    private static final Logger LOG = LoggerFactory.getLogger("io.gradguard.dl4j");
    private static final String INSTALLED = "install(net)";

    private final PendingFactorOps ops = new PendingFactorOps(new Nd4jOps());
    private Model model;
    /** The first hook this guard ran through ("listener()", "install(net)", "step/fit"), null before it. */
    private String hook;
    private Dl4jListener listener;
    private Dl4jTrainer trainer;

    private Dl4jGuard(GradientPipeline pipeline) {
        super(pipeline);
    }

    /**
     * A guard running {@code pipeline}.
     *
     * @throws IllegalArgumentException if {@code pipeline} is null
     * @throws IllegalStateException if another guard already runs {@code pipeline}
     */
    public static Dl4jGuard of(GradientPipeline pipeline) {
        return new Dl4jGuard(pipeline);
    }

    /**
     * A guard running {@code GradientPipeline.of(transforms)}.
     *
     * @throws IllegalArgumentException if a transform is null
     */
    public static Dl4jGuard of(GradientTransform... transforms) {
        return new Dl4jGuard(GradientPipeline.of(transforms));
    }

    /**
     * The {@code net.fit(...)} hook: add it with {@code net.addListeners(guard.listener())}. The same
     * listener every call.
     *
     * @throws IllegalStateException if a stage of the pipeline may hold or skip a step
     *     ({@link GradientTransform#mayHoldOrSkip()}): a listener cannot stop DL4J's updater, so use
     *     {@link #step}/{@link #fit} instead
     */
    public TrainingListener listener() {
        ensureOpen();
        if (listener == null) {
            GradientPipeline p = pipeline();
            for (int i = 0; i < p.transforms().size(); i++) {
                GradientTransform t = p.transforms().get(i);
                if (t.mayHoldOrSkip()) {
                    throw new IllegalStateException("Dl4jGuard.listener(): stage '" + p.stageNames().get(i) + "' (" + t
                            + ") holds or skips steps, but a DL4J TrainingListener runs before the updater and cannot stop it. "
                            + "Install the guard on the updater instead (guard.install(net), net.fit unchanged), or drive "
                            + "training with guard.step(net, batch) or guard.fit(net, data), or remove the stage from the pipeline.");
                }
            }
            claimHook("listener()");
            listener = new Dl4jListener(this, ops());
        }
        return listener;
    }

    /**
     * The {@code net.fit(...)} hook for every pipeline, accumulation and real skips included: replaces
     * the network's updater by DL4J's {@code MultiLayerUpdater} on the same state, guarded. Each fit
     * call then runs the pipeline between backprop and the updater; on a held or skipped
     * micro-batch the updater does not run (Adam's moments stay) and the update DL4J subtracts is
     * exactly 0; the updater sees the applied-step count as its iteration (schedules, Adam's bias
     * correction). Installing again on the same network does nothing.
     *
     * <pre>{@code
     * Dl4jGuard guard = Dl4jGuard.of(Transforms.skipNonFinite(3), Transforms.accumulate(4)).install(net);
     * net.fit(trainIterator, 10);   // unchanged
     * }</pre>
     *
     * <p>DL4J's own iteration count ({@code net.getIterationCount()}, listeners' {@code iterationDone})
     * keeps counting fit calls, held and skipped ones included. Install again after anything that
     * rebuilds DL4J's updater: {@code ModelSerializer.restoreMultiLayerNetwork} (then
     * {@link #restoreState} and {@code install(restored)}), {@code net.setLearningRate(...)},
     * {@code net.clear()}, {@code net.clone()}. Once the guard is closed, {@code net.fit} throws an
     * {@code IllegalStateException}.
     *
     * @return this guard
     * @throws IllegalArgumentException if {@code net} is null
     * @throws IllegalStateException if {@code net} is not initialised, another open guard is installed on
     *     it, this guard guards another network or runs through another hook, or is closed
     */
    public Dl4jGuard install(MultiLayerNetwork net) {
        Checks.notNull("net", net);
        if (prepareInstall(net, net.getLayers() == null ? null : net.getUpdater())) {
            GuardedUpdaters.install(this, net);
        }
        return this;
    }

    /**
     * The {@code net.fit(...)} hook on a computation graph: replaces its updater by DL4J's
     * {@code ComputationGraphUpdater} on the same state, guarded; see {@link #install(MultiLayerNetwork)}.
     *
     * @return this guard
     * @throws IllegalArgumentException if {@code graph} is null
     * @throws IllegalStateException if {@code graph} is not initialised, another open guard is installed
     *     on it, this guard guards another network or runs through another hook, or is closed
     */
    public Dl4jGuard install(ComputationGraph graph) {
        Checks.notNull("graph", graph);
        if (prepareInstall(graph, graph.getLayers() == null ? null : graph.getUpdater())) {
            GuardedUpdaters.install(this, graph);
        }
        return this;
    }

    /**
     * Installs this guard on a replica of the network it guards, leaving the one it guarded: a
     * {@code ParallelWrapper} rebuilds its workers' networks on every {@code fit}
     * ({@link Dl4jParallelGuard}), and its {@code net.clear()} at the end of a fit drops the updater
     * of the network it keeps (installed again here). The pipeline's state goes on; the replica must
     * have the same parameters (the next step checks names and shapes).
     */
    void moveTo(Model replica) {
        if (model != replica) {
            model = null;
        }
        if (replica instanceof ComputationGraph graph) {
            install(graph);
        } else {
            install((MultiLayerNetwork) replica);
        }
    }

    /** The network this guard guards, null before its first. */
    Model model() {
        return model;
    }

    /** Checks an installation; false if this guard is installed on {@code net} already. */
    private boolean prepareInstall(Model net, org.deeplearning4j.nn.api.Updater current) {
        ensureOpen();
        if (current == null) {
            throw new IllegalStateException(describe(net) + " is not initialised: call net.init() before guard.install(net)");
        }
        Dl4jGuard owner = GuardedUpdaters.guardOf(current);
        if (owner == this) {
            return false;
        }
        if (owner != null && !owner.isClosed()) { // a closed guard's updater may be replaced
            throw new IllegalStateException(describe(net) + " already has " + owner + " installed: use one guard per network");
        }
        claimHook(INSTALLED);
        attach(net);
        scaleLoss(net);
        return true;
    }

    /**
     * One micro-batch of a multi-layer network: backprop, the pipeline, and DL4J's updater when the
     * step applies.
     *
     * @return what the pipeline decided and measured (metrics on the host)
     * @throws IllegalArgumentException if {@code net} or {@code batch} is null, or the batch lacks features or labels
     * @throws IllegalStateException if this guard guards another network, or is closed
     */
    public StepResult<INDArray> step(MultiLayerNetwork net, DataSet batch) {
        Checks.notNull("net", net);
        checkBatch(batch);
        return trainer(net).step(net, batch);
    }

    /**
     * One micro-batch of a computation graph with one input and one output.
     *
     * @throws IllegalArgumentException if {@code graph} or {@code batch} is null, or the batch lacks features or labels
     * @throws IllegalStateException if this guard guards another network, or is closed
     */
    public StepResult<INDArray> step(ComputationGraph graph, DataSet batch) {
        Checks.notNull("graph", graph);
        checkBatch(batch);
        return step(graph, ComputationGraphUtil.toMultiDataSet(batch));
    }

    /**
     * One micro-batch of a computation graph with any number of inputs and outputs.
     *
     * @throws IllegalArgumentException if {@code graph} or {@code batch} is null, or the batch lacks features or labels
     * @throws IllegalStateException if this guard guards another network, or is closed
     */
    public StepResult<INDArray> step(ComputationGraph graph, MultiDataSet batch) {
        Checks.notNull("graph", graph);
        Checks.notNull("batch", batch);
        int features = batch.getFeatures() == null ? 0 : batch.getFeatures().length;
        int labels = batch.getLabels() == null ? 0 : batch.getLabels().length;
        Checks.require(features > 0 && labels > 0, "batch", "have features and labels",
                features + " feature and " + labels + " label arrays");
        return trainer(graph).step(graph, batch);
    }

    /**
     * One epoch of a multi-layer network: every batch of {@code data} through
     * {@link #step(MultiLayerNetwork, DataSet)} (reset first if it is exhausted and resettable), then
     * the network's epoch count + 1.
     *
     * @throws IllegalArgumentException if {@code net} or {@code data} is null, or a batch lacks features or labels
     * @throws IllegalStateException if this guard guards another network, or is closed
     */
    public void fit(MultiLayerNetwork net, DataSetIterator data) {
        Checks.notNull("net", net);
        rewound(Checks.notNull("data", data));
        trainer(net).epoch(() -> {
            while (data.hasNext()) {
                step(net, data.next());
            }
        });
    }

    /**
     * One epoch of a computation graph, as {@link #fit(MultiLayerNetwork, DataSetIterator)}.
     *
     * @throws IllegalArgumentException if {@code graph} or {@code data} is null, or a batch lacks features or labels
     * @throws IllegalStateException if this guard guards another network, or is closed
     */
    public void fit(ComputationGraph graph, DataSetIterator data) {
        Checks.notNull("graph", graph);
        rewound(Checks.notNull("data", data));
        trainer(graph).epoch(() -> {
            while (data.hasNext()) {
                step(graph, data.next());
            }
        });
    }

    /**
     * One epoch of a computation graph on multi-input/-output batches, as
     * {@link #fit(MultiLayerNetwork, DataSetIterator)}.
     *
     * @throws IllegalArgumentException if {@code graph} or {@code data} is null, or a batch lacks features or labels
     * @throws IllegalStateException if this guard guards another network, or is closed
     */
    public void fit(ComputationGraph graph, MultiDataSetIterator data) {
        Checks.notNull("graph", graph);
        Checks.notNull("data", data);
        if (!data.hasNext() && data.resetSupported()) {
            data.reset();
        }
        trainer(graph).epoch(() -> {
            while (data.hasNext()) {
                step(graph, data.next());
            }
        });
    }

    // ---- what the hooks share ------------------------------------------------------------------

    /** The backend every hook of this guard runs on. */
    PendingFactorOps ops() {
        return ops;
    }

    /**
     * Binds this guard to {@code net}, the first time; warns once about DL4J's own gradient
     * normalization and once about layers without a known layout.
     *
     * @throws IllegalStateException if the guard already guards another network, or is closed
     */
    void attach(Model net) {
        ensureOpen();
        if (model == net) {
            return;
        }
        if (model != null) {
            throw new IllegalStateException("this Dl4jGuard guards " + describe(model) + "; it was given another network, "
                    + describe(net) + ": use one guard per network (Dl4jGuard.of(pipeline) for each)");
        }
        Dl4jGradients.layers(net); // refuses other models
        model = net;
        Map<String, GradientNormalization> builtIn = Dl4jGradients.builtInNormalization(net);
        if (!builtIn.isEmpty()) {
            LOG.warn("GradGuard {}: the network also has DL4J's own GradientNormalization configured (layer=mode: {}). "
                    + "DL4J applies it in its updater after GradGuard's pipeline, so both apply. Remove "
                    + ".gradientNormalization(...) from the configuration, or the matching stage from the pipeline.",
                    this, builtIn);
        }
        List<String> unknown = new java.util.ArrayList<>(Dl4jGradients.unknownLayers(net));
        unknown.removeIf(layer -> !WARNED_TYPES.add(layer.substring(layer.indexOf('(') + 1))); // once per type and process
        if (!unknown.isEmpty()) {
            LOG.warn("GradGuard {}: no known layout for the parameters of layer(s) {}: their roles come from the keys "
                    + "(W, RW, pW weight; b bias) and their output units from the rank (the last axis up to rank 2, "
                    + "axis 0 above). Unit-wise stages (adaptiveClip) use that default; see docs/dl4j.md, \"Layouts\".",
                    this, unknown);
        }
    }

    /** The one step sequence ({@link Guard#step}), for the hooks. */
    StepResult<INDArray> run(GuardedModel<INDArray> hook, StepContext context) {
        if (accumulatesInDouble() && !ops.accumulatesInDouble()) {
            ops.nd4j().accumulateInDouble(); // asked for after a hook was made: before the first step, as Guard requires
        }
        try {
            return step(hook, context);
        } catch (RuntimeException e) {
            java.util.function.Consumer<RuntimeException> f = failures;
            if (f != null) {
                f.accept(e);
            }
            throw e;
        }
    }

    /** Told of a step that threw (a worker of {@link Dl4jParallelGuard} tells its peers); null: nobody. */
    private volatile java.util.function.Consumer<RuntimeException> failures;

    void onFailure(java.util.function.Consumer<RuntimeException> whom) {
        failures = whom;
    }

    private Dl4jTrainer trainer(Model net) {
        attach(net);
        if (trainer == null) {
            claimHook("step/fit");
            scaleLoss(net);
            trainer = new Dl4jTrainer(this, net);
        }
        return trainer;
    }

    /** With a loss-scale stage, the output layers' loss gradient × {@link #lossScale()} ({@link ScaledLoss}). */
    private void scaleLoss(Model net) {
        if (ScaledLoss.needed(pipeline().transforms())) {
            ScaledLoss.wrapOutputs(net, this);
        }
    }

    /**
     * Records the hook this guard runs through. The installed updater runs the whole step inside
     * {@code net.fit} (and inside the driver's updater call), so it shares a guard with no other
     * hook; the listener and the driver run on separate calls and may share one.
     */
    private void claimHook(String name) {
        boolean installing = name.equals(INSTALLED);
        if (hook != null && !hook.equals(name) && (installing || hook.equals(INSTALLED))) {
            throw new IllegalStateException("this Dl4jGuard already runs through " + hook + "; it cannot also run through "
                    + name + " (install(net) runs the whole step inside net.fit): use one hook per guard, e.g. "
                    + "guard.install(net) with net.fit(...) for every pipeline");
        }
        if (hook == null || installing) {
            hook = name;
        }
    }

    private static void checkBatch(DataSet batch) {
        Checks.notNull("batch", batch);
        Checks.require(batch.getFeatures() != null && batch.getLabels() != null, "batch", "have features and labels",
                "features " + shape(batch.getFeatures()) + ", labels " + shape(batch.getLabels()));
    }

    private static void rewound(DataSetIterator data) {
        if (!data.hasNext() && data.resetSupported()) {
            data.reset();
        }
    }

    private static String shape(INDArray a) {
        return a == null ? "null" : Arrays.toString(a.shape());
    }

    private static String describe(Model m) {
        return m == null ? "null" : m.getClass().getSimpleName() + "@" + Integer.toHexString(System.identityHashCode(m));
    }
}
