package io.gradguard.core.monitor;

import io.gradguard.core.StateFormatException;
import io.gradguard.core.StateInput;
import io.gradguard.core.StateOutput;
import io.gradguard.core.TransformState;
import io.gradguard.core.spi.TensorOps;
import java.io.IOException;

/**
 * What a {@link Monitor} carries from one pipeline call to the next: the next record's index, the
 * micro-batches and weighted loss of the step being accumulated, and the detectors' running
 * medians and counters. As a pipeline stage the monitor keeps it in the pipeline's state, so
 * {@code saveState} / {@code restoreState} / {@code reset} cover it.
 *
 * <p>Checkpoint layout (big-endian): int format version (1), long index, int microBatches,
 * double lossSum, double lossWeight, then the detectors' state ({@link Detectors.State#write}).
 */
final class MonitorState implements TransformState {
    static final int FORMAT = 1;

    private final Monitor owner;
    long index;
    int microBatches;
    double lossSum;
    double lossWeight;
    final Detectors.State detectors;
    /** The state in use before this one was restored: the monitor returns to it if the restore fails. */
    MonitorState previous;

    MonitorState(Monitor owner, Detectors.State detectors) {
        this.owner = owner;
        this.detectors = detectors;
    }

    /** Forgets the micro-batches of the step being accumulated. */
    void clearWindow() {
        microBatches = 0;
        lossSum = 0;
        lossWeight = 0;
    }

    /** Tells the monitor the pipeline dropped this state (reset, replaced by a restore, or a failed restore). */
    @Override
    public <T> void release(TensorOps<T> ops) {
        owner.released(this);
    }

    @Override
    public <T> void write(StateOutput<T> out) throws IOException {
        out.writeInt(FORMAT);
        out.writeLong(index);
        out.writeInt(microBatches);
        out.writeDouble(lossSum);
        out.writeDouble(lossWeight);
        detectors.write(out);
    }

    /** Reads what {@link #write} wrote, for {@code owner}'s detectors. */
    static <T> MonitorState read(StateInput<T> in, Monitor owner, Detectors detectors) throws IOException {
        int format = in.readInt();
        if (format != FORMAT) {
            throw new StateFormatException("monitor state format " + format + " is not supported; this GradGuard reads "
                    + FORMAT);
        }
        long index = in.readLong();
        int microBatches = in.readInt();
        double lossSum = in.readDouble();
        double lossWeight = in.readDouble();
        if (index < 0) {
            throw new StateFormatException("monitor state: the record index is " + index + ", expected >= 0");
        }
        if (microBatches < 0) {
            throw new StateFormatException("monitor state: " + microBatches + " micro-batches, expected >= 0");
        }
        if (!(lossWeight >= 0) || Double.isInfinite(lossWeight)) {
            throw new StateFormatException("monitor state: the loss weight is " + lossWeight + ", expected a finite number >= 0");
        }
        if (lossWeight == 0 && lossSum != 0) {
            throw new StateFormatException("monitor state: a loss sum of " + lossSum + " without loss weight");
        }
        MonitorState s = new MonitorState(owner, detectors.read(in));
        s.index = index;
        s.microBatches = microBatches;
        s.lossSum = lossSum; // may be NaN or infinite: a diverged loss is reported as it was
        s.lossWeight = lossWeight;
        return s;
    }

    @Override
    public String toString() {
        return "MonitorState{index " + index + ", micro-batches " + microBatches + "}";
    }
}
