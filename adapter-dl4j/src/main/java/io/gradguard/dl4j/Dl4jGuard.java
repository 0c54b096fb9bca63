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
 * ({@link Nd4jOps}). Two hooks, one guard:
 *
 * <ul>
 *   <li>{@link #listener()}: a {@code TrainingListener} for {@code net.fit(...)} unchanged. A listener
 *       cannot stop DL4J's updater, so it runs pipelines that never hold or skip a step (clips,
 *       {@code zeroNonFinite}, monitors).</li>
 *   <li>{@link #step(MultiLayerNetwork, DataSet)} / {@link #fit(MultiLayerNetwork, DataSetIterator)}
 *       (and the {@code ComputationGraph} forms): a step driver with DL4J's own updater, for
 *       everything: accumulation over micro-batches, real skips (parameters, Adam's moments and the
 *       iteration count untouched), and an acting clip at no extra pass (it rides in DL4J's
 *       division by the batch size).</li>
 * </ul>
 *
 * <pre>{@code
 * Dl4jGuard guard = Dl4jGuard.of(Transforms.skipNonFinite(3), Transforms.accumulate(4), Transforms.clipByGlobalNorm(1.0));
 * for (int epoch = 0; epoch < 10; epoch++) {
 *     guard.fit(net, trainIterator);           // or guard.step(net, dataSet) per micro-batch
 * }
 * // or, with net.fit unchanged (stateless pipelines):
 * net.addListeners(Dl4jGuard.of(Transforms.zeroNonFinite(), Transforms.clipByGlobalNorm(1.0)).listener());
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
    private static final Logger LOG = LoggerFactory.getLogger("io.gradguard.dl4j");

    private final PendingFactorOps ops = new PendingFactorOps(new Nd4jOps());
    private Model model;
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
                            + "Drive training with guard.step(net, batch) or guard.fit(net, data) for accumulation and real "
                            + "skips, or remove the stage from the pipeline.");
                }
            }
            listener = new Dl4jListener(this, ops());
        }
        return listener;
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
        List<String> unknown = Dl4jGradients.unknownLayers(net);
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
        return step(hook, context);
    }

    private Dl4jTrainer trainer(Model net) {
        attach(net);
        if (trainer == null) {
            trainer = new Dl4jTrainer(this, net, ops());
        }
        return trainer;
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
