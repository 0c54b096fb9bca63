package io.gradguard.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.examples.compare.Comparison;
import io.gradguard.examples.compare.Options;
import io.gradguard.examples.compare.Report;
import io.gradguard.examples.compare.RunResult;
import io.gradguard.examples.compare.Task;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The comparison in a short mode, on all three frameworks, and the story it must tell: without a
 * guard plain SGD diverges; with skip + clip it trains; the frameworks agree at step 1.
 */
class CompareStoryTest {

    @TempDir
    Path out;

    @Test
    void unguardedDivergesGuardedTrainsFrameworksAgree() throws Exception {
        Options options = Options.parse("--steps", "120", "--out", out.toString());
        ByteArrayOutputStream progress = new ByteArrayOutputStream();
        Comparison c = Comparison.run(options, new PrintStream(progress, true, StandardCharsets.UTF_8));
        assertEquals(12, c.runs().size());
        for (RunResult r : c.runs()) {
            String who = r.backend() + " " + r.task().id() + (r.guarded() ? " guarded" : " unguarded");
            double first = r.loss().get(0);
            if (r.guarded()) {
                assertEquals(120, r.loss().size(), who + " ran every step");
                assertEquals(-1, r.nonFiniteStep(), who + " loss stayed finite");
                assertTrue(r.finalLoss() < 0.8 * first, who + " learned: " + first + " -> " + r.finalLoss());
                assertTrue(r.clipped() > 0, who + " clipped some steps");
            } else {
                assertTrue(r.nonFiniteStep() >= 0, who + " diverged");
                assertNotNull(r.firstExplosion(), who + ": the monitor named an exploding layer");
            }
        }
        for (Task t : options.tasks()) {
            assertTrue(c.parity(t) < 1e-5, t.id() + " step-1 gradient norms agree: " + c.parity(t));
        }
        ByteArrayOutputStream table = new ByteArrayOutputStream();
        Path report = Report.print(c, new PrintStream(table, true, StandardCharsets.UTF_8));
        String text = table.toString(StandardCharsets.UTF_8);
        assertTrue(text.contains("parity: step-1 gradient norm"), text);
        assertTrue(Files.size(report) > 1000 && Files.readString(report).contains("<svg"), "HTML report with charts");
        assertEquals(12, progress.toString(StandardCharsets.UTF_8).lines().count(), "one progress line per stage");
    }

    @Test
    void badOptionsGiveOneLineAndExitStatus2() {
        for (String[] args : new String[][] {{"--backends", "tf,mxnet"}, {"--steps", "-5"}, {"--out", "/proc/gradguard"},
                {"--pipeline", "clip=-1"}, {"--frobnicate"}}) {
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            ByteArrayOutputStream stdout = new ByteArrayOutputStream();
            int status = Compare.run(args, new PrintStream(stdout, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
            String e = err.toString(StandardCharsets.UTF_8);
            assertEquals(2, status, String.join(" ", args));
            assertEquals(1, e.lines().count(), "one line: " + e);
            assertTrue(e.startsWith("compare: "), e);
            assertFalse(e.contains("Exception"), e);
        }
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        Compare.run(new String[] {"--backends", "tf,mxnet"}, System.out, new PrintStream(err, true, StandardCharsets.UTF_8));
        assertEquals("compare: unknown backend 'mxnet' (choose from tf, dl4j, djl)", err.toString(StandardCharsets.UTF_8).strip());
        Compare.run(new String[] {"--steps", "-5"}, System.out, new PrintStream(err = new ByteArrayOutputStream(), true, StandardCharsets.UTF_8));
        assertEquals("compare: option --steps must be >= 1 and <= 10000000, got -5", err.toString(StandardCharsets.UTF_8).strip());
    }

    @Test
    void helpExplainsEveryOption() {
        ByteArrayOutputStream stdout = new ByteArrayOutputStream();
        assertEquals(0, Compare.run(new String[] {"--help"}, new PrintStream(stdout, true, StandardCharsets.UTF_8), System.err));
        String help = stdout.toString(StandardCharsets.UTF_8);
        for (String option : new String[] {"--backends", "--tasks", "--steps", "--seed", "--pipeline", "--out", "--help"}) {
            assertTrue(help.contains(option), option);
        }
    }
}
