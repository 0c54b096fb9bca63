package io.gradguard.dl4j;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import java.util.Collection;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.graph.util.ComputationGraphUtil;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.updater.BaseMultiLayerUpdater;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.deeplearning4j.optimize.solvers.BaseOptimizer;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.api.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.dataset.api.iterator.MultiDataSetIterator;

/**
 * Drives DL4J training steps through a GradGuard pipeline, with what a listener cannot do:
 * gradient accumulation over micro-batches and real skips. Works on a {@code MultiLayerNetwork} or
 * a {@code ComputationGraph}, with the network's own updater (its state is the one {@code fit} uses
 * and {@code ModelSerializer} saves).
 *
 * <p>Per micro-batch, as DL4J's own {@code fit} does it: backprop
 * ({@code computeGradientAndScore}); the gradient goes through the pipeline as the batch mean (DL4J's
 * sum with a pending factor of 1/batch that norms and bounds fold in, no pass over it: thresholds
 * mean what DL4J's {@code GradientNormalization} means); then only if the pipeline proceeds: one pass
 * turns the views into the batch mean, with the pipeline's scaling (an acting clip's coefficient)
 * in the same pass, and {@code updater.update(...)} runs without its own division by the batch size
 * (Adam moments, schedules, regularization, DL4J's own normalization), {@code params -= update},
 * listeners' {@code iterationDone}, iteration count + 1, constraints. So a clip that acts costs
 * this driver no pass of its own (a {@link GuardListener} cannot do that: DL4J divides after its
 * listeners, and an acting clip costs it one pass); with the pipeline not scaling, the division is
 * DL4J's own, bit for bit. Where GradGuard's gradients are not exactly the ones DL4J divides (a
 * batch normalization inside a wrapper layer, a frozen layer) the trainer leaves the division to
 * DL4J, as {@code fit} does. The switch is {@code NeuralNetConfiguration.miniBatch} of
 * {@code net.conf()}, off for the updater call only; a {@code ComputationGraph} shares that object
 * with its {@code ComputationGraphConfiguration}, so graphs built from one configuration object
 * must not train at the same moment on different threads while one of them uses a trainer.
 *
 * <p>A held micro-batch (accumulation) or a skipped step leaves the parameters, the updater state
 * and the iteration count exactly as they were; a skip also zeroes the gradient so no NaN stays
 * behind (DL4J overwrites the gradient on every backprop, so a held one needs no reset).
 *
 * <pre>{@code
 * GradientPipeline guard = GradientPipeline.of(
 *     Transforms.skipNonFinite(3),
 *     Transforms.accumulate(4),
 *     Transforms.clipByGlobalNorm(1.0));
 * GuardedTrainer trainer = GuardedTrainer.of(net, guard);
 * for (int epoch = 0; epoch < 10; epoch++) {
 *     trainer.fit(trainIterator);          // or trainer.step(dataSet) per micro-batch
 * }
 * }</pre>
 *
 * <p><b>Update-to-parameter ratios.</b> When the pipeline contains a {@link io.gradguard.core.monitor.Monitor
 * Monitor} and it measures a step in detail, the trainer reports each parameter's update (the exact
 * array subtracted from the parameters, regularization and DL4J's own normalization included) right
 * before the subtraction, so the monitor records ‖Δθ‖ / ‖θ‖ per layer with θ the parameters before
 * the step; healthy training shows about 1e-3. Cost on those steps: two reductions per parameter,
 * no copy; on other steps one check per monitor. Constraints DL4J applies after the step are not
 * part of the update.
 *
 * <p><b>Precision.</b> Norms reduce float32 gradients in float32, as DL4J's own
 * {@code GradientNormalization} does; {@link #accumulateInDouble()} reduces in float64 (see
 * {@link Nd4jOps}).
 *
 * <p>With accumulation, a window left open at the end of an epoch carries over into the next one.
 * Training listeners attached to the network get {@code onEpochStart}, {@code iterationDone} (per
 * applied step) and {@code onEpochEnd}; {@code onGradientCalculation} is not called. One trainer
 * per network; not thread-safe.
 *
 * @throws IllegalArgumentException (from the factories and steps) for a null network, pipeline or
 *     batch, or a batch without features or labels
 */
public final class GuardedTrainer {
    private final Model model;
    private final PipelineRunner runner;
    /**
     * Whether this trainer makes DL4J's division by the batch size itself (see the class comment):
     * decided at the first step, when the network's gradients first exist.
     */
    private Boolean foldsDivision;

    private GuardedTrainer(Model model, GradientPipeline pipeline) {
        this.model = model;
        this.runner = new PipelineRunner(pipeline, "GuardedTrainer");
    }

    /**
     * A trainer for a multi-layer network.
     *
     * @throws IllegalArgumentException if {@code net} or {@code pipeline} is null
     */
    public static GuardedTrainer of(MultiLayerNetwork net, GradientPipeline pipeline) {
        if (net == null) {
            throw new IllegalArgumentException("net must not be null");
        }
        return new GuardedTrainer(net, pipeline);
    }

