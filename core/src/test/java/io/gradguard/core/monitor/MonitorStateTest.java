package io.gradguard.core.monitor;

import static io.gradguard.core.monitor.Fixtures.layers;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.StateFormatException;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;
import java.util.zip.CRC32;
import org.junit.jupiter.api.Test;

/**
 * The monitor's running state lives in the pipeline's state: checkpoints carry it (records after a
 * restore mid-window equal the uninterrupted run's), {@code reset()} clears it, a rejected restore
 * leaves it alone, and a monitor that is only a listener keeps its own.
 */
class MonitorStateTest {
    static final ReferenceOps OPS = ReferenceOps.INSTANCE;
    static final int K = 3;
    static final int CALLS = 22 * K;
    /** After 46 calls: 15 steps applied and one micro-batch of step 15 held (the next call is held too). */
    static final int CHECKPOINT = 15 * K + 1;
    /** Its micro-batches are 100x the others: the first step after the one open at the checkpoint explodes. */
    static final int SPIKE_STEP = 16;

    /** Call c's gradients: two layers with noisy norms around 1 and 2 (the same in every run). */
    static GradientSet<ReferenceTensor> gradients(int call) {
        Random rnd = new Random(1000 + call);
        float scale = call / K == SPIKE_STEP ? 100 : 1;
        return layers(scale * (float) (1 + 0.2 * rnd.nextGaussian()), scale * (float) (2 + 0.2 * rnd.nextGaussian()));
    }

    static StepContext context(int call) {
        return StepContext.ofBatch(8).withLoss(call).withWeight(1 + call % 3);
    }

    static Monitor monitor(RunRecorder sink) {
        return Monitor.builder().warmup(10).sink(sink).build();
    }

    static GradientPipeline pipeline(Monitor m) {
        return GradientPipeline.of(Transforms.accumulate(K), Transforms.clipByGlobalNorm(1.0), m);
    }

    static void run(GradientPipeline p, int from, int to) {
        for (int c = from; c < to; c++) {
            p.step(gradients(c), OPS, context(c));
        }
    }

