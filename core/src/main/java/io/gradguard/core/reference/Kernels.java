package io.gradguard.core.reference;

/** The reference backend's hot loops, written so the JIT unrolls and vectorizes them. */
final class Kernels {
    private Kernels() {
    }

    /**
     * Σ x² over [lo, hi) in float64, with eight independent accumulators: the float-to-double
     * conversion and the add latency, not memory, bound this loop, and eight chains keep both
     * floating-point ports busy. Each square is exact in float64 (24-bit mantissas).
     */
    static double sumSquares(float[] x, int lo, int hi) {
        double s0 = 0;
        double s1 = 0;
        double s2 = 0;
        double s3 = 0;
        double s4 = 0;
        double s5 = 0;
        double s6 = 0;
        double s7 = 0;
        int i = lo;
        for (; i + 7 < hi; i += 8) {
            double a = x[i];
            double b = x[i + 1];
            double c = x[i + 2];
            double d = x[i + 3];
            double e = x[i + 4];
            double f = x[i + 5];
            double g = x[i + 6];
            double h = x[i + 7];
            s0 += a * a;
            s1 += b * b;
            s2 += c * c;
            s3 += d * d;
            s4 += e * e;
            s5 += f * f;
            s6 += g * g;
            s7 += h * h;
        }
        for (; i < hi; i++) {
            double a = x[i];
            s0 += a * a;
        }
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
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
