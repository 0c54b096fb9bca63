package io.gradguard.core.monitor;

import java.io.OutputStream;

/**
 * Writes one JSON object per record and line (JSON Lines), in the field names of {@link StepRecord};
 * NaN and ±Infinity are written as the strings "NaN", "Infinity", "-Infinity" so every line is
 * standard JSON. {@link RunRecording#readJsonl} reads the file back. Create with {@link Sinks#jsonl}.
 */
final class JsonlSink extends TextSink {
    JsonlSink(OutputStream out, String where) {
        super(out, where);
    }

    @Override
    public void onRecord(StepRecord record) {
        writeLine(Json.record(record));
    }
}
