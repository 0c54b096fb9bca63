package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.NormType;
import io.gradguard.core.Norms;
import io.gradguard.core.StateInput;
import io.gradguard.core.StateOutput;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.io.IOException;

/**
 * AutoClip: clip the global L2 norm at the p-th percentile of the norms seen so far.
 *
 * <pre>n_t = ‖g_t‖₂;   H ← H ∪ {n_t}   (the last {@code historySize} finite norms, current included)
 * c_t = percentile_p(H)             (linear interpolation, numpy's default)
 * g ← g · c_t / max(n_t, c_t)</pre>
 *
 * <p>Defaults: p = 10 (the paper's recommendation), history of the last 10,000 steps (the paper
 * keeps all; a bound keeps memory and insertion cost fixed: 160 KB, O(size) per step). A
 * non-finite norm is not added to the history and nothing is clipped (put a non-finite policy
 * first). A threshold of 0 (all history norms 0) clips nothing. Costs one scalar device-to-host
 * copy per step. Records {@code norm}, {@code threshold}, {@code coefficient}.
 *
 * <p>Reference: Seetharaman, Wichern, Pardo, Le Roux, "AutoClip: Adaptive Gradient Clipping for
 * Source Separation Networks", IEEE MLSP 2020.
 *
 * <pre>{@code
 * Transforms.autoClip(10);           // 10th percentile, last 10,000 norms
 * Transforms.autoClip(25, 1000);
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if p is not in (0, 100] or historySize &lt; 1
 */
public final class AutoClip implements GradientTransform {
    private final double percentile;
    private final int historySize;

    /** Use {@link io.gradguard.core.Transforms#autoClip(double, int)}. */
    public AutoClip(double percentile, int historySize) {
        Checks.require(percentile > 0 && percentile <= 100, "percentile", "be in (0, 100]", percentile);
        this.percentile = percentile;
        this.historySize = Checks.atLeast("historySize", historySize, 1);
    }

    @Override
    public String name() {
        return "autoClip";
    }

    /** The percentile of the norm history that bounds the norm (0..100]. */
    public double percentile() {
        return percentile;
    }

    /** How many recent norms the history keeps. */
    public int historySize() {
        return historySize;
    }

    @Override
    public <T> TransformState init(io.gradguard.core.GradientSet<T> gradients, TensorOps<T> ops) {
        return new State(new NormHistory(historySize));
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        NormHistory h = ((State) state).history;
        TensorOps<T> ops = step.ops();
        T norm = Norms.globalNorm(ops, step.gradients(), NormType.L2);
        double n = ops.toHost(norm);
        double coef = 1.0;
        if (Double.isFinite(n)) {
            h.add(n);
            double threshold = h.percentile(percentile);
            coef = threshold > 0 && n > threshold ? threshold / n : 1.0;
            step.reportScaling("", n, coef, threshold);
        } else {
            step.recordValue("norm", n); // nothing scaled: no coefficient to report
        }
        // always the same ops, by 1 when the clip does not act: graph backends build one branch (the
        // backends skip a multiply by exactly 1)
        T c = ops.scalar(coef);
        for (GradientTensor<T> g : step.gradients()) {
            ops.scaleInPlace(g.gradient(), c);
        }
        return Action.proceed();
    }

    @Override
    public <T> TransformState readState(StateInput<T> in) throws IOException {
        return new State(NormHistory.read(in, historySize));
    }

    @Override
    public String toString() {
        return "autoClip(p=" + percentile + ", history=" + historySize + ")";
    }

    static final class State implements TransformState {
        final NormHistory history;

        State(NormHistory history) {
            this.history = history;
        }

        @Override
        public <T> void write(StateOutput<T> out) throws IOException {
            history.write(out);
        }
    }
}
