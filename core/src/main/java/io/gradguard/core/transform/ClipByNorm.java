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
 * Rescales each group of gradients (one tensor, one layer, or all of them) so that its norm is at
 * most {@code c}:
 *
 * <pre>n = ‖g_group‖   (L2, L1, ∞ or RMS)
 * g ← g · c / max(n, c)          = g · min(1, c / n)</pre>
 *
 * <p>The coefficient is computed as a tensor and always multiplied in (no host branch, as PyTorch
 * does). At n = 0 it is exactly 1 (no 0/0, no epsilon: the output norm is c exactly and clipping is
 * idempotent). A NaN norm makes the gradients NaN and an infinite one zeroes them: choose a
 * non-finite policy ahead of it. A norm of exactly c is not clipped.
 *
 * <p>Records (lazily, no sync): {@code norm} and {@code coefficient} for the global scope, and
 * {@code norm.<group>} / {@code coefficient.<group>} per tensor or layer; global L2 clipping also
 * records its bound as {@code threshold} (a host value), so monitors can draw it against the
 * global L2 norm.
 *
 * <p>References: Pascanu et al. 2013 (global L2 clipping); PyTorch {@code clip_grad_norm_};
 * Optax {@code clip_by_global_norm}, {@code clip_by_block_rms}; DL4J {@code ClipL2PerLayer},
 * {@code ClipL2PerParamType}; Keras {@code clipnorm}, {@code global_clipnorm}.
 *
 * <pre>{@code
 * Transforms.clipByGlobalNorm(1.0);
 * Transforms.clipByNorm(5.0, NormType.L2, Scope.LAYER);
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if {@code c} is not a finite number &gt; 0, or
 *     the norm type or scope is null
 */
public final class ClipByNorm implements GradientTransform {
    private final double maxNorm;
    private final NormType normType;
    private final Scope scope;

    /** Use the factories in {@link io.gradguard.core.Transforms}. */
    public ClipByNorm(double maxNorm, NormType normType, Scope scope) {
        this.maxNorm = Checks.positive("maxNorm", maxNorm);
        this.normType = Checks.notNull("normType", normType);
        this.scope = Checks.notNull("scope", scope);
    }

    public double maxNorm() {
        return maxNorm;
    }

    public NormType normType() {
        return normType;
    }

    public Scope scope() {
        return scope;
    }

    @Override
    public String name() {
        if (scope == Scope.TENSOR && normType == NormType.RMS) {
            return "clipByBlockRms";
        }
        return switch (scope) {
            case GLOBAL -> "clipByGlobalNorm";
            case LAYER -> "clipByLayerNorm";
            case TENSOR -> "clipByNorm";
        };
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        TensorOps<T> ops = step.ops();
        for (List<GradientTensor<T>> group : Norms.groups(step.gradients(), scope)) {
            T norm = Norms.norm(ops, group, normType);
            T coef = Norms.clipCoefficient(ops, norm, maxNorm);
            for (GradientTensor<T> g : group) {
                ops.scaleInPlace(g.gradient(), coef);
            }
            boolean global = scope == Scope.GLOBAL;
            step.reportScaling(global ? "" : Norms.groupName(group, scope), norm, coef,
                    global && normType == NormType.L2 ? maxNorm : Double.NaN);
        }
        return Action.proceed();
    }

    @Override
    public String toString() {
        return name() + "(" + maxNorm + ", " + normType + ")";
    }
}
