package io.gradguard.core.reference;

import java.util.Arrays;

/** Maps a flat index in a result shape to the flat index in a broadcast operand (numpy rules, equal ranks or a scalar). */
final class Broadcast {
    private final int kind; // 0 same, 1 scalar, 2 one kept axis, 3 general
    private final int mid;
    private final int inner;
    private final long[] outShape;
    private final long[] strides;

    private Broadcast(int kind, int mid, int inner, long[] outShape, long[] strides) {
        this.kind = kind;
        this.mid = mid;
        this.inner = inner;
        this.outShape = outShape;
        this.strides = strides;
    }

    static long[] resultShape(long[] a, long[] b) {
        if (ReferenceOps.count(a) == 1 && a.length <= b.length) {
            return b;
        }
        if (ReferenceOps.count(b) == 1 && b.length <= a.length) {
            return a;
        }
        if (a.length != b.length) {
            throw new IllegalArgumentException("shapes must broadcast (equal ranks or a scalar), got "
                    + Arrays.toString(a) + " and " + Arrays.toString(b));
        }
        long[] out = new long[a.length];
        for (int i = 0; i < a.length; i++) {
            if (a[i] != b[i] && a[i] != 1 && b[i] != 1) {
                throw new IllegalArgumentException("shapes must broadcast, got " + Arrays.toString(a) + " and " + Arrays.toString(b));
            }
            out[i] = Math.max(a[i], b[i]);
        }
        return out;
    }

    /** The map from indices of {@code out} to indices of an operand of shape {@code operand}. */
    static Broadcast of(long[] out, long[] operand) {
        if (Arrays.equals(out, operand)) {
            return new Broadcast(0, 0, 0, out, null);
        }
        if (ReferenceOps.count(operand) == 1 && operand.length <= out.length) {
            return new Broadcast(1, 0, 0, out, null);
        }
        if (operand.length != out.length) {
            throw new IllegalArgumentException("shape " + Arrays.toString(operand) + " must broadcast to " + Arrays.toString(out));
        }
        int kept = -1;
        int keptCount = 0;
        for (int i = 0; i < out.length; i++) {
            if (operand[i] != 1 && operand[i] != out[i]) {
                throw new IllegalArgumentException("shape " + Arrays.toString(operand) + " must broadcast to " + Arrays.toString(out));
            }
            if (operand[i] != 1) {
                kept = i;
                keptCount++;
            }
        }
        if (keptCount == 1) {
            long in = 1;
            for (int i = kept + 1; i < out.length; i++) {
                in *= out[i];
            }
            return new Broadcast(2, (int) out[kept], (int) in, out, null);
        }
        long[] st = new long[out.length];
        long s = 1;
        for (int i = out.length - 1; i >= 0; i--) {
            st[i] = operand[i] == 1 ? 0 : s;
            s *= operand[i];
        }
        return new Broadcast(3, 0, 0, out, st);
    }

    int index(int i) {
        switch (kind) {
            case 0:
                return i;
            case 1:
                return 0;
            case 2:
                return (i / inner) % mid;
            default:
                long idx = 0;
                long rest = i;
                for (int d = outShape.length - 1; d >= 0; d--) {
                    long dim = outShape[d];
                    idx += (rest % dim) * strides[d];
                    rest /= dim;
                }
                return (int) idx;
        }
    }
}
