package io.gradguard.core.monitor;

import io.gradguard.core.internal.Checks;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Factories for the {@link Monitor}'s sinks. File sinks create missing parent directories and
 * flush after every record; all of them are closed by {@link Monitor#close()}. A sink that fails
 * later (disk full, closed stream) is reported once through SLF4J and switched off; training goes on.
 *
 * <pre>{@code
 * Monitor.builder()
 *     .sink(Sinks.slf4j(100))                              // summary every 100 steps, events as warnings
 *     .sink(Sinks.jsonl(Path.of("out/grad.jsonl")))        // one JSON object per step
 *     .sink(Sinks.csv(Path.of("out/grad.csv")))            // one row per step, a column per layer
 *     .sink(Sinks.html(Path.of("out/grad.html")))          // rewritten every 500 records and on close
 *     .sink(Sinks.tensorBoard(Path.of("runs/mlp")))        // tensorboard --logdir runs
 *     .build();
 * }</pre>
 */
public final class Sinks {
    private Sinks() {
    }

    /**
     * SLF4J: events as warnings and, every {@code everySteps} optimizer steps, an INFO summary line
     * (0: events only).
     *
     * @throws IllegalArgumentException if everySteps is negative
     */
    public static MonitorListener slf4j(int everySteps) {
        return new Slf4jSink(Checks.atLeast("everySteps", everySteps, 0));
    }

    /**
     * One JSON object per step and line (fields of {@link StepRecord}; non-finite numbers as the
     * strings "NaN", "Infinity", "-Infinity"). Read back with {@link RunRecording#readJsonl}.
     *
     * @throws IllegalArgumentException if the file cannot be created
     */
    public static MonitorListener jsonl(Path path) {
        Checks.notNull("path", path);
        return new JsonlSink(TextSink.open(path), path.toString());
    }

    /** JSON Lines to a stream (closed by {@link Monitor#close()}). */
    public static MonitorListener jsonl(OutputStream out) {
        return new JsonlSink(Checks.notNull("out", out), "stream " + out);
    }

    /**
     * One CSV row per step: the record's scalars, then a norm and an update-ratio column per layer,
     * then the step's events.
     *
     * @throws IllegalArgumentException if the file cannot be created
     */
    public static MonitorListener csv(Path path) {
        Checks.notNull("path", path);
        return new CsvSink(TextSink.open(path), path.toString());
    }

    /** CSV to a stream (closed by {@link Monitor#close()}). */
    public static MonitorListener csv(OutputStream out) {
        return new CsvSink(Checks.notNull("out", out), "stream " + out);
    }

    /**
     * A TensorBoard event file in {@code logDir} (created if missing), written in pure Java: scalars,
     * a histogram of per-tensor norms, events as text. Open with {@code tensorboard --logdir <parent>}.
     *
     * @throws IllegalArgumentException if the directory or file cannot be created
     */
    public static MonitorListener tensorBoard(Path logDir) {
        Checks.notNull("logDir", logDir);
        try {
            Files.createDirectories(logDir);
        } catch (IOException e) {
            throw new IllegalArgumentException("logDir must be a writable directory, got " + logDir + ": " + e, e);
        }
        Path file = TensorBoardSink.fileIn(logDir);
        return new TensorBoardSink(TextSink.open(file), file.toString());
    }

    /** A TensorBoard event stream (for tests and custom storage; closed by {@link Monitor#close()}). */
    public static MonitorListener tensorBoard(OutputStream out) {
        return new TensorBoardSink(Checks.notNull("out", out), "stream " + out);
    }

    /**
     * A self-contained HTML report of this run (a run per worker when worker monitors,
     * {@link Monitor#forWorker}, deliver to it), rewritten every {@link #HTML_EVERY} records (so a
     * long run can be looked at while it trains) and when the monitor is closed (closing the guard
     * closes its monitors). For several runs in one report use {@link #memory()} and
     * {@link HtmlReport#write}.
     *
     * @throws IllegalArgumentException if path is null
     */
    public static MonitorListener html(Path path) {
        return html(path, HTML_EVERY);
    }

    /** How many records {@link #html(Path)} waits between rewrites of its report. */
    public static final int HTML_EVERY = 500;

    /**
     * As {@link #html(Path)}, rewritten every {@code every} records (0: only on close).
     *
     * @throws IllegalArgumentException if path is null or every is negative
     */
    public static MonitorListener html(Path path, int every) {
        Checks.notNull("path", path);
        Checks.require(every >= 0, "every", "be >= 0 (0: written on close only)", every);
        RunRecorder recorder = new RunRecorder();
        return new MonitorListener() {
            private long seen;

            @Override
            public void onRecord(StepRecord record) {
                recorder.onRecord(record);
                if (every > 0 && ++seen % every == 0) {
                    write();
                }
            }

            @Override
            public void close() {
                write();
            }

            private void write() {
                try {
                    HtmlReport.write(path, recorder.recordings());
                } catch (IllegalArgumentException e) {
                    throw new UncheckedIOException(new IOException(e.getMessage(), e));
                }
            }

            @Override
            public String toString() {
                return "HtmlSink(" + path + ")";
            }
        };
    }

    /** Keeps every record in memory ({@link RunRecorder#recording()}). */
    public static RunRecorder memory() {
        return new RunRecorder();
    }
}
