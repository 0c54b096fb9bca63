package io.gradguard.core.monitor;

import java.util.List;

/**
 * What a {@link Monitor} measured at one optimizer step: one record per applied step and one per
 * skipped step (micro-batches held by accumulation are folded into the step they belong to).
 *
 * <p>Global norms are L2 norms over every gradient of the model. "Before" is the gradient as
 * backpropagation and accumulation produced it, "after" is what the optimizer receives. Per-tensor
 * and per-layer statistics are measured on {@linkplain Monitor.Builder#every(int) detailed} steps
 * only (every n-th step, plus every step where something went wrong); elsewhere the lists are empty.
 *
 * @param run             the monitor's run name
 * @param index           0-based position of this record in the run
 * @param step            the optimizer step (a skipped step carries the number the next applied
 *                        step will get: skipping does not advance the optimizer)
 * @param call            the pipeline call that completed this record (0-based): the micro-batch,
 *                        or loop iteration, as the user counts it ({@link io.gradguard.core.StepContext#call()})
 * @param skipped         whether the pipeline skipped this step on purpose
 * @param skipReason      why ("" unless skipped)
 * @param skippedBy       the stage that skipped it ("" unless skipped)
 * @param microBatches    micro-batches the optimizer received the mean of (1 without accumulation); a
 *                        skipped record counts the calls it dropped (a micro-batch skipped inside an
 *                        accumulation window drops itself alone: the window goes on)
 * @param loss            the step's loss, weighted mean over its micro-batches; NaN when unknown
 * @param normBefore      global L2 norm before the pipeline's norm clipping
 * @param normAfter       global L2 norm of what the optimizer receives (after every stage)
 * @param clipCoefficient the global clip coefficient; with per-layer or per-tensor clipping the
 *                        effective ratio normAfter / normBefore; 1 without clipping
 * @param clipped         whether any clipping stage scaled a gradient down (a coefficient &lt; 1)
 * @param clipThreshold   the global L2 clipping bound where a stage reported one, NaN otherwise
 * @param nonFinite       NaN/Inf elements seen in this step's gradients
 * @param detailed        whether per-tensor statistics were measured
 * @param layers          per-layer statistics in model order (empty unless detailed)
 * @param tensors         per-tensor statistics in model order (empty unless detailed)
 * @param events          what the detectors reported at this step
 * @param lossScale       the loss scale of the step's last call ({@link io.gradguard.core.transform.LossScale}),
 *                        NaN without loss scaling
 */
public record StepRecord(String run, long index, long step, long call, boolean skipped, String skipReason, String skippedBy,
        int microBatches, double loss, double normBefore, double normAfter, double clipCoefficient, boolean clipped,
        double clipThreshold, long nonFinite, boolean detailed, List<LayerStats> layers, List<TensorStats> tensors,
        List<MonitorEvent> events, double lossScale) {

    /** Copies the lists (records are immutable). */
    public StepRecord {
        layers = List.copyOf(layers);
        tensors = List.copyOf(tensors);
        events = List.copyOf(events);
    }

    /** Whether the loss is known. */
    public boolean hasLoss() {
        return !Double.isNaN(loss);
    }

    /** The same record with other layer statistics (the monitor adds update ratios this way). */
    public StepRecord withLayers(List<LayerStats> newLayers) {
        return new StepRecord(run, index, step, call, skipped, skipReason, skippedBy, microBatches, loss, normBefore,
                normAfter, clipCoefficient, clipped, clipThreshold, nonFinite, detailed, newLayers, tensors, events, lossScale);
    }
}
