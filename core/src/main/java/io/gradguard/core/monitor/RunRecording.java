package io.gradguard.core.monitor;

import io.gradguard.core.internal.Checks;
import java.util.ArrayList;
import java.util.List;

/**
 * Every record of one training run, for reports that put several runs side by side
 * ({@link HtmlReport#write}). Collect one with a {@link RunRecorder} sink, or read a JSON Lines file
 * back with {@link #readJsonl}.
 *
 * <pre>{@code
 * RunRecorder djl = Sinks.memory();
 * ... train with Monitor.builder().name("djl").sink(djl).build() ...
 * HtmlReport.write(Path.of("report.html"), List.of(djl.recording(), dl4j.recording()));
 * }</pre>
 *
 * @param name    the run's name (shown in reports)
 * @param records its records, in order
 */
public record RunRecording(String name, List<StepRecord> records) {

    /**
     * @throws IllegalArgumentException if the name is empty or records is null
     */
    public RunRecording {
        Checks.require(name != null && !name.isEmpty(), "name", "be a non-empty run name", name);
        records = List.copyOf(Checks.notNull("records", records));
    }

    /** Every event of the run, in order. */
    public List<MonitorEvent> events() {
        List<MonitorEvent> out = new ArrayList<>();
        for (StepRecord r : records) {
            out.addAll(r.events());
        }
        return out;
    }

    /**
     * Reads a file written by {@link Sinks#jsonl}. The run is named after the records' {@code run}
     * field (or the file name when it is empty).
     *
     * @throws IllegalArgumentException if the file cannot be read or a line is not a GradGuard record
     */
    public static RunRecording readJsonl(java.nio.file.Path path) {
        Checks.notNull("path", path);
        List<StepRecord> records = new ArrayList<>();
        List<String> lines;
        try {
            lines = java.nio.file.Files.readAllLines(path, java.nio.charset.StandardCharsets.UTF_8);
        } catch (java.io.IOException e) {
            throw new IllegalArgumentException("path must be a readable GradGuard JSON Lines file, got " + path + ": " + e, e);
        }
        for (int i = 0; i < lines.size(); i++) {
            if (lines.get(i).isBlank()) {
                continue;
            }
            try {
                records.add(Json.toRecord(Json.parse(lines.get(i))));
            } catch (RuntimeException e) {
                throw new IllegalArgumentException("path must hold one GradGuard record per line, got " + path
                        + " line " + (i + 1) + ": " + e.getMessage(), e);
            }
        }
        String name = records.isEmpty() || records.get(0).run().isEmpty() ? path.getFileName().toString() : records.get(0).run();
        return new RunRecording(name, records);
    }
}
