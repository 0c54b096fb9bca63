package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.RunRecorder;
import io.gradguard.core.monitor.RunRecording;
import io.gradguard.core.monitor.Sinks;
import io.gradguard.core.monitor.StepRecord;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.parallelism.ParallelWrapper;
import org.deeplearning4j.parallelism.ParallelWrapper.TrainingMode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.linalg.dataset.DataSet;

/** {@link Dl4jParallelGuard} on a real 2-worker {@code ParallelWrapper} (CPU), both training modes. */
@Timeout(value = 180, unit = TimeUnit.SECONDS) // a deadlock fails the test instead of hanging the build
class Dl4jParallelGuardTest {
    private static final int BATCHES = 60;
    private static final int BATCH = 32;

    @TempDir
    Path dir;

    /** Guarded training (skip + clip + monitor, per worker) learns the task on 3 seeds, in both modes. */
    @ParameterizedTest
    @EnumSource(value = TrainingMode.class, names = {"AVERAGING", "SHARED_GRADIENTS"})
    void guardedTrainingConverges(TrainingMode mode) {
        List<DataSet> test = ParallelNets.batches(8, 64, 999, Set.of());
        for (long seed = 1; seed <= 3; seed++) {
            MultiLayerNetwork net = ParallelNets.mlp(seed);
            double before = ParallelNets.loss(net, test);
            List<DataSet> train = ParallelNets.batches(BATCHES, BATCH, seed, Set.of());
            ParallelWrapper wrapper = ParallelNets.wrapper(net, mode);
            try (Dl4jParallelGuard guard = Dl4jParallelGuard.of(
                    () -> GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0), Monitor.toLog(0)))) {
                for (int epoch = 0; epoch < 3; epoch++) {
                    guard.fit(wrapper, ParallelNets.iterator(train));
                }
                assertEquals(2, guard.workerCount(), "both workers guarded");
                assertEquals(3L * BATCHES, guard.callCount(), () -> "every batch went through a worker's guard: " + guard.summary());
                assertEquals(0, guard.skippedCount());
                assertEquals(3L * BATCHES / 2, guard.worker(1).callCount(), "worker 1 kept its guard across fits");
            } finally {
                wrapper.shutdown();
            }
            double after = ParallelNets.loss(net, test);
            double accuracy = ParallelNets.accuracy(net, test);
            assertTrue(after < 0.5 * before, mode + " seed " + seed + ": loss " + before + " -> " + after);
            assertTrue(accuracy > 0.65, mode + " seed " + seed + ": accuracy " + accuracy);
        }
    }

    /** Per-worker guarding: a NaN batch on worker 1 is skipped there alone; parameters stay finite. */
    @ParameterizedTest
    @EnumSource(value = TrainingMode.class, names = {"AVERAGING", "SHARED_GRADIENTS"})
    void faultOnOneWorkerIsSkippedThere(TrainingMode mode) {
        Set<Integer> faults = Set.of(5, 17, 33); // odd: worker 1 (batch i goes to worker i mod 2)
        MultiLayerNetwork net = ParallelNets.mlp(7);
        List<DataSet> test = ParallelNets.batches(8, 64, 999, Set.of());
        double before = ParallelNets.loss(net, test);
        ParallelWrapper wrapper = ParallelNets.wrapper(net, mode);
        try (Dl4jParallelGuard guard = Dl4jParallelGuard.of(
                () -> GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0)))) {
            guard.fit(wrapper, ParallelNets.iterator(ParallelNets.batches(BATCHES, BATCH, 7, faults)));
            assertEquals(faults.size(), guard.worker(1).skippedCount(), guard.summary());
            assertEquals(0, guard.worker(0).skippedCount(), guard.summary());
            assertEquals(faults.size(), guard.skippedCount());
            assertEquals(BATCHES - faults.size(), guard.stepCount());
        } finally {
            wrapper.shutdown();
        }
        assertTrue(ParallelNets.finite(net), "parameters finite");
        assertTrue(ParallelNets.loss(net, test) < before, "still learns");
    }

    /**
     * Synchronized guarding: a NaN batch on worker 1 is skipped on both workers; the clip uses the
     * norm over both workers, the same coefficient on each (seen in the worker-tagged records).
     */
    @ParameterizedTest
    @EnumSource(value = TrainingMode.class, names = {"AVERAGING", "SHARED_GRADIENTS"})
    void synchronizedSkipsOnEveryWorkerAndClipsWithTheNormOverAll(TrainingMode mode) {
        Set<Integer> faults = Set.of(3, 21);
        RunRecorder records = Sinks.memory();
        Monitor monitor = Monitor.builder().name("sync").sink(records).build();
        MultiLayerNetwork net = ParallelNets.mlp(11);
        ParallelWrapper wrapper = ParallelNets.wrapper(net, mode);
        int batches = BATCHES + 1; // an odd count: the last round has worker 0 alone
        try (Dl4jParallelGuard guard = Dl4jParallelGuard.of(
                () -> GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.5), monitor)).synchronize()) {
            guard.fit(wrapper, ParallelNets.iterator(ParallelNets.batches(batches, BATCH, 11, faults)));
            assertEquals(faults.size(), guard.worker(1).skippedCount(), guard.summary());
            assertEquals(faults.size(), guard.worker(0).skippedCount(), guard.summary());
            assertEquals(batches - 2L * faults.size(), guard.stepCount());
        } finally {
            wrapper.shutdown();
        }
        assertTrue(ParallelNets.finite(net));
        List<RunRecording> runs = records.recordings();
        assertEquals(List.of("sync/worker-0", "sync/worker-1"), runs.stream().map(RunRecording::name).sorted().toList());
        Map<String, Map<Long, StepRecord>> byCall = new HashMap<>();
        for (RunRecording run : runs) {
            byCall.put(run.name(), run.records().stream().collect(Collectors.toMap(StepRecord::call, r -> r)));
        }
        Map<Long, StepRecord> w0 = byCall.get("sync/worker-0");
        Map<Long, StepRecord> w1 = byCall.get("sync/worker-1");
        assertEquals(batches / 2 + 1, w0.size(), "one record per step of worker 0");
        assertEquals(batches / 2, w1.size(), "one record per step of worker 1");
        int compared = 0;
        for (long call = 0; call < batches / 2; call++) {
            StepRecord a = w0.get(call);
            StepRecord b = w1.get(call);
            assertEquals(a.skipped(), b.skipped(), "both workers skip or neither, call " + call);
            if (a.skipped()) {
                continue;
            }
            double global = Math.hypot(a.normBefore(), b.normBefore());
            double expected = 0.5 / Math.max(global, 0.5);
            assertEquals(expected, a.clipCoefficient(), 1e-5 * expected, "worker 0's coefficient, call " + call);
            assertEquals(expected, b.clipCoefficient(), 1e-5 * expected, "worker 1's coefficient, call " + call);
            compared++;
        }
        assertTrue(compared > 20, "compared " + compared + " steps");
    }

    /** Spark ships listeners by Java serialization: a copy rebuilds its pipeline and trains with fresh state. */
    @Test
    void serializedGuardTrainsWithFreshState() throws Exception {
        Dl4jParallelGuard original = Dl4jParallelGuard.of(
                () -> GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0)));
        MultiLayerNetwork first = ParallelNets.mlp(3);
        ParallelWrapper w1 = ParallelNets.wrapper(first, TrainingMode.AVERAGING);
        try {
            original.fit(w1, ParallelNets.iterator(ParallelNets.batches(10, BATCH, 3, Set.of())));
        } finally {
            w1.shutdown();
        }
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (ObjectOutputStream out = new ObjectOutputStream(bytes)) {
            out.writeObject(original);
        }
        Object copy;
        try (ObjectInputStream in = new ObjectInputStream(new ByteArrayInputStream(bytes.toByteArray()))) {
            copy = in.readObject();
        }
        Dl4jParallelGuard guard = assertInstanceOf(Dl4jParallelGuard.class, copy);
        assertEquals(0, guard.workerCount(), "fresh state");
        MultiLayerNetwork net = ParallelNets.mlp(4);
        List<DataSet> test = ParallelNets.batches(8, 64, 999, Set.of());
        double before = ParallelNets.loss(net, test);
        net.addListeners(guard); // as a worker gets it: a listener of the network (the wrapper moves it)
        ParallelWrapper w2 = ParallelNets.wrapper(net, TrainingMode.AVERAGING);
        try {
            w2.fit(ParallelNets.iterator(ParallelNets.batches(BATCHES, BATCH, 4, Set.of(9))));
        } finally {
            w2.shutdown();
        }
        assertEquals(BATCHES, guard.callCount());
        assertEquals(1, guard.worker(1).skippedCount(), "the copy's pipeline skips the NaN batch");
        assertEquals(10, original.callCount(), "the original is untouched");
        assertTrue(ParallelNets.loss(net, test) < before);
        guard.close();
        original.close();
    }

    /** A checkpoint holds every worker's state; a new guard resumes each worker where it stopped. */
    @Test
    void checkpointResumesEveryWorker() throws Exception {
        Path report = dir.resolve("workers.html");
        Path jsonl = dir.resolve("workers.jsonl");
        List<DataSet> train = ParallelNets.batches(20, BATCH, 5, Set.of(1, 4));
        MultiLayerNetwork net = ParallelNets.mlp(5);
        Path state = dir.resolve("guard.state");
        ParallelWrapper w1 = ParallelNets.wrapper(net, TrainingMode.AVERAGING);
        try (Dl4jParallelGuard guard = Dl4jParallelGuard.of(() -> GradientPipeline.of(Transforms.skipNonFinite(3),
                Transforms.clipByGlobalNorm(1.0), Monitor.builder().name("ckpt").sink(Sinks.jsonl(jsonl)).build()))) {
            guard.fit(w1, ParallelNets.iterator(train));
            assertEquals(1, guard.worker(0).skippedCount());
            assertEquals(1, guard.worker(1).skippedCount());
            guard.saveState(state);
        } finally {
            w1.shutdown();
        }
        ParallelWrapper w2 = ParallelNets.wrapper(net, TrainingMode.AVERAGING);
        try (Dl4jParallelGuard resumed = Dl4jParallelGuard.of(() -> GradientPipeline.of(Transforms.skipNonFinite(3),
                Transforms.clipByGlobalNorm(1.0), Monitor.builder().name("ckpt").sink(Sinks.html(report, 0)).build()))) {
            resumed.restoreState(state);
            resumed.fit(w2, ParallelNets.iterator(ParallelNets.batches(20, BATCH, 6, Set.of())));
            for (int w = 0; w < 2; w++) {
                assertEquals(20, resumed.worker(w).callCount(), "worker " + w + " continues its count");
                assertEquals(1, resumed.worker(w).skippedCount(), "worker " + w + " keeps its skip");
                assertEquals(9 + 10, resumed.worker(w).stepCount());
            }
        } finally {
            w2.shutdown();
        }
        List<String> lines = Files.readAllLines(jsonl);
        assertEquals(20, lines.size(), "one record per step and worker");
        assertEquals(10, lines.stream().filter(l -> l.contains("\"run\":\"ckpt/worker-1\"")).count(), lines.get(0));
        String html = Files.readString(report);
        assertTrue(html.contains("ckpt/worker-0") && html.contains("ckpt/worker-1"), "the report shows each worker");
        assertTrue(html.contains("Run: ckpt/worker-1"));
    }

    /** Synchronized guarding without the guard's fit: the worker count and rounds are unknown, a clear error. */
    @Test
    void synchronizedWithoutTheGuardsFitFailsClearly() {
        MultiLayerNetwork net = ParallelNets.mlp(2);
        Dl4jParallelGuard guard = Dl4jParallelGuard.of(() -> GradientPipeline.of(Transforms.clipByGlobalNorm(1.0))).synchronize();
        net.addListeners(guard);
        ParallelWrapper wrapper = ParallelNets.wrapper(net, TrainingMode.AVERAGING);
        try {
            RuntimeException e = assertThrows(RuntimeException.class,
                    () -> wrapper.fit(ParallelNets.iterator(ParallelNets.batches(4, BATCH, 2, Set.of()))));
            Throwable root = e;
            while (root.getCause() != null && !(root instanceof IllegalStateException)) {
                root = root.getCause();
            }
            assertInstanceOf(IllegalStateException.class, root, e.toString());
            assertTrue(root.getMessage().contains("guard.fit(wrapper, data)"), root.getMessage());
        } finally {
            wrapper.shutdown();
        }
    }

    /** A worker that fails stops its synchronized peers at once, with the cause; no deadlock. */
    @Test
    void synchronizedPeersStopWhenAWorkerFails() {
        MultiLayerNetwork net = ParallelNets.mlp(2);
        ParallelWrapper wrapper = ParallelNets.wrapper(net, TrainingMode.AVERAGING);
        Set<Integer> faults = Set.of(1, 3); // two in a row on worker 1: skipNonFinite(1) gives up on the second
        long start = System.nanoTime();
        try (Dl4jParallelGuard guard = Dl4jParallelGuard.of(() -> GradientPipeline.of(Transforms.skipNonFinite(1)))
                .synchronize(Duration.ofSeconds(30))) {
            RuntimeException e = assertThrows(RuntimeException.class,
                    () -> guard.fit(wrapper, ParallelNets.iterator(ParallelNets.batches(10, BATCH, 2, faults))));
            assertTrue(stackText(e).contains("in a row"), stackText(e));
        } finally {
            wrapper.shutdown();
        }
        assertTrue(System.nanoTime() - start < 20_000_000_000L, "stopped well within the 30 s timeout");
    }

    /** The exchange times out with the missing workers named when a worker never arrives. */
    @Test
    void rendezvousTimesOutNamingTheMissingWorker() {
        Rendezvous r = new Rendezvous(2, 200);
        r.start();
        long start = System.nanoTime();
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> r.exchange(0, 1.0));
        assertTrue(e.getMessage().contains("worker(s) [1]"), e.getMessage());
        assertTrue(System.nanoTime() - start >= 150_000_000L);
        assertThrows(IllegalStateException.class, () -> r.exchange(1, 1.0), "broken until the next start");
        r.start();
        Thread other = new Thread(() -> r.exchange(1, 3.0));
        other.start();
        Rendezvous.Totals t = r.exchange(0, 1.0);
        assertEquals(4.0, t.sumOfSquares());
        assertEquals(List.of(), t.nonFinite());
    }

    /** The last round of an epoch has the batches left over: it waits for those workers only. */
    @Test
    void rendezvousLastRoundWaitsForTheWorkersItHas() {
        Rendezvous r = new Rendezvous(2, 2_000);
        r.start();
        r.batchesKnown(1);
        Rendezvous.Totals t = r.exchange(0, Double.NaN);
        assertTrue(Double.isNaN(t.sumOfSquares()));
        assertEquals(List.of(0), t.nonFinite());
    }

    @Test
    void badInputIsRefusedClearly() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Dl4jParallelGuard.of(null));
        assertTrue(e.getMessage().contains("recipe"), e.getMessage());
        Dl4jParallelGuard guard = Dl4jParallelGuard.of(() -> GradientPipeline.of(Transforms.clipByGlobalNorm(1.0)));
        e = assertThrows(IllegalArgumentException.class, () -> guard.synchronize(Duration.ZERO));
        assertTrue(e.getMessage().contains("timeout"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> guard.worker(3));
        assertTrue(e.getMessage().contains("index"), e.getMessage());
        MultiLayerNetwork net = ParallelNets.mlp(1);
        ParallelWrapper wrapper = ParallelNets.wrapper(net, TrainingMode.AVERAGING);
        try {
            Dl4jParallelGuard accumulating = Dl4jParallelGuard.of(() -> GradientPipeline.of(Transforms.zeroNonFinite(),
                    Transforms.clipByGlobalNorm(1.0))).synchronize();
            e = assertThrows(IllegalArgumentException.class, () -> accumulating.attach(wrapper));
            assertTrue(e.getMessage().contains("zeroNonFinite"), e.getMessage());
            Dl4jParallelGuard empty = Dl4jParallelGuard.of(() -> null);
            e = assertThrows(IllegalArgumentException.class, () -> empty.attach(wrapper));
            assertTrue(e.getMessage().contains("recipe"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> guard.fit(wrapper, null));
            assertThrows(IllegalArgumentException.class, () -> guard.fit(null, ParallelNets.iterator(List.of())));
        } finally {
            wrapper.shutdown();
        }
        guard.close();
        assertThrows(IllegalStateException.class, () -> guard.onGradientCalculation(net));
        assertNotNull(guard.toString());
    }

    static String stackText(Throwable t) {
        StringBuilder b = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            b.append(c).append('\n');
        }
        return b.toString();
    }

    /** Odd batch indexes: worker 1's batches. */
    static Set<Integer> onWorker1(int count, int every, int limit) {
        return IntStream.range(0, count).map(i -> 2 * i * every + 1).filter(i -> i < limit).boxed().collect(Collectors.toSet());
    }
}
