package io.gradguard.dl4j;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.monitor.Monitor;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a pipeline on a DL4J network's gradient right after backprop, in the units users expect.
 *
 * <p>DL4J's backprop leaves the SUM over the minibatch in the gradient views; its updater divides
 * by the batch size afterwards. GradGuard's thresholds mean the norm of the MEAN gradient (as DL4J's
 * own GradientNormalization, which runs after that division). The runner does not scale the
 * gradients for that: it gives each gradient view a pending factor of 1/batch on the backend
 * ({@link Nd4jOps#setFactor}), so the pipeline sees the mean (norms, clamp bounds, accumulation
 * weights fold the factor in) while the views keep holding the sum; a clip coefficient joins the
 * factor too. For a {@link GuardListener} every view holds DL4J's sum again after the pipeline (no
 * work for a view whose factor is still 1/batch; one pass for a view a clip scaled or whose factor
 * a stage dropped, by filling or assigning it), and DL4J's updater divides by the batch size as it
 * always does. For the {@link GuardedTrainer} every view is left holding the mean, in one pass that
 * applies the clip's coefficient and the division together, and the trainer runs DL4J's updater
 * without its own division: a clip that acts costs the trainer no pass of its own.
 *
 * <p>It also reports the optimizer's updates to the pipeline's monitors ({@link Monitor#in}), on the
 * steps they measure in detail: DL4J's updater turns the gradient views into the update in place,
 * so the update is read where it lies, with no copy.
 */
final class PipelineRunner {
    private static final Logger LOG = LoggerFactory.getLogger("io.gradguard.dl4j");

    private final GradientPipeline pipeline;
    private final Nd4jOps ops = new Nd4jOps();
    private final String owner;
    private final List<Monitor> monitors;
    private boolean checkedConfiguration;

    PipelineRunner(GradientPipeline pipeline, String owner) {
        if (pipeline == null) {
            throw new IllegalArgumentException("pipeline must not be null");
        }
        this.pipeline = pipeline;
        this.owner = owner;
        this.monitors = Monitor.in(pipeline);
    }

    GradientPipeline pipeline() {
        return pipeline;
    }

    Nd4jOps ops() {
        return ops;
    }

    /**
     * Runs the pipeline on the batch mean (pending factors, no pass over the gradients), copies its
     * metrics to the host, leaves DL4J's sum in the gradient views, and frees the step's temporaries.
     */
    StepResult<INDArray> run(Model model) {
        return run(model, false);
    }

    /**
     * As {@link #run(Model)}; {@code leaveMean}: when the step applies, the views are left holding
     * the batch mean instead of DL4J's sum, for a caller that runs DL4J's updater without its
     * division by the batch size ({@link GuardedTrainer}; only where {@link
     * Dl4jGradients#coversMinibatchDivision} holds). That costs one pass over each view, and the
     * pass takes the pipeline's own scaling with it: an acting clip costs nothing more than DL4J's
     * division it replaces. A held or skipped step leaves the sum (no work).
     */
    StepResult<INDArray> run(Model model, boolean leaveMean) {
        if (!checkedConfiguration) {
            warnIfBuiltInNormalization(model);
            checkedConfiguration = true;
        }
        GradientSet<INDArray> gradients = Dl4jGradients.of(model);
        int batch = model.batchSize();
        double divisor = Dl4jGradients.dividesByBatch(model) && batch > 1 ? batch : 1;
        StepResult<INDArray> result = null;
        try {
            if (divisor != 1) {
                for (GradientTensor<INDArray> g : gradients) {
                    ops.setFactor(g.gradient(), 1.0 / divisor);
                }
            }
            result = pipeline.step(gradients, ops, StepContext.ofBatch(batch).withLoss(model.score()));
            result.hostMetrics(); // the metrics outlive the temporaries freed below
            return result;
        } finally {
            // DL4J's sum again: no work for a view that kept its factor, one pass for one that lost
            // it; or the mean: one pass for each view (the division DL4J's updater would have made)
            boolean toMean = leaveMean && result != null && result.applies();
            for (GradientTensor<INDArray> g : gradients) {
                ops.settle(g.gradient(), toMean ? 1.0 : 1.0 / divisor);
            }
            ops.releaseTemporaries();
        }
    }

    /** Whether a monitor waits for the update of the step just applied (no allocation: checked on every step). */
    boolean wantsUpdates() {
        for (Monitor m : monitors) {
            if (m.wantsUpdates()) {
                return true;
            }
        }
        return false;
    }

    /**
     * Reports every parameter's update ‖Δθ‖ against its value before the step ‖θ‖ to the monitors
     * that want it, after DL4J's updater left the update (the exact array subtracted from the
     * parameters) in the gradient views. {@code subtracted}: whether {@code params -= update} already
     * happened; then θ before the step is rebuilt as θ + Δθ in one temporary per parameter, freed at
     * once. Everything else is a reduction on ND4J (two scalars per parameter reach the host).
     */
    void reportUpdates(Model model, boolean subtracted) {
        try {
            for (GradientTensor<INDArray> t : Dl4jGradients.of(model)) {
                GradientTensor<INDArray> before = !subtracted ? t : new GradientTensor<>(t.name(), t.shape(), t.role(),
                        t.layer(), t.layout(), t.gradient(), ops.add(t.param(), t.gradient()));
                for (Monitor m : monitors) {
                    m.recordUpdate(ops, before, t.gradient()); // ignored by a monitor that does not want it
                }
                ops.releaseTemporaries();
            }
        } finally {
            ops.releaseTemporaries();
        }
    }

    private void warnIfBuiltInNormalization(Model model) {
        Map<String, GradientNormalization> builtIn = Dl4jGradients.builtInNormalization(model);
        if (!builtIn.isEmpty()) {
            LOG.warn("GradGuard {}: the network also has DL4J's own GradientNormalization configured (layer=mode: {}). "
                    + "DL4J applies it in its updater after GradGuard's pipeline, so both apply. Remove "
                    + ".gradientNormalization(...) from the configuration, or the matching stage from the pipeline.",
                    owner, builtIn);
        }
    }
}
