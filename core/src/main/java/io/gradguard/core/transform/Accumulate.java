package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.StateFormatException;
import io.gradguard.core.StateInput;
import io.gradguard.core.StateOutput;
import io.gradguard.core.Step;
import io.gradguard.core.StepContext;
import io.gradguard.core.TransformState;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.function.LongToIntFunction;

/**
 * Gradient accumulation: k micro-batches make one optimizer step.
 *
 * <pre>A ← Σᵢ wᵢ·gᵢ over the window (i = 1..k)
 * mean (default): g ← A / Σᵢ wᵢ          sum: g ← A</pre>
 *
 * <p>The first k-1 calls of a window add the gradient into one accumulator buffer per parameter
 * (the only memory used: one buffer the size of the gradients) and return {@link Action#hold()}:
 * the adapter does not step the optimizer and resets the framework's gradient. The k-th call
 * writes the result into the gradient tensors and proceeds, so the stages after it (clip,
 * normalize, monitor) act once per real step on the accumulated gradient, and step counters and
 * schedules advance per real step.
 *
 * <p>Weights: {@link Weighting#UNIFORM} (every micro-batch counts 1, a mean of means — right when
 * micro-batches are equal), {@link Weighting#BATCH_SIZE} (wᵢ = {@link StepContext#batchSize()}: the
 * true mean over all examples of the window when each micro-batch gradient is a per-example mean)
 * or {@link Weighting#CONTEXT} (wᵢ = {@link StepContext#weight()}, e.g. tokens).
 *
 * <p>Non-finite micro-batches: with {@link #dropNonFinite()} a micro-batch holding NaN/Inf is
 * dropped alone (counted, reported as a skip, not added, not counted in the window) and the rest of
 * the window is kept; this costs one scalar device-to-host copy per micro-batch. Otherwise it is
 * added like any other and poisons the window (put a non-finite policy before the accumulator).
 *
 * <p>k may follow a schedule over real steps ({@link #schedule}); it is read at the first
 * micro-batch of each window and fixed until the window completes.
 *
 * <p>References: Optax {@code MultiSteps}; Keras {@code gradient_accumulation_steps}.
 *
 * <pre>{@code
 * Transforms.accumulate(4);                                           // mean of 4 micro-batches
 * Accumulate.every(4).weightedBy(Accumulate.Weighting.BATCH_SIZE).dropNonFinite();
 * Accumulate.schedule(step -> step < 1000 ? 1 : 8);
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if k &lt; 1; (at update) if the schedule returns k &lt; 1
 */
public final class Accumulate implements GradientTransform {
    /** How micro-batches are weighted in the mean. */
    public enum Weighting { UNIFORM, BATCH_SIZE, CONTEXT }

    private final LongToIntFunction k;
    private final String kDescription;
    private final boolean mean;
    private final Weighting weighting;
    private final boolean dropNonFinite;

    private Accumulate(LongToIntFunction k, String kDescription, boolean mean, Weighting weighting, boolean dropNonFinite) {
        this.k = k;
        this.kDescription = kDescription;
        this.mean = mean;
        this.weighting = weighting;
        this.dropNonFinite = dropNonFinite;
    }

    /** The mean of every {@code k} micro-batches, uniformly weighted. @throws IllegalArgumentException if k &lt; 1 */
    public static Accumulate every(int k) {
        Checks.atLeast("k", k, 1);
        return new Accumulate(step -> k, Integer.toString(k), true, Weighting.UNIFORM, false);
    }

    /** k from a schedule over real optimizer steps (0-based). @throws IllegalArgumentException if the schedule is null */
    public static Accumulate schedule(LongToIntFunction kForStep) {
        Checks.notNull("kForStep", kForStep);
        return new Accumulate(kForStep, "schedule", true, Weighting.UNIFORM, false);
    }

    /** The same, summing instead of averaging. */
    public Accumulate sum() {
        return new Accumulate(k, kDescription, false, weighting, dropNonFinite);
    }

    /** The same, with the given micro-batch weighting. */
    public Accumulate weightedBy(Weighting w) {
        return new Accumulate(k, kDescription, mean, Checks.notNull("weighting", w), dropNonFinite);
    }

    /** The same, dropping non-finite micro-batches alone instead of adding them. */
    public Accumulate dropNonFinite() {
        return new Accumulate(k, kDescription, mean, weighting, true);
    }

    /** k when it is fixed ({@link #every}); empty when it follows a {@link #schedule}. */
    public java.util.OptionalInt fixedK() {
        return kDescription.equals("schedule") ? java.util.OptionalInt.empty() : java.util.OptionalInt.of(k.applyAsInt(0));
    }

    /** Whether the window's gradients are averaged (the default) rather than summed ({@link #sum()}). */
    public boolean averages() {
        return mean;
    }

    /** How micro-batches are weighted. */
    public Weighting weighting() {
        return weighting;
    }

    /** Whether a non-finite micro-batch is dropped alone ({@link #dropNonFinite()}). */
    public boolean dropsNonFinite() {
        return dropNonFinite;
    }

    @Override
    public boolean mayHoldOrSkip() {
        return true;
    }

    @Override
    public String name() {
        return "accumulate";
    }

