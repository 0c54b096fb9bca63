package io.gradguard.benchmarks;

import java.util.stream.IntStream;

/**
 * The memory-bandwidth floor: the plainest Java loops that touch the same bytes as a gradient
 * transform must, timed on the same arrays in the same run.
 *
 * <ul>
 *   <li>{@link #read}: one read pass, Σ x[i] in float with eight independent accumulators (no
 *       conversion, no multiply: the least arithmetic a loop that reads every value can do).</li>
 *   <li>{@link #readWrite}: one read-write pass, x[i] *= c with c = 1 (vectorized by the JIT).</li>
 *   <li>{@link #axpy}: x[i] += a·y[i], read two arrays and write one (vectorized).</li>
 * </ul>
 *
 * <p>Each loop runs two ways: on one thread, and in the reference backend's fixed 1M-element chunks
 * on all cores of the common fork-join pool (as {@code ReferenceOps} does). A floor is the faster of
 * the two medians, so the floor is never slower than the backend's own threading would allow.
 *
 * <pre>{@code
 * BandwidthFloor.read(x, true);        // one read pass over x on all cores
 * }</pre>
 */
public final class BandwidthFloor {
    /** The reference backend's chunk ({@code ReferenceOps.CHUNK}), so the parallel floor splits work exactly as the backend does. */
    public static final int CHUNK = 1 << 20;

    /** Read through a volatile field so the JIT cannot fold the multiply by one away. */
    private static volatile float one = 1.0f;

    /** Defeats dead-code elimination of the read loop. */
    private static volatile double sink;

    private BandwidthFloor() {
    }

    /** One read pass over {@code x}. */
    public static void read(float[] x, boolean parallel) {
        if (!parallel) {
            sink = readRange(x, 0, x.length);
            return;
        }
        int chunks = chunks(x.length);
        double[] parts = new double[chunks];
        IntStream.range(0, chunks).parallel().forEach(c -> parts[c] = readRange(x, c * CHUNK, Math.min(x.length, (c + 1) * CHUNK)));
        double s = 0;
        for (double p : parts) {
            s += p;
        }
        sink = s;
    }

    /** One read-write pass over {@code x} (x *= 1). */
    public static void readWrite(float[] x, boolean parallel) {
        float c = one;
        if (!parallel) {
            scaleRange(x, 0, x.length, c);
            return;
        }
        IntStream.range(0, chunks(x.length)).parallel().forEach(k -> scaleRange(x, k * CHUNK, Math.min(x.length, (k + 1) * CHUNK), c));
    }

    /** x += 1·y (read x and y, write x). */
    public static void axpy(float[] x, float[] y, boolean parallel) {
        float a = one;
        if (!parallel) {
            axpyRange(x, y, 0, x.length, a);
            return;
        }
        IntStream.range(0, chunks(x.length)).parallel().forEach(k -> axpyRange(x, y, k * CHUNK, Math.min(x.length, (k + 1) * CHUNK), a));
    }

    private static int chunks(int n) {
        return (n + CHUNK - 1) / CHUNK;
    }

    static float readRange(float[] x, int lo, int hi) {
        float s0 = 0;
        float s1 = 0;
        float s2 = 0;
        float s3 = 0;
        float s4 = 0;
        float s5 = 0;
        float s6 = 0;
        float s7 = 0;
        int i = lo;
        for (; i + 7 < hi; i += 8) {
            s0 += x[i];
            s1 += x[i + 1];
            s2 += x[i + 2];
            s3 += x[i + 3];
            s4 += x[i + 4];
            s5 += x[i + 5];
            s6 += x[i + 6];
            s7 += x[i + 7];
        }
        for (; i < hi; i++) {
            s0 += x[i];
        }
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
    }

    static void scaleRange(float[] x, int lo, int hi, float c) {
        for (int i = lo; i < hi; i++) {
            x[i] *= c;
        }
    }

    static void axpyRange(float[] x, float[] y, int lo, int hi, float a) {
        for (int i = lo; i < hi; i++) {
            x[i] += a * y[i];
        }
    }
}
