package io.gradguard.examples;

import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.doctor.Diagnosis;
import io.gradguard.core.doctor.Doctor;
import io.gradguard.core.doctor.Remedy;
import io.gradguard.examples.compare.Backend;
import io.gradguard.examples.compare.Options;
import io.gradguard.examples.compare.RunResult;
import io.gradguard.examples.compare.Runner;
import io.gradguard.examples.compare.Task;
import io.gradguard.examples.compare.Comparison;
import io.gradguard.examples.compare.DoctorSummary;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The doctor's closed loop on the comparison's unguarded runs: every framework, both tasks, three
 * seeds. Each unguarded run diverges; the doctor diagnoses it; its suggested pipeline, applied
 * as is, must make the same run (same weights, same batches, same learning rate) train without
 * diverging and end below its first loss. A suggestion that does not help fails here.
 */
class DoctorClosedLoopTest {
    static final int STEPS = 100;
    /** The default seed and the next two on which the MLP diverges unguarded on DJL (most seeds do not within 100 steps). */
    static final long[] SEEDS = {42, 2, 6};

    @Test
    void theSuggestedPipelineStopsEveryDivergence() {
        io.gradguard.examples.compare.Report.quietFrameworkLogs();
        List<String> failures = new ArrayList<>();
        StringBuilder log = new StringBuilder();
        int treatedRuns = 0;
        for (long seed : SEEDS) {
            for (Task task : List.of(Task.deepMlp(), Task.addingProblem())) { // the two tasks built to diverge
                for (Backend backend : Options.allBackends().values()) {
                    String who = backend.id() + " " + task.id() + " seed " + seed;
                    RunResult unguarded = Runner.run(backend, task, seed, STEPS, List.of());
                    Diagnosis d = Doctor.diagnose(unguarded.recording());
                    boolean diverged = unguarded.nonFiniteStep() >= 0;
                    if (d.status() != Diagnosis.Status.PROBLEMS || d.remedy(Remedy.Kind.CLIP_THRESHOLD) == null) {
                        if (diverged) {
                            failures.add(who + " diverged but got no clip threshold: " + d.text());
                        } else {
                            log.append(who).append(": did not diverge; ").append(d.summary()).append('\n');
                        }
                        continue;
                    }
                    treatedRuns++;
                    RunResult treated = Runner.run(backend, task, seed, STEPS, d.prescription().transforms());
                    double first = treated.loss().get(0);
                    log.append(String.format("%s: %s, %s -> %s; loss %.3g -> %.3g, %d steps %s%n", who,
                            diverged ? "diverged at step " + unguarded.nonFiniteStep() : "did not diverge", d.first().kind(),
                            d.prescription().stages(), first, treated.finalLoss(), treated.loss().size(), treated.stoppedBy()));
                    if (treated.loss().size() != STEPS || treated.nonFiniteStep() >= 0 || !(treated.finalLoss() < first)) {
                        failures.add(who + " still diverges under " + d.prescription().stages() + ": " + treated.loss().size()
                                + " steps, final loss " + treated.finalLoss() + " (first " + first + ") " + treated.stoppedBy());
                    }
                }
            }
        }
        System.out.print(log);
        assertTrue(failures.isEmpty(), String.join("\n", failures) + "\n" + log);
        assertTrue(treatedRuns >= 12, "most unguarded runs diverge (the premise), got " + treatedRuns + "\n" + log);
    }

    @Test
    void comparisonEndsWithTheDoctorsSummary(@TempDir Path out) {
        io.gradguard.examples.compare.Report.quietFrameworkLogs();
        Options options = Options.parse("--backends", "djl", "--tasks", "mlp", "--steps", "20", "--out", out.toString());
        Comparison c = Comparison.run(options, new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8));
        ByteArrayOutputStream text = new ByteArrayOutputStream();
        DoctorSummary.print(c, new PrintStream(text, true, StandardCharsets.UTF_8));
        String s = text.toString(StandardCharsets.UTF_8);
        assertTrue(s.contains("== Gradient doctor") && s.matches("(?s).*djl mlp unguarded( seed \\d+)?: first .*")
                && s.contains("suggested guard: Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm("), s);
    }
}
