package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.spi.TensorOps;

/**
 * Gradient centralization: removes from each output unit's gradient its mean, for every tensor of
 * rank &gt; 1 (weights and kernels); vectors (biases) are left alone.
 *
 * <pre>g_i ← g_i − mean(g_i)     (mean over every axis but the output axis)</pre>
 *
 * <p>The output axis comes from the tensor's {@link io.gradguard.core.Layout}. A tensor whose layout
 * is {@code whole()} is centred over all its elements.
 *
 * <p>Reference: Yong, Huang, Hua, Zhang, "Gradient Centralization: A New Optimization Technique for
 * Deep Neural Networks", ECCV 2020; Optax {@code centralize}.
 *
 * <pre>{@code
 * Transforms.centralize();
 * }</pre>
 */
public final class Centralize implements GradientTransform {

    @Override
    public String name() {
        return "centralize";
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        TensorOps<T> ops = step.ops();
        for (GradientTensor<T> g : step.gradients()) {
            if (g.rank() > 1 && g.size() > 0) {
                ops.addInPlace(g.gradient(), ops.mean(g.gradient(), g.layout().reductionAxes(g.rank())), -1.0);
            }
        }
        return Action.proceed();
    }

    @Override
    public String toString() {
        return name();
    }
}
