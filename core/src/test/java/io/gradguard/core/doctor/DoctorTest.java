package io.gradguard.core.doctor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.LayerStats;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.MonitorListener;
import io.gradguard.core.monitor.RunRecording;
import io.gradguard.core.monitor.Sinks;
import io.gradguard.core.monitor.StepRecord;
import io.gradguard.core.monitor.TensorStats;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The doctor's reading rules on recorded runs, its command and its bad-input errors. Real training
 * (three frameworks, the closed loop, vanishing on DL4J) is in the examples module's tests.
 */
class DoctorTest {
    @TempDir
    Path dir;

    /** A run: step i has the loss and global norm given, and two layers "hidden" (norm/10) and "out" (norm). */
    static RunRecording run(double[] losses, double[] norms) {
        List<StepRecord> rs = new ArrayList<>();
        for (int i = 0; i < norms.length; i++) {
            List<LayerStats> layers = List.of(new LayerStats("hidden", norms[i] / 10, Double.NaN), new LayerStats("out", norms[i], Double.NaN));
            List<TensorStats> tensors = List.of(new TensorStats("hidden/Wh", "hidden", norms[i] / 10, 1, 0),
                    new TensorStats("out/W", "out", norms[i], 1, 0));
            long nf = Double.isFinite(norms[i]) ? 0 : 5;
            rs.add(new StepRecord("synthetic", i, i, i, false, "", "", 1, losses[i], norms[i], norms[i], 1, false, Double.NaN, nf, true,
                    layers, tensors, List.of(), Double.NaN));
        }
        return new RunRecording("synthetic", rs);
    }

    @Test
    void explodingRunGetsClipFromTheHealthyPercentileLearningRateAndSkip() {
        double[] norms = {1, 2, 3, 4, 5, 500, Double.NaN};
        double[] losses = {1, 1, 1, 1, 1, 16, Double.NaN};
        Diagnosis d = Doctor.diagnose(run(losses, norms));
        assertEquals(Diagnosis.Status.PROBLEMS, d.status());
        assertEquals(Finding.Kind.EXPLODING, d.first().kind(), d.text());
        assertEquals(5, d.first().step());
        // both layers grew 100x against their own medians: the first in model order is named, as the monitor does
        assertEquals(List.of("hidden"), d.first().layers());
        assertNotNull(d.first(Finding.Kind.LOSS_SPIKE));
        assertNotNull(d.first(Finding.Kind.NON_FINITE));
        // 10th percentile of {1..5} = 1.4; loss x16 => factor 1/(1+4) = 0.2; clip 0.28
        assertEquals(0.2, d.remedy(Remedy.Kind.LEARNING_RATE).value(), 1e-12);
        assertEquals(0.28, d.prescription().clipNorm(), 1e-12, d.text());
        assertEquals(Doctor.SKIP_MAX_CONSECUTIVE, d.prescription().skipMaxConsecutive());
        assertNotNull(d.remedy(Remedy.Kind.GATED_CELLS), "a recurrent weight in the run: " + d.text());
        assertEquals(List.of("Transforms.skipNonFinite(3)", "Transforms.clipByGlobalNorm(0.28)"), d.prescription().stages());
        assertEquals(2, d.prescription().transforms().size());
        assertEquals("Transforms.clipByGlobalNorm(0.28)", d.prescription().stages().get(1));
        assertTrue(d.text().contains("Suggested guard:\n  GradientPipeline guard = GradientPipeline.of("), d.text());
    }

    @Test
    void pasteablePipelineUsesRealFactories() throws Exception {
        Prescription p = new Prescription(3, 4, 2.5);
        Matcher m = Pattern.compile("(Transforms|Monitor)\\.(\\w+)\\(").matcher(p.javaSource());
        int calls = 0;
        while (m.find()) {
            Class<?> owner = m.group(1).equals("Transforms") ? Transforms.class : Monitor.class;
            String name = m.group(2);
            assertTrue(Arrays.stream(owner.getMethods()).map(Method::getName).anyMatch(name::equals), owner.getSimpleName() + "." + name);
            calls++;
        }
        assertEquals(4, calls, p.javaSource());
        assertEquals(3, p.transforms().size());
        assertNotNull(GradientPipeline.of(p.transforms()), "the stages build a pipeline in this order");
    }

