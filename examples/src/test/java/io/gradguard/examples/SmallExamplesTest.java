package io.gradguard.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Runs the main method of every small example (each is a file users copy, so it must keep
 * compiling, running and telling its story) and checks what it printed or wrote.
 */
class SmallExamplesTest {

    @TempDir
    Path dir;

    /** Runs {@code main} and returns what it printed. */
    private static String run(ThrowingMain main, String... args) throws Exception {
        PrintStream original = System.out;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        try {
            main.run(args);
        } finally {
            System.setOut(original);
        }
        String text = out.toString(StandardCharsets.UTF_8);
        original.print(text);
        return text;
    }

    private interface ThrowingMain {
        void run(String[] args) throws Exception;
    }

    /** The number after {@code label} on its line. */
    private static double number(String text, String label) {
        String line = text.lines().filter(l -> l.contains(label)).findFirst().orElseThrow(() -> new AssertionError(label + " in\n" + text));
        String rest = line.substring(line.indexOf(label) + label.length()).trim().split("\\s+")[0];
        return Double.parseDouble(rest);
    }

    @Test
    void tensorFlowLoop_plainSgdDiverges_guardedTrains() throws Exception {
        String out = run(GuardTensorFlowLoop::main);
        assertTrue(Double.isNaN(number(out, "plain SGD:   loss after 300 steps")), out);
        double guarded = number(out, "GradGuard:   loss after 300 steps");
        assertTrue(guarded < 2.0, "guarded loss " + guarded);
    }

    @Test
    void tensorFlowOptimizer_theWrappedOptimizerKeepsTheUsersLoopFinite() throws Exception {
        String out = run(GuardTensorFlowOptimizer::main);
        assertTrue(Double.isNaN(number(out, "plain Momentum: loss after 400 steps")), out);
        double guarded = number(out, "GradGuard:      loss after 400 steps");
        assertTrue(guarded < 2.0, "guarded loss " + guarded);
        assertTrue(out.contains("400 calls: 199 optimizer steps, 1 skipped, 200 held"), out);
        assertTrue(out.contains("step 99: loss") && out.contains("step 200: loss"), out);
    }

    @Test
    void tensorFlowTowers_twoTowersOnTwoCpuDevicesMatchOneDevice() throws Exception {
        String out = run(GuardTensorFlowTowers::main);
        assertTrue(number(out, "max |two towers - one device| over the variables after 200 steps:") < 1e-5, out);
        assertTrue(out.contains("tower 0 ops by device: {CPU:0="), out);
        assertTrue(out.contains("tower 1 ops by device: {CPU:1="), out);
    }

    @Test
    void checkpointAndResume_resumesExactlyOnlyWithTheGuardState() throws Exception {
        String out = run(CheckpointAndResume::main, dir.toString());
        assertEquals(0.0, number(out, "resumed model + guard:"), out);
        assertTrue(number(out, "resumed model only:") > 1e-3, out);
        assertTrue(Files.exists(dir.resolve("ckpt.index")), "one TensorFlow checkpoint written");
    }

    @Test
    void monitorToJsonl_writesOneLinePerStepAndTheReport() throws Exception {
        PrintStream originalErr = System.err;
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        System.setErr(new PrintStream(log, true, StandardCharsets.UTF_8));   // slf4j-simple writes to System.err
        try {
            run(MonitorToJsonl::main, dir.toString());
        } finally {
            System.setErr(originalErr);
        }
        originalErr.print(log.toString(StandardCharsets.UTF_8));
        assertTrue(log.toString(StandardCharsets.UTF_8).contains(
                "WARN io.gradguard.core.monitor.Slf4jSink - GradGuard SKIPPED: step 50 skipped by nonFinite"),
                "the skipped step is logged as a warning (simplelogger.properties keeps io.gradguard at INFO)");
        List<String> lines = Files.readAllLines(dir.resolve("gradients.jsonl"));
        assertEquals(100, lines.size());
        assertEquals(1, lines.stream().filter(l -> l.contains("\"skipped\":true")).count(), "the poisoned step was skipped");
        assertTrue(lines.get(0).contains("\"clipped\":true"), lines.get(0));
        assertTrue(Files.readString(dir.resolve("gradients.html")).contains("<svg"), "HTML report with charts");
    }

    @Test
    void djlEasyTrain_plainSgdDiverges_guardedTrains() throws Exception {
        String out = run(GuardDjlEasyTrain::main);
        assertTrue(Double.isNaN(number(out, "plain SGD:   training loss after 5 epochs")), out);
        assertTrue(number(out, "GradGuard:   training loss after 5 epochs") < 2.0, out);
    }

    @Test
    void djlLoop_accumulatesAndSkipsTheCorruptBatch() throws Exception {
        String out = run(GuardDjlLoop::main);
        assertTrue(out.contains("batch 201 skipped: non-finite gradient"), out);
        assertTrue(out.contains("optimizer steps from 400 batches, 1 skipped"), out);
        String last = out.lines().filter(l -> l.startsWith("optimizer step ")).reduce((a, b) -> b).orElseThrow();
        assertTrue(Double.parseDouble(last.substring(last.lastIndexOf(' ') + 1)) < 1.0, "trained: " + last);
    }

    @Test
    void dl4jFit_plainSgdDiverges_listenerGuardTrains() throws Exception {
        String out = run(GuardDl4jFit::main);
        assertTrue(Double.isNaN(number(out, "plain SGD:   loss after 5 epochs")), out);
        assertTrue(number(out, "GradGuard:   loss after 5 epochs") < 2.0, out);
    }

    @Test
    void dl4jAccumulation_holdsAndSkipsWithoutMovingTheUpdater() throws Exception {
        String out = run(GuardDl4jAccumulation::main);
        assertTrue(out.contains("64 micro-batches, 1 skipped, 15 Adam steps (iteration count 15), 3 waiting in the window"), out);
        assertTrue(number(out, "loss after 10 epochs") < 0.1, out);
    }
}
