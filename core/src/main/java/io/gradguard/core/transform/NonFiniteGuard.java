package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
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
 * The non-finite policy: what happens to a step whose gradients hold NaN or ±Inf.
 *
 * <ul>
 *   <li>{@link Policy#SKIP} (recommended: {@code Transforms.skipNonFinite(3)}): the step is skipped —
 *       the optimizer update and its state (moments, iteration count) do not move, the gradient is
 *       reset, the skip is counted. It skips up to {@code maxConsecutive} bad steps in a row; the
 *       next consecutive bad one ({@code skipNonFinite(3)}: the 4th in a row) throws an
 *       {@link IllegalStateException} instead of training on silently, or, with
 *       {@link #letThroughWhenExhausted()}, is let through as Optax's {@code apply_if_finite} does.</li>
 *   <li>{@link Policy#ZERO}: exactly {@link ZeroNonFinite} (the bad elements become 0, counted per tensor
 *       in the metrics {@code nonFinite.<tensor>} and {@code nonFinite}); the step proceeds.</li>
 *   <li>{@link Policy#THROW}: an {@link IllegalStateException} naming the first offending parameter,
 *       the step and what was found.</li>
 *   <li>{@link Policy#PROPAGATE}: nothing is changed (the frameworks' default); the step's count of
 *       bad values is still recorded as the metric {@code nonFinite} (no host copy: it is read only if
 *       a monitor or the user reads it).</li>
 * </ul>
 *
 * <p>A pipeline without a non-finite stage propagates, as PyTorch and DL4J do.
 *
 * <pre>found = 0 if Σ_tensors Σg² is finite, else Σ_tensors countNonFinite(g)
 * SKIP: found &gt; 0 → consecutive += 1, total += 1, skip (or throw once consecutive &gt; max)
 *       found = 0 → consecutive = 0</pre>
 *
 * <p>Counters (checkpointed, SKIP and THROW only: they decide on the host): consecutive bad steps,
 * total bad steps. Recorded metrics: {@code nonFinite} (the count), {@code consecutive}, {@code total}. Every policy but
 * {@code ZERO}/{@code PROPAGATE} copies one scalar to the host per step to decide: Σg² over all gradients, which is
 * finite exactly when every value is (squares are non-negative, so NaN and ±Inf reach the sum) unless finite values
 * overflow it; the values are counted one by one only when it is not finite. A global clip after this stage reads the
 * same Σg² (backends that remember it per step read each gradient once for both).
 *
 * <p>References: Optax {@code apply_if_finite} and {@code skip_not_finite}; PyTorch AMP's
 * {@code GradScaler} (skips the optimizer step on Inf/NaN).
 *
 * <pre>{@code
 * Transforms.skipNonFinite(3);
 * Transforms.nonFinite(NonFiniteGuard.Policy.THROW);
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if maxConsecutive &lt; 0 or the policy is null
 */
public final class NonFiniteGuard implements GradientTransform {
    /** What to do with a non-finite step. */
    public enum Policy { SKIP, ZERO, THROW, PROPAGATE }

    private static final ZeroNonFinite ZERO = new ZeroNonFinite(false);

    private final Policy policy;
    private final int maxConsecutive;
    private final boolean letThrough;

    private NonFiniteGuard(Policy policy, int maxConsecutive, boolean letThrough) {
        this.policy = Checks.notNull("policy", policy);
        this.maxConsecutive = Checks.atLeast("maxConsecutive", maxConsecutive, 0);
        this.letThrough = letThrough;
    }

    /** Skip bad steps, up to {@code maxConsecutive} in a row; the next consecutive bad step throws. */
    public static NonFiniteGuard skip(int maxConsecutive) {
        return new NonFiniteGuard(Policy.SKIP, maxConsecutive, false);
    }

    /** Any policy; SKIP allows 3 consecutive skips. */
    public static NonFiniteGuard of(Policy policy) {
        return new NonFiniteGuard(policy, 3, false);
    }

    /** Once the consecutive limit is exceeded, let bad steps through (Optax apply_if_finite) instead of throwing. */
    public NonFiniteGuard letThroughWhenExhausted() {
        return new NonFiniteGuard(policy, maxConsecutive, true);
    }

    public Policy policy() {
        return policy;
    }

    public int maxConsecutive() {
        return maxConsecutive;
    }

    /** Whether bad steps are let through once the consecutive limit is exceeded ({@link #letThroughWhenExhausted()}). */
    public boolean letsThroughWhenExhausted() {
        return letThrough;
    }

    /** SKIP may skip (THROW stops training instead). */
    @Override
    public boolean mayHoldOrSkip() {
        return policy == Policy.SKIP;
    }

    /** Only ZERO changes values (it zeroes the bad elements); the other policies count and decide. */
    @Override
    public boolean changesGradients() {
        return policy == Policy.ZERO;
    }

    @Override
    public String name() {
        return "nonFinite";
    }

    @Override
    public <T> TransformState init(io.gradguard.core.GradientSet<T> gradients, TensorOps<T> ops) {
        return new Counters();
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        Counters c = (Counters) state;
        TensorOps<T> ops = step.ops();
        if (policy == Policy.ZERO) {
            return ZERO.update(step, TransformState.NONE);
        }
        if (policy == Policy.PROPAGATE) {
            step.reportNonFinite("", count(step));
            return Action.proceed();
        }
        // Σg² is finite exactly when every value is (squares are ≥ 0: a NaN or ±Inf reaches the sum), unless finite
        // values overflow it; so one read of each gradient, the one a global clip makes anyway (backends share it),
        // decides the common case, and the values are counted only when the sum is not finite
        boolean finite = Double.isFinite(ops.toHost(Norms.sumOfSquares(ops, step.gradients().tensors())));
        T found = finite ? ops.scalar(0.0) : count(step);
        step.reportNonFinite("", found);
        double count = finite ? 0 : ops.toHost(found);
        if (count == 0) {
            c.consecutive = 0;
            record(step, c);
            return Action.proceed();
        }
        c.consecutive++;
        c.total++;
        record(step, c);
        if (policy == Policy.THROW) {
            throw new IllegalStateException(describe(step, count) + " (non-finite policy THROW)");
        }
        if (c.consecutive > maxConsecutive) {
            if (letThrough) {
                return Action.proceed();
            }
            throw new IllegalStateException(describe(step, count) + ": " + c.consecutive
                    + " non-finite steps in a row, more than maxConsecutive=" + maxConsecutive + ". " + likelyCause(step.context()));
        }
        return Action.skip("non-finite gradient (" + (long) count + " values), skip " + c.consecutive + " of at most "
                + maxConsecutive + " in a row");
    }

    /** The number of non-finite values in all the step's gradients, as a backend scalar. */
    private static <T> T count(Step<T> step) {
        TensorOps<T> ops = step.ops();
        T found = null;
        for (GradientTensor<T> g : step.gradients()) {
            T n = ops.countNonFinite(g.gradient());
            found = found == null ? n : ops.add(found, n);
        }
        return found == null ? ops.scalar(0.0) : found;
    }

    private static <T> void record(Step<T> step, Counters c) {
        step.recordValue("consecutive", c.consecutive);
        step.recordValue("total", c.total);
    }

    /** What the step's context tells about the cause: bad input data, a sudden failure, or divergence. */
    static String likelyCause(io.gradguard.core.StepContext context) {
        if (context.nonFiniteInputs()) {
            return "The inputs of this batch hold NaN or Inf: the input data is bad, not the training; "
                    + "clean or filter the batches (a lower learning rate would not help), or raise maxConsecutive.";
        }
        if (context.hasLoss() && Double.isFinite(context.loss())) {
            return "The loss was finite (" + context.loss() + ") while its gradients were not: a sudden failure rather than "
                    + "divergence; look for bad values in the inputs or an operation whose gradient is not finite "
                    + "(sqrt, log or a division at 0), or raise maxConsecutive.";
        }
        return "Either the input data holds NaN or Inf (check the batches) or training is diverging (lower the learning "
                + "rate, add clipping); or raise maxConsecutive.";
    }

    /** Names the first offending parameter (only on the failure path: one more scalar per tensor). */
    private static <T> String describe(Step<T> step, double count) {
        TensorOps<T> ops = step.ops();
        for (GradientTensor<T> g : step.gradients()) {
            double n = ops.toHost(ops.countNonFinite(g.gradient()));
            if (n > 0) {
                boolean nan = Double.isNaN(ops.toHost(ops.maxAbs(g.gradient())));
                return "non-finite gradient at step " + step.context().step() + ": parameter " + g.name() + " holds "
                        + (long) n + " non-finite values (" + (nan ? "NaN among them" : "±Inf, no NaN") + "), "
                        + (long) count + " in all";
            }
        }
        return "non-finite gradient at step " + step.context().step();
    }

    @Override
    public <T> TransformState readState(StateInput<T> in) throws IOException {
        Counters c = new Counters();
        c.consecutive = in.readLong();
        c.total = in.readLong();
        if (c.consecutive < 0 || c.total < c.consecutive) {
            throw new StateFormatException("nonFinite: counters consecutive=" + c.consecutive + ", total=" + c.total + " are not valid");
        }
        return c;
    }

    @Override
    public String toString() {
        return "nonFinite(" + policy + (policy == Policy.SKIP ? ", max " + maxConsecutive + (letThrough ? ", then let through" : ", then throw") : "") + ")";
    }

    /** Consecutive and total non-finite steps. */
    static final class Counters implements TransformState {
        long consecutive;
        long total;

        @Override
        public <T> void write(StateOutput<T> out) throws IOException {
            out.writeLong(consecutive);
            out.writeLong(total);
        }

        @Override
        public String toString() {
            return "nonFinite consecutive=" + consecutive + " total=" + total;
        }
    }
}