    @Test
    void healthyAndTooShortRuns() {
        double[] norms = new double[30];
        double[] losses = new double[30];
        for (int i = 0; i < 30; i++) {
            norms[i] = 1 + 0.3 * Math.sin(i);
            losses[i] = 2 - i * 0.01;
        }
        Diagnosis healthy = Doctor.diagnose(run(losses, norms));
        assertEquals(Diagnosis.Status.HEALTHY, healthy.status(), healthy.text());
        assertTrue(healthy.remedies().isEmpty() && healthy.prescription().isEmpty());
        Diagnosis shortRun = Doctor.diagnose(run(Arrays.copyOf(losses, 5), Arrays.copyOf(norms, 5)));
        assertEquals(Diagnosis.Status.CANNOT_JUDGE, shortRun.status());
        assertTrue(shortRun.reason().contains("at least " + Doctor.MIN_STEPS), shortRun.reason());
    }

    @Test
    void percentileInterpolatesBetweenClosestRanks() {
        assertEquals(1.4, Doctor.percentile(List.of(5.0, 1.0, 3.0, 2.0, 4.0), 10), 1e-12);
        assertEquals(3.0, Doctor.median(List.of(5.0, 1.0, 3.0, 2.0, 4.0)), 1e-12);
        assertEquals(7.0, Doctor.percentile(List.of(7.0), 10), 0);
    }

    @Test
    void commandDiagnosesAJsonlFileAndWritesHtml() throws Exception {
        Path file = dir.resolve("grad.jsonl");
        write(file, run(new double[] {1, 1, 1, 1, 1, 16, Double.NaN}, new double[] {1, 2, 3, 4, 5, 500, Double.NaN}));
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = Diagnose.run(new String[] {file.toString()}, print(out), print(err));
        assertEquals(0, status, err.toString(StandardCharsets.UTF_8));
        String text = out.toString(StandardCharsets.UTF_8);
        assertTrue(text.contains("EXPLODING at step 5") && text.contains("Transforms.clipByGlobalNorm(0.28)"), text);
        String html = Files.readString(dir.resolve("grad.html"));
        assertTrue(html.contains("<h3>Diagnosis</h3>") && html.contains("Transforms.clipByGlobalNorm(0.28)"), "HTML diagnosis");
    }

    @Test
    void badFilesNameTheFileAndLine() throws Exception {
        Path good = dir.resolve("good.jsonl");
        write(good, run(new double[] {1, 1}, new double[] {1, 2}));
        String line1 = Files.readAllLines(good).get(0);
        Path truncated = Files.writeString(dir.resolve("truncated.jsonl"), line1 + "\n" + line1.substring(0, line1.length() / 2));
        Path empty = Files.writeString(dir.resolve("empty.jsonl"), "");
        Path foreign = Files.writeString(dir.resolve("foreign.jsonl"), "{\"step\": 1, \"loss\": 0.5}\n");
        Path array = Files.writeString(dir.resolve("array.jsonl"), line1 + "\n[1, 2]\n");
        assertError(truncated, "line 2", "invalid JSON");
        assertError(empty, "empty.jsonl", "holds no records");
        assertError(foreign, "line 1", "missing fields run, index");
        assertError(array, "line 2", "expected a JSON object");
        assertError(dir.resolve("missing.jsonl"), "missing.jsonl", "no such file");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Doctor.diagnose(null));
        assertEquals("run must not be null", e.getMessage());
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        assertEquals(2, Diagnose.run(new String[] {foreign.toString()}, print(new ByteArrayOutputStream()), print(err)));
        assertEquals(1, err.toString(StandardCharsets.UTF_8).lines().count(), err.toString(StandardCharsets.UTF_8));
        assertEquals(2, Diagnose.run(new String[0], print(new ByteArrayOutputStream()), print(err)));
    }

    private static void write(Path file, RunRecording run) {
        MonitorListener sink = Sinks.jsonl(file);
        run.records().forEach(sink::onRecord);
        sink.close();
    }

    private static void assertError(Path file, String where, String what) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Diagnose.read(file));
        assertTrue(e.getMessage().contains(where) && e.getMessage().contains(what), e.getMessage());
    }

    private static PrintStream print(ByteArrayOutputStream b) {
        return new PrintStream(b, true, StandardCharsets.UTF_8);
    }
}
