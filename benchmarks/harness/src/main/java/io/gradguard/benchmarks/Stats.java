package io.gradguard.benchmarks;

import java.util.Arrays;

/** Small statistics helpers for timings. */
public final class Stats {
    private Stats() {
    }

    /**
     * The median of the samples (mean of the two middle ones for an even count).
     *
     * @throws IllegalArgumentException if there are no samples
     */
    public static double median(double[] samples) {
        if (samples.length == 0) {
            throw new IllegalArgumentException("samples must not be empty");
        }
        double[] s = samples.clone();
        Arrays.sort(s);
        int m = s.length / 2;
        return s.length % 2 == 1 ? s[m] : (s[m - 1] + s[m]) / 2;
    }

    /**
     * The line {@code y = intercept + slope·x} that minimises the squared <em>relative</em> errors
     * (least squares weighted by 1/y², so a 1 ms point counts as much as a 300 ms one), and the
     * largest relative distance of a point from it (how far from linear the data are).
     *
     * @throws IllegalArgumentException if fewer than two points are given, the lengths differ, or a
     *     y is not &gt; 0
     */
    public static Line fit(double[] x, double[] y) {
        if (x.length < 2 || x.length != y.length) {
            throw new IllegalArgumentException("fit needs two or more (x, y) points of equal count, got "
                    + x.length + " and " + y.length);
        }
        double w = 0;
        double sx = 0;
        double sy = 0;
        double sxx = 0;
        double sxy = 0;
        for (int i = 0; i < x.length; i++) {
            if (!(y[i] > 0)) {
                throw new IllegalArgumentException("y must be > 0, got y[" + i + "]=" + y[i]);
            }
            double wi = 1 / (y[i] * y[i]);
            w += wi;
            sx += wi * x[i];
            sy += wi * y[i];
            sxx += wi * x[i] * x[i];
            sxy += wi * x[i] * y[i];
        }
        double slope = (w * sxy - sx * sy) / (w * sxx - sx * sx);
        double intercept = (sy - slope * sx) / w;
        double worst = 0;
        for (int i = 0; i < x.length; i++) {
            worst = Math.max(worst, Math.abs(y[i] - (intercept + slope * x[i])) / y[i]);
        }
        return new Line(slope, intercept, worst);
    }

    /**
     * A fitted line.
     *
     * @param slope        the cost per unit of x
     * @param intercept    the fixed cost
     * @param maxDeviation the largest |y - fit| / y over the points
     */
    public record Line(double slope, double intercept, double maxDeviation) {
    }
}
