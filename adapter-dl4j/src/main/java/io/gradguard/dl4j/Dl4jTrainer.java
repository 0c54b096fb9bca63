package io.gradguard.dl4j;

import io.gradguard.core.StepResult;
import java.util.Collection;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.updater.BaseMultiLayerUpdater;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.deeplearning4j.optimize.solvers.BaseOptimizer;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.api.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;

/**
 * The step-driver hook of a {@link Dl4jGuard} ({@link Dl4jGuard#step}, {@link Dl4jGuard#fit}): one
 * micro-batch as DL4J's own {@code fit} runs it, with the network's own updater, but the updater
 * runs only when the pipeline applies the step, so accumulation and real skips work.
 *
 * <p>Per micro-batch: backprop ({@code computeGradientAndScore}); the guard's step on the batch
 * mean ({@link BatchMeanView}); then, if the step applies, one pass turns the views into the mean
 * with the pipeline's scaling (an acting clip's coefficient) in the same pass, and DL4J's updater
 * runs without its own division by the batch size (Adam moments, schedules, regularization, DL4J's
 * own normalization), {@code params -= update}, listeners' {@code iterationDone}, iteration count +
 * 1, constraints. A clip that acts thus costs no pass of its own; with nothing scaled the division
 * is DL4J's own, bit for bit. Where GradGuard's gradients are not exactly the ones DL4J divides (a
 * batch normalization inside a wrapper layer, a frozen layer) the division is left to DL4J
 * ({@link Dl4jGradients#coversMinibatchDivision}). The switch is
 * {@code NeuralNetConfiguration.miniBatch} of {@code net.conf()}, off for the updater call only.
 *
 * <p>A held micro-batch leaves parameters, updater state and iteration count as they were (DL4J
 * overwrites the gradient at the next backprop); a skipped one also zeroes the gradient so that no
 * NaN stays behind. The step itself is {@link UpdaterStep}'s, shared with {@link GuardedUpdaters}.
 */
final class Dl4jTrainer extends UpdaterStep {

    Dl4jTrainer(Dl4jGuard guard, Model model) {
        super(guard, model);
    }

    /** One micro-batch of a multi-layer network. */
    StepResult<INDArray> step(MultiLayerNetwork net, DataSet batch) {
        net.setInput(batch.getFeatures());
        net.setLabels(batch.getLabels());
        net.setLayerMaskArrays(batch.getFeaturesMaskArray(), batch.getLabelsMaskArray());
        try {
            net.computeGradientAndScore();
            return stepOnGradient();
        } finally {
            net.clearLayerMaskArrays();
            net.clearLayersStates();
        }
    }

    /** One micro-batch of a computation graph. */
    StepResult<INDArray> step(ComputationGraph graph, MultiDataSet batch) {
        graph.setInputs(batch.getFeatures());
        graph.setLabels(batch.getLabels());
        graph.setLayerMaskArrays(batch.getFeaturesMaskArrays(), batch.getLabelsMaskArrays());
        try {
            graph.computeGradientAndScore();
            return stepOnGradient();
        } finally {
            graph.clearLayerMaskArrays();
            graph.clearLayersStates();
        }
    }

    /** One epoch: listeners' {@code onEpochStart}, {@code body}, {@code onEpochEnd}, the network's epoch count + 1. */
    void epoch(Runnable body) {
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

    /** The guard's step; when it applies, {@code params -= update} and the bookkeeping {@code fit} does. */
    private StepResult<INDArray> stepOnGradient() {
        StepResult<INDArray> result = run();
        if (result.applies()) {
            int iteration = BaseOptimizer.getIterationCount(model);
            int epoch = BaseOptimizer.getEpochCount(model);
            model.params().subi(model.gradient().gradient());
            for (TrainingListener l : listeners()) {
                l.iterationDone(model, iteration, epoch);
            }
            BaseOptimizer.incrementIterationCount(model, 1);
            BaseOptimizer.applyConstraints(model);
        }
        return result;
    }

    /**
     * DL4J's updater with the network's own iteration count (which counts applied steps only). On
     * the mean, its division ({@code NeuralNetConfiguration.isMiniBatch}, read by the updater only
     * to divide) is switched off for this call and restored after it.
     */
    @Override
    void runUpdater(Gradient gradient, StepResult<INDArray> result, boolean meanGiven) {
        int iteration = BaseOptimizer.getIterationCount(model);
        int epoch = BaseOptimizer.getEpochCount(model);
        NeuralNetConfiguration conf = model.conf();
        boolean divides = conf.isMiniBatch();
        conf.setMiniBatch(divides && !meanGiven);
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
}
