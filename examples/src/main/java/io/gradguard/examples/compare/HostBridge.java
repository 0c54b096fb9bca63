package io.gradguard.examples.compare;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.util.ArrayList;
import java.util.List;

/**
 * Temporary stand-in for a framework adapter that has not landed yet: runs the pipeline on host
 * copies of the framework's gradients with the reference backend; the caller copies them back.
 * Same math as an adapter, but a device-to-host round trip per step. Deleted once the adapters
 * are on main.
 */
final class HostBridge {
    private HostBridge() {
    }

    /**
     * @param names   parameter names, in order
     * @param layers  their layers
     * @param shapes  their shapes in the framework's layout
     * @param layout  the framework's layout of matrices
     * @param grads   the gradients (changed in place by the pipeline)
     */
    static StepResult<ReferenceTensor> step(GradientPipeline pipeline, List<Weights.Param> params, List<long[]> shapes,
            Layout layout, List<float[]> grads, int batch, double loss) {
        List<GradientTensor<ReferenceTensor>> tensors = new ArrayList<>();
        for (int i = 0; i < params.size(); i++) {
            Weights.Param p = params.get(i);
            tensors.add(new GradientTensor<>(p.fullName(), shapes.get(i), p.role(), p.layer(), layout,
                    ReferenceTensor.of(grads.get(i), shapes.get(i))));
        }
        return pipeline.step(GradientSet.of(tensors), ReferenceOps.INSTANCE, StepContext.ofBatch(batch).withLoss(loss));
    }
}
