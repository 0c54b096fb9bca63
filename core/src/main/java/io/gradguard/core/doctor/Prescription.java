package io.gradguard.core.doctor;

import io.gradguard.core.GradientTransform;
import io.gradguard.core.Transforms;
import java.util.ArrayList;
import java.util.List;

/**
 * The guard the {@link Doctor} suggests, as transforms to run and as Java source to paste, in
 * GradGuard's step order: skip non-finite steps, accumulate, clip.
 *
 * <pre>{@code
 * GradientPipeline guard = GradientPipeline.of(diagnosis.prescription().transforms());
 * log.info("suggested pipeline:\n{}", diagnosis.prescription().javaSource());
 * }</pre>
 *
 * @param skipMaxConsecutive {@code Transforms.skipNonFinite(n)} with this n; -1 for no skip stage
 * @param accumulate         micro-batches per step ({@code Transforms.accumulate(k)}); 1 for none
 * @param clipNorm           the global L2 clip threshold; NaN for no clip stage
 */
public record Prescription(int skipMaxConsecutive, int accumulate, double clipNorm) {

    /** The empty prescription: nothing to change. */
    public static final Prescription NONE = new Prescription(-1, 1, Double.NaN);

    /** @throws IllegalArgumentException if accumulate &lt; 1, skipMaxConsecutive &lt; -1 or clipNorm is not NaN or &gt; 0 */
    public Prescription {
        io.gradguard.core.internal.Checks.atLeast("skipMaxConsecutive", skipMaxConsecutive, -1);
        io.gradguard.core.internal.Checks.atLeast("accumulate", accumulate, 1);
        if (!Double.isNaN(clipNorm)) {
            io.gradguard.core.internal.Checks.positive("clipNorm", clipNorm);
        }
    }

    /** Whether there is nothing to change. */
    public boolean isEmpty() {
        return skipMaxConsecutive < 0 && accumulate == 1 && Double.isNaN(clipNorm);
    }

    /** The guard's transforms, in order (empty when there is nothing to change). */
    public List<GradientTransform> transforms() {
        List<GradientTransform> out = new ArrayList<>();
        if (skipMaxConsecutive >= 0) {
            out.add(Transforms.skipNonFinite(skipMaxConsecutive));
        }
        if (accumulate > 1) {
            out.add(Transforms.accumulate(accumulate));
        }
        if (!Double.isNaN(clipNorm)) {
            out.add(Transforms.clipByGlobalNorm(clipNorm));
        }
        return out;
    }

    /** The stages as source lines ("Transforms.clipByGlobalNorm(2.3)"), in order. */
    public List<String> stages() {
        List<String> out = new ArrayList<>();
        if (skipMaxConsecutive >= 0) {
            out.add("Transforms.skipNonFinite(" + skipMaxConsecutive + ")");
        }
        if (accumulate > 1) {
            out.add("Transforms.accumulate(" + accumulate + ")");
        }
        if (!Double.isNaN(clipNorm)) {
            out.add("Transforms.clipByGlobalNorm(" + Text.literal(clipNorm) + ")");
        }
        return out;
    }

    /**
     * Java source for the guard, with a monitor that keeps recording for the next diagnosis; a
     * comment saying there is nothing to change when the prescription is empty.
     */
    public String javaSource() {
        if (isEmpty()) {
            return "// no guard stage to add";
        }
        StringBuilder b = new StringBuilder("GradientPipeline guard = GradientPipeline.of(\n");
        for (String s : stages()) {
            b.append("        ").append(s).append(",\n");
        }
        return b.append("        Monitor.toJsonl(Path.of(\"grad.jsonl\")));").toString();
    }
}
