package io.gradguard.core;

import io.gradguard.core.internal.Checks;

/**
 * What a transform may know about the current call besides the gradients: which real optimizer
 * step it belongs to, which micro-batch of an accumulation window, the batch size, the loss when
 * known, and the micro-batch's weight (examples or tokens in it).
 *
 * <p>Adapters create it with the batch facts; the pipeline fills in the counters.
 *
 * <pre>{@code
 * pipeline.step(grads, ops, StepContext.ofBatch(64).withLoss(loss));
 * }</pre>
 *
 * @param step       the index of the real optimizer step this call contributes to (0-based)
 * @param microStep  the index of this call inside the current step (0 without accumulation)
 * @param call       the index of this call among every call of the pipeline since it started
 *                   (0-based): the micro-batch, or loop iteration, as the user counts it; it
 *                   differs from {@code step} under accumulation and after skipped steps
 * @param batchSize  examples in this micro-batch, or 0 when unknown
 * @param loss       the loss of this micro-batch, or NaN when unknown
 * @param weight     the micro-batch's weight for weighted accumulation (default: 1)
 * @param nonFiniteInputs whether the adapter saw NaN or ±Inf in this micro-batch's inputs (false
 *                   when it could not look); it lets a non-finite stage name bad input data as the
 *                   cause instead of divergence
 */
public record StepContext(long step, int microStep, long call, long batchSize, double loss, double weight,
        boolean nonFiniteInputs) {

    /**
     * @throws IllegalArgumentException for a negative counter or batch size, or a weight that is
     *     not finite and &gt;= 0
     */
    public StepContext {
        Checks.require(step >= 0, "step", "be >= 0", step);
        Checks.require(microStep >= 0, "microStep", "be >= 0", microStep);
        Checks.require(call >= 0, "call", "be >= 0", call);
        Checks.require(batchSize >= 0, "batchSize", "be >= 0", batchSize);
        Checks.require(Double.isFinite(weight) && weight >= 0, "weight", "be a finite number >= 0", weight);
    }

    /** The same without knowledge of the inputs. */
    public StepContext(long step, int microStep, long call, long batchSize, double loss, double weight) {
        this(step, microStep, call, batchSize, loss, weight, false);
    }

    /** Nothing known. */
    public static StepContext empty() {
        return new StepContext(0, 0, 0, 0, Double.NaN, 1.0);
    }

    /** A micro-batch of {@code batchSize} examples. */
    public static StepContext ofBatch(long batchSize) {
        return new StepContext(0, 0, 0, batchSize, Double.NaN, 1.0);
    }

    public StepContext withLoss(double newLoss) {
        return new StepContext(step, microStep, call, batchSize, newLoss, weight, nonFiniteInputs);
    }

    public StepContext withWeight(double newWeight) {
        return new StepContext(step, microStep, call, batchSize, loss, newWeight, nonFiniteInputs);
    }

    /** The same facts, with whether the inputs hold NaN or ±Inf (adapters that see the inputs on the host). */
    public StepContext withNonFiniteInputs(boolean found) {
        return new StepContext(step, microStep, call, batchSize, loss, weight, found);
    }

    /** The same facts at the given counters (the pipeline calls this). */
    public StepContext at(long newStep, int newMicroStep, long newCall) {
        return new StepContext(newStep, newMicroStep, newCall, batchSize, loss, weight, nonFiniteInputs);
    }

    /** Whether the loss is known. */
    public boolean hasLoss() {
        return !Double.isNaN(loss);
    }
}
