package io.gradguard.core.reference;

import io.gradguard.core.internal.Checks;
import java.util.Arrays;

/**
 * A dense, row-major tensor on the Java heap: the reference backend's tensor type. Holds float32
 * ({@link #floats()}) or float64 ({@link #doubles()}) data. Gradients are changed in place.
 *
 * <pre>{@code
 * ReferenceTensor g = ReferenceTensor.of(new float[] {1, 2, 3, 4}, 2, 2);
 * }</pre>
 */
public final class ReferenceTensor {
    private final long[] shape;
    private final float[] f;
    private final double[] d;

    private ReferenceTensor(long[] shape, float[] f, double[] d) {
        this.shape = shape;
        this.f = f;
        this.d = d;
    }

    /**
     * A float32 tensor over {@code data} (not copied).
     *
     * @throws IllegalArgumentException if the shape's element count differs from data.length or a dimension is negative
     */
    public static ReferenceTensor of(float[] data, long... shape) {
        Checks.notNull("data", data);
        check(data.length, shape);
        return new ReferenceTensor(shape.clone(), data, null);
    }

    /** A float64 tensor over {@code data} (not copied). @throws IllegalArgumentException as {@link #of(float[], long...)} */
    public static ReferenceTensor ofDoubles(double[] data, long... shape) {
        Checks.notNull("data", data);
        check(data.length, shape);
        return new ReferenceTensor(shape.clone(), null, data);
    }

    /** A float64 scalar (rank 0). */
    public static ReferenceTensor scalar(double v) {
        return new ReferenceTensor(new long[0], null, new double[] {v});
    }

    private static void check(int length, long[] shape) {
        Checks.notNull("shape", shape);
        long n = 1;
        for (long s : shape) {
            Checks.require(s >= 0, "shape", "have no negative dimension", shape);
            n *= s;
        }
        Checks.require(n == length, "shape", "hold exactly data.length=" + length + " elements", shape);
    }

    public long[] shape() {
        return shape.clone();
    }

    long[] shapeRef() {
        return shape;
    }

    public int size() {
        return f != null ? f.length : d.length;
    }

    /** Whether the data is float64. */
    public boolean isDouble() {
        return d != null;
    }

    /** The float32 data (live), or null for a float64 tensor. */
    public float[] floats() {
        return f;
    }

    /** The float64 data (live), or null for a float32 tensor. */
    public double[] doubles() {
        return d;
    }

    /** Element i as a double. */
    public double get(int i) {
        return f != null ? f[i] : d[i];
    }

    void set(int i, double v) {
        if (f != null) {
            f[i] = (float) v;
        } else {
            d[i] = v;
        }
    }

    /** A copy of the data as float64. */
    public double[] toDoubles() {
        if (d != null) {
            return d.clone();
        }
        double[] out = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            out[i] = f[i];
        }
        return out;
    }

    @Override
    public String toString() {
        int n = Math.min(size(), 8);
        StringBuilder sb = new StringBuilder(isDouble() ? "f64" : "f32").append(Arrays.toString(shape)).append('[');
        for (int i = 0; i < n; i++) {
            sb.append(i == 0 ? "" : ", ").append(get(i));
        }
        return sb.append(size() > n ? ", ...]" : "]").toString();
    }
}
