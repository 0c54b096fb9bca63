package io.gradguard.core.monitor;

import java.util.ArrayList;
import java.util.List;

/**
 * Keeps every record in memory, for {@link HtmlReport}s over several runs and for user code. Memory
 * grows with the run (a few hundred bytes per step, plus the per-tensor statistics of detailed
 * steps): for very long runs prefer {@link Sinks#jsonl} and {@link RunRecording#readJsonl}.
 *
 * <pre>{@code
 * RunRecorder recorder = Sinks.memory();
 * Monitor monitor = Monitor.builder().name("dl4j").sink(recorder).build();
 * ... train, monitor.close() ...
 * HtmlReport.write(Path.of("report.html"), List.of(recorder.recording()));
 * }</pre>
 */
public final class RunRecorder implements MonitorListener {
    private final List<StepRecord> records = new ArrayList<>();

    RunRecorder() {
    }

    @Override
    public synchronized void onRecord(StepRecord record) {
        records.add(record);
    }

    /** The records so far, named after their run ("run" when there is none yet). */
    public synchronized RunRecording recording() {
        return new RunRecording(records.isEmpty() ? "run" : records.get(0).run(), records);
    }

    /**
     * The records so far, one recording per run name in the order the runs first appear: the
     * workers of data-parallel training ({@link Monitor#forWorker}) each get their own.
     */
    public synchronized List<RunRecording> recordings() {
        java.util.Map<String, List<StepRecord>> byRun = new java.util.LinkedHashMap<>();
        for (StepRecord r : records) {
            byRun.computeIfAbsent(r.run(), k -> new ArrayList<>()).add(r);
        }
        if (byRun.size() <= 1) {
            return List.of(recording());
        }
        List<RunRecording> out = new ArrayList<>();
        byRun.forEach((run, list) -> out.add(new RunRecording(run.isEmpty() ? "run" : run, list)));
        return out;
    }

    /** The records so far under another name (to tell apart runs that share one). */
    public synchronized RunRecording recording(String name) {
        return new RunRecording(name, records);
    }

    @Override
    public String toString() {
        return "RunRecorder(" + records.size() + " records)";
    }
}
