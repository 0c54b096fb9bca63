package io.gradguard.benchmarks;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Locale;

/**
 * The running context of one benchmark section (one JVM): its size mode and the file its
 * {@link Row rows} go to, written as soon as they are measured so that a crash or a time-out keeps
 * what was done. A failing part is reported as a row and the section goes on with the next part.
 *
 * <p>Arguments: {@code --mode tiny|quick|full} (tiny: seconds, for the smoke test; quick: only the
 * small-model part at its real sizes, a minute or two; full: everything at the real sizes)
 * and {@code --out FILE} (default: rows go to standard output only).
 *
 * <pre>{@code
 * try (Section s = Section.fromArgs("dl4j", args)) {
 *     s.part(2, "dl4j training step", () -> ...);
 * }
 * }</pre>
 */
public final class Section implements AutoCloseable {
    private final String name;
    private final boolean tiny;
    private final boolean quick;
    private final PrintWriter out;

    private Section(String name, boolean tiny, boolean quick, PrintWriter out) {
        this.name = name;
        this.tiny = tiny;
        this.quick = quick;
        this.out = out;
    }

    /**
     * Parses {@code --mode} and {@code --out}.
     *
     * @throws IllegalArgumentException for an unknown argument or mode
     */
    public static Section fromArgs(String name, String[] args) {
        boolean tiny = false;
        boolean quick = false;
        Path file = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--mode" -> {
                    String m = value(args, ++i, "--mode");
                    if (!m.equals("tiny") && !m.equals("quick") && !m.equals("full")) {
                        throw new IllegalArgumentException("--mode must be tiny, quick or full, got " + m);
                    }
                    tiny = m.equals("tiny");
                    quick = m.equals("quick");
                }
                case "--out" -> file = Path.of(value(args, ++i, "--out"));
                default -> throw new IllegalArgumentException("unknown argument " + args[i]
                        + ": expected --mode tiny|quick|full and --out FILE");
            }
        }
        PrintWriter w = null;
        if (file != null) {
            try {
                w = new PrintWriter(Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                        StandardOpenOption.TRUNCATE_EXISTING), true);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot write rows to " + file, e);
            }
        }
        return new Section(name, tiny, quick, w);
    }

    private static String value(String[] args, int i, String flag) {
        if (i >= args.length) {
            throw new IllegalArgumentException(flag + " needs a value");
        }
        return args[i];
    }

    /** Whether this is the tiny smoke-test mode (small sizes, few rounds). */
    public boolean tiny() {
        return tiny;
    }

    /** Whether this is the quick mode: only the small-model part, at its real sizes. */
    public boolean quick() {
        return quick;
    }

    /** Records a row (and prints it, for the log). */
    public void emit(Row row) {
        if (out != null) {
            out.println(row.toLine());
        }
        progress("%s", Table.format(row));
    }

    /** A progress line on standard output, prefixed with the section's name. */
    public void progress(String format, Object... args) {
        System.out.println("[" + name + "] " + String.format(Locale.ROOT, format, args));
        System.out.flush();
    }

    /** A body of a part that may throw anything. */
    @FunctionalInterface
    public interface Body {
        void run() throws Exception;
    }

    /**
     * Runs one part; if it fails (an exception, a native library that does not load, out of memory)
     * a row says so and the section continues.
     */
    public void part(int part, String what, Body body) {
        progress("part %d: %s", part, what);
        try {
            body.run();
        } catch (Throwable t) {
            emit(Row.note(part, name + ": " + what, "FAILED: " + t));
            t.printStackTrace(System.out);
        }
    }

    @Override
    public void close() {
        if (out != null) {
            out.close();
        }
    }
}
