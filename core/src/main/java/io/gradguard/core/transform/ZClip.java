package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.NormType;
import io.gradguard.core.Norms;
import io.gradguard.core.StateFormatException;
import io.gradguard.core.StateInput;
import io.gradguard.core.StateOutput;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.io.IOException;

/**
 * ZClip: clip gradient-norm spikes detected by a z-score against exponential moving averages of
 * the norm's mean and variance.
 *
 * <pre>warm-up (first W steps): collect n_t; then μ = mean, σ² = population variance; clip at the cap only
 * after:  z = (n_t − μ) / (σ + ε)
 *         if z &gt; z_thr:  ADAPTIVE_SCALING: c = (μ + z_thr·σ / (z / z_thr)) · clipFactor
 *                        MEAN:             c = μ
 *         else          c = n_t (no clip)
 *         c ← min(c, cap) when a cap is set;  g ← g · c / max(n_t, c)
 *         x = (spike ? c : n_t);  μ ← α·μ + (1−α)·x;  σ² ← α·σ² + (1−α)·(x − μ)²   (μ already updated)</pre>
 *
 * <p>Defaults (the paper's): α = 0.97, z_thr = 2.5, W = 25, ε = 1e-6, ADAPTIVE_SCALING, clip
 * factor 1, no cap. A non-finite norm leaves the statistics alone and clips nothing (put a
 * non-finite policy first). Costs one scalar device-to-host copy per step. Records {@code norm},
 * {@code z}, {@code threshold}, {@code coefficient}.
 *
 * <p>Reference: Kumar, Owen, Chowdhury, Güra, "ZClip: Adaptive Spike Mitigation for LLM
 * Pre-Training", 2025 (arXiv:2504.02507), and its reference implementation.
 *
 * <pre>{@code
 * Transforms.zClip();                                    // paper defaults
 * ZClip.defaults().mode(ZClip.Mode.MEAN).cap(5.0).warmup(50);
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if α is not in (0, 1), z_thr, ε or the clip
 *     factor is not finite and &gt; 0, the warm-up is &lt; 1, or the cap is not finite and &gt; 0
 */
public final class ZClip implements GradientTransform {
    /** How a spike's threshold is chosen. */
    public enum Mode { ADAPTIVE_SCALING, MEAN }

    private final double alpha;
    private final double zThreshold;
    private final int warmup;
    private final Mode mode;
    private final double clipFactor;
    private final double cap;
    private final double eps;

    private ZClip(double alpha, double zThreshold, int warmup, Mode mode, double clipFactor, double cap, double eps) {
        Checks.require(alpha > 0 && alpha < 1, "alpha", "be in (0, 1)", alpha);
        this.alpha = alpha;
        this.zThreshold = Checks.positive("zThreshold", zThreshold);
        this.warmup = Checks.atLeast("warmup", warmup, 1);
        this.mode = Checks.notNull("mode", mode);
        this.clipFactor = Checks.positive("clipFactor", clipFactor);
        Checks.require(Double.isNaN(cap) || (Double.isFinite(cap) && cap > 0), "cap", "be a finite number > 0", cap);
        this.cap = cap;
        this.eps = Checks.positive("eps", eps);
    }

    /** α = 0.97, z = 2.5, warm-up 25, adaptive scaling, no cap. */
    public static ZClip defaults() {
        return new ZClip(0.97, 2.5, 25, Mode.ADAPTIVE_SCALING, 1.0, Double.NaN, 1e-6);
    }

    public ZClip alpha(double a) {
        return new ZClip(a, zThreshold, warmup, mode, clipFactor, cap, eps);
    }

    public ZClip zThreshold(double z) {
        return new ZClip(alpha, z, warmup, mode, clipFactor, cap, eps);
    }

    public ZClip warmup(int steps) {
        return new ZClip(alpha, zThreshold, steps, mode, clipFactor, cap, eps);
    }

    public ZClip mode(Mode m) {
        return new ZClip(alpha, zThreshold, warmup, m, clipFactor, cap, eps);
    }

    public ZClip clipFactor(double f) {
        return new ZClip(alpha, zThreshold, warmup, mode, f, cap, eps);
    }

    /** An absolute cap on the norm, applied during warm-up and after. */
    public ZClip cap(double maxNorm) {
        Checks.positive("cap", maxNorm);
        return new ZClip(alpha, zThreshold, warmup, mode, clipFactor, maxNorm, eps);
    }

