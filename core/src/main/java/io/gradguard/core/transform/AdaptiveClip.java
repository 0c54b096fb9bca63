package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Norms;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.util.Arrays;

/**
 * Adaptive gradient clipping (AGC), unit-wise: each output unit's gradient is clipped relative to
 * the norm of that unit's weights.
 *
 * <pre>w_i = max(‖W_i‖, ε)                 (ε = 1e-3 by default)
 * g_i ← g_i · min(1, λ·w_i / max(‖G_i‖, 1e-6))</pre>
 *
 * <p>which equals Optax's {@code select(‖G_i‖ &lt; λ·w_i, G_i, G_i·λ·w_i/max(‖G_i‖, 1e-6))} without a
 * host branch. Units are given by each tensor's {@link io.gradguard.core.Layout}: all axes but the
 * output axis are reduced; a bias (rank ≤ 1) is one unit.
 *
 * <p>Reference: Brock, De, Smith, Simonyan, "High-Performance Large-Scale Image Recognition Without
 * Normalization", ICML 2021 (NFNets); Optax {@code adaptive_grad_clip}.
 *
 * <pre>{@code
 * Transforms.adaptiveClip(0.01);
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if λ or ε is not a finite number &gt; 0; (at
 *     update) if a parameter's value has another shape than its gradient
 * @throws IllegalStateException (at update) if the adapter did not attach parameter values
 */
public final class AdaptiveClip implements GradientTransform {
    /** The gradient-norm floor of the paper and Optax. */
    static final double GRADIENT_EPS = 1e-6;

    private final double clipping;
    private final double eps;

    /** Use {@link io.gradguard.core.Transforms#adaptiveClip(double)}. */
    public AdaptiveClip(double clipping, double eps) {
        this.clipping = Checks.positive("clipping", clipping);
        this.eps = Checks.positive("eps", eps);
    }

    public double clipping() {
        return clipping;
    }

    public double eps() {
        return eps;
    }

    @Override
    public String name() {
        return "adaptiveClip";
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        TensorOps<T> ops = step.ops();
        T lambda = ops.scalar(clipping);
        T paramFloor = ops.scalar(eps);
        T gradFloor = ops.scalar(GRADIENT_EPS);
        T one = ops.scalar(1.0);
        for (GradientTensor<T> g : step.gradients()) {
            if (g.param() == null) {
                throw new IllegalStateException("adaptiveClip needs the parameter values, but gradient " + g.name()
                        + " has none: build the GradientSet with the parameters (the adapters do)");
            }
            long[] ps = ops.shape(g.param());
            if (!Arrays.equals(ps, g.shape())) {
                throw new IllegalArgumentException("param of " + g.name() + " must have the gradient's shape "
                        + Arrays.toString(g.shape()) + ", got " + Arrays.toString(ps));
            }
            T maxNorm = ops.mul(lambda, ops.max(Norms.unitNorms(ops, g.param(), g.layout()), paramFloor));
            T gradNorm = ops.max(Norms.unitNorms(ops, g.gradient(), g.layout()), gradFloor);
            ops.scaleInPlace(g.gradient(), ops.min(one, ops.div(maxNorm, gradNorm)));
        }
        return Action.proceed();
    }

    @Override
    public String toString() {
        return "adaptiveClip(" + clipping + ")";
    }
}
