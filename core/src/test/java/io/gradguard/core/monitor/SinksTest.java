package io.gradguard.core.monitor;

import static io.gradguard.core.monitor.Fixtures.layers;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import io.gradguard.core.reference.ReferenceOps;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Every sink's output parsed back; failing sinks do not stop training. */
class SinksTest {
    static final ReferenceOps OPS = ReferenceOps.INSTANCE;

    @TempDir
    Path dir;

    /** 30 steps of a 3-layer model with a spike at 20, a NaN at 25 (skipped) and losses; clip at 2. */
    static RunRecorder train(String name, Monitor.Builder builder, MonitorListener... sinks) {
        RunRecorder rec = Sinks.memory();
        builder.name(name).sink(rec);
        for (MonitorListener s : sinks) {
            builder.sink(s);
        }
        Monitor m = builder.build();
        GradientPipeline p = GradientPipeline.of(new Fixtures.SkipLossAbove(100), Transforms.clipByGlobalNorm(2.0), m);
        for (int s = 0; s < 30; s++) {
            float spike = s == 20 ? 50 : 1;
            double loss = s == 25 ? Double.POSITIVE_INFINITY : 1.0 / (s + 1);
            p.step(layers(0.5f, 1, spike), OPS, StepContext.ofBatch(4).withLoss(loss));
        }
        m.close();
        return rec;
    }

    @Test
    void jsonLinesParseAndReadBackToTheSameRecords() throws IOException {
        Path file = dir.resolve("out/grad.jsonl");
        RunRecorder rec = train("jsonl", Monitor.builder().every(5), Sinks.jsonl(file));
        List<String> lines = Files.readAllLines(file);
        List<StepRecord> expected = rec.recording().records();
        assertEquals(30, lines.size());
        assertEquals(expected.size(), lines.size());
        @SuppressWarnings("unchecked")
        Map<String, Object> first = (Map<String, Object>) Json.parse(lines.get(0));
        assertEquals("jsonl", first.get("run"));
        assertEquals(0.0, first.get("step"));
        assertEquals(Math.sqrt(0.25 + 1 + 1), (Double) first.get("normBefore"), 1e-6);
        assertEquals(2.0, first.get("clipThreshold"));
        assertEquals(3, ((List<?>) first.get("layers")).size());
        assertTrue(lines.get(25).contains("\"skipped\":true"), lines.get(25));
        assertTrue(lines.get(25).contains("\"loss\":\"Infinity\""), lines.get(25));
        assertEquals(expected, RunRecording.readJsonl(file).records());
        assertEquals("jsonl", RunRecording.readJsonl(file).name());
    }

    @Test
    void csvHasTheFixedColumnsALayerColumnPairPerLayerAndARowPerStep() throws IOException {
        Path file = dir.resolve("grad.csv");
        RunRecorder rec = train("csv, quoted", Monitor.builder().every(5), Sinks.csv(file));
        List<String> lines = Files.readAllLines(file);
        assertEquals(31, lines.size());
        List<String> header = List.of(lines.get(0).split(","));
        assertEquals(List.of("run", "index", "step", "skipped", "skip_reason", "skipped_by", "micro_batches", "loss", "norm_before",
                "norm_after", "clip_coefficient", "clipped", "clip_threshold", "non_finite", "detailed", "norm:dense_0", "norm:dense_1",
                "norm:dense_2", "update_ratio:dense_0", "update_ratio:dense_1", "update_ratio:dense_2", "events"), header);
        List<String> row0 = parseCsv(lines.get(1));
        assertEquals(header.size(), row0.size());
        assertEquals("csv, quoted", row0.get(0));
        assertEquals(Math.sqrt(2.25), Double.parseDouble(row0.get(8)), 1e-6);
        assertEquals(0.5, Double.parseDouble(row0.get(15)), 1e-6);
        List<String> row1 = parseCsv(lines.get(2));
        assertEquals("", row1.get(15), "step 1 was not measured per layer");
        List<String> spike = parseCsv(lines.get(21));
        assertEquals("20", spike.get(2));
        StepRecord r20 = rec.recording().records().get(20);
        assertEquals(r20.normBefore(), Double.parseDouble(spike.get(8)));
        assertTrue(spike.get(21).startsWith("EXPLODING: layer dense_2 gradient norm 5.0e+01 at step 20"), spike.get(21));
        List<String> skipped = parseCsv(lines.get(26));
        assertEquals("true", skipped.get(3));
        assertEquals("loss Infinity above 100.0", skipped.get(4));
        assertEquals("lossGuard", skipped.get(5));
        assertEquals("Infinity", skipped.get(7));
    }

