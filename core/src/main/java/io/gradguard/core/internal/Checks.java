package io.gradguard.core.internal;

import java.util.Arrays;

/** Argument checks with messages that name the parameter and the value it got. Internal to GradGuard. */
public final class Checks {
    private Checks() {
    }

    /** Throws {@code IllegalArgumentException("<name> must <rule>, got <value>")} unless {@code ok}. */
    public static void require(boolean ok, String name, String rule, Object value) {
        if (!ok) {
            throw new IllegalArgumentException(name + " must " + rule + ", got " + show(value));
        }
    }

    /** A finite value &gt; 0. */
    public static double positive(String name, double value) {
        require(Double.isFinite(value) && value > 0, name, "be a finite number > 0", value);
        return value;
    }

    /** A finite value &gt;= 0. */
    public static double nonNegative(String name, double value) {
        require(Double.isFinite(value) && value >= 0, name, "be a finite number >= 0", value);
        return value;
    }

    /** An int &gt;= min. */
    public static int atLeast(String name, int value, int min) {
        require(value >= min, name, "be >= " + min, value);
        return value;
    }

    /** A non-null value. */
    public static <V> V notNull(String name, V value) {
        if (value == null) {
            throw new IllegalArgumentException(name + " must not be null");
        }
        return value;
    }

    /** Formats a value for an error message (arrays shown by content). */
    public static String show(Object value) {
        if (value instanceof long[] a) {
            return Arrays.toString(a);
        }
        if (value instanceof int[] a) {
            return Arrays.toString(a);
        }
        if (value instanceof String s) {
            return "\"" + s + "\"";
        }
        return String.valueOf(value);
    }
}