    /**
     * A trainer for a computation graph.
     *
     * @throws IllegalArgumentException if {@code graph} or {@code pipeline} is null
     */
    public static GuardedTrainer of(ComputationGraph graph, GradientPipeline pipeline) {
        if (graph == null) {
            throw new IllegalArgumentException("graph must not be null");
        }
        return new GuardedTrainer(graph, pipeline);
    }

    /**
     * Makes the pipeline's reductions accumulate in float64 ({@link Nd4jOps#accumulateInDouble()}):
     * norms of float32 gradients near 1e30 or 1e-30 stay finite and non-zero, at the cost of a
     * slower (non-vectorised) reduction. The default reduces in the gradients' type, as DL4J's own
     * {@code GradientNormalization} does.
     *
     * <pre>{@code
     * GuardedTrainer trainer = GuardedTrainer.of(net, pipeline).accumulateInDouble();
     * }</pre>
     *
     * @return this
     */
    public GuardedTrainer accumulateInDouble() {
        runner.ops().accumulateInDouble();
        return this;
    }

    /** The pipeline this trainer runs. */
    public GradientPipeline pipeline() {
        return runner.pipeline();
    }

    /**
     * Writes the pipeline's state (counters, accumulators, histories) as
     * {@link GradientPipeline#saveState} does. Save the network next to it ({@code ModelSerializer.writeModel(net, out, true)}, updater included).
     *
     * @throws java.io.IOException if the stream fails
     */
    public void saveState(java.io.OutputStream out) throws java.io.IOException {
        pipeline().saveState(out);
    }

    /**
     * Restores a state written by {@link #saveState} onto this trainer's backend, before the next step
     * (mid-window checkpoints resume bit-identically).
     *
     * @throws io.gradguard.core.StateFormatException if the state is truncated, corrupt, of another version
     *     or from another pipeline; the pipeline is then left untouched
     * @throws java.io.IOException if the stream fails
     */
    public void restoreState(java.io.InputStream in) throws java.io.IOException {
        pipeline().restoreState(in, ops());
    }

    /** The ND4J backend the pipeline's state lives on (for {@code pipeline().restoreState(in, trainer.ops())}). */
    public Nd4jOps ops() {
        return runner.ops();
    }

    /**
     * One micro-batch: backprop, pipeline, and the optimizer step when the pipeline proceeds.
     *
     * @return what the pipeline decided and measured (metrics on the host)
     * @throws IllegalArgumentException if the batch is null or lacks features or labels
     */
    public StepResult<INDArray> step(DataSet batch) {
        if (batch == null) {
            throw new IllegalArgumentException("batch must not be null");
        }
        if (batch.getFeatures() == null || batch.getLabels() == null) {
            throw new IllegalArgumentException("batch must have features and labels, got features="
                    + shape(batch.getFeatures()) + ", labels=" + shape(batch.getLabels()));
        }
        if (model instanceof ComputationGraph) {
            return step(ComputationGraphUtil.toMultiDataSet(batch));
        }
        MultiLayerNetwork net = (MultiLayerNetwork) model;
        net.setInput(batch.getFeatures());
        net.setLabels(batch.getLabels());
        net.setLayerMaskArrays(batch.getFeaturesMaskArray(), batch.getLabelsMaskArray());
        try {
            return stepOnCurrentInput();
        } finally {
            net.clearLayerMaskArrays();
            net.clearLayersStates();
        }
    }

    /**
     * One micro-batch of a multi-input/-output graph (a multi-layer network takes one feature and
     * one label array).
     *
     * @throws IllegalArgumentException if the batch is null, lacks features or labels, or has more
     *     than one of them for a multi-layer network
     */
    public StepResult<INDArray> step(MultiDataSet batch) {
        if (batch == null) {
            throw new IllegalArgumentException("batch must not be null");
        }
        if (batch.getFeatures() == null || batch.getLabels() == null || batch.getFeatures().length == 0
                || batch.getLabels().length == 0) {
            throw new IllegalArgumentException("batch must have features and labels, got "
                    + (batch.getFeatures() == null ? "no" : batch.getFeatures().length) + " feature and "
                    + (batch.getLabels() == null ? "no" : batch.getLabels().length) + " label arrays");
        }
        if (model instanceof MultiLayerNetwork) {
            if (batch.getFeatures().length != 1 || batch.getLabels().length != 1) {
                throw new IllegalArgumentException("batch must have one feature and one label array for a MultiLayerNetwork, got "
                        + batch.getFeatures().length + " and " + batch.getLabels().length);
            }
            return step(new org.nd4j.linalg.dataset.DataSet(batch.getFeatures(0), batch.getLabels(0),
                    batch.getFeaturesMaskArray(0), batch.getLabelsMaskArray(0)));
        }
        ComputationGraph graph = (ComputationGraph) model;
        graph.setInputs(batch.getFeatures());
        graph.setLabels(batch.getLabels());
        graph.setLayerMaskArrays(batch.getFeaturesMaskArrays(), batch.getLabelsMaskArrays());
        try {
            return stepOnCurrentInput();
        } finally {
            graph.clearLayerMaskArrays();
            graph.clearLayersStates();
        }
    }

