package io.gradguard.core.reference;

/** The reference backend's hot loops, written so the JIT unrolls and vectorizes them. */
final class Kernels {
    private Kernels() {
    }

    /** Σ x² over [lo, hi) in float64, with four independent accumulators. */
    static double sumSquares(float[] x, int lo, int hi) {
        double s0 = 0;
        double s1 = 0;
        double s2 = 0;
        double s3 = 0;
        int i = lo;
        for (; i + 3 < hi; i += 4) {
            double a = x[i];
            double b = x[i + 1];
            double c = x[i + 2];
            double d = x[i + 3];
            s0 += a * a;
            s1 += b * b;
            s2 += c * c;
            s3 += d * d;
        }
        for (; i < hi; i++) {
            double a = x[i];
            s0 += a * a;
        }
        return (s0 + s1) + (s2 + s3);
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

    /** Clamp with NaN kept: comparisons with NaN are false, so NaN passes both tests unchanged. */
    static void clamp(float[] x, int lo, int hi, float l, float h) {
        for (int i = lo; i < hi; i++) {
            float v = x[i];
            x[i] = v < l ? l : v > h ? h : v;
        }
    }
}
