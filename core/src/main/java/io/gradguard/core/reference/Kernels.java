package io.gradguard.core.reference;

/** The reference backend's hot loops, written so the JIT unrolls and vectorizes them. */
final class Kernels {
    private Kernels() {
    }

    /**
     * Σ x² over [lo, hi) in float64. Sixteen independent accumulators: accumulator k sums the squares
     * of x[lo + 16m + k] in order of m, the remaining (hi − lo) mod 16 values are added to
     * accumulators 0, 1, ... in order, and the sixteen are combined pairwise
     * ((a0 + a1) + (a2 + a3)) + ... . Each square is exact in float64 (24-bit mantissas), so the
     * result depends only on this order, which {@link VectorKernels} follows lane for lane: the
     * SIMD path (taken when the JVM has {@code jdk.incubator.vector}, see {@link #SIMD}) and this
     * loop return the same bits. Sixteen chains keep both floating-point ports busy; the
     * float-to-double conversion, not memory, bounds the scalar loop.
     */
    static double sumSquares(float[] x, int lo, int hi) {
        return SIMD ? VectorKernels.sumSquares(x, lo, hi) : sumSquaresScalar(x, lo, hi);
    }

    /** {@link #sumSquares(float[], int, int)} without the SIMD path. */
    static double sumSquaresScalar(float[] x, int lo, int hi) {
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        double s8 = 0, s9 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0, s14 = 0, s15 = 0;
        int i = lo;
        for (; i + 15 < hi; i += 16) {
            double a0 = x[i], a1 = x[i + 1], a2 = x[i + 2], a3 = x[i + 3];
            double a4 = x[i + 4], a5 = x[i + 5], a6 = x[i + 6], a7 = x[i + 7];
            double a8 = x[i + 8], a9 = x[i + 9], a10 = x[i + 10], a11 = x[i + 11];
            double a12 = x[i + 12], a13 = x[i + 13], a14 = x[i + 14], a15 = x[i + 15];
            s0 += a0 * a0;
            s1 += a1 * a1;
            s2 += a2 * a2;
            s3 += a3 * a3;
            s4 += a4 * a4;
            s5 += a5 * a5;
            s6 += a6 * a6;
            s7 += a7 * a7;
            s8 += a8 * a8;
            s9 += a9 * a9;
            s10 += a10 * a10;
            s11 += a11 * a11;
            s12 += a12 * a12;
            s13 += a13 * a13;
            s14 += a14 * a14;
            s15 += a15 * a15;
        }
        double[] acc = {s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15};
        return finishSumSquares(acc, x, i, hi);
    }

    /** Number of accumulators of {@link #sumSquares(float[], int, int)}. */
    static final int LANES = 16;

    /**
     * Adds the squares of x[i, hi) (fewer than {@link #LANES}) to acc[0], acc[1], ... and combines
     * the accumulators pairwise: the common tail of the scalar and the SIMD Σx².
     */
    static double finishSumSquares(double[] acc, float[] x, int i, int hi) {
        for (int k = 0; i < hi; i++, k++) {
            double a = x[i];
            acc[k] += a * a;
        }
        for (int width = 1; width < LANES; width *= 2) {
            for (int k = 0; k < LANES; k += 2 * width) {
                acc[k] += acc[k + width];
            }
        }
        return acc[0];
    }

    /**
     * Whether {@link #sumSquares(float[], int, int)} runs on the Vector API: the JVM resolved
     * {@code jdk.incubator.vector} (started with {@code --add-modules jdk.incubator.vector}), the
     * CPU has 256- or 512-bit vectors, and {@code -Dgradguard.simd=false} was not given. Same
     * results either way.
     */
    static final boolean SIMD = simdAvailable();

    private static boolean simdAvailable() {
        if (!Boolean.parseBoolean(System.getProperty("gradguard.simd", "true"))
                || ModuleLayer.boot().findModule("jdk.incubator.vector").isEmpty()) {
            return false;
        }
        try {
            return VectorKernels.supported();
        } catch (LinkageError e) {
            return false;
        }
    }

