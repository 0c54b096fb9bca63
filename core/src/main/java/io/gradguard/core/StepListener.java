package io.gradguard.core;

/**
 * Called by the pipeline after every call to {@link GradientPipeline#step}, whatever the outcome
 * (applied, held, skipped), while the step's tensors are still alive. Monitors implement it.
 *
 * <p>A listener must not throw on training data; one that throws is reported once through SLF4J
 * and then ignored, so a broken sink never stops training.
 *
 * <pre>{@code
 * pipeline.addListener((grads, result) -> {
 *     if (result.skipped()) log.warn("skipped step {}: {}", result.context().step(), result.action().reason());
 * });
 * }</pre>
 */
@FunctionalInterface
public interface StepListener {
    void onStep(GradientSet<?> gradients, StepResult<?> result);
}
