package io.gradguard.benchmarks;

import java.util.Arrays;
import java.util.Locale;

/**
 * Part 4: how a cost grows with the number of parameters, as one table row: the line
 * {@code t ≈ slope·n + intercept} fitted to the measured points (relative least squares, see
 * {@link Stats#fit}), how far the points are from it, and the cost per parameter at each size.
 *
 * <pre>{@code
 * section.emit(Scaling.row("djl guard cost (clipByGlobalNorm)", sizes, millis));
 * }</pre>
 */
public final class Scaling {
    private Scaling() {
    }

    /**
     * The part-4 row for costs {@code millis[i]} measured at {@code sizes[i]} parameters.
     *
     * @throws IllegalArgumentException if the arrays differ in length or have fewer than two points
     */
    public static Row row(String name, long[] sizes, double[] millis) {
        if (sizes.length != millis.length || sizes.length < 2) {
            throw new IllegalArgumentException("sizes and millis must have the same length >= 2, got "
                    + sizes.length + " and " + millis.length);
        }
        StringBuilder perParam = new StringBuilder();
        for (int k = 0; k < sizes.length; k++) {
            perParam.append(k == 0 ? "" : ", ").append(Table.count(sizes[k])).append(' ')
                    .append(String.format(Locale.ROOT, "%.2f", millis[k] * 1e6 / sizes[k]));
        }
        String fit;
        if (Arrays.stream(millis).allMatch(t -> t > 0)) {
            double[] x = Arrays.stream(sizes).asDoubleStream().toArray();
            Stats.Line line = Stats.fit(x, millis);
            fit = String.format(Locale.ROOT, "t ≈ %.3f ns/param · n %s %.3f ms (largest deviation from the line %.0f%%)",
                    line.slope() * 1e6, line.intercept() < 0 ? "−" : "+", Math.abs(line.intercept()), line.maxDeviation() * 100);
        } else {
            fit = "no fit: some costs are within the noise (<= 0)";
        }
        return Row.note(4, name + ", " + Table.count(sizes[0]) + ".." + Table.count(sizes[sizes.length - 1]) + " params",
                fit + "; ns/param by size: " + perParam);
    }
}