    static byte[] save(GradientPipeline p) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        p.saveState(out);
        return out.toByteArray();
    }

    static List<StepRecord> uninterrupted() {
        RunRecorder sink = Sinks.memory();
        Monitor m = monitor(sink);
        run(pipeline(m), 0, CALLS);
        m.close();
        return sink.recording().records();
    }

    @Test
    void aCheckpointMidWindowContinuesWithTheRecordsOfTheUninterruptedRun() throws IOException {
        List<StepRecord> expected = uninterrupted();

        RunRecorder before = Sinks.memory();
        Monitor first = monitor(before);
        GradientPipeline p = pipeline(first);
        run(p, 0, CHECKPOINT);
        byte[] checkpoint = save(p);
        first.close();

        RunRecorder after = Sinks.memory();
        Monitor second = monitor(after);
        GradientPipeline resumed = pipeline(second);
        resumed.restoreState(new ByteArrayInputStream(checkpoint), OPS);
        run(resumed, CHECKPOINT, CALLS);
        second.close();

        List<StepRecord> actual = new ArrayList<>(before.recording().records());
        actual.addAll(after.recording().records());
        assertEquals(CALLS / K, expected.size());
        assertEquals(expected, actual, "index, step, micro-batches, loss, norms and events all continue");

        StepRecord open = after.recording().records().get(0);
        assertEquals(15, open.index());
        assertEquals(15, open.step());
        assertEquals(3, open.microBatches(), "the micro-batch held before the checkpoint counts");
        assertEquals((45.0 * 1 + 46 * 2 + 47 * 3) / 6, open.loss(), 1e-12, "its loss is in the weighted mean");

        StepRecord spike = after.recording().records().get(1);
        assertEquals(SPIKE_STEP, spike.step());
        assertEquals(1, spike.events().size(), "the global running median continued: no warm-up after the restore");
        assertEquals(MonitorEvent.Kind.EXPLODING, spike.events().get(0).kind());
        assertEquals(expected.get(SPIKE_STEP).events(), spike.events());
    }

    @Test
    void withoutTheCheckpointTheRestoredRunWouldDiffer() {
        // guards the test above: a fresh monitor continuing at the checkpoint re-warms and misses the spike
        RunRecorder sink = Sinks.memory();
        Monitor m = monitor(sink);
        GradientPipeline p = pipeline(m);
        run(p, CHECKPOINT, CALLS);
        m.close();
        StepRecord first = sink.recording().records().get(0);
        assertEquals(0, first.index());
        assertEquals(List.of(), sink.recording().records().get(1).events());
    }

    @Test
    void checkpointsOfTheSameRunAreTheSameBytes() throws IOException {
        GradientPipeline a = pipeline(monitor(Sinks.memory()));
        GradientPipeline b = pipeline(monitor(Sinks.memory()));
        run(a, 0, CHECKPOINT);
        run(b, 0, CHECKPOINT);
        byte[] saved = save(a);
        assertArrayEquals(saved, save(b));
        GradientPipeline c = pipeline(monitor(Sinks.memory()));
        c.restoreState(new ByteArrayInputStream(saved), OPS);
        assertArrayEquals(saved, save(c), "a restored state writes the bytes it was read from");
    }

    @Test
    void resetStartsTheMonitorAfresh() {
        RunRecorder sink = Sinks.memory();
        Monitor m = monitor(sink);
        GradientPipeline p = pipeline(m);
        run(p, 0, 7); // two steps and one held micro-batch
        p.reset();
        run(p, 7, 10);
        m.close();
        StepRecord r = sink.recording().records().get(2);
        assertEquals(0, r.index(), "the index restarts");
        assertEquals(3, r.microBatches(), "the micro-batch held before the reset is forgotten");
        assertEquals((7.0 * 2 + 8 * 3 + 9 * 1) / 6, r.loss(), 1e-12);
        assertInstanceOf(MonitorState.class, p.state("monitor"));
    }

    @Test
    void aMonitorThatIsOnlyAListenerKeepsItsOwnState() throws IOException {
        RunRecorder sink = Sinks.memory();
        Monitor m = monitor(sink);
        GradientPipeline p = GradientPipeline.of(Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0)).addListener(m);
        run(p, 0, 3);
        byte[] saved = save(p);
        p.reset(); // the pipeline drops its own state, not the listener's
        p.restoreState(new ByteArrayInputStream(saved), OPS);
        run(p, 3, 6);
        m.close();
        List<StepRecord> rs = sink.recording().records();
        assertEquals(List.of(0L, 1L, 2L), rs.stream().map(StepRecord::index).toList());
        assertEquals(List.of(2, 2, 2), rs.stream().map(StepRecord::microBatches).toList());
        assertEquals((2.0 * 3 + 3 * 1) / 4, rs.get(1).loss(), 1e-12);
    }

    // ---- rejected restores ---------------------------------------------------------------------

    /**
     * A pipeline [accumulate(2), monitor, monitor#2] after 3 calls (one step, one micro-batch held)
     * and its checkpoint. Tests patch the last stage's bytes (monitor#2's): when they are rejected,
     * the first monitor has already read its state, and must not keep it.
     */
    static final class Saved {
        final RunRecorder sink = Sinks.memory();
        final Monitor monitor = monitor(sink);
        final RunRecorder lastSink = Sinks.memory();
        final Monitor last = monitor(lastSink);
        final GradientPipeline pipeline = GradientPipeline.of(Transforms.accumulate(2), monitor, last);
        final byte[] bytes;

        Saved() throws IOException {
            run(pipeline, 0, 3);
            bytes = save(pipeline);
        }

        /** The checkpoint with the monitor's bytes (the last stage's) changed, and a valid checksum. */
        byte[] patched(Consumer<ByteBuffer> patch, int extraBytes) {
            int lengthAt = lastStageLengthOffset(bytes);
            int length = ByteBuffer.wrap(bytes).getInt(lengthAt);
            ByteBuffer out = ByteBuffer.allocate(bytes.length + extraBytes);
            out.put(bytes, 0, bytes.length - 8);
            out.putInt(lengthAt, length + extraBytes);
            out.position(bytes.length - 8 + extraBytes);
            patch.accept(out.duplicate().position(lengthAt + 4).slice());
            CRC32 crc = new CRC32();
            crc.update(out.array(), 0, out.array().length - 8);
            out.putLong(crc.getValue());
            return out.array();
        }

        /** Where the int length of the last stage's bytes sits: it counts the bytes up to the checksum. */
        static int lastStageLengthOffset(byte[] b) {
            ByteBuffer buf = ByteBuffer.wrap(b);
            for (int at = 0; at + 4 <= b.length - 8; at++) {
                if (buf.getInt(at) == b.length - 8 - at - 4) {
                    return at;
                }
            }
            throw new AssertionError("no stage length found in " + Arrays.toString(b));
        }

        /** Rejects {@code bad} with {@code message}; the pipeline and the monitor go on as if nothing was tried. */
        void assertRejected(byte[] bad, String message) throws IOException {
            run(pipeline, 3, 4); // the state moves on from the checkpoint's (index 1, one held): index 2, none held
            byte[] now = save(pipeline);
            StateFormatException e = assertThrows(StateFormatException.class,
                    () -> pipeline.restoreState(new ByteArrayInputStream(bad), OPS));
            assertTrue(e.getMessage().contains(message), e.getMessage());
            assertArrayEquals(now, save(pipeline), "the pipeline is untouched");
            run(pipeline, 4, 6); // held, then applied: the held call must count on the pipeline's state
            monitor.close();
            StepRecord last = sink.recording().records().get(2);
            assertEquals(2, last.index(), "the monitor kept its state");
            assertEquals(2, last.microBatches());
        }
    }

    @Test
    void theTestPatchesTheMonitorsBytes() throws IOException {
        Saved s = new Saved();
        assertArrayEquals(s.bytes, s.patched(b -> { }, 0));
        assertEquals(MonitorState.FORMAT, ByteBuffer.wrap(s.bytes).getInt(Saved.lastStageLengthOffset(s.bytes) + 4));
        assertEquals(1, ByteBuffer.wrap(s.bytes).getLong(Saved.lastStageLengthOffset(s.bytes) + 8), "the index");
    }

    @Test
    void anUnknownFormatIsRejected() throws IOException {
        Saved s = new Saved();
        s.assertRejected(s.patched(b -> b.putInt(0, 7), 0), "monitor state format 7 is not supported; this GradGuard reads 1");
    }

    @Test
    void aNegativeIndexIsRejected() throws IOException {
        Saved s = new Saved();
        s.assertRejected(s.patched(b -> b.putLong(4, -3), 0), "monitor state: the record index is -3, expected >= 0");
    }

    @Test
    void aNegativeMicroBatchCountIsRejected() throws IOException {
        Saved s = new Saved();
        s.assertRejected(s.patched(b -> b.putInt(12, -1), 0), "monitor state: -1 micro-batches, expected >= 0");
    }

    @Test
    void aNonFiniteLossWeightIsRejected() throws IOException {
        Saved s = new Saved();
        s.assertRejected(s.patched(b -> b.putDouble(24, Double.NaN), 0),
                "monitor state: the loss weight is NaN, expected a finite number >= 0");
    }

    @Test
    void aNegativeNormInARunningMedianIsRejected() throws IOException {
        Saved s = new Saved();
        // format, index, micro-batches, loss sum, loss weight (32 bytes), two flags, the global median's count
        assertEquals(1, ByteBuffer.wrap(s.bytes).getInt(Saved.lastStageLengthOffset(s.bytes) + 4 + 34), "one norm so far");
        s.assertRejected(s.patched(b -> b.putDouble(38, -1.0), 0),
                "monitor state: the global running median holds the norm -1.0, expected a finite number >= 0");
    }

    @Test
    void anAbsurdLayerCountIsRejected() throws IOException {
        Saved s = new Saved();
        // the layer count follows the global median's single value
        s.assertRejected(s.patched(b -> b.putInt(46, -5), 0), "monitor state: -5 layer running medians, expected 0..");
    }

    @Test
    void trailingBytesAreRejected() throws IOException {
        Saved s = new Saved();
        s.assertRejected(s.patched(b -> { }, 4), "the state of stage monitor#2 has 4 unread bytes");
        // here the pipeline drops monitor#2's state without releasing it: its next applied step rebinds it
        s.last.close();
        assertEquals(List.of(0L, 1L, 2L), s.lastSink.recording().records().stream().map(StepRecord::index).toList());
    }

    // ---- running medians -----------------------------------------------------------------------

    @Test
    void runningMedianValuesAreOldestFirstAndRebuildIt() {
        RunningMedian m = new RunningMedian(3);
        assertArrayEquals(new double[0], m.values());
        m.add(5);
        m.add(1);
        assertArrayEquals(new double[] {5, 1}, m.values());
        m.add(7);
        m.add(2);
        m.add(9);
        assertArrayEquals(new double[] {7, 2, 9}, m.values());
        RunningMedian shorter = new RunningMedian(2);
        for (double v : m.values()) {
            shorter.add(v);
        }
        assertArrayEquals(new double[] {2, 9}, shorter.values(), "a shorter window keeps the newest values");
        assertEquals(5.5, shorter.median());
    }

    @Test
    void aMonitorWithAShorterWindowRestoresTheNewestNorms() throws IOException {
        GradientPipeline p = GradientPipeline.of(Monitor.builder().build());
        for (int i = 1; i <= 5; i++) {
            p.step(layers(i), OPS, StepContext.empty());
        }
        Monitor shorter = Monitor.builder().exploding(10, 3).build();
        GradientPipeline q = GradientPipeline.of(shorter);
        q.restoreState(new ByteArrayInputStream(save(p)), OPS);
        MonitorState s = (MonitorState) q.state("monitor");
        assertArrayEquals(new double[] {3, 4, 5}, s.detectors.global.values(), 1e-6);
        assertArrayEquals(new double[] {3, 4, 5}, s.detectors.layerMedians.get("dense_0").values(), 1e-6);
        assertEquals(5, s.index);
    }
}
