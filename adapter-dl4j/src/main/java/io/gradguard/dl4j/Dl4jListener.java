package io.gradguard.dl4j;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.StepResult;
import io.gradguard.core.spi.GuardedModel;
import io.gradguard.core.spi.TensorOps;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.optimize.api.BaseTrainingListener;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The {@code net.fit(...)} hook of a {@link Dl4jGuard} ({@link Dl4jGuard#listener()}): a DL4J
 * {@code TrainingListener} that runs the guard's step in {@code onGradientCalculation}, after
 * backprop and before DL4J's updater, on a {@code MultiLayerNetwork} or a {@code ComputationGraph}.
 *
 * <p>The views are handed back holding DL4J's sum (see {@link BatchMeanView}); DL4J's updater
 * divides by the batch size as it always does. A listener cannot stop the updater, so a step the
 * pipeline holds or skips throws before the updater runs. Update-to-parameter ratios are reported
 * in {@code iterationDone}, where DL4J has subtracted the update and still holds it in the gradient
 * views: θ before the step is rebuilt as θ + Δθ, one temporary per parameter, freed at once.
 */
final class Dl4jListener extends BaseTrainingListener implements GuardedModel<INDArray> {
    private final Dl4jGuard guard;
    private final BatchMeanView view;
    private Model model;
    /** Where the step just applied wants its updates reported, once DL4J has made them; null if nowhere. */
    private UpdateRecorder<INDArray> updates;

    Dl4jListener(Dl4jGuard guard, PendingFactorOps ops) {
        this.guard = guard;
        this.view = new BatchMeanView(ops);
    }

    /**
     * Runs the guard's step on the network's gradient. Called by DL4J after backprop.
     *
     * @throws IllegalStateException if the pipeline held or skipped the step, or the guard guards
     *     another network or is closed
     */
    @Override
    public void onGradientCalculation(Model model) {
        guard.attach(model);
        this.model = model;
        updates = null;
        guard.run(this, BatchMeanView.context(model));
    }

    /** Reports the step's updates where a monitor wants them. Called by DL4J after {@code params -= update}. */
    @Override
    public void iterationDone(Model model, int iteration, int epoch) {
        UpdateRecorder<INDArray> recorder = updates;
        updates = null;
        if (recorder == null || model != this.model) {
            return;
        }
        PendingFactorOps ops = view.ops();
        try {
            for (GradientTensor<INDArray> t : Dl4jGradients.of(model)) {
                INDArray before = ops.add(t.param(), t.gradient());
                recorder.record(new GradientTensor<>(t.name(), t.shape(), t.role(), t.layer(), t.layout(), t.gradient(),
                        before), t.gradient());
                ops.releaseTemporaries();
            }
        } finally {
            ops.releaseTemporaries();
        }
    }

    @Override
    public TensorOps<INDArray> ops() {
        return view.ops();
    }

    @Override
    public GradientSet<INDArray> gradients() {
        return view.open(model);
    }

    /** DL4J's updater runs next, on DL4J's sum ({@link #endStep()}); the updates are reported in {@link #iterationDone}. */
    @Override
    public void apply(GradientSet<INDArray> gradients, StepResult<INDArray> result, UpdateRecorder<INDArray> updates) {
        this.updates = updates;
    }

    /** @throws IllegalStateException always: a listener cannot stop DL4J's updater */
    @Override
    public void discard(GradientSet<INDArray> gradients, StepResult<INDArray> result) {
        throw new IllegalStateException("Dl4jGuard.listener(): stage '" + result.decidedBy() + "' returned " + result.action()
                + ", but a DL4J TrainingListener cannot stop the updater, so this fit was stopped before the update. "
                + "Install the guard on the updater instead (guard.install(net), net.fit unchanged), or drive training "
                + "with guard.step(net, batch) or guard.fit(net, data), or remove the stage from the pipeline.");
    }

    @Override
    public void endStep() {
        view.close();
    }

    @Override
    public String toString() {
        return "Dl4jListener[" + guard + "]";
    }
}