    /** RFC 4180 fields of one line. */
    static List<String> parseCsv(String line) {
        List<String> out = new ArrayList<>();
        StringBuilder cur = new StringBuilder();
        boolean quoted = false;
        for (int i = 0; i < line.length(); i++) {
            char c = line.charAt(i);
            if (quoted) {
                if (c == '"' && i + 1 < line.length() && line.charAt(i + 1) == '"') {
                    cur.append('"');
                    i++;
                } else if (c == '"') {
                    quoted = false;
                } else {
                    cur.append(c);
                }
            } else if (c == '"') {
                quoted = true;
            } else if (c == ',') {
                out.add(cur.toString());
                cur.setLength(0);
            } else {
                cur.append(c);
            }
        }
        out.add(cur.toString());
        return out;
    }

    @Test
    void htmlReportHoldsEveryRunsSeriesAndNoExternalReference() throws IOException {
        RunRecording a = train("djl", Monitor.builder()).recording();
        RunRecording b = train("dl4j <&>", Monitor.builder().every(3)).recording();
        Path file = dir.resolve("report.html");
        HtmlReport.write(file, List.of(a, b));
        String html = Files.readString(file);
        assertTrue(html.startsWith("<!DOCTYPE html>"));
        for (String banned : List.of("http:", "https:", "src=", "<link", "@import", "url(")) {
            assertFalse(html.contains(banned), "no external reference: " + banned);
        }
        assertTrue(html.contains("dl4j &lt;&amp;&gt;"), "names are escaped");
        assertTrue(html.contains("<svg"));
        assertTrue(html.contains("layer dense_2 gradient norm 5.0e+01 at step 20"), "events are marked with their message");
        Matcher m = Pattern.compile("<script type=\"application/json\" id=\"gradguard-data\">(.*?)</script>", Pattern.DOTALL)
                .matcher(html);
        assertTrue(m.find());
        @SuppressWarnings("unchecked")
        List<Map<String, Object>> runs = (List<Map<String, Object>>) ((Map<String, Object>) Json.parse(m.group(1))).get("runs");
        assertEquals(List.of("djl", "dl4j <&>"), runs.stream().map(r -> r.get("name")).toList());
        List<?> before = (List<?>) runs.get(0).get("normBefore");
        List<StepRecord> applied = a.records().stream().filter(r -> !r.skipped()).toList();
        assertEquals(applied.size(), before.size());
        for (int i = 0; i < applied.size(); i++) {
            assertEquals(applied.get(i).normBefore(), Json.dbl(before.get(i)));
        }
        assertEquals(List.of(25.0), runs.get(0).get("skippedSteps"));
        assertEquals(List.of("dense_0", "dense_1", "dense_2"), runs.get(1).get("layers"));
        assertEquals(10 + 1, ((List<?>) runs.get(1).get("layerSteps")).size(), "steps 0, 3, ..., 27 and the spike at 20");
    }

    @Test
    void htmlSinkWritesTheReportOnClose() throws IOException {
        Path file = dir.resolve("one.html");
        train("single", Monitor.builder(), Sinks.html(file));
        String html = Files.readString(file);
        assertTrue(html.contains("Run: single"));
        assertTrue(html.contains("clip threshold"));
    }

