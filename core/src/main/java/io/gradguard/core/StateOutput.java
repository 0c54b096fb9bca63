package io.gradguard.core;

import io.gradguard.core.spi.TensorOps;
import java.io.DataOutputStream;
import java.io.IOException;

/**
 * Where a {@link TransformState} writes itself in a checkpoint: primitives and backend tensors
 * (copied to the host as float32, with their shape). Written big-endian by {@link DataOutputStream}.
 *
 * @param <T> the backend's tensor type
 */
public final class StateOutput<T> {
    private final DataOutputStream out;
    private final TensorOps<T> ops;

    StateOutput(DataOutputStream out, TensorOps<T> ops) {
        this.out = out;
        this.ops = ops;
    }

    public void writeInt(int v) throws IOException {
        out.writeInt(v);
    }

    public void writeLong(long v) throws IOException {
        out.writeLong(v);
    }

    public void writeDouble(double v) throws IOException {
        out.writeDouble(v);
    }

    public void writeBoolean(boolean v) throws IOException {
        out.writeBoolean(v);
    }

    /** A length-prefixed array of doubles. */
    public void writeDoubles(double[] v, int from, int count) throws IOException {
        out.writeInt(count);
        for (int i = 0; i < count; i++) {
            out.writeDouble(v[from + i]);
        }
    }

    /** A tensor: a dtype byte (0 float32, 1 float64), rank, dimensions, then its values row-major. */
    public void writeTensor(T x) throws IOException {
        boolean f64 = ops.isFloat64(x);
        out.writeByte(f64 ? 1 : 0);
        long[] shape = ops.shape(x);
        out.writeInt(shape.length);
        for (long d : shape) {
            out.writeLong(d);
        }
        if (f64) {
            double[] v = ops.toHostDoubles(x);
            out.writeInt(v.length);
            for (double d : v) {
                out.writeDouble(d);
            }
        } else {
            float[] v = ops.toHostArray(x);
            out.writeInt(v.length);
            for (float f : v) {
                out.writeFloat(f);
            }
        }
    }
}
