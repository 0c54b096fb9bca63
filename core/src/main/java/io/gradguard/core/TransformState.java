package io.gradguard.core;

/**
 * The part of a transform that changes from step to step (accumulators, counters, histories,
 * EMAs). The pipeline owns one per stage; the transform itself stays immutable configuration.
 * Stateless transforms use {@link #NONE}.
 */
public interface TransformState {
    /** The state of a stateless transform. */
    TransformState NONE = new TransformState() {
        @Override
        public String toString() {
            return "none";
        }
    };

    /** Frees backend buffers held by this state (accumulators); a no-op by default. */
    default <T> void release(io.gradguard.core.spi.TensorOps<T> ops) {
    }
}
