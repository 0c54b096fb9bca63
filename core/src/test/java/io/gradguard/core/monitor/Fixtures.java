package io.gradguard.core.monitor;

import io.gradguard.core.Action;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.reference.ReferenceTensor;
import java.util.ArrayList;
import java.util.List;

/** Reference-backend gradients and small test-only transforms (HOLD / SKIP) for the monitor tests. */
final class Fixtures {
    private Fixtures() {
    }

    /** A rank-1 gradient with a parameter value of ones. */
    static GradientTensor<ReferenceTensor> grad(String name, String layer, float... values) {
        float[] ones = new float[values.length];
        java.util.Arrays.fill(ones, 1f);
        return new GradientTensor<>(name, new long[] {values.length}, name.endsWith("b") ? Role.BIAS : Role.WEIGHT, layer,
                Layout.outputLast(), ReferenceTensor.of(values.clone(), values.length), ReferenceTensor.of(ones, values.length));
    }

    @SafeVarargs
    static GradientSet<ReferenceTensor> set(GradientTensor<ReferenceTensor>... tensors) {
        return GradientSet.of(List.of(tensors));
    }

    /** Layers "dense_0".."dense_{n-1}", one weight [v] each (norm = |v|). */
    static GradientSet<ReferenceTensor> layers(float... norms) {
        List<GradientTensor<ReferenceTensor>> out = new ArrayList<>();
        for (int i = 0; i < norms.length; i++) {
            out.add(grad("dense_" + i + "/W", "dense_" + i, norms[i]));
        }
        return GradientSet.of(out);
    }

    /** Holds k-1 calls out of k (stands in for accumulate(k) until it lands on main). */
    static final class HoldEvery implements GradientTransform {
        private final int k;

        HoldEvery(int k) {
            this.k = k;
        }

        static final class Count implements TransformState {
            int n;
        }

        @Override
        public String name() {
            return "holdEvery";
        }

        @Override
        public <T> TransformState init(GradientSet<T> gradients, io.gradguard.core.spi.TensorOps<T> ops) {
            return new Count();
        }

        @Override
        public <T> Action update(Step<T> step, TransformState state) {
            Count c = (Count) state;
            return ++c.n % k == 0 ? Action.proceed() : Action.hold();
        }
    }

    /** Skips the step when the context's loss is above a bound. */
    static final class SkipLossAbove implements GradientTransform {
        private final double bound;

        SkipLossAbove(double bound) {
            this.bound = bound;
        }

        @Override
        public String name() {
            return "lossGuard";
        }

        @Override
        public <T> Action update(Step<T> step, TransformState state) {
            double loss = step.context().loss();
            return loss > bound ? Action.skip("loss " + loss + " above " + bound) : Action.proceed();
        }
    }
}
