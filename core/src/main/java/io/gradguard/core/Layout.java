package io.gradguard.core;

import io.gradguard.core.internal.Checks;
import java.util.Arrays;

/**
 * Which axis (or axes) of a parameter indexes its output units, so unit-wise transforms (adaptive gradient
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
 * Where one output unit is indexed by two axes together (a depthwise kernel {@code [kh, kw, in,
 * multiplier]}: output channel {@code i·multiplier + m} reads {@code W[:, :, i, m]} alone), use
 * {@link #outputAxes(int...)}.
 *
 * <pre>{@code
 * new GradientTensor<>("0_W", shape, Role.WEIGHT, "0", Layout.outputLast(), grad, param)
 * }</pre>
 */
public final class Layout {
    private static final Layout FIRST = new Layout(new int[] {0});
    private static final Layout LAST = new Layout(new int[] {-1});
    private static final Layout WHOLE = new Layout(new int[0]);

    /** The axes that index the output units, as declared (negative: from the end); none for {@link #whole()}. */
    private final int[] axes;

    private Layout(int[] axes) {
        this.axes = axes;
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
        return axis == 0 ? FIRST : axis == -1 ? LAST : new Layout(new int[] {axis});
    }

    /**
     * These axes together index the output units: one unit per combination of their indices, its norm
     * over the other axes. Negative values count from the end. A depthwise convolution kernel
     * {@code [kh, kw, in, multiplier]} (DL4J, TensorFlow) is {@code outputAxes(2, 3)}: each output
     * channel has its own {@code [kh, kw]} kernel.
     *
     * <pre>{@code
     * Layout depthwise = Layout.outputAxes(2, 3);   // per (input channel, multiplier)
     * }</pre>
     *
     * @throws IllegalArgumentException if no axis is given or one is {@code Integer.MIN_VALUE}; at use
     *     (see {@link #reductionAxes}), if two name the same axis or one does not exist
     */
    public static Layout outputAxes(int... axes) {
        Checks.notNull("axes", axes);
        Checks.require(axes.length > 0, "axes", "name at least one axis", Arrays.toString(axes));
        if (axes.length == 1) {
            return outputAxis(axes[0]);
        }
        for (int a : axes) {
            Checks.require(a != Integer.MIN_VALUE, "axes", "hold valid axis indices", Arrays.toString(axes));
        }
        return new Layout(axes.clone());
    }

    /**
     * The axes one unit's norm reduces over, for a tensor of the given rank: every axis except the
     * output axes; all axes for rank &lt;= 1 or {@link #whole()}.
     *
     * @throws IllegalArgumentException if an output axis does not exist for this rank, two output axes
     *     are the same, or they leave no axis to reduce
     */
    public int[] reductionAxes(int rank) {
        boolean[] kept = new boolean[Math.max(rank, 0)];
        if (!isWhole(rank)) {
            for (int a : axes) {
                int out = a < 0 ? rank + a : a;
                Checks.require(out >= 0 && out < rank, "output axis", "exist in a tensor of rank " + rank, a);
                Checks.require(!kept[out], "output axes", "name distinct axes", this);
                kept[out] = true;
            }
            Checks.require(axes.length < rank, "output axes", "leave an axis to reduce at rank " + rank, this);
        }
        int[] reduced = new int[rank - (isWhole(rank) ? 0 : axes.length)];
        for (int i = 0, j = 0; i < rank; i++) {
            if (!kept[i]) {
                reduced[j++] = i;
            }
        }
        return reduced;
    }

    /** Whether every axis is reduced (the tensor is a single unit) at this rank. */
    public boolean isWhole(int rank) {
        return rank <= 1 || axes.length == 0;
    }

    @Override
    public String toString() {
        if (axes.length == 0) {
            return "whole";
        }
        if (axes.length > 1) {
            return "outputAxes" + Arrays.toString(axes).replace('[', '(').replace(']', ')');
        }
        return axes[0] == 0 ? "outputFirst" : axes[0] == -1 ? "outputLast" : "outputAxis(" + axes[0] + ")";
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Layout l && Arrays.equals(l.axes, axes);
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(axes);
    }
}