    @Override
    public <T> TransformState init(GradientSet<T> gradients, TensorOps<T> ops) {
        List<T> buffers = new ArrayList<>();
        for (GradientTensor<T> g : gradients) {
            buffers.add(ops.zerosLike(g.gradient()));
        }
        return new State<>(buffers);
    }

    @Override
    @SuppressWarnings("unchecked")
    public <T> Action update(Step<T> step, TransformState state) {
        State<T> s = (State<T>) state;
        TensorOps<T> ops = step.ops();
        GradientSet<T> grads = step.gradients();
        if (s.buffers.size() != grads.size()) {
            throw new IllegalStateException("accumulate holds " + s.buffers.size() + " buffers but the step has "
                    + grads.size() + " gradients: restore state saved from this model");
        }
        if (dropNonFinite) {
            T bad = null;
            for (GradientTensor<T> g : grads) {
                T c = ops.countNonFinite(g.gradient());
                bad = bad == null ? c : ops.add(bad, c);
            }
            double count = bad == null ? 0 : ops.toHost(bad);
            if (count > 0) {
                s.dropped++;
                step.recordValue("dropped", s.dropped);
                return Action.skip("micro-batch with " + (long) count + " non-finite gradient values dropped from the accumulation window");
            }
        }
        if (s.count == 0) {
            int kNow = k.applyAsInt(step.context().step());
            Checks.require(kNow >= 1, "k at step " + step.context().step(), "be >= 1", kNow);
            s.windowK = kNow;
        }
        double w = switch (weighting) {
            case UNIFORM -> 1.0;
            case BATCH_SIZE -> step.context().batchSize();
            case CONTEXT -> step.context().weight();
        };
        T wt = w == 1.0 ? null : ops.scalar(w);
        boolean last = s.count + 1 == s.windowK;
        if (!last) {
            // into the buffer: A ← w·g (first micro-batch) or A ← A + w·g
            for (int i = 0; i < grads.size(); i++) {
                T buffer = s.buffers.get(i);
                T g = grads.get(i).gradient();
                if (s.count == 0) {
                    ops.assign(buffer, g);
                    if (wt != null) {
                        ops.scaleInPlace(buffer, wt);
                    }
                } else {
                    ops.addInPlace(buffer, g, w);
                }
            }
            s.count++;
            s.weightSum += w;
            step.recordValue("microBatches", s.count);
            return Action.hold();
        }
        // the window's last micro-batch is combined in the gradient itself (g ← (w·g + A) / Σw):
        // the buffer is neither written nor copied back
        double weightSum = s.weightSum + w;
        T coef = mean ? ops.scalar(weightSum > 0 ? 1.0 / weightSum : 0.0) : null;
        for (int i = 0; i < grads.size(); i++) {
            T g = grads.get(i).gradient();
            if (wt != null) {
                ops.scaleInPlace(g, wt);
            }
            if (s.count > 0) {
                ops.addInPlace(g, s.buffers.get(i), 1.0);
            }
            if (coef != null && !(weightSum == 1.0 && w == 1.0)) {
                ops.scaleInPlace(g, coef);
            }
        }
        step.recordValue("microBatches", s.count + 1);
        s.count = 0;
        s.weightSum = 0;
        return Action.proceed();
    }

    @Override
    public <T> TransformState readState(StateInput<T> in) throws IOException {
        int n = in.readInt();
        if (n < 0 || n > 1_000_000) {
            throw new StateFormatException("accumulate: " + n + " buffers is not valid");
        }
        State<T> s = new State<>(new ArrayList<>());
        s.count = in.readInt();
        s.windowK = in.readInt();
        s.weightSum = in.readDouble();
        s.dropped = in.readLong();
        if (s.count < 0 || s.windowK < 0 || (s.count > 0 && s.count >= s.windowK)) {
            throw new StateFormatException("accumulate: " + s.count + " micro-batches in a window of " + s.windowK + " is not valid");
        }
        for (int i = 0; i < n; i++) {
            s.buffers.add(in.readTensor());
        }
        return s;
    }

    @Override
    public String toString() {
        return "accumulate(k=" + kDescription + (mean ? ", mean" : ", sum") + ", " + weighting
                + (dropNonFinite ? ", drop non-finite" : "") + ")";
    }

    /** Accumulator buffers and the window's progress. */
    static final class State<T> implements TransformState {
        final List<T> buffers;
        int count;
        int windowK;
        double weightSum;
        long dropped;

        State(List<T> buffers) {
            this.buffers = buffers;
        }

        @Override
        @SuppressWarnings("unchecked")
        public <U> void release(TensorOps<U> ops) {
            for (T b : buffers) {
                ops.release((U) b);
            }
            buffers.clear();
        }

        @Override
        @SuppressWarnings("unchecked")
        public <U> void write(StateOutput<U> out) throws IOException {
            out.writeInt(buffers.size());
            out.writeInt(count);
            out.writeInt(windowK);
            out.writeDouble(weightSum);
            out.writeLong(dropped);
            for (T b : buffers) {
                out.writeTensor((U) b);
            }
        }

        @Override
        public String toString() {
            return "accumulate " + count + "/" + windowK;
        }
    }
}
