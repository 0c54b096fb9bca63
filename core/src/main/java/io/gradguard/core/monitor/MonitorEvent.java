package io.gradguard.core.monitor;

/**
 * Something a {@link Monitor} detector noticed, with a message a person can act on
 * ({@code "layer dense_3 gradient norm 4.1e+05 at step 812: 37x its running median"}).
 *
 * @param kind      what was detected
 * @param step      the optimizer step it was detected at
 * @param layer     the layer concerned, or "" when none is singled out
 * @param parameter the parameter concerned (non-finite), or ""
 * @param value     the measured value (a norm, a count)
 * @param reference what it was compared to (running median, threshold), NaN when none
 * @param message   the human-readable description
 */
public record MonitorEvent(Kind kind, long step, String layer, String parameter, double value, double reference,
        String message) {

    /** The kinds of event. */
    public enum Kind {
        /** The gradient norm jumped far above its running median. */
        EXPLODING,
        /** A layer's gradient norm stayed below the absolute or relative threshold for several steps. */
        VANISHING,
        /** NaN or ±Inf appeared in a gradient. */
        NON_FINITE,
        /** The pipeline skipped the step on purpose (a non-finite policy, a spike guard). */
        SKIPPED
    }

    @Override
    public String toString() {
        return kind + ": " + message;
    }
}
