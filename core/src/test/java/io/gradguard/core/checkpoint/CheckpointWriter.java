package io.gradguard.core.checkpoint;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * The child process of {@link CheckpointFileTest}: steps a pipeline with a large accumulator and
 * saves its state to the file {@code args[0]} after every call, forever, printing {@code saved <calls>}
 * after each save. The test kills it at a random moment.
 */
public final class CheckpointWriter {
    /** Elements of the one gradient: a 16 MB accumulator, so that most of the time goes to saving. */
    static final int ELEMENTS = 4 << 20;

    private CheckpointWriter() {
    }

    static GradientPipeline pipeline() {
        return GradientPipeline.of(Transforms.accumulate(1000), Transforms.clipByGlobalNorm(1.0));
    }

    /** Call c's gradient: every element c + 1. */
    static GradientSet<ReferenceTensor> gradients(int call) {
        float[] g = new float[ELEMENTS];
        Arrays.fill(g, call + 1);
        return GradientSet.of(new GradientTensor<>("w", new long[] {ELEMENTS}, Role.WEIGHT, "dense", Layout.whole(),
                ReferenceTensor.of(g, ELEMENTS)));
    }

    public static void main(String[] args) throws Exception {
        Path file = Path.of(args[0]);
        GradientPipeline p = pipeline();
        for (int call = 0; ; call++) {
            p.step(gradients(call), ReferenceOps.INSTANCE, StepContext.ofBatch(1));
            p.saveState(file);
            System.out.println("saved " + (call + 1));
            System.out.flush();
        }
    }
}
