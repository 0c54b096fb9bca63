package io.gradguard.core.monitor;

import java.util.Arrays;

/** The median of the last {@code window} values (a ring buffer; sorting a copy is cheap at these sizes). */
final class RunningMedian {
    private final double[] ring;
    private int size;
    private int next;

    RunningMedian(int window) {
        ring = new double[window];
    }

    void add(double v) {
        ring[next] = v;
        next = (next + 1) % ring.length;
        size = Math.min(size + 1, ring.length);
    }

    int size() {
        return size;
    }

    /** The values held, oldest first (adding them in this order to an empty median rebuilds this one). */
    double[] values() {
        double[] out = new double[size];
        int first = size < ring.length ? 0 : next;
        for (int i = 0; i < size; i++) {
            out[i] = ring[(first + i) % ring.length];
        }
        return out;
    }

    /** The median of the values held, NaN when empty. */
    double median() {
        if (size == 0) {
            return Double.NaN;
        }
        double[] s = Arrays.copyOf(ring, size);
        Arrays.sort(s);
        return size % 2 == 1 ? s[size / 2] : (s[size / 2 - 1] + s[size / 2]) / 2;
    }
}
