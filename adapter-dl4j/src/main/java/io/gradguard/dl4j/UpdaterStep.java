package io.gradguard.dl4j;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.StepResult;
import io.gradguard.core.spi.GuardedModel;
import io.gradguard.core.spi.TensorOps;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.gradient.Gradient;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One guarded step on a DL4J network's gradient that ends, when it applies, in a call of a DL4J
 * updater: what the two hooks that can hold or skip share, the step driver ({@link Dl4jTrainer})
 * and the installed updater ({@link GuardedUpdaters}).
 *
 * <p>The pipeline sees the batch mean ({@link BatchMeanView}); when the step applies, one pass
 * leaves the views holding the mean with the pipeline's scaling in it, and the updater runs without
 * its own division by the batch size ({@link #runUpdater} with {@code meanGiven}), or, where
 * GradGuard's gradients are not exactly the ones DL4J divides
 * ({@link Dl4jGradients#coversMinibatchDivision}), the views hold DL4J's sum and the updater
 * divides as usual. The update the updater leaves in the views is reported to a monitor that wants
 * update ratios, while the parameters still hold θ before the step.
 */
abstract class UpdaterStep implements GuardedModel<INDArray> {
    final Dl4jGuard guard;
    final Model model;
    final BatchMeanView view;
    /** Whether the updater is handed the mean (its own division off): decided when the gradients first exist. */
    private Boolean foldsDivision;

    UpdaterStep(Dl4jGuard guard, Model model) {
        this.guard = guard;
        this.model = model;
        this.view = new BatchMeanView(guard.ops());
    }

    /** The guard's step on the gradient of the last backprop. */
    final StepResult<INDArray> run() {
        if (foldsDivision == null) {
            foldsDivision = model.conf() != null && Dl4jGradients.coversMinibatchDivision(model);
        }
        return guard.run(this, BatchMeanView.context(model));
    }

    /**
     * Runs the DL4J updater on {@code gradient}, in place: on the batch mean with its own division
     * switched off ({@code meanGiven}), or on DL4J's sum as usual.
     */
    abstract void runUpdater(Gradient gradient, StepResult<INDArray> result, boolean meanGiven);

    @Override
    public final TensorOps<INDArray> ops() {
        return view.ops();
    }

    @Override
    public final GradientSet<INDArray> gradients() {
        return view.open(model);
    }

    /** The updater on the transformed gradient; the update it leaves in the views is reported where a monitor wants it. */
    @Override
    public final void apply(GradientSet<INDArray> gradients, StepResult<INDArray> result, UpdateRecorder<INDArray> updates) {
        view.settle(foldsDivision);
        runUpdater(model.gradient(), result, foldsDivision);
        if (updates != null) {
            // the updater turned the views into the update, in place; the parameters are still θ before the step
            for (GradientTensor<INDArray> t : gradients) {
                updates.record(t, t.gradient());
            }
        }
    }

    /** A skipped step's gradient is filled with 0, NaN included; a held one is left to the next backprop. */
    @Override
    public void discard(GradientSet<INDArray> gradients, StepResult<INDArray> result) {
        if (result.skipped()) {
            view.zero(model);
        }
    }

    @Override
    public final void endStep() {
        view.close();
    }
}
