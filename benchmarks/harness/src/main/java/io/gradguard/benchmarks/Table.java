package io.gradguard.benchmarks;

import java.util.List;
import java.util.Locale;

/** Formats {@link Row rows} as a Markdown table, ratios first. */
public final class Table {
    private Table() {
    }

    /** The table's header and separator lines. */
    public static String header() {
        return "| part | benchmark | size | median | baseline (same run) | ratio | goal | verdict |\n"
                + "|---|---|---|---:|---|---:|---:|---|";
    }

    /** One row as a table line (a '|' in its text, as in max|x|, escaped so it stays in its cell). */
    public static String format(Row r) {
        if (Double.isNaN(r.millis())) {
            return String.format(Locale.ROOT, "| %d | %s | | | | | | %s |", r.part(), cell(r.name()), cell(r.note()));
        }
        String base = r.baseline() + (Double.isNaN(r.baselineMillis()) ? "" : " " + time(r.baselineMillis()));
        String goal = Double.isNaN(r.goal()) ? "report" : String.format(Locale.ROOT, "≤ %.2f", r.goal());
        String verdict = r.note().isEmpty() ? r.verdict()
                : r.verdict().equals("report") ? r.note() : r.verdict() + "; " + r.note();
        return String.format(Locale.ROOT, "| %d | %s | %s | %s | %s | %.3f | %s | %s |", r.part(), cell(r.name()), cell(r.size()),
                time(r.millis()), cell(base), r.ratio(), goal, cell(verdict));
    }

    /** Text for one Markdown table cell: '|' would end the cell, so it is escaped. */
    private static String cell(String text) {
        return text.replace("|", "\\|");
    }

    /** The whole table. */
    public static String format(List<Row> rows) {
        StringBuilder sb = new StringBuilder(header()).append('\n');
        for (Row r : rows) {
            sb.append(format(r)).append('\n');
        }
        return sb.toString();
    }

    /** A time in ms with three significant figures (µs below 1 ms). */
    public static String time(double millis) {
        if (millis < 1) {
            return String.format(Locale.ROOT, "%.1f µs", millis * 1000);
        }
        return String.format(Locale.ROOT, millis < 10 ? "%.2f ms" : millis < 100 ? "%.1f ms" : "%.0f ms", millis);
    }

    /** A count as 1M, 10M, 5.02M, 64k. */
    public static String count(long n) {
        if (n >= 1_000_000) {
            double m = n / 1e6;
            return (m == Math.rint(m) ? String.format(Locale.ROOT, "%.0fM", m) : String.format(Locale.ROOT, "%.2fM", m));
        }
        if (n >= 1000) {
            double k = n / 1e3;
            return (k == Math.rint(k) ? String.format(Locale.ROOT, "%.0fk", k) : String.format(Locale.ROOT, "%.1fk", k));
        }
        return Long.toString(n);
    }
}
