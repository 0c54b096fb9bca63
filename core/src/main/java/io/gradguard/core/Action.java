package io.gradguard.core;

import io.gradguard.core.internal.Checks;

/**
 * What a transform tells the pipeline after it ran.
 *
 * <ul>
 *   <li>{@link #proceed()}: go on with the next transform; the optimizer steps at the end.</li>
 *   <li>{@link #hold()}: this call was absorbed (a micro-batch went into an accumulator): do not
 *       step the optimizer now; the adapter resets the framework's gradients.</li>
 *   <li>{@link #skip(String)}: drop this step on purpose (non-finite gradient, spike): the
 *       optimizer and its state do not move, the gradient is reset, the skip is counted and reported.</li>
 * </ul>
 */
public final class Action {
    /** The three outcomes. */
    public enum Kind { PROCEED, HOLD, SKIP }

    private static final Action PROCEED = new Action(Kind.PROCEED, "");
    private static final Action HOLD = new Action(Kind.HOLD, "");

    private final Kind kind;
    private final String reason;

    private Action(Kind kind, String reason) {
        this.kind = kind;
        this.reason = reason;
    }

    public static Action proceed() {
        return PROCEED;
    }

    public static Action hold() {
        return HOLD;
    }

    /**
     * @param reason why, for the report ("non-finite gradient in 0_W")
     * @throws IllegalArgumentException if reason is empty
     */
    public static Action skip(String reason) {
        Checks.require(reason != null && !reason.isBlank(), "reason", "say why the step is skipped", reason);
        return new Action(Kind.SKIP, reason);
    }

    public Kind kind() {
        return kind;
    }

    /** Why the step was skipped; empty otherwise. */
    public String reason() {
        return reason;
    }

    @Override
    public String toString() {
        return kind == Kind.SKIP ? "SKIP(" + reason + ")" : kind.name();
    }
}