    /** The EMA's decay α of the norm's mean and variance. */
    public double alpha() {
        return alpha;
    }

    /** The z-score above which a norm is a spike. */
    public double zThreshold() {
        return zThreshold;
    }

    /** Steps whose norms seed the mean and variance. */
    public int warmupSteps() {
        return warmup;
    }

    /** How a spike's bound is chosen. */
    public Mode clipMode() {
        return mode;
    }

    /** The factor of the adaptive bound ({@link Mode#ADAPTIVE_SCALING}). */
    public double clipFactor() {
        return clipFactor;
    }

    /** The absolute bound on top of the adaptive one; NaN for none. */
    public double capNorm() {
        return cap;
    }

    /** The ε added to the standard deviation. */
    public double eps() {
        return eps;
    }

    @Override
    public String name() {
        return "zClip";
    }

    @Override
    public <T> TransformState init(GradientSet<T> gradients, TensorOps<T> ops) {
        return new State(warmup);
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        State s = (State) state;
        TensorOps<T> ops = step.ops();
        double n = ops.toHost(Norms.globalNorm(ops, step.gradients(), NormType.L2));
        step.recordValue("norm", n);
        if (!Double.isFinite(n)) {
            scale(step, 1.0);
            return Action.proceed();
        }
        double threshold = n;
        boolean spike = false;
        if (s.collected < warmup) {
            s.buffer[s.collected++] = n;
            if (s.collected == warmup) {
                double m = 0;
                for (double v : s.buffer) {
                    m += v;
                }
                m /= warmup;
                double var = 0;
                for (double v : s.buffer) {
                    var += (v - m) * (v - m);
                }
                s.mean = m;
                s.var = var / warmup;
            }
        } else {
            double std = Math.sqrt(s.var);
            double z = (n - s.mean) / (std + eps);
            step.recordValue("z", z);
            if (z > zThreshold) {
                spike = true;
                threshold = mode == Mode.MEAN ? s.mean : (s.mean + zThreshold * std / (z / zThreshold)) * clipFactor;
            }
            double x = spike ? threshold : n;
            s.mean = alpha * s.mean + (1 - alpha) * x;
            s.var = alpha * s.var + (1 - alpha) * (x - s.mean) * (x - s.mean);
        }
        if (!Double.isNaN(cap)) {
            threshold = Math.min(threshold, cap);
        }
        double coef = threshold > 0 && n > threshold ? threshold / n : 1.0;
        step.reportScaling("", n, coef, threshold);
        scale(step, coef);
        return Action.proceed();
    }

    /**
     * Scales every gradient by {@code coef}, by 1 too when the clip does not act: always the same
     * ops, so graph backends build one branch (the backends skip a multiply by exactly 1).
     */
    private static <T> void scale(Step<T> step, double coef) {
        T c = step.ops().scalar(coef);
        for (GradientTensor<T> g : step.gradients()) {
            step.ops().scaleInPlace(g.gradient(), c);
        }
    }

    @Override
    public <T> TransformState readState(StateInput<T> in) throws IOException {
        State s = new State(warmup);
        s.collected = in.readInt();
        if (s.collected < 0 || s.collected > warmup) {
            throw new StateFormatException("zClip: " + s.collected + " warm-up norms do not fit a warm-up of " + warmup);
        }
        for (int i = 0; i < s.collected; i++) {
            s.buffer[i] = in.readDouble();
        }
        s.mean = in.readDouble();
        s.var = in.readDouble();
        return s;
    }

    @Override
    public String toString() {
        return "zClip(alpha=" + alpha + ", z=" + zThreshold + ", warmup=" + warmup + ", " + mode
                + (Double.isNaN(cap) ? "" : ", cap=" + cap) + ")";
    }

    /** Warm-up buffer and EMA statistics. */
    static final class State implements TransformState {
        final double[] buffer;
        int collected;
        double mean;
        double var;

        State(int warmup) {
            buffer = new double[warmup];
        }

        @Override
        public <T> void write(StateOutput<T> out) throws IOException {
            out.writeInt(collected);
            for (int i = 0; i < collected; i++) {
                out.writeDouble(buffer[i]);
            }
            out.writeDouble(mean);
            out.writeDouble(var);
        }
    }
}
