package io.gradguard.core.monitor;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;

/**
 * Writes a TensorBoard event file in pure Java (no TensorFlow dependency): TFRecord framing with
 * masked CRC-32C checksums around hand-encoded {@code tensorflow.Event} protobuf messages.
 *
 * <p>Per applied step: scalars {@code gradient/norm_before_clip}, {@code gradient/norm_after_clip},
 * {@code gradient/clip_coefficient}, {@code gradient/clip_threshold} (when known), {@code loss}
 * (when known), {@code gradient/non_finite}, {@code gradient/skipped} (1 on a skipped step, where
 * the norms are left out); on detailed steps {@code layer_norm/<layer>}, {@code update_ratio/<layer>}
 * and the histogram {@code gradient/tensor_norms} of the per-tensor norms; events as text
 * ({@code events}, TensorBoard's Text tab). Create with {@link Sinks#tensorBoard}.
 *
 * <p>Format: each record is {@code uint64 length, uint32 masked_crc32c(length), data,
 * uint32 masked_crc32c(data)}, little-endian, with {@code masked(c) = ((c >>> 15) | (c << 17)) +
 * 0xa282ead8} (TensorFlow {@code core/lib/io/record_writer.cc}, {@code core/lib/hash/crc32c.h});
 * the first event carries {@code file_version = "brain.Event:2"}.
 */
final class TensorBoardSink implements MonitorListener {
    private final OutputStream out;
    private final String where;

    TensorBoardSink(OutputStream out, String where) {
        this.out = out;
        this.where = where;
        Proto e = new Proto().fixed64(1, wallTime()).string(3, "brain.Event:2");
        write(e.bytes());
    }

    /** The event file name TensorBoard looks for in a log directory. */
    static Path fileIn(Path logDir) {
        String host;
        try {
            host = InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            host = "localhost";
        }
        return logDir.resolve("events.out.tfevents." + System.currentTimeMillis() / 1000 + "." + host + ".gradguard");
    }

    @Override
    public void onRecord(StepRecord r) {
        Proto summary = new Proto();
        if (r.skipped()) {
            scalar(summary, "gradient/skipped", 1);
        } else {
            scalar(summary, "gradient/norm_before_clip", r.normBefore());
            scalar(summary, "gradient/norm_after_clip", r.normAfter());
            scalar(summary, "gradient/clip_coefficient", r.clipCoefficient());
            if (Double.isFinite(r.clipThreshold())) {
                scalar(summary, "gradient/clip_threshold", r.clipThreshold());
            }
            scalar(summary, "gradient/skipped", 0);
            if (r.hasLoss()) {
                scalar(summary, "loss", r.loss());
            }
        }
        scalar(summary, "gradient/non_finite", r.nonFinite());
        for (LayerStats l : r.layers()) {
            scalar(summary, "layer_norm/" + l.layer(), l.norm());
            if (!Double.isNaN(l.updateRatio())) {
                scalar(summary, "update_ratio/" + l.layer(), l.updateRatio());
            }
        }
        List<Double> norms = new ArrayList<>();
        for (TensorStats t : r.tensors()) {
            if (Double.isFinite(t.norm())) {
                norms.add(t.norm());
            }
        }
        if (!norms.isEmpty()) {
            summary.message(1, new Proto().string(1, "gradient/tensor_norms").message(5, histogram(norms)));
        }
        if (!r.events().isEmpty()) {
            StringBuilder text = new StringBuilder();
            for (MonitorEvent e : r.events()) {
                text.append(text.length() == 0 ? "" : "\n\n").append(e.kind()).append(": ").append(e.message());
            }
            Proto plugin = new Proto().message(1, new Proto().string(1, "text"));
            Proto tensor = new Proto().varint(1, 7 /* DT_STRING */).message(2, new Proto())
                    .bytes(8, text.toString().getBytes(StandardCharsets.UTF_8));
            summary.message(1, new Proto().string(1, "events").message(9, plugin).message(8, tensor));
        }
        write(new Proto().fixed64(1, wallTime()).varint(2, r.step()).message(5, summary).bytes());
    }

