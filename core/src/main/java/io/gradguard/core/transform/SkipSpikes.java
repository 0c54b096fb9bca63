package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientSet;
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
 * Spike skip: drop the whole update when the global gradient norm is an outlier against the
 * recent window — the practice of large-model pretraining (skip the batch rather than take a
 * damaged step).
 *
 * <pre>n_t = ‖g_t‖₂;   μ, σ = mean and population std of the last W accepted norms
 * z = (n_t − μ) / (σ + ε)
 * skip if |window| ≥ minHistory and z &gt; z_thr     (the norm is not added to the window)
 * otherwise proceed and add n_t to the window</pre>
 *
 * <p>After {@code maxConsecutive} skips in a row the next outlier is accepted and enters the
 * window (the norm's level has shifted for good; the window then adapts), counted as
 * {@code letThrough}. A non-finite norm is left to the non-finite policy: it is neither skipped
 * here nor added. Defaults: W = 100, z_thr = 6, minHistory = 20, maxConsecutive = 10, ε = 1e-12.
 * Costs one scalar device-to-host copy per step. Records {@code norm}, {@code z}, {@code skipped},
 * {@code letThrough}.
 *
 * <p>References: Chowdhery et al., "PaLM", 2022 (§5.1: skipping batches around loss spikes);
 * Molybog et al., "A Theory on Adam Instability in Large-Scale Machine Learning", 2023.
 *
 * <pre>{@code
 * Transforms.skipSpikes(6.0);
 * SkipSpikes.zAbove(4.0).window(200).minHistory(50);
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if z_thr is not finite and &gt; 0, W &lt; 2,
 *     minHistory not in [2, W], or maxConsecutive &lt; 0
 */
public final class SkipSpikes implements GradientTransform {
    /** The ε added to the standard deviation in the z-score. */
    public static final double EPS = 1e-12;

    private final double zThreshold;
    private final int window;
    private final int minHistory;
    private final int maxConsecutive;

    private SkipSpikes(double zThreshold, int window, int minHistory, int maxConsecutive) {
        this.zThreshold = Checks.positive("zThreshold", zThreshold);
        this.window = Checks.atLeast("window", window, 2);
        Checks.require(minHistory >= 2 && minHistory <= window, "minHistory", "be in [2, window=" + window + "]", minHistory);
        this.minHistory = minHistory;
        this.maxConsecutive = Checks.atLeast("maxConsecutive", maxConsecutive, 0);
    }

    /** Skip norms more than {@code z} standard deviations above the window's mean. */
    public static SkipSpikes zAbove(double z) {
        return new SkipSpikes(z, 100, 20, 10);
    }

    public SkipSpikes window(int w) {
        return new SkipSpikes(zThreshold, w, Math.min(minHistory, w), maxConsecutive);
    }

    public SkipSpikes minHistory(int m) {
        return new SkipSpikes(zThreshold, window, m, maxConsecutive);
    }

    public SkipSpikes maxConsecutive(int m) {
        return new SkipSpikes(zThreshold, window, minHistory, m);
    }

    /** The z-score above which a norm is a spike. */
    public double zThreshold() {
        return zThreshold;
    }

    /** How many recent accepted norms the mean and deviation are taken over. */
    public int windowSize() {
        return window;
    }

    /** Accepted norms needed before a spike can be judged. */
    public int minHistorySize() {
        return minHistory;
    }

    /** Spikes skipped in a row before one is let through. */
    public int maxConsecutiveSkips() {
        return maxConsecutive;
    }

    @Override
    public boolean mayHoldOrSkip() {
        return true;
    }

    @Override
    public boolean changesGradients() {
        return false; // it measures and decides; the values pass unchanged
    }

    @Override
    public String name() {
        return "skipSpikes";
    }

    @Override
    public <T> TransformState init(GradientSet<T> gradients, TensorOps<T> ops) {
        return new State(new NormHistory(window));
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        State s = (State) state;
        TensorOps<T> ops = step.ops();
        double n = ops.toHost(Norms.globalNorm(ops, step.gradients(), NormType.L2));
        step.recordValue("norm", n);
        if (!Double.isFinite(n)) {
            return Action.proceed();
        }
        if (s.history.size() >= minHistory) {
            double z = (n - s.history.mean()) / (s.history.std() + EPS);
            step.recordValue("z", z);
            if (z > zThreshold) {
                if (s.consecutive < maxConsecutive) {
                    s.consecutive++;
                    s.skipped++;
                    step.recordValue("skipped", s.skipped);
                    return Action.skip(String.format("gradient norm spike: %.4g is %.1f standard deviations above the mean %.4g of the last %d steps",
                            n, z, s.history.mean(), s.history.size()));
                }
                s.letThrough++;
                step.recordValue("letThrough", s.letThrough);
            }
        }
        s.consecutive = 0;
        s.history.add(n);
        return Action.proceed();
    }

    @Override
    public <T> TransformState readState(StateInput<T> in) throws IOException {
        State s = new State(NormHistory.read(in, window));
        s.consecutive = in.readInt();
        s.skipped = in.readLong();
        s.letThrough = in.readLong();
        if (s.consecutive < 0 || s.skipped < 0 || s.letThrough < 0) {
            throw new StateFormatException("skipSpikes: negative counters");
        }
        return s;
    }

    @Override
    public String toString() {
        return "skipSpikes(z>" + zThreshold + ", window=" + window + ")";
    }

    static final class State implements TransformState {
        final NormHistory history;
        int consecutive;
        long skipped;
        long letThrough;

        State(NormHistory history) {
            this.history = history;
        }

        @Override
        public <T> void write(StateOutput<T> out) throws IOException {
            history.write(out);
            out.writeInt(consecutive);
            out.writeLong(skipped);
            out.writeLong(letThrough);
        }
    }
}
