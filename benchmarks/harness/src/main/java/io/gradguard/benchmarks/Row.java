package io.gradguard.benchmarks;

import java.util.Locale;

/**
 * One line of the benchmark table: a measured time, the baseline it is compared to (measured in the
 * same run), their ratio and the goal the ratio is held to.
 *
 * <p>Rows travel from a section's JVM to the runner as one tab-separated line each
 * ({@link #toLine()} / {@link #parse(String)}); a row with no time is a note (a skipped section, a
 * fitted constant).
 *
 * <pre>{@code
 * Row r = Row.ratio(1, "reference clipByGlobalNorm", "100M", 61.0, "floor read+rw", 50.0, 1.5, "");
 * }</pre>
 *
 * @param part       the part: 1 reference vs floor, 2 guarded vs unguarded step,
 *                   3 GradGuard vs built-in, 4 cost vs model size
 * @param name       what was measured
 * @param size       how big (values or parameters)
 * @param millis     the median time, or NaN for a note
 * @param baseline   what it is compared to
 * @param baselineMillis the baseline's median time, or NaN
 * @param goal       the largest acceptable ratio, or NaN where the issue only asks to report
 * @param note       anything else (how the floor was made, why a section was skipped)
 */
public record Row(int part, String name, String size, double millis, String baseline, double baselineMillis,
        double goal, String note) {

    /** A measured time against a baseline. */
    public static Row ratio(int part, String name, String size, double millis, String baseline, double baselineMillis,
            double goal, String note) {
        return new Row(part, name, size, millis, baseline, baselineMillis, goal, note);
    }

    /** A line with no measurement: a skipped section, a fitted constant. */
    public static Row note(int part, String name, String note) {
        return new Row(part, name, "", Double.NaN, "", Double.NaN, Double.NaN, note);
    }

    /** time / baseline, or NaN where there is none. */
    public double ratio() {
        return millis / baselineMillis;
    }

    /** "meets", "MISSES", "report" (no goal) or "" (a note). */
    public String verdict() {
        if (Double.isNaN(millis) || Double.isNaN(baselineMillis)) {
            return "";
        }
        if (Double.isNaN(goal)) {
            return "report";
        }
        return ratio() <= goal ? "meets" : "MISSES";
    }

    /** One tab-separated line (tabs and newlines in text are replaced by spaces). */
    public String toLine() {
        return String.join("\t", Integer.toString(part), clean(name), clean(size), num(millis), clean(baseline),
                num(baselineMillis), num(goal), clean(note));
    }

    /**
     * Reads a line written by {@link #toLine()}.
     *
     * @throws IllegalArgumentException if the line does not have the 8 fields
     */
    public static Row parse(String line) {
        String[] f = line.split("\t", -1);
        if (f.length != 8) {
            throw new IllegalArgumentException("line must have 8 tab-separated fields, got " + f.length + ": " + line);
        }
        return new Row(Integer.parseInt(f[0]), f[1], f[2], Double.parseDouble(f[3]), f[4], Double.parseDouble(f[5]),
                Double.parseDouble(f[6]), f[7]);
    }

    private static String clean(String s) {
        return s.replace('\t', ' ').replace('\n', ' ');
    }

    private static String num(double v) {
        return String.format(Locale.ROOT, "%.6f", v);
    }
}
