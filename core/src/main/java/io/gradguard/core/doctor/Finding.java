package io.gradguard.core.doctor;

import java.util.List;

/**
 * One thing the {@link Doctor} found wrong in a run.
 *
 * @param kind    what went wrong
 * @param step    the optimizer step where it was first seen
 * @param layers  the layers concerned, in model order (empty when no layer is singled out)
 * @param value   the measured value behind it (a norm, a loss ratio, a count)
 * @param message what a person reads: the numbers and what they were compared with
 */
public record Finding(Kind kind, long step, List<String> layers, double value, String message) {

    /** What can go wrong, in the order the doctor ranks findings of the same step. */
    public enum Kind {
        /** NaN or ±Inf in the gradient (or an infinite norm or loss). */
        NON_FINITE,
        /** The global gradient norm jumped far above its healthy median. */
        EXPLODING,
        /** The loss jumped far above its recent median: an update overshot. */
        LOSS_SPIKE,
        /** Lower layers get a tiny share of the gradient: they stop learning. */
        VANISHING,
        /** A layer's gradient is exactly zero, step after step. */
        STALLED
    }

    /** Copies the layer list. */
    public Finding {
        layers = List.copyOf(layers);
    }

    @Override
    public String toString() {
        return kind + " at step " + step + ": " + message;
    }
}
