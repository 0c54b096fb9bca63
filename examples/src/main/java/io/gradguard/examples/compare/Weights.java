package io.gradguard.examples.compare;

import io.gradguard.core.Role;
import java.util.List;

/**
 * A network's parameters in the canonical layout: dense and recurrent weights are
 * {@code [in, out]} (TensorFlow's and DL4J's layout), biases are vectors. DJL/PyTorch keep dense
 * weights as {@code [out, in]}: {@link Param#transposed()} gives that view.
 *
 * @param params in network order
 */
public record Weights(List<Param> params) {

    public Weights {
        params = List.copyOf(params);
    }

    /**
     * One parameter.
     *
     * @param layer the layer it belongs to ("dense3", "rnn", "out")
     * @param name  its name inside the layer ("W", "b", "Wx", "Wh")
     * @param role  weight or bias
     * @param shape canonical shape ({@code [in, out]} for matrices)
     * @param data  values, row-major
     */
    public record Param(String layer, String name, Role role, long[] shape, float[] data) {

        static Param of(String layer, String name, Role role, long[] shape, float[] data) {
            return new Param(layer, name, role, shape, data);
        }

        static Param weight(String layer, int in, int out, float[] data) {
            return new Param(layer, "W", Role.WEIGHT, new long[] {in, out}, data);
        }

        static Param bias(String layer, int out, float[] data) {
            return new Param(layer, "b", Role.BIAS, new long[] {out}, data);
        }

        /** "dense3/W". */
        public String fullName() {
            return layer + "/" + name;
        }

        /** Rows of a matrix (its input size). */
        public int rows() {
            return (int) shape[0];
        }

        /** Columns of a matrix (its output size); the length of a vector. */
        public int cols() {
            return (int) shape[shape.length - 1];
        }

        /** The values as {@code [out, in]} (row-major), for a matrix; a copy of the vector otherwise. */
        public float[] transposed() {
            return transpose(data, shape.length == 2 ? rows() : 1, cols());
        }
    }

    /**
     * Reorders the equal column blocks of a row-major matrix with {@code cols} columns (a vector is
     * one row): block {@code k} of the result is block {@code order[k]} of {@code a}. Maps the
     * LSTM's stacked gates between the canonical order and a framework's.
     *
     * @throws IllegalArgumentException if {@code cols} is not a multiple of {@code order.length}, or
     *     {@code a.length} of {@code cols}
     */
    public static float[] permuteColumnBlocks(float[] a, int cols, int[] order) {
        if (cols % order.length != 0 || a.length % cols != 0) {
            throw new IllegalArgumentException("cols must split into " + order.length + " blocks and divide the length "
                    + a.length + ", got " + cols);
        }
        int width = cols / order.length;
        float[] out = new float[a.length];
        for (int r = 0; r < a.length / cols; r++) {
            for (int k = 0; k < order.length; k++) {
                System.arraycopy(a, r * cols + order[k] * width, out, r * cols + k * width, width);
            }
        }
        return out;
    }

    /** The inverse of a block order: {@code permuteColumnBlocks} with it undoes one with {@code order}. */
    public static int[] inverse(int[] order) {
        int[] inv = new int[order.length];
        for (int k = 0; k < order.length; k++) {
            inv[order[k]] = k;
        }
        return inv;
    }

    /** Row-major {@code [rows, cols]} to row-major {@code [cols, rows]}. */
    public static float[] transpose(float[] a, int rows, int cols) {
        float[] out = new float[a.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                out[c * rows + r] = a[r * cols + c];
            }
        }
        return out;
    }
}
