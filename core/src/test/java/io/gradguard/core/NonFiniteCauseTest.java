package io.gradguard.core;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.util.List;
import org.junit.jupiter.api.Test;

/** When skipNonFinite gives up, its message names the likely cause from what the step's context knows. */
class NonFiniteCauseTest {

    /** The message of the step that exceeds skipNonFinite(1), with non-finite gradients every time. */
    private static String giveUp(StepContext context) {
        GradientPipeline p = GradientPipeline.of(Transforms.skipNonFinite(1));
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> {
            for (int i = 0; i < 2; i++) {
                ReferenceTensor g = ReferenceOps.INSTANCE.fromHost(new float[] {Float.NaN, 1}, new long[] {2});
                p.step(GradientSet.of(List.of(new GradientTensor<>("w", new long[] {2}, Role.WEIGHT, "dense", Layout.outputLast(), g))),
                        ReferenceOps.INSTANCE, context);
            }
        });
        assertTrue(e.getMessage().contains("2 non-finite steps in a row, more than maxConsecutive=1. "), e.getMessage());
        return e.getMessage();
    }

    @Test
    void non_finite_inputs_are_named_as_bad_data() {
        String m = giveUp(StepContext.ofBatch(8).withLoss(Double.NaN).withNonFiniteInputs(true));
        assertTrue(m.endsWith("The inputs of this batch hold NaN or Inf: the input data is bad, not the training; clean or filter "
                + "the batches (a lower learning rate would not help), or raise maxConsecutive."), m);
    }

    @Test
    void a_finite_loss_with_non_finite_gradients_is_named_a_sudden_failure() {
        String m = giveUp(StepContext.ofBatch(8).withLoss(0.25));
        assertTrue(m.endsWith("The loss was finite (0.25) while its gradients were not: a sudden failure rather than divergence; "
                + "look for bad values in the inputs or an operation whose gradient is not finite (sqrt, log or a division at 0), "
                + "or raise maxConsecutive."), m);
    }

    @Test
    void otherwise_both_causes_are_listed() {
        for (StepContext c : List.of(StepContext.ofBatch(8), StepContext.ofBatch(8).withLoss(Double.POSITIVE_INFINITY))) {
            String m = giveUp(c);
            assertTrue(m.endsWith("Either the input data holds NaN or Inf (check the batches) or training is diverging (lower the "
                    + "learning rate, add clipping); or raise maxConsecutive."), m);
        }
    }
}
