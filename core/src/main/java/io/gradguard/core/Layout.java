package io.gradguard.core;

import io.gradguard.core.internal.Checks;

/**
 * Which axis of a parameter indexes its output units, so unit-wise transforms (adaptive gradient
 * clipping, centralization) reduce over the right axes. Core never guesses from the rank alone:
 * each adapter declares the layout of its framework.
 *
 * <table>
 *   <caption>Framework layouts</caption>
 *   <tr><th>framework</th><th>dense weight</th><th>conv kernel</th><th>layout</th></tr>
 *   <tr><td>DJL / PyTorch</td><td>[out, in]</td><td>[out, in, kh, kw]</td><td>{@link #outputFirst()}</td></tr>
 *   <tr><td>DL4J</td><td>[nIn, nOut]</td><td>[out, in, kh, kw]</td><td>{@link #outputLast()} (dense), {@link #outputFirst()} (conv)</td></tr>
 *   <tr><td>TensorFlow / Keras</td><td>[in, out]</td><td>[h, w, in, out]</td><td>{@link #outputLast()}</td></tr>
 * </table>
 *
 * <p>A rank-0 or rank-1 tensor is always one unit (a bias vector is normed as a whole, as in Optax).
 *
 * <pre>{@code
 * new GradientTensor<>("0_W", shape, Role.WEIGHT, "0", Layout.outputLast(), grad, param)
 * }</pre>
 */
public final class Layout {
    private static final Layout FIRST = new Layout(0);
    private static final Layout LAST = new Layout(-1);
    private static final Layout WHOLE = new Layout(Integer.MIN_VALUE);

    private final int axis;

    private Layout(int axis) {
        this.axis = axis;
    }

    /** Axis 0 is the output unit (PyTorch / DJL). */
    public static Layout outputFirst() {
        return FIRST;
    }

    /** The last axis is the output unit (TensorFlow, DL4J dense). */
    public static Layout outputLast() {
        return LAST;
    }

    /** The whole tensor is one unit, whatever its rank. */
    public static Layout whole() {
        return WHOLE;
    }

    /**
     * The given axis is the output unit; negative values count from the end (-1 is the last axis).
     *
     * @throws IllegalArgumentException if {@code axis} is {@code Integer.MIN_VALUE}
     */
    public static Layout outputAxis(int axis) {
        Checks.require(axis != Integer.MIN_VALUE, "axis", "be a valid axis index", axis);
        return axis == 0 ? FIRST : axis == -1 ? LAST : new Layout(axis);
    }

    /**
     * The axes one unit's norm reduces over, for a tensor of the given rank: every axis except the
     * output axis; all axes for rank &lt;= 1 or {@link #whole()}.
     *
     * @throws IllegalArgumentException if the output axis does not exist for this rank
     */
    public int[] reductionAxes(int rank) {
        if (rank <= 1 || axis == Integer.MIN_VALUE) {
            int[] all = new int[rank];
            for (int i = 0; i < rank; i++) {
                all[i] = i;
            }
            return all;
        }
        int out = axis < 0 ? rank + axis : axis;
        Checks.require(out >= 0 && out < rank, "output axis", "exist in a tensor of rank " + rank, axis);
        int[] axes = new int[rank - 1];
        for (int i = 0, j = 0; i < rank; i++) {
            if (i != out) {
                axes[j++] = i;
            }
        }
        return axes;
    }

    /** Whether every axis is reduced (the tensor is a single unit) at this rank. */
    public boolean isWhole(int rank) {
        return rank <= 1 || axis == Integer.MIN_VALUE;
    }

    @Override
    public String toString() {
        return axis == Integer.MIN_VALUE ? "whole" : axis == 0 ? "outputFirst" : axis == -1 ? "outputLast" : "outputAxis(" + axis + ")";
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Layout l && l.axis == axis;
    }

    @Override
    public int hashCode() {
        return axis;
    }
}
