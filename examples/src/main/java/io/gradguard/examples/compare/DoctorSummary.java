package io.gradguard.examples.compare;

import io.gradguard.core.doctor.Diagnosis;
import io.gradguard.core.doctor.Doctor;
import java.io.PrintStream;

/**
 * The comparison's last words: the gradient doctor's diagnosis of every run, one line each (what
 * went wrong first, when and where), and for each run with problems the guard it suggests. The
 * HTML report holds the full diagnoses (findings, depth profile, remedies with their evidence).
 */
public final class DoctorSummary {
    private DoctorSummary() {
    }

    /** Prints one diagnosis line per run, and the suggested stages under each run with problems. */
    public static void print(Comparison c, PrintStream out) {
        out.println();
        out.println("== Gradient doctor: what went wrong first, and the guard it suggests (details in the report)");
        for (RunResult r : c.runs()) {
            Diagnosis d = Doctor.diagnose(r.recording());
            out.println(d.summary());
            if (d.status() == Diagnosis.Status.PROBLEMS && !d.prescription().isEmpty()) {
                out.println("    suggested guard: " + String.join(", ", d.prescription().stages()));
            }
        }
    }
}
