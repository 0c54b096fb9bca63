package io.gradguard.examples.compare;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.NormType;
import io.gradguard.core.Norms;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import java.util.List;
import java.util.Map;

/**
 * Records the gradient's global L2 norm ({@code layerNorms.global}) and each layer's
 * ({@code layerNorms.<layer>}) as the pipeline sees them at this position, and changes nothing.
 * Placed first, it measures the raw gradients: what the comparison charts and what its
 * exploding-layer detector reads.
 */
final class LayerNorms implements GradientTransform {
    static final String NAME = "layerNorms";

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        step.record("global", Norms.globalNorm(step.ops(), step.gradients(), NormType.L2));
        for (Map.Entry<String, List<GradientTensor<T>>> layer : step.gradients().byLayer().entrySet()) {
            step.record(layer.getKey(), Norms.norm(step.ops(), layer.getValue(), NormType.L2));
        }
        return Action.proceed();
    }
}
