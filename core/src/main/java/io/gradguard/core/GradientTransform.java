package io.gradguard.core;

import io.gradguard.core.spi.TensorOps;

/**
 * A gradient transform: immutable, validated configuration plus an explicit state object that the
 * pipeline owns ({@link #init}), applied in place to a step's gradients by {@link #update}.
 *
 * <p>This is Optax's {@code GradientTransformation} ({@code init} + {@code update}, state explicit)
 * with the step context in {@code update} from day one. Implementations must not branch on tensor
 * values on the host where a multiply by a clamped coefficient does the job; they use the
 * primitives of {@link TensorOps} and the tree math of {@link Norms}.
 *
 * <pre>{@code
 * GradientTransform clip = Transforms.clipByGlobalNorm(1.0);
 * }</pre>
 */
public interface GradientTransform {

    /** The stage's default name in a pipeline (unique names are derived from it). */
    String name();

    /**
     * Creates this transform's state for the given gradients (their shapes, dtypes, device).
     * Called once, on the pipeline's first step. Stateless transforms return {@link TransformState#NONE}.
     */
    default <T> TransformState init(GradientSet<T> gradients, TensorOps<T> ops) {
        return TransformState.NONE;
    }

    /**
     * Transforms {@code step.gradients()} in place.
     *
     * @param step  the gradients, the backend, the context, the metrics recorder
     * @param state the object {@link #init} returned
     * @return whether the pipeline proceeds, holds (accumulating) or skips the step
     */
    <T> Action update(Step<T> step, TransformState state);

    /**
     * Whether {@link #update} can return {@link Action#hold()} or {@link Action#skip}. Adapters that
     * cannot suppress the optimizer step (a DL4J listener) refuse such pipelines up front, and
     * {@code masked(...)} refuses such an inner stage (it would hold or skip the whole model).
     */
    default boolean mayHoldOrSkip() {
        return false;
    }

    /**
     * Whether {@link #update} may change gradient values (true unless the transform only observes or
     * decides, like a monitor or a skip). The pipeline reports the last stage that may have changed
     * them ({@link StepResult#lastChangingStage()}), so a monitor can take the norm that stage
     * already measured instead of another pass over the gradients. When unsure, keep the default.
     */
    default boolean changesGradients() {
        return true;
    }

    /**
     * Reads the state {@link TransformState#write} wrote. Stateless transforms keep the default,
     * which reads nothing.
     *
     * @throws StateFormatException if the stored state does not fit this transform
     */
    default <T> TransformState readState(StateInput<T> in) throws java.io.IOException {
        return TransformState.NONE;
    }
}
