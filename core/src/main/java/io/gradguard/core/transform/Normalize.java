package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.NormType;
import io.gradguard.core.Norms;
import io.gradguard.core.Scope;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.util.List;

/**
 * Renormalizes each group of gradients (tensor, layer or all) to unit L2 norm:
 *
 * <pre>g ← g / max(‖g_group‖₂, 1.1754944e-38)</pre>
 *
 * <p>The floor is the smallest normal float32, so an all-zero group stays zero (0 · 1/floor = 0)
 * instead of becoming NaN; any non-zero group ends with norm 1.
 *
 * <p>Reference: DL4J {@code GradientNormalization.RenormalizeL2PerLayer} and
 * {@code RenormalizeL2PerParamType}; normalized gradient descent (Hazan, Levy, Shalev-Shwartz 2015).
 *
 * <pre>{@code
 * Transforms.normalize(Scope.LAYER);
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if the scope is null
 */
public final class Normalize implements GradientTransform {
    /** The smallest normal float32: a zero norm never divides. */
    public static final double NORM_FLOOR = Float.MIN_NORMAL;

    private final Scope scope;

    /** Use {@link io.gradguard.core.Transforms#normalize(Scope)}. */
    public Normalize(Scope scope) {
        this.scope = Checks.notNull("scope", scope);
    }

    public Scope scope() {
        return scope;
    }

    @Override
    public String name() {
        return "normalize" + switch (scope) {
            case GLOBAL -> "Global";
            case LAYER -> "PerLayer";
            case TENSOR -> "PerTensor";
        };
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        TensorOps<T> ops = step.ops();
        T one = ops.scalar(1.0);
        T floor = ops.scalar(NORM_FLOOR);
        for (List<GradientTensor<T>> group : Norms.groups(step.gradients(), scope)) {
            T norm = Norms.norm(ops, group, NormType.L2);
            T coef = ops.div(one, ops.max(norm, floor));
            for (GradientTensor<T> g : group) {
                ops.scaleInPlace(g.gradient(), coef);
            }
            step.reportScaling(scope == Scope.GLOBAL ? "" : Norms.groupName(group, scope), norm, coef, Double.NaN);
        }
        return Action.proceed();
    }

    @Override
    public String toString() {
        return name();
    }
}
