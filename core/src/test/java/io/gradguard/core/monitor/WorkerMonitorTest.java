package io.gradguard.core.monitor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@link Monitor#forWorker}: one record per step and worker, tagged, into the parent's sinks, from worker threads. */
class WorkerMonitorTest {
    @TempDir
    Path dir;

    @Test
    void workersRecordIntoTheParentsSinksUnderTheirOwnRunNames() throws Exception {
        RunRecorder memory = Sinks.memory();
        Path jsonl = dir.resolve("w.jsonl");
        Path html = dir.resolve("w.html");
        Monitor parent = Monitor.builder().name("mlp").sink(memory).sink(Sinks.jsonl(jsonl)).sink(Sinks.html(html, 0)).build();
        int steps = 300;
        CountDownLatch go = new CountDownLatch(1);
        Thread[] workers = new Thread[2];
        Throwable[] failed = new Throwable[1];
        for (int w = 0; w < workers.length; w++) {
            Monitor mine = parent.forWorker(w);
            GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), mine);
            workers[w] = new Thread(() -> {
                try {
                    go.await();
                    for (int i = 0; i < steps; i++) {
                        p.step(MonitorTest.model(), MonitorTest.OPS, StepContext.ofBatch(8));
                    }
                    mine.close();
                } catch (Throwable t) {
                    failed[0] = t;
                }
            });
            workers[w].start();
        }
        go.countDown();
        for (Thread t : workers) {
            t.join();
        }
        assertEquals(null, failed[0]);
        parent.close();
        List<RunRecording> runs = memory.recordings();
        assertEquals(List.of("mlp/worker-0", "mlp/worker-1"), runs.stream().map(RunRecording::name).sorted().toList());
        for (RunRecording r : runs) {
            assertEquals(steps, r.records().size(), r.name());
            for (int i = 0; i < steps; i++) {
                assertEquals(i, r.records().get(i).index(), "each worker's own record index");
                assertEquals(13, r.records().get(i).normBefore(), 1e-6);
            }
        }
        List<String> lines = Files.readAllLines(jsonl);
        assertEquals(2 * steps, lines.size(), "whole lines, none interleaved");
        assertTrue(lines.stream().allMatch(l -> l.startsWith("{") && l.endsWith("}")));
        String report = Files.readString(html);
        assertTrue(report.contains("Run: mlp/worker-0") && report.contains("Run: mlp/worker-1"), "a run per worker");
    }

    @Test
    void aWorkersCloseLeavesTheSinksOpenAndOneRunStaysOneRecording() {
        RunRecorder memory = Sinks.memory();
        Monitor parent = Monitor.builder().name("solo").sink(memory).build();
        Monitor worker = parent.forWorker(3);
        GradientPipeline p = GradientPipeline.of(worker);
        p.step(MonitorTest.model(), MonitorTest.OPS, StepContext.ofBatch(8));
        worker.close();
        p.step(MonitorTest.model(), MonitorTest.OPS, StepContext.ofBatch(8)); // closed worker: not recorded
        Monitor other = parent.forWorker(4);
        GradientPipeline q = GradientPipeline.of(other);
        q.step(MonitorTest.model(), MonitorTest.OPS, StepContext.ofBatch(8));
        other.close();
        assertEquals(2, memory.recording().records().size(), "the parent's sink stayed open");
        assertEquals(2, memory.recordings().size());
        assertEquals("solo/worker-3", memory.recordings().get(0).name());
        assertThrows(IllegalArgumentException.class, () -> parent.forWorker(-1));
        RunRecorder single = Sinks.memory();
        single.onRecord(memory.recording().records().get(0));
        assertEquals(1, single.recordings().size());
    }
}
