package io.gradguard.core.doctor;

import java.util.List;

/**
 * What the {@link Doctor} concluded about one run: a status, what went wrong (first finding first),
 * the per-layer profile across depth at the first bad step, ranked remedies with their evidence,
 * and the suggested guard.
 *
 * <pre>{@code
 * Diagnosis d = Doctor.diagnose(recording);
 * if (d.status() == Diagnosis.Status.PROBLEMS) {
 *     log.info("{}", d.text());
 * }
 * }</pre>
 *
 * @param run          the run's name
 * @param status       healthy, problems found, or too few steps to judge
 * @param steps        the records the doctor read
 * @param reason       one sentence: why this status
 * @param findings     what went wrong, ordered by step (empty unless {@link Status#PROBLEMS})
 * @param profile      the per-layer norms across depth at the first finding's step (or the
 *                     nearest measured step before it); null when no step was measured per layer
 * @param remedies     ranked remedies, most important first (empty unless {@link Status#PROBLEMS})
 * @param prescription the suggested guard ({@link Prescription#NONE} when nothing should change)
 */
public record Diagnosis(String run, Status status, int steps, String reason, List<Finding> findings, DepthProfile profile,
        List<Remedy> remedies, Prescription prescription) {

    /** The verdict. */
    public enum Status {
        /** Enough steps, nothing wrong: no remedy. */
        HEALTHY,
        /** Something went wrong: see the findings and remedies. */
        PROBLEMS,
        /** Too few steps to tell a healthy run from one that has not gone wrong yet. */
        CANNOT_JUDGE
    }

    /** Copies the lists. */
    public Diagnosis {
        findings = List.copyOf(findings);
        remedies = List.copyOf(remedies);
    }

    /** What went wrong first, or null. */
    public Finding first() {
        return findings.isEmpty() ? null : findings.get(0);
    }

    /** The first finding of a kind, or null. */
    public Finding first(Finding.Kind kind) {
        return findings.stream().filter(f -> f.kind() == kind).findFirst().orElse(null);
    }

    /** The remedy of a kind, or null. */
    public Remedy remedy(Remedy.Kind kind) {
        return remedies.stream().filter(r -> r.kind() == kind).findFirst().orElse(null);
    }

    /** One line: the status and the first finding ("tf mlp: PROBLEMS, first LOSS_SPIKE at step 1: ..."). */
    public String summary() {
        return run + ": " + switch (status) {
            case HEALTHY -> "healthy, nothing to change (" + reason + ")";
            case CANNOT_JUDGE -> "cannot judge: " + reason;
            case PROBLEMS -> "first " + first();
        };
    }

    /** The whole diagnosis as plain text (what the {@code Diagnose} command prints). */
    public String text() {
        StringBuilder b = new StringBuilder();
        b.append("Diagnosis of run \"").append(run).append("\" (").append(steps).append(" steps): ").append(status).append('\n');
        b.append("  ").append(reason).append('\n');
        if (status != Status.PROBLEMS) {
            return b.toString();
        }
        b.append("What went wrong, in order:\n");
        for (Finding f : findings) {
            b.append("  - ").append(f).append('\n');
        }
        if (profile != null && profile.layers().size() > 1) {
            b.append("Gradient norm per layer at step ").append(profile.step()).append(", output first: ").append(profile.describe())
                    .append('\n').append(profile.table());
        }
        b.append("Remedies, most important first:\n");
        for (int i = 0; i < remedies.size(); i++) {
            Remedy r = remedies.get(i);
            b.append("  ").append(i + 1).append(". ").append(r.advice()).append('\n').append("     evidence: ").append(r.evidence())
                    .append('\n');
        }
        b.append("Suggested guard:\n");
        for (String line : prescription.javaSource().split("\n")) {
            b.append("  ").append(line).append('\n');
        }
        return b.toString();
    }

    @Override
    public String toString() {
        return summary();
    }
}
