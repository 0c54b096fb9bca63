package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.spi.TensorOps;

/**
 * Clips every gradient element into {@code [lo, hi]}:
 *
 * <pre>g ← min(max(g, lo), hi)</pre>
 *
 * <p>Symmetric by default ({@code [-c, c]}, as PyTorch {@code clip_grad_value_}, Keras
 * {@code clipvalue}, DL4J {@code ClipElementWiseAbsoluteValue}); DJL's built-in
 * {@code optClipGrad} on the PyTorch engine clips only from above. NaN stays NaN: put a
 * non-finite policy before it.
 *
 * <p>Reference: Pascanu, Mikolov, Bengio, "On the difficulty of training recurrent neural
 * networks", ICML 2013; Optax {@code clip}.
 *
 * <pre>{@code
 * Transforms.clipByValue(1.0);          // [-1, 1]
 * Transforms.clipByValue(-0.5, 2.0);    // asymmetric
 * }</pre>
 *
 * @throws IllegalArgumentException (from the factories) if a bound is NaN or {@code lo > hi}
 */
public final class ClipByValue implements GradientTransform {
    private final double lo;
    private final double hi;

    /** Use {@link io.gradguard.core.Transforms#clipByValue(double, double)}. */
    public ClipByValue(double lo, double hi) {
        if (Double.isNaN(lo)) {
            throw new IllegalArgumentException("lo must be a number, got NaN");
        }
        if (Double.isNaN(hi)) {
            throw new IllegalArgumentException("hi must be a number, got NaN");
        }
        if (lo > hi) {
            throw new IllegalArgumentException("lo must be <= hi, got lo=" + lo + ", hi=" + hi);
        }
        this.lo = lo;
        this.hi = hi;
    }

    public double lo() {
        return lo;
    }

    public double hi() {
        return hi;
    }

    @Override
    public String name() {
        return "clipByValue";
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        TensorOps<T> ops = step.ops();
        for (GradientTensor<T> g : step.gradients()) {
            ops.clampInPlace(g.gradient(), lo, hi);
        }
        return Action.proceed();
    }

    @Override
    public String toString() {
        return "clipByValue[" + lo + ", " + hi + "]";
    }
}
