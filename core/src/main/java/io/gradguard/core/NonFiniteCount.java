package io.gradguard.core;

/**
 * How many NaN/±Inf values a stage found on one step, in one tensor or in all it saw. Reported by
 * the non-finite stages through {@link Step#reportNonFinite}; read with
 * {@link StepResult#nonFiniteCounts()}; the {@link io.gradguard.core.monitor.Monitor} counts them
 * even where a stage already replaced the values (so a record never hides a repaired step).
 *
 * <pre>{@code
 * long bad = result.nonFiniteCounts().stream().filter(c -> c.tensor().isEmpty()).mapToLong(c -> (long) c.count()).sum();
 * }</pre>
 *
 * @param stage  the stage's name ({@code "skipNonFinite"}, {@code "zeroNonFinite"})
 * @param tensor the tensor's name, or {@code ""} for the total over every tensor the stage saw
 * @param count  the number of non-finite values
 */
public record NonFiniteCount(String stage, String tensor, double count) {
}
