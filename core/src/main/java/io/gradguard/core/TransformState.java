package io.gradguard.core;

import io.gradguard.core.spi.TensorOps;
import java.io.IOException;

/**
 * The part of a transform that changes from step to step (accumulators, counters, histories,
 * EMAs). The pipeline owns one per stage; the transform itself stays immutable configuration.
 * Stateless transforms use {@link #NONE}.
 *
 * <p>A state writes itself to a checkpoint with {@link #write}; its transform reads it back with
 * {@link GradientTransform#readState}. Both must round-trip exactly (bit-identical continuation).
 */
public interface TransformState {
    /** The state of a stateless transform: writes nothing. */
    TransformState NONE = new TransformState() {
        @Override
        public String toString() {
            return "none";
        }
    };

    /** Frees backend buffers held by this state (accumulators); a no-op by default. */
    default <T> void release(TensorOps<T> ops) {
    }

    /** Writes this state to a checkpoint; nothing by default. */
    default <T> void write(StateOutput<T> out) throws IOException {
    }
}
