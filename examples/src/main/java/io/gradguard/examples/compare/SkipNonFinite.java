package io.gradguard.examples.compare;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;

/**
 * Skips a step whose gradients hold a NaN or an Inf; gives up (IllegalStateException) after
 * {@code maxConsecutive} skips in a row. A stand-in for core's {@code Transforms.skipNonFinite},
 * which is being written on main; deleted when it lands.
 */
final class SkipNonFinite implements GradientTransform {
    private final int maxConsecutive;

    SkipNonFinite(int maxConsecutive) {
        if (maxConsecutive < 1) {
            throw new IllegalArgumentException("maxConsecutive must be >= 1, got " + maxConsecutive);
        }
        this.maxConsecutive = maxConsecutive;
    }

    @Override
    public String name() {
        return "skipNonFinite";
    }

    private static final class Counter implements TransformState {
        int consecutive;
    }

    @Override
    public <T> TransformState init(io.gradguard.core.GradientSet<T> gradients, io.gradguard.core.spi.TensorOps<T> ops) {
        return new Counter();
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        Counter c = (Counter) state;
        for (GradientTensor<T> g : step.gradients()) {
            if (step.ops().toHost(step.ops().countNonFinite(g.gradient())) > 0) {
                if (++c.consecutive > maxConsecutive) {
                    throw new IllegalStateException(c.consecutive + " consecutive steps had non-finite gradients (last in "
                            + g.name() + "): training cannot recover; lower the learning rate or restore a checkpoint");
                }
                return Action.skip("non-finite gradient in " + g.name());
            }
        }
        c.consecutive = 0;
        return Action.proceed();
    }
}
