package io.gradguard.core;

import io.gradguard.core.spi.TensorOps;
import java.io.DataInputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * What a transform reads its checkpointed state from (see {@link StateOutput}). Tensors are
 * created on the backend with {@link TensorOps#fromHost}; if the restore fails, the pipeline
 * releases every tensor created here.
 *
 * @param <T> the backend's tensor type
 */
public final class StateInput<T> {
    private final DataInputStream in;
    private final TensorOps<T> ops;
    private final List<T> created = new ArrayList<>();

    StateInput(DataInputStream in, TensorOps<T> ops) {
        this.in = in;
        this.ops = ops;
    }

    public int readInt() throws IOException {
        return in.readInt();
    }

    public long readLong() throws IOException {
        return in.readLong();
    }

    public double readDouble() throws IOException {
        return in.readDouble();
    }

    public boolean readBoolean() throws IOException {
        return in.readBoolean();
    }

    /** Reads a length-prefixed double array of at most {@code maxLength} values. */
    public double[] readDoubles(int maxLength) throws IOException {
        int n = in.readInt();
        if (n < 0 || n > maxLength) {
            throw new StateFormatException("array length " + n + " is outside [0, " + maxLength + "]");
        }
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            v[i] = in.readDouble();
        }
        return v;
    }

    /** Reads a tensor (its shape is stored with it; the pipeline checks shapes against the model at the next step). */
    public T readTensor() throws IOException {
        int dtype = in.readByte();
        if (dtype != 0 && dtype != 1) {
            throw new StateFormatException("a state tensor has the unknown dtype " + dtype);
        }
        if (dtype == 1 && !ops.supportsFloat64()) {
            throw new StateFormatException("the state holds a float64 tensor but " + ops + " has no float64 tensors");
        }
        int rank = in.readInt();
        if (rank < 0 || rank > 64) {
            throw new StateFormatException("tensor rank " + rank + " is not valid");
        }
        long[] shape = new long[rank];
        for (int i = 0; i < rank; i++) {
            shape[i] = in.readLong();
        }
        for (long d : shape) {
            if (d < 0) {
                throw new StateFormatException("a state tensor has a negative dimension: " + Arrays.toString(shape));
            }
        }
        int n = in.readInt();
        long expected = 1;
        for (long d : shape) {
            expected *= d;
        }
        if (n != expected) {
            throw new StateFormatException("a state tensor of shape " + Arrays.toString(shape) + " holds " + n + " values");
        }
        T t;
        if (dtype == 1) {
            double[] v = new double[n];
            for (int i = 0; i < n; i++) {
                v[i] = in.readDouble();
            }
            t = ops.fromHost(v, shape);
        } else {
            float[] v = new float[n];
            for (int i = 0; i < n; i++) {
                v[i] = in.readFloat();
            }
            t = ops.fromHost(v, shape);
        }
        created.add(t);
        return t;
    }

    /** The backend the state is restored onto. */
    public TensorOps<T> ops() {
        return ops;
    }

    void releaseCreated() {
        for (T t : created) {
            ops.release(t);
        }
        created.clear();
    }
}
