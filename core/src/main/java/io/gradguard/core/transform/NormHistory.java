package io.gradguard.core.transform;

import io.gradguard.core.StateFormatException;
import io.gradguard.core.StateInput;
import io.gradguard.core.StateOutput;
import java.io.IOException;
import java.util.Arrays;

/**
 * A bounded history of host-side gradient norms (the most recent {@code capacity}), kept both in
 * arrival order (a ring) and sorted (for percentiles), with O(capacity) insertion. Used by the
 * adaptive transforms; checkpointed with them.
 */
final class NormHistory {
    private final double[] ring;
    private final double[] sorted;
    private int size;
    private int head; // index of the oldest value when full

    NormHistory(int capacity) {
        ring = new double[capacity];
        sorted = new double[capacity];
    }

    int size() {
        return size;
    }

    int capacity() {
        return ring.length;
    }

    void add(double v) {
        if (size == ring.length) {
            double old = ring[head];
            ring[head] = v;
            head = (head + 1) % ring.length;
            int at = Arrays.binarySearch(sorted, 0, size, old);
            System.arraycopy(sorted, at + 1, sorted, at, size - at - 1);
            size--;
        } else {
            ring[(head + size) % ring.length] = v;
        }
        int pos = Arrays.binarySearch(sorted, 0, size, v);
        if (pos < 0) {
            pos = -pos - 1;
        }
        System.arraycopy(sorted, pos, sorted, pos + 1, size - pos);
        sorted[pos] = v;
        size++;
    }

    /** The p-th percentile (0..100) with linear interpolation between order statistics (numpy's default); NaN when empty. */
    double percentile(double p) {
        if (size == 0) {
            return Double.NaN;
        }
        double rank = p / 100.0 * (size - 1);
        int lo = (int) Math.floor(rank);
        int hi = Math.min(lo + 1, size - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }

    double mean() {
        double s = 0;
        for (int i = 0; i < size; i++) {
            s += sorted[i];
        }
        return size == 0 ? Double.NaN : s / size;
    }

    /** Population standard deviation. */
    double std() {
        double m = mean();
        double s = 0;
        for (int i = 0; i < size; i++) {
            double d = sorted[i] - m;
            s += d * d;
        }
        return size == 0 ? Double.NaN : Math.sqrt(s / size);
    }

    void write(StateOutput<?> out) throws IOException {
        double[] inOrder = new double[size];
        for (int i = 0; i < size; i++) {
            inOrder[i] = ring[(head + i) % ring.length];
        }
        out.writeDoubles(inOrder, 0, size);
    }

    static NormHistory read(StateInput<?> in, int capacity) throws IOException {
        double[] values = in.readDoubles(capacity);
        NormHistory h = new NormHistory(capacity);
        for (double v : values) {
            if (!Double.isFinite(v) || v < 0) {
                throw new StateFormatException("a norm history holds the invalid value " + v);
            }
            h.add(v);
        }
        return h;
    }
}
