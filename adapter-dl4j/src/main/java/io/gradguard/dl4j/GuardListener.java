package io.gradguard.dl4j;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.StepResult;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.optimize.api.BaseTrainingListener;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Guards {@code net.fit(...)} unchanged: a DL4J {@code TrainingListener} that runs a stateless
 * GradGuard pipeline on the gradients after backprop and before DL4J's updater
 * ({@code onGradientCalculation}), for a {@code MultiLayerNetwork} or a {@code ComputationGraph}.
 *
 * <pre>{@code
 * net.addListeners(GuardListener.of(GradientPipeline.of(
 *     Transforms.zeroNonFinite(),
 *     Transforms.clipByGlobalNorm(1.0))));
 * net.fit(trainData, 10);
 * }</pre>
 *
 * <p><b>Thresholds mean the norm of the mean gradient</b> over the minibatch, as DL4J's own
 * {@code GradientNormalization} does: DL4J's gradient is the sum over the minibatch at this point
 * (DL4J's updater divides it by the batch size afterwards); the pipeline sees the mean without the
 * gradient being scaled for it (the backend folds 1/batch into norms and bounds). Per-layer clipping groups parameters by layer (index in a
 * MultiLayerNetwork, name in a ComputationGraph); see {@link Dl4jGradients} for names, roles and
 * layouts.
 *
 * <p><b>Stateless pipelines only.</b> A listener cannot stop DL4J's updater, so it can neither
 * accumulate micro-batches nor really skip a step. Pipelines with a stage that holds or skips
 * ({@code accumulate}, {@code skipNonFinite}, {@code skipSpikes}) are refused when the listener is
 * made; should any other stage hold or skip at run time, the listener throws before the updater
 * runs (the parameters stay as they were). Use {@link GuardedTrainer} for those.
 *
 * <p><b>Update-to-parameter ratios</b> reach a {@link io.gradguard.core.monitor.Monitor Monitor} in the
 * pipeline on the steps it measures in detail: in {@code iterationDone} DL4J has subtracted the
 * update and still holds it in the gradient views, so the listener reports ‖Δθ‖ / ‖θ‖ per layer with
 * θ the parameters before the step (rebuilt as θ + Δθ in one temporary per parameter, freed at
 * once). Steps the monitor does not measure cost one check per monitor.
 *
 * <p><b>Precision.</b> Norms reduce float32 gradients in float32 (one BLAS pass each, widened to
 * float64 per tensor), as DL4J's own {@code GradientNormalization} does;
 * {@link #accumulateInDouble()} reduces in float64 for gradients near 1e30 or 1e-30 (see
 * {@link Nd4jOps}).
 *
 * <p>A warning is logged once if the network also has DL4J's {@code GradientNormalization}
 * configured (both would apply).
 *
 * @throws IllegalArgumentException (from {@link #of}) if the pipeline is null
 * @throws IllegalStateException (from {@link #of}) if a stage may hold or skip a step; (during
 *     {@code fit}) if a stage held or skipped a step
 */
public final class GuardListener extends BaseTrainingListener {
    private final PipelineRunner runner;
    private StepResult<INDArray> last;

    private GuardListener(GradientPipeline pipeline) {
        this.runner = new PipelineRunner(pipeline, "GuardListener");
    }

    /**
     * A listener running {@code pipeline} on every minibatch {@code fit} trains on.
     *
     * @throws IllegalArgumentException if the pipeline is null, or a stage may hold or skip a step
     *     ({@link GradientTransform#mayHoldOrSkip()}: use {@link GuardedTrainer})
     */
    public static GuardListener of(GradientPipeline pipeline) {
        if (pipeline == null) {
            throw new IllegalArgumentException("pipeline must not be null");
        }
        for (int i = 0; i < pipeline.transforms().size(); i++) {
            GradientTransform t = pipeline.transforms().get(i);
            if (t.mayHoldOrSkip()) {
                throw new IllegalArgumentException("pipeline must not hold or skip steps for a GuardListener, got stage '" + pipeline.stageNames().get(i) + "' (" + t
                        + "): it holds or skips steps, but a DL4J TrainingListener runs before the updater and cannot stop it. "
                        + "Drive training with GuardedTrainer.of(net, pipeline) for accumulation and real skips, "
                        + "or remove the stage from the pipeline.");
            }
        }
        return new GuardListener(pipeline);
    }

    /**
     * Makes the pipeline's reductions accumulate in float64 ({@link Nd4jOps#accumulateInDouble()}):
     * norms of float32 gradients near 1e30 or 1e-30 stay finite and non-zero, at the cost of a
     * slower (non-vectorised) reduction. The default reduces in the gradients' type, as DL4J's own
     * {@code GradientNormalization} does.
     *
     * <pre>{@code
     * net.addListeners(GuardListener.of(pipeline).accumulateInDouble());
     * }</pre>
     *
     * @return this
     */
    public GuardListener accumulateInDouble() {
        runner.ops().accumulateInDouble();
        return this;
    }

    /** Whether the pipeline's reductions accumulate in float64 (see {@link #accumulateInDouble()}). */
    public boolean accumulatesInDouble() {
        return runner.ops().accumulatesInDouble();
    }

    /** The pipeline this listener runs. */
    public GradientPipeline pipeline() {
        return runner.pipeline();
    }

    /** The outcome of the latest step (metrics already on the host), or {@code null} before the first. */
    public StepResult<INDArray> lastResult() {
        return last;
    }

    /**
     * Runs the pipeline on the network's gradient. Called by DL4J after backprop.
     *
     * @throws IllegalStateException if a stage held or skipped the step (a listener cannot stop the updater)
     */
    @Override
    public void onGradientCalculation(Model model) {
        StepResult<INDArray> r = runner.run(model);
        last = r;
        if (!r.applies()) {
            throw new IllegalStateException("GuardListener: stage '" + r.decidedBy() + "' returned " + r.action()
                    + ", but a DL4J TrainingListener cannot stop the updater, so this fit was stopped before the update. "
                    + "Drive training with GuardedTrainer.of(net, pipeline) for accumulation and real skips, "
                    + "or remove the stage from the pipeline.");
        }
    }

    /**
     * Reports the step's updates to the pipeline's monitors, on the steps they measure in detail.
     * Called by DL4J after {@code params -= update}, while the gradient views still hold the update.
     */
    @Override
    public void iterationDone(Model model, int iteration, int epoch) {
        if (runner.wantsUpdates()) {
            runner.reportUpdates(model, true);
        }
    }

    /** The backend the pipeline runs on (tests check that no temporary outlives a step). */
    Nd4jOps ops() {
        return runner.ops();
    }

    @Override
    public String toString() {
        return "GuardListener" + runner.pipeline().stageNames();
    }
}
