package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.StateFormatException;
import io.gradguard.core.StateInput;
import io.gradguard.core.StateOutput;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.io.IOException;

/**
 * Loss scaling for float16 training: the adapter multiplies the loss by the current scale S before
 * backward (so small gradients do not underflow to zero in float16), and this stage, the first of
 * the pipeline, divides the gradients by S again, then checks them. A step whose unscaled
 * gradients hold NaN or ±Inf overflowed: it is skipped (the optimizer does not run) and the scale
 * backs off. After {@code growthInterval} finite calls in a row the scale grows.
 *
 * <pre>
 * g ← g / S
 * found = Σ countNonFinite(g)
 * found &gt; 0:  skip;  S ← S · backoff;  good ← 0
 * found = 0:  good ← good + 1;  if good = growthInterval: S ← S · growth, good ← 0
 * </pre>
 *
 * <p>Defaults are PyTorch's {@code torch.amp.GradScaler}: S₀ = 2¹⁶, growth ×2 after 2000 finite
 * calls, backoff ×0.5. A fixed scale ({@link #fixed}) never changes; an overflow is still skipped.
 * The scale and the counter are the stage's state: checkpointed and restored exactly.
 *
 * <p><b>Counting.</b> Every call (micro-batch) counts, since each micro-batch is unscaled with the
 * scale it was scaled with, so the scale may change inside an accumulation window. An overflow is
 * skipped by this stage and never reaches {@code skipNonFinite}: it does not count against that
 * stage's consecutive limit (overflow is the scale's business, not divergence). The stage must be
 * the first of its pipeline: nothing may read the gradients before they are unscaled.
 *
 * <p>References: Micikevicius et al., "Mixed Precision Training", ICLR 2018 (arXiv:1710.03740);
 * PyTorch {@code GradScaler}; Keras {@code LossScaleOptimizer}.
 *
 * <pre>{@code
 * GradientPipeline p = GradientPipeline.of(Transforms.dynamicLossScale(), Transforms.skipNonFinite(3),
 *         Transforms.clipByGlobalNorm(1.0));       // the clip sees unscaled gradients
 * double s = guard.lossScale();                     // the adapter multiplies the loss by it
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if the initial scale is not finite and &gt; 0,
 *     growth &lt; 1, backoff not in (0, 1], or growthInterval &lt; 1
 */
public final class LossScale implements GradientTransform {
    /** PyTorch GradScaler's initial scale, 2¹⁶. */
    public static final double DEFAULT_INITIAL = 65536.0;
    /** PyTorch GradScaler's growth factor. */
    public static final double DEFAULT_GROWTH = 2.0;
    /** PyTorch GradScaler's backoff factor. */
    public static final double DEFAULT_BACKOFF = 0.5;
    /** PyTorch GradScaler's growth interval (finite calls). */
    public static final int DEFAULT_GROWTH_INTERVAL = 2000;

    private final double initial;
    private final double growth;
    private final double backoff;
    private final int growthInterval;

    private LossScale(double initial, double growth, double backoff, int growthInterval) {
        Checks.require(Double.isFinite(initial) && initial > 0, "initialScale", "be finite and > 0", initial);
        Checks.require(Double.isFinite(growth) && growth >= 1, "growth", "be finite and >= 1", growth);
        Checks.require(backoff > 0 && backoff <= 1, "backoff", "be in (0, 1]", backoff);
        this.initial = initial;
        this.growth = growth;
        this.backoff = backoff;
        this.growthInterval = Checks.atLeast("growthInterval", growthInterval, 1);
    }

    /** Dynamic loss scaling with PyTorch's defaults. */
    public static LossScale dynamic() {
        return new LossScale(DEFAULT_INITIAL, DEFAULT_GROWTH, DEFAULT_BACKOFF, DEFAULT_GROWTH_INTERVAL);
    }

    /** Dynamic loss scaling with every value chosen. */
    public static LossScale dynamic(double initialScale, double growth, double backoff, int growthInterval) {
        return new LossScale(initialScale, growth, backoff, growthInterval);
    }

    /** A fixed scale: gradients are divided by it, overflowing steps skipped, the scale never moves. */
    public static LossScale fixed(double scale) {
        return new LossScale(scale, 1.0, 1.0, Integer.MAX_VALUE);
    }

    /** The scale before the first step. */
    public double initialScale() {
        return initial;
    }

    /** Whether the scale adapts (false for {@link #fixed}). */
    /** The factor the scale grows by after {@link #growthInterval()} finite calls in a row (1 for a fixed scale). */
    public double growth() {
        return growth;
    }

    /** The factor the scale backs off by on an overflow (1 for a fixed scale). */
    public double backoff() {
        return backoff;
    }

    /** Finite calls in a row after which the scale grows. */
    public int growthInterval() {
        return growthInterval;
    }

    public boolean isDynamic() {
        return growth != 1.0 || backoff != 1.0;
    }

    @Override
    public String name() {
        return isDynamic() ? "dynamicLossScale" : "lossScale";
    }

    @Override
    public boolean mayHoldOrSkip() {
        return true;
    }

    @Override
    public <T> TransformState init(GradientSet<T> gradients, TensorOps<T> ops) {
        return new State(initial);
    }

    /** The scale the adapter multiplies the next loss by: the state's, or the initial one before the first step. */
    public double currentScale(TransformState state) {
        return state == null ? initial : ((State) state).scale;
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        State s = (State) state;
        TensorOps<T> ops = step.ops();
        double used = s.scale;
        step.reportLossScale(used);
        T inverse = ops.scalar(1.0 / used);
        T found = null;
        for (GradientTensor<T> g : step.gradients()) {
            ops.scaleInPlace(g.gradient(), inverse);
            T n = ops.countNonFinite(g.gradient());
            found = found == null ? n : ops.add(found, n);
        }
        double count = found == null ? 0 : ops.toHost(found);
        if (count > 0) {
            s.scale = Math.max(used * backoff, Double.MIN_NORMAL);
            s.good = 0;
            s.overflows++;
            step.recordValue("overflows", s.overflows);
            return Action.skip("loss-scale overflow (" + (long) count + " non-finite values at scale " + used
                    + "), scale backs off to " + s.scale);
        }
        if (isDynamic() && ++s.good >= growthInterval) {
            double grown = used * growth;
            if (Double.isFinite(grown) && grown <= Float.MAX_VALUE) {
                s.scale = grown;
            }
            s.good = 0;
        }
        return Action.proceed();
    }

    @Override
    public <T> TransformState readState(StateInput<T> in) throws IOException {
        State s = new State(in.readDouble());
        s.good = in.readLong();
        s.overflows = in.readLong();
        if (!(Double.isFinite(s.scale) && s.scale > 0) || s.good < 0 || s.overflows < 0) {
            throw new StateFormatException(name() + ": scale " + s.scale + ", good " + s.good + ", overflows " + s.overflows
                    + " are not valid");
        }
        return s;
    }

    @Override
    public String toString() {
        return isDynamic() ? "dynamicLossScale(" + initial + ", ×" + growth + " after " + growthInterval + ", ×" + backoff + ")"
                : "lossScale(" + initial + ")";
    }

    /** The scale, finite calls since the last change, overflows in all. */
    static final class State implements TransformState {
        double scale;
        long good;
        long overflows;

        State(double scale) {
            this.scale = scale;
        }

        @Override
        public <T> void write(StateOutput<T> out) throws IOException {
            out.writeDouble(scale);
            out.writeLong(good);
            out.writeLong(overflows);
        }

        @Override
        public String toString() {
            return "lossScale " + scale + " good=" + good + " overflows=" + overflows;
        }
    }
}