    @Test
    void tensorBoardFileHasValidFramingAndTheScalars() throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        RunRecorder rec = train("tb", Monitor.builder().every(5), Sinks.tensorBoard(out));
        List<byte[]> events = readTfRecords(out.toByteArray());
        assertEquals(1 + 30, events.size());
        Map<Integer, List<Object>> version = decode(events.get(0));
        assertEquals("brain.Event:2", new String((byte[]) version.get(3).get(0), StandardCharsets.UTF_8));
        Map<Integer, List<Object>> e0 = decode(events.get(1));
        assertEquals(0L, e0.get(2) == null ? 0L : e0.get(2).get(0), "step 0 (the default value may be omitted)");
        Map<String, Object> values = summaryValues(decode((byte[]) e0.get(5).get(0)));
        StepRecord r0 = rec.recording().records().get(0);
        assertEquals((float) r0.normBefore(), values.get("gradient/norm_before_clip"));
        assertEquals((float) r0.normAfter(), values.get("gradient/norm_after_clip"));
        assertEquals(2.0f, values.get("gradient/clip_threshold"));
        assertEquals(1.0f, values.get("loss"));
        assertEquals(0.5f, values.get("layer_norm/dense_0"));
        assertTrue(values.get("gradient/tensor_norms") instanceof byte[], "a histogram on detailed steps");
        Map<Integer, List<Object>> histo = decode((byte[]) values.get("gradient/tensor_norms"));
        assertEquals(0.5, Double.longBitsToDouble((Long) histo.get(1).get(0)), "min");
        assertEquals(1.0, Double.longBitsToDouble((Long) histo.get(2).get(0)), "max");
        assertEquals(3.0, Double.longBitsToDouble((Long) histo.get(3).get(0)), "num");
        Map<String, Object> spike = summaryValues(decode((byte[]) decode(events.get(21)).get(5).get(0)));
        assertTrue(spike.containsKey("events"), "events are written as text");
        Map<Integer, List<Object>> skipped = decode(events.get(26));
        assertEquals(25L, skipped.get(2).get(0));
        assertEquals(1.0f, summaryValues(decode((byte[]) skipped.get(5).get(0))).get("gradient/skipped"));
    }

    @Test
    void tensorBoardFileGoesIntoTheLogDirectory() throws IOException {
        train("tbdir", Monitor.builder(), Sinks.tensorBoard(dir.resolve("runs/a")));
        try (var files = Files.list(dir.resolve("runs/a"))) {
            List<Path> list = files.toList();
            assertEquals(1, list.size());
            assertTrue(list.get(0).getFileName().toString().startsWith("events.out.tfevents."));
            assertEquals(31, readTfRecords(Files.readAllBytes(list.get(0))).size());
        }
    }

    @Test
    void maskedCrcMatchesTheCrc32cCheckValue() {
        // CRC-32C("123456789") = 0xE3069283 (RFC 3720); TFRecord masks it: rotate right by 15, add 0xa282ead8
        int crc = 0xE3069283;
        int masked = ((crc >>> 15) | (crc << 17)) + 0xa282ead8;
        assertEquals(masked, TensorBoardSink.maskedCrc("123456789".getBytes(StandardCharsets.US_ASCII), 0, 9));
    }

    /** TFRecord framing, every length and CRC checked. */
    static List<byte[]> readTfRecords(byte[] file) {
        ByteBuffer b = ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN);
        List<byte[]> out = new ArrayList<>();
        while (b.hasRemaining()) {
            byte[] header = new byte[8];
            b.get(header);
            long length = ByteBuffer.wrap(header).order(ByteOrder.LITTLE_ENDIAN).getLong();
            assertEquals(TensorBoardSink.maskedCrc(header, 0, 8), b.getInt(), "length CRC of record " + out.size());
            assertTrue(length > 0 && length <= b.remaining() - 4, "length of record " + out.size());
            byte[] data = new byte[(int) length];
            b.get(data);
            assertEquals(TensorBoardSink.maskedCrc(data, 0, data.length), b.getInt(), "data CRC of record " + out.size());
            out.add(data);
        }
        return out;
    }

    /** Protobuf fields: varint and fixed64 as Long, fixed32 as Float, length-delimited as byte[]. */
    static Map<Integer, List<Object>> decode(byte[] msg) {
        Map<Integer, List<Object>> out = new java.util.HashMap<>();
        ByteBuffer b = ByteBuffer.wrap(msg).order(ByteOrder.LITTLE_ENDIAN);
        while (b.hasRemaining()) {
            long key = varint(b);
            int field = (int) (key >>> 3);
            Object v = switch ((int) (key & 7)) {
                case 0 -> varint(b);
                case 1 -> b.getLong();
                case 5 -> b.getFloat();
                case 2 -> {
                    byte[] d = new byte[(int) varint(b)];
                    b.get(d);
                    yield d;
                }
                default -> throw new AssertionError("unexpected wire type in field " + field);
            };
            out.computeIfAbsent(field, k -> new ArrayList<>()).add(v);
        }
        return out;
    }

    static long varint(ByteBuffer b) {
        long v = 0;
        for (int shift = 0;; shift += 7) {
            byte x = b.get();
            v |= (long) (x & 0x7F) << shift;
            if (x >= 0) {
                return v;
            }
        }
    }

    /** Summary.value → tag: simple_value (Float) or histo (byte[]) or the text tensor (byte[]). */
    static Map<String, Object> summaryValues(Map<Integer, List<Object>> summary) {
        Map<String, Object> out = new java.util.LinkedHashMap<>();
        for (Object o : summary.get(1)) {
            Map<Integer, List<Object>> v = decode((byte[]) o);
            String tag = new String((byte[]) v.get(1).get(0), StandardCharsets.UTF_8);
            out.put(tag, v.containsKey(2) ? v.get(2).get(0) : v.containsKey(5) ? v.get(5).get(0) : v.get(8).get(0));
        }
        return out;
    }

    /** An output stream that fails like a full disk after some bytes. */
    static final class FullDisk extends OutputStream {
        int left;

        FullDisk(int bytes) {
            left = bytes;
        }

        @Override
        public void write(int b) throws IOException {
            if (--left < 0) {
                throw new IOException("No space left on device");
            }
        }
    }

    @Test
    void failingSinksAreReportedOnceAndTrainingGoesOn() throws IOException {
        PrintStream original = System.err;
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        ByteArrayOutputStream closedOut = new ByteArrayOutputStream();
        OutputStream closed = new OutputStream() {
            @Override
            public void write(int b) throws IOException {
                throw new IOException("Stream closed");
            }
        };
        MonitorListener throwing = new MonitorListener() {
            @Override
            public void onRecord(StepRecord r) {
                throw new IllegalStateException("boom");
            }

            @Override
            public String toString() {
                return "ThrowingSink";
            }
        };
        RunRecorder rec;
        System.setErr(new PrintStream(log, true, StandardCharsets.UTF_8));
        try {
            rec = train("failing", Monitor.builder(), Sinks.jsonl(new FullDisk(2000)), Sinks.csv(closed), throwing,
                    Sinks.jsonl(closedOut));
        } finally {
            System.setErr(original);
        }
        assertEquals(30, rec.recording().records().size(), "the healthy sinks got every step");
        assertEquals(30, closedOut.toString(StandardCharsets.UTF_8).lines().count());
        String text = log.toString(StandardCharsets.UTF_8);
        assertEquals(3, count(text, "is switched off; training continues"), text);
        assertEquals(1, count(text, "No space left on device"), text);
        assertEquals(1, count(text, "ThrowingSink failed"), text);
    }

    static int count(String text, String part) {
        int n = 0;
        for (int i = text.indexOf(part); i >= 0; i = text.indexOf(part, i + 1)) {
            n++;
        }
        return n;
    }

    @Test
    void badPathsAreRejectedNamingThem() throws IOException {
        Path file = dir.resolve("plain-file");
        Files.writeString(file, "x");
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> Sinks.jsonl(file.resolve("below-a-file.jsonl")));
        assertTrue(e.getMessage().startsWith("path must be a writable file, got " + file.resolve("below-a-file.jsonl")),
                e.getMessage());
        assertEquals("runs must hold at least one run, got []",
                org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> HtmlReport.render(List.of()))
                        .getMessage());
    }
}
