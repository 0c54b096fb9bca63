package io.gradguard.core;

import io.gradguard.core.spi.TensorOps;
import java.util.Map;

/**
 * Everything one transform sees when it runs: the gradients, the backend's primitives, the step
 * context, and a place to record what it measured (a pre-clip norm, a coefficient) for monitors.
 *
 * <p>Recorded values are kept as backend scalars and only copied to the host when somebody reads
 * them, so recording costs no device sync. Keys are prefixed with the stage's name
 * ({@code "clipByGlobalNorm.norm"}).
 *
 * @param <T> the backend's tensor type
 */
public final class Step<T> {
    private final GradientSet<T> gradients;
    private final TensorOps<T> ops;
    private final StepContext context;
    private final String stage;
    private final Map<String, Object> metrics;

    /** Created by the pipeline (and by composite transforms for their inner stages). */
    public Step(GradientSet<T> gradients, TensorOps<T> ops, StepContext context, String stage, Map<String, Object> metrics) {
        this.gradients = gradients;
        this.ops = ops;
        this.context = context;
        this.stage = stage;
        this.metrics = metrics;
    }

    public GradientSet<T> gradients() {
        return gradients;
    }

    public TensorOps<T> ops() {
        return ops;
    }

    public StepContext context() {
        return context;
    }

    /** The name of the stage that is running. */
    public String stage() {
        return stage;
    }

    /** Records a scalar tensor under {@code <stage>.<key>}; it is copied to the host only when read. */
    public void record(String key, T scalar) {
        metrics.put(stage + "." + key, scalar);
    }

    /** Records a host value under {@code <stage>.<key>}. */
    public void recordValue(String key, double value) {
        metrics.put(stage + "." + key, value);
    }

    /** The same step, restricted to other gradients (for masked transforms). */
    public Step<T> withGradients(GradientSet<T> subset) {
        return new Step<>(subset, ops, context, stage, metrics);
    }

    /** The same step, recording under another stage name (for composite transforms). */
    public Step<T> forStage(String innerStage) {
        return new Step<>(gradients, ops, context, innerStage, metrics);
    }
}
