package io.gradguard.core.doctor;

import java.math.BigDecimal;
import java.math.MathContext;
import java.util.Locale;

/** Number formats shared by the doctor's texts. */
final class Text {
    private Text() {
    }

    /** 4.1e+05 */
    static String sci(double v) {
        return Double.isFinite(v) ? String.format(Locale.ROOT, "%.1e", v) : Double.toString(v);
    }

    /** x0.30, x12 */
    static String factor(double f) {
        if (!Double.isFinite(f)) {
            return "x" + f;
        }
        return String.format(Locale.ROOT, f >= 10 ? "x%.0f" : "x%.2f", f);
    }

    /** v rounded to two significant digits (a threshold a person would write). */
    static double round2(double v) {
        return new BigDecimal(v).round(new MathContext(2)).doubleValue();
    }

    /** A Java literal of a value from {@link #round2}: "2.3", "0.05", "120". */
    static String literal(double v) {
        String s = BigDecimal.valueOf(v).stripTrailingZeros().toPlainString();
        return s.contains(".") ? s : s + ".0";
    }
}
