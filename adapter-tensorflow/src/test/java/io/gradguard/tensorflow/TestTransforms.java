package io.gradguard.tensorflow;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.spi.TensorOps;

/** Test-only transforms that exercise HOLD and SKIP until the stateful transforms land on main. */
final class TestTransforms {
    private TestTransforms() {
    }

    /** SKIP when any gradient has a NaN or Inf (a host read of the count, as a real skip policy does). */
    static GradientTransform skipNonFinite() {
        return new GradientTransform() {
            @Override
            public String name() {
                return "testSkipNonFinite";
            }

            @Override
            public <T> Action update(Step<T> step, TransformState state) {
                TensorOps<T> ops = step.ops();
                T total = ops.scalar(0);
                for (GradientTensor<T> g : step.gradients()) {
                    total = ops.add(total, ops.countNonFinite(g.gradient()));
                }
                return ops.toHost(total) > 0 ? Action.skip("non-finite gradient") : Action.proceed();
            }
        };
    }

    /** Mean of k micro-batches in accumulator buffers (zerosLike, addInPlace, assign, fill): HOLD k-1 times, then PROCEED. */
    static GradientTransform meanOf(int k) {
        return new GradientTransform() {
            @Override
            public String name() {
                return "testMeanOf";
            }

            @Override
            public <T> TransformState init(io.gradguard.core.GradientSet<T> gradients, TensorOps<T> ops) {
                java.util.List<T> acc = new java.util.ArrayList<>();
                for (GradientTensor<T> g : gradients) {
                    acc.add(ops.zerosLike(g.gradient()));
                }
                return new Buffers<>(acc);
            }

            @Override
            @SuppressWarnings("unchecked")
            public <T> Action update(Step<T> step, TransformState state) {
                TensorOps<T> ops = step.ops();
                java.util.List<T> acc = ((Buffers<T>) state).acc();
                for (int i = 0; i < acc.size(); i++) {
                    ops.addInPlace(acc.get(i), step.gradients().get(i).gradient(), 1.0 / k);
                }
                if (step.context().microStep() < k - 1) {
                    return Action.hold();
                }
                for (int i = 0; i < acc.size(); i++) {
                    ops.assign(step.gradients().get(i).gradient(), acc.get(i));
                    ops.fill(acc.get(i), 0.0);
                }
                return Action.proceed();
            }
        };
    }

    record Buffers<T>(java.util.List<T> acc) implements TransformState {
    }

    /** HOLD every call whose micro-step is below k-1 (no state: the gradient of the last call is applied). */
    static GradientTransform holdUntil(int k) {
        return new GradientTransform() {
            @Override
            public String name() {
                return "testHold";
            }

            @Override
            public <T> Action update(Step<T> step, TransformState state) {
                return step.context().microStep() < k - 1 ? Action.hold() : Action.proceed();
            }
        };
    }
}
