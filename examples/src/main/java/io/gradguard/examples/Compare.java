package io.gradguard.examples;

import io.gradguard.examples.compare.Comparison;
import io.gradguard.examples.compare.Options;
import io.gradguard.examples.compare.Report;
import java.io.PrintStream;

/**
 * The GradGuard framework comparison, GradGuard's main example: the same deep MLP and vanilla RNN,
 * from the same initial weights, on the same seeded data, trained with TensorFlow Java, DL4J and
 * DJL, first unguarded and then guarded by a GradGuard pipeline; prints a table per task with its
 * baseline (the mean predictor's loss) and whether each run learned, diverged or neither, the
 * cross-framework parity of the gradient norms, and writes an HTML report. With {@code --seeds N}
 * every cell runs N seeds and the table gives the median and range of the final loss and the
 * counts, so that no claim rests on one seed.
 *
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.args="--seeds 10"
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.args="--help"
 * </pre>
 *
 * <p>Exit status: 0 on success, 2 for a bad option (one line on stderr), 1 if a run failed.
 */
public final class Compare {
    private Compare() {
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs the comparison; returns the exit status. */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        Report.quietFrameworkLogs();
        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            err.println("compare: " + e.getMessage());
            return 2;
        }
        if (options == null) {
            out.print(Options.HELP);
            return 0;
        }
        try {
            Comparison c = Comparison.run(options, out);
            out.println("report: " + Report.print(c, out));
            io.gradguard.examples.compare.DoctorSummary.print(c, out);
            return 0;
        } catch (RuntimeException | java.io.IOException | LinkageError e) {
            err.println("compare: failed: " + e);
            return 1;
        }
    }
}
