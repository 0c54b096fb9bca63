package io.gradguard.core.monitor;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStream;
import java.io.OutputStreamWriter;
import java.io.UncheckedIOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/** A sink writing UTF-8 lines, flushed after every record so a crash loses nothing. */
abstract class TextSink implements MonitorListener {
    private final Writer out;
    private final String where;

    TextSink(OutputStream stream, String where) {
        this.out = new BufferedWriter(new OutputStreamWriter(stream, StandardCharsets.UTF_8));
        this.where = where;
    }

    /** Opens (creating parent directories, truncating) a file. @throws IllegalArgumentException if it cannot be created */
    static OutputStream open(Path path) {
        try {
            Path parent = path.toAbsolutePath().getParent();
            if (parent != null) {
                Files.createDirectories(parent);
            }
            return Files.newOutputStream(path);
        } catch (IOException e) {
            throw new IllegalArgumentException("path must be a writable file, got " + path + ": " + e, e);
        }
    }

    void writeLine(String line) {
        try {
            out.write(line);
            out.write('\n');
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write to " + where, e);
        }
    }

    @Override
    public void close() {
        try {
            out.close();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot close " + where, e);
        }
    }

    @Override
    public String toString() {
        return getClass().getSimpleName() + "(" + where + ")";
    }
}