    /**
     * One epoch: every batch of {@code data} through {@link #step(DataSet)} (reset first if it is
     * exhausted and resettable), then the network's epoch count + 1.
     *
     * @throws IllegalArgumentException if {@code data} is null
     */
    public void fit(DataSetIterator data) {
        if (data == null) {
            throw new IllegalArgumentException("data must not be null");
        }
        if (!data.hasNext() && data.resetSupported()) {
            data.reset();
        }
        epoch(() -> {
            while (data.hasNext()) {
                step(data.next());
            }
        });
    }

    /**
     * One epoch of multi-input/-output batches, as {@link #fit(DataSetIterator)}.
     *
     * @throws IllegalArgumentException if {@code data} is null
     */
    public void fit(MultiDataSetIterator data) {
        if (data == null) {
            throw new IllegalArgumentException("data must not be null");
        }
        if (!data.hasNext() && data.resetSupported()) {
            data.reset();
        }
        epoch(() -> {
            while (data.hasNext()) {
                step(data.next());
            }
        });
    }

    private void epoch(Runnable body) {
        for (TrainingListener l : listeners()) {
            l.onEpochStart(model);
        }
        body.run();
        for (TrainingListener l : listeners()) {
            l.onEpochEnd(model);
        }
        if (model instanceof MultiLayerNetwork net) {
            net.incrementEpochCount();
        } else {
            ((ComputationGraph) model).incrementEpochCount();
        }
    }

    private StepResult<INDArray> stepOnCurrentInput() {
        if (model instanceof MultiLayerNetwork net) {
            net.computeGradientAndScore();
        } else {
            ((ComputationGraph) model).computeGradientAndScore();
        }
        if (foldsDivision == null) {
            foldsDivision = model.conf() != null && Dl4jGradients.coversMinibatchDivision(model);
        }
        StepResult<INDArray> r = runner.run(model, foldsDivision);
        Gradient gradient = model.gradient();
        if (r.applies()) {
            int iteration = BaseOptimizer.getIterationCount(model);
            int epoch = BaseOptimizer.getEpochCount(model);
            if (foldsDivision) {
                updateMean(gradient, iteration, epoch);
            } else {
                // the views hold DL4J's sum: the updater divides by the batch size, as in DL4J's own fit
                updater().update(gradient, iteration, epoch, model.batchSize(), LayerWorkspaceMgr.noWorkspaces());
            }
            if (runner.wantsUpdates()) {
                runner.reportUpdates(model, false); // the update is in the gradient views, the parameters are still θ before
            }
            model.params().subi(gradient.gradient()); // the updater turned the gradient into the update, in place
            for (TrainingListener l : listeners()) {
                l.iterationDone(model, iteration, epoch);
            }
            BaseOptimizer.incrementIterationCount(model, 1);
            BaseOptimizer.applyConstraints(model);
        } else if (r.skipped()) {
            gradient.gradient().assign(0); // clears NaN and Inf too
        }
        return r;
    }

    /**
     * DL4J's updater on gradient views that already hold the batch mean: the runner divided by the
     * batch size in the same pass that applied the pipeline's scaling (so an acting clip costs no
     * pass of its own), so the updater's own division ({@code NeuralNetConfiguration.isMiniBatch},
     * read by the updater only to divide) is switched off for this call and restored after it.
     */
    private void updateMean(Gradient gradient, int iteration, int epoch) {
        NeuralNetConfiguration conf = model.conf();
        boolean divides = conf.isMiniBatch();
        conf.setMiniBatch(false);
        try {
            updater().update(gradient, iteration, epoch, model.batchSize(), LayerWorkspaceMgr.noWorkspaces());
        } finally {
            conf.setMiniBatch(divides);
        }
    }

    private BaseMultiLayerUpdater<?> updater() {
        return model instanceof MultiLayerNetwork net ? (BaseMultiLayerUpdater<?>) net.getUpdater()
                : ((ComputationGraph) model).getUpdater();
    }

    private Collection<TrainingListener> listeners() {
        return model instanceof MultiLayerNetwork net ? net.getListeners() : ((ComputationGraph) model).getListeners();
    }

    private static String shape(INDArray a) {
        return a == null ? "null" : java.util.Arrays.toString(a.shape());
    }

    @Override
    public String toString() {
        return "GuardedTrainer[" + model.getClass().getSimpleName() + ", " + runner.pipeline().stageNames() + "]";
    }
}
