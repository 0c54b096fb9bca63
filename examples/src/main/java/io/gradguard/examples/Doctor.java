package io.gradguard.examples;

import io.gradguard.core.doctor.Diagnose;

/**
 * The gradient doctor on a JSON Lines file a GradGuard {@code Monitor} wrote: prints what went
 * wrong first, the per-layer profile across depth, ranked remedies with their evidence and a
 * ready-to-paste pipeline, and writes an HTML report beside the file (or where {@code --html} says).
 *
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.Doctor -Dexec.args="grad.jsonl"
 * </pre>
 *
 * <p>The same command without Maven: {@code java -cp gradguard-core.jar io.gradguard.core.doctor.Diagnose grad.jsonl}.
 * Exit status: 0 when every file was diagnosed, 2 for a bad argument or a file that is not a
 * GradGuard recording (one line naming the file and line).
 */
public final class Doctor {
    private Doctor() {
    }

    public static void main(String[] args) {
        System.exit(Diagnose.run(args, System.out, System.err));
    }
}
