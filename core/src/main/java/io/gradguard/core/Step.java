package io.gradguard.core;

import io.gradguard.core.spi.TensorOps;

/**
 * Everything one transform sees when it runs: the gradients, the backend's primitives, the step
 * context, and a place to record what it measured (a pre-clip norm, a coefficient) for monitors.
 *
 * <p>Recorded values are kept as backend scalars and only copied to the host when somebody reads
 * them, so recording costs no device sync. Keys are prefixed with the stage's name
 * ({@code "clipByGlobalNorm.norm"}). What a stage did that others act on (a scaling, a count of
 * non-finite values) is reported as a typed record as well ({@link #reportScaling},
 * {@link #reportNonFinite}): the monitor reads those, never metric names.
 *
 * @param <T> the backend's tensor type
 */
public final class Step<T> {
    private final GradientSet<T> gradients;
    private final TensorOps<T> ops;
    private final StepContext context;
    private final String stage;
    private final StepRecords records;
    private final boolean partial;

    /** Created by the pipeline; composite transforms derive theirs with {@link #forStage} and {@link #withGradients}. */
    Step(GradientSet<T> gradients, TensorOps<T> ops, StepContext context, String stage, StepRecords records,
            boolean partial) {
        this.gradients = gradients;
        this.ops = ops;
        this.context = context;
        this.stage = stage;
        this.records = records;
        this.partial = partial;
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
        records.metrics.put(stage + "." + key, scalar);
    }

    /** Records a host value under {@code <stage>.<key>}. */
    public void recordValue(String key, double value) {
        records.metrics.put(stage + "." + key, value);
    }

    /**
     * Reports that this stage multiplied one group of gradients by one coefficient (a {@link Scaling}),
     * and records {@code norm[.group]} and {@code coefficient[.group]} (and {@code threshold} when
     * not NaN) as metrics of the stage. Values are backend scalars ({@code T}) or host
     * {@code Double}s; nothing is copied to the host here.
     *
     * @param group       {@code ""} for every gradient this step's stage sees, else the layer or tensor name
     * @param norm        the measured norm before scaling, or null if none was measured
     * @param coefficient the factor applied
     * @param threshold   the stage's threshold, NaN if it has none
     * @throws IllegalArgumentException if group or coefficient is null, or a value is neither a T nor a Double
     */
    public void reportScaling(String group, Object norm, Object coefficient, double threshold) {
        io.gradguard.core.internal.Checks.notNull("group", group);
        io.gradguard.core.internal.Checks.notNull("coefficient", coefficient);
        String suffix = group.isEmpty() ? "" : "." + group;
        String normKey = null;
        if (norm != null) {
            normKey = stage + ".norm" + suffix;
            records.metrics.put(normKey, norm);
        }
        String coefficientKey = stage + ".coefficient" + suffix;
        records.metrics.put(coefficientKey, coefficient);
        if (!Double.isNaN(threshold)) {
            records.metrics.put(stage + ".threshold", threshold);
        }
        records.entries.add(new StepRecords.Entry(stage, group, partial, normKey, coefficientKey, threshold, false));
    }

    /**
     * Reports how many non-finite values this stage found (a {@link NonFiniteCount}) and records it
     * as the metric {@code nonFinite[.tensor]}.
     *
     * @param tensor the tensor's name, {@code ""} for the total over the stage's gradients
     * @param count  a backend scalar or a host {@code Double}
     */
    public void reportNonFinite(String tensor, Object count) {
        io.gradguard.core.internal.Checks.notNull("tensor", tensor);
        io.gradguard.core.internal.Checks.notNull("count", count);
        String key = stage + ".nonFinite" + (tensor.isEmpty() ? "" : "." + tensor);
        records.metrics.put(key, count);
        records.entries.add(new StepRecords.Entry(stage, tensor, partial, null, key, Double.NaN, true));
    }

    /** Reports the loss scale this call's loss was multiplied by (a loss-scale stage does). */
    public void reportLossScale(double scale) {
        records.lossScale = scale;
        records.metrics.put(stage + ".scale", scale);
    }

    /** The same step, restricted to a subset of the gradients (for masked transforms); its reports say {@code partial}. */
    public Step<T> withGradients(GradientSet<T> subset) {
        return new Step<>(subset, ops, context, stage, records, true);
    }

    /** The same step, recording under another stage name (for composite transforms). */
    public Step<T> forStage(String innerStage) {
        return new Step<>(gradients, ops, context, innerStage, records, partial);
    }
}