    private static void scalar(Proto summary, String tag, double v) {
        summary.message(1, new Proto().string(1, tag).fixed32(2, (float) v));
    }

    /** A HistogramProto with up to 30 equal-width buckets between min and max (right edges as limits). */
    static Proto histogram(List<Double> values) {
        double min = Double.POSITIVE_INFINITY;
        double max = Double.NEGATIVE_INFINITY;
        double sum = 0;
        double sumSquares = 0;
        for (double v : values) {
            min = Math.min(min, v);
            max = Math.max(max, v);
            sum += v;
            sumSquares += v * v;
        }
        int k = max > min ? Math.min(30, values.size()) : 1;
        double width = (max - min) / k;
        double[] limits = new double[k];
        double[] counts = new double[k];
        for (int i = 0; i < k; i++) {
            limits[i] = i == k - 1 ? max : min + (i + 1) * width;
        }
        for (double v : values) {
            int i = width > 0 ? (int) Math.min(k - 1, Math.floor((v - min) / width)) : 0;
            counts[i]++;
        }
        return new Proto().fixed64(1, min).fixed64(2, max).fixed64(3, values.size()).fixed64(4, sum).fixed64(5, sumSquares)
                .packedDoubles(6, limits).packedDoubles(7, counts);
    }

    private static double wallTime() {
        return System.currentTimeMillis() / 1000.0;
    }

    private void write(byte[] data) {
        ByteBuffer header = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
        header.putLong(data.length);
        header.putInt(maskedCrc(header.array(), 0, 8));
        ByteBuffer footer = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(maskedCrc(data, 0, data.length));
        try {
            out.write(header.array());
            out.write(data);
            out.write(footer.array());
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write to " + where, e);
        }
    }

    /** TFRecord's masked CRC-32C. */
    static int maskedCrc(byte[] b, int off, int len) {
        CRC32C crc = new CRC32C();
        crc.update(b, off, len);
        int c = (int) crc.getValue();
        return ((c >>> 15) | (c << 17)) + 0xa282ead8;
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
        return "TensorBoardSink(" + where + ")";
    }

    /** Just enough protobuf encoding for Event, Summary, HistogramProto and a string TensorProto. */
    static final class Proto {
        private final ByteArrayOutputStream b = new ByteArrayOutputStream();

        private void tag(int field, int wire) {
            raw((long) field << 3 | wire);
        }

        private void raw(long v) {
            while ((v & ~0x7FL) != 0) {
                b.write((int) (v & 0x7F) | 0x80);
                v >>>= 7;
            }
            b.write((int) v);
        }

        Proto varint(int field, long v) {
            tag(field, 0);
            raw(v);
            return this;
        }

        Proto fixed64(int field, double v) {
            tag(field, 1);
            long bits = Double.doubleToLongBits(v);
            for (int i = 0; i < 8; i++) {
                b.write((int) (bits >>> (8 * i)));
            }
            return this;
        }

        Proto fixed32(int field, float v) {
            tag(field, 5);
            int bits = Float.floatToIntBits(v);
            for (int i = 0; i < 4; i++) {
                b.write(bits >>> (8 * i));
            }
            return this;
        }

        Proto bytes(int field, byte[] data) {
            tag(field, 2);
            raw(data.length);
            b.write(data, 0, data.length);
            return this;
        }

        Proto string(int field, String s) {
            return bytes(field, s.getBytes(StandardCharsets.UTF_8));
        }

        Proto message(int field, Proto m) {
            return bytes(field, m.bytes());
        }

        Proto packedDoubles(int field, double[] values) {
            Proto p = new Proto();
            for (double v : values) {
                long bits = Double.doubleToLongBits(v);
                for (int i = 0; i < 8; i++) {
                    p.b.write((int) (bits >>> (8 * i)));
                }
            }
            return bytes(field, p.bytes());
        }

        byte[] bytes() {
            return b.toByteArray();
        }
    }
}
