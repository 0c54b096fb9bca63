/**
 * Gradient monitoring: one typed {@link io.gradguard.core.monitor.StepRecord} per optimizer step,
 * detectors for exploding, vanishing and non-finite gradients, and sinks (SLF4J, JSON Lines, CSV,
 * a self-contained HTML report, TensorBoard event files) that never stop training when they fail.
 *
 * <pre>{@code
 * Monitor monitor = Monitor.builder()
 *     .name("mlp")
 *     .every(10)                                  // per-tensor stats every 10th step
 *     .sink(Sinks.jsonl(Path.of("grad.jsonl")))
 *     .sink(Sinks.slf4j(100))
 *     .build();
 * GradientPipeline guard = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), monitor);
 * ...
 * monitor.close();
 * }</pre>
 */
package io.gradguard.core.monitor;
