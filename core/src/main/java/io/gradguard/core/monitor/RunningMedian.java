package io.gradguard.core.monitor;

import java.util.Arrays;

/**
 * The median of the last {@code window} values: a ring buffer for their order and a sorted copy
 * kept up to date by one binary search and one array shift per value, so the median is a lookup
 * (the monitor asks for it on every record).
 */
final class RunningMedian {
    private final double[] ring;
    /** The values held, in {@link Double#compare} order (that of {@link Arrays#sort(double[])}). */
    private final double[] sorted;
    private int size;
    private int next;

    RunningMedian(int window) {
        ring = new double[window];
        sorted = new double[window];
    }

    void add(double v) {
        if (size == ring.length) {
            int at = Arrays.binarySearch(sorted, 0, size, ring[next]);
            System.arraycopy(sorted, at + 1, sorted, at, size - at - 1);
            size--;
        }
        int at = Arrays.binarySearch(sorted, 0, size, v);
        at = at < 0 ? -at - 1 : at;
        System.arraycopy(sorted, at, sorted, at + 1, size - at);
        sorted[at] = v;
        size++;
        ring[next] = v;
        next = (next + 1) % ring.length;
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
        return size % 2 == 1 ? sorted[size / 2] : (sorted[size / 2 - 1] + sorted[size / 2]) / 2;
    }
}