    /**
     * For the units [uLo, uHi) of a float tensor viewed as [outer, units, inner]: out[u] +=
     * Σ over o and i of x[(o·units + u)·inner + i]², each unit summed in a fixed order (rows in
     * order, {@link #sumSquares(float[], int, int)} within a row), whatever the partition of units.
     */
    static void sumSquaresPerUnit(float[] x, long outer, int units, int inner, int uLo, int uHi, double[] out) {
        if (inner == 1) {
            sumSquaresPerColumn(x, 0, outer, units, uLo, uHi, out);
            return;
        }
        for (long o = 0; o < outer; o++) {
            int row = (int) (o * units);
            for (int u = uLo; u < uHi; u++) {
                int start = (row + u) * inner;
                out[u] += sumSquares(x, start, start + inner);
            }
        }
    }

    /**
     * The columns [uLo, uHi) of the rows [rLo, rHi) of a [rows, units] float matrix:
     * out[u] += Σ_r x[r·units + u]², four rows at a time (one read-modify-write of out[u] per four
     * values, four independent squares), rows in order.
     */
    static void sumSquaresPerColumn(float[] x, long rLo, long rHi, int units, int uLo, int uHi, double[] out) {
        long r = rLo;
        for (; r + 3 < rHi; r += 4) {
            int r0 = (int) (r * units);
            int r1 = r0 + units;
            int r2 = r1 + units;
            int r3 = r2 + units;
            for (int u = uLo; u < uHi; u++) {
                double a = x[r0 + u];
                double b = x[r1 + u];
                double c = x[r2 + u];
                double d = x[r3 + u];
                out[u] += (a * a + b * b) + (c * c + d * d);
            }
        }
        for (; r < rHi; r++) {
            int r0 = (int) (r * units);
            for (int u = uLo; u < uHi; u++) {
                double a = x[r0 + u];
                out[u] += a * a;
            }
        }
    }

    /** The rows [rLo, rHi) of a [rows, units] matrix: x[r·units + u] *= f[u]. */
    static void scaleRows(float[] x, int rLo, int rHi, int units, float[] f) {
        for (int r = rLo; r < rHi; r++) {
            int row = r * units;
            for (int u = 0; u < units; u++) {
                x[row + u] *= f[u];
            }
        }
    }

    /** For the units [uLo, uHi): x[(o·units + u)·inner + i] *= f[u], over all o and i. */
    static void scalePerUnit(float[] x, long outer, int units, int inner, int uLo, int uHi, float[] f) {
        for (long o = 0; o < outer; o++) {
            int row = (int) (o * units);
            if (inner == 1) {
                for (int u = uLo; u < uHi; u++) {
                    x[row + u] *= f[u];
                }
            } else {
                for (int u = uLo; u < uHi; u++) {
                    int start = (row + u) * inner;
                    scale(x, start, start + inner, f[u]);
                }
            }
        }
    }

    static double sumSquares(double[] x, int lo, int hi) {
        double s0 = 0;
        double s1 = 0;
        double s2 = 0;
        double s3 = 0;
        int i = lo;
        for (; i + 3 < hi; i += 4) {
            s0 += x[i] * x[i];
            s1 += x[i + 1] * x[i + 1];
            s2 += x[i + 2] * x[i + 2];
            s3 += x[i + 3] * x[i + 3];
        }
        for (; i < hi; i++) {
            s0 += x[i] * x[i];
        }
        return (s0 + s1) + (s2 + s3);
    }

    static void scale(float[] x, int lo, int hi, float c) {
        for (int i = lo; i < hi; i++) {
            x[i] *= c;
        }
    }

    static void scale(double[] x, int lo, int hi, double c) {
        for (int i = lo; i < hi; i++) {
            x[i] *= c;
        }
    }

    static void axpy(float[] x, float[] y, int lo, int hi, float a) {
        for (int i = lo; i < hi; i++) {
            x[i] += a * y[i];
        }
    }

    /**
     * Clamp without branches (the JIT vectorizes min/max; a branchy clamp costs a misprediction
     * per clipped value). NaN stays NaN: {@code Math.max} and {@code Math.min} return NaN for a NaN
     * operand.
     */
    static void clamp(float[] x, int lo, int hi, float l, float h) {
        for (int i = lo; i < hi; i++) {
            x[i] = Math.min(Math.max(x[i], l), h);
        }
    }
}
