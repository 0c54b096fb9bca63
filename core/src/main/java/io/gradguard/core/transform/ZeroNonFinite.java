package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.spi.TensorOps;

/**
 * Replaces non-finite gradient elements by 0 and counts them.
 *
 * <pre>nanOnly:   g ← (isNaN(g) ? 0 : g)             (Optax zero_nans: an Inf is not a NaN)
 * otherwise: g ← (isFinite(g) ? g : 0)          (NaN, +Inf and -Inf all become 0)</pre>
 *
 * <p>Records {@code nonFinite.<tensor>} per tensor (the count of NaN and ±Inf elements found, before
 * replacement) and their sum {@code nonFinite}.
 *
 * <p>Zeroing is not skipping: the optimizer still steps and its moments still move. To drop the step
 * instead, use the skip policy.
 *
 * <p>Reference: Optax {@code zero_nans}; PyTorch {@code torch.nan_to_num}.
 *
 * <pre>{@code
 * Transforms.zeroNonFinite();   // NaN and Inf
 * Transforms.zeroNaN();         // NaN only
 * }</pre>
 */
public final class ZeroNonFinite implements GradientTransform {
    private final boolean nanOnly;

    /** Use {@link io.gradguard.core.Transforms#zeroNonFinite()} or {@link io.gradguard.core.Transforms#zeroNaN()}. */
    public ZeroNonFinite(boolean nanOnly) {
        this.nanOnly = nanOnly;
    }

    /** Whether only NaN is replaced (Inf kept). */
    public boolean nanOnly() {
        return nanOnly;
    }

    @Override
    public String name() {
        return nanOnly ? "zeroNaN" : "zeroNonFinite";
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        TensorOps<T> ops = step.ops();
        T total = null;
        for (GradientTensor<T> g : step.gradients()) {
            T count = ops.countNonFinite(g.gradient());
            step.reportNonFinite(g.name(), count);
            total = total == null ? count : ops.add(total, count);
            if (nanOnly) {
                ops.replaceNonFinite(g.gradient(), 0.0, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY);
            } else {
                ops.replaceNonFinite(g.gradient(), 0.0, 0.0, 0.0);
            }
        }
        step.reportNonFinite("", total == null ? ops.scalar(0.0) : total);
        return Action.proceed();
    }

    @Override
    public String toString() {
        return name();
    }
}
