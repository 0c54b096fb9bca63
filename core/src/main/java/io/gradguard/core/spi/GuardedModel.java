package io.gradguard.core.spi;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.StepResult;

/**
 * What an adapter supplies for one guarded step; the step itself ({@link io.gradguard.core.Guard#step})
 * is written once, in core:
 *
 * <pre>
 * gradients()  →  pipeline.step(...)  →  apply(...)    (PROCEED)  →  metrics to the host
 *                                     →  discard(...)  (HOLD, SKIP)
 *              →  endStep()           (always, also when a stage threw)
 * </pre>
 *
 * <p>An adapter implements it in one small class per hook, next to its {@link TensorOps}:
 * <ul>
 *   <li>{@link #gradients()}: the model's live gradient tensors, described once per model (name,
 *       {@link io.gradguard.core.Role role}, layer, {@link io.gradguard.core.Layout layout}, the
 *       parameter's value for adaptive clips). Stages change them in place.</li>
 *   <li>{@link #apply}: run the framework's optimizer on them. When {@code updates} is not null a
 *       monitor wants this step's update-to-parameter ratios: report each parameter's update.</li>
 *   <li>{@link #discard}: the optimizer must not run (accumulation holds, or the step is skipped);
 *       leave the model so that nothing of this micro-batch reaches the next one (e.g. fill the
 *       gradients with 0: a multiply by 0 keeps NaN).</li>
 *   <li>{@link #endStep()}: free every temporary the step created (gradient handles, reductions,
 *       coefficients): the step's scope ends here. Metrics were copied to the host before
 *       (after {@link #apply}/{@link #discard}: a graph backend can fetch them with its update run).</li>
 * </ul>
 *
 * @param <T> the framework's tensor type
 */
public interface GuardedModel<T> {

    /** The backend primitives on this model's tensors. */
    TensorOps<T> ops();

    /** The gradients of the last backward pass, in a fixed order. */
    GradientSet<T> gradients();

    /**
     * Runs the optimizer on the transformed gradients.
     *
     * @param updates where to report each parameter's update, or null when no monitor wants them
     */
    void apply(GradientSet<T> gradients, StepResult<T> result, UpdateRecorder<T> updates);

    /** Leaves the optimizer alone on a held or skipped step, and resets what would leak into the next micro-batch. */
    void discard(GradientSet<T> gradients, StepResult<T> result);

    /** Frees the step's temporaries; called once per step, after {@link #apply} or {@link #discard}, or after a failure. */
    void endStep();

    /** Where an adapter reports the update the optimizer made to one parameter (for update-to-parameter ratios). */
    interface UpdateRecorder<T> {
        /**
         * @param parameter the gradient's description with {@link GradientTensor#param()} holding θ
         *                  before the step
         * @param update    Δθ, the change the optimizer made (on the backend)
         */
        void record(GradientTensor<T> parameter, T update);

        /** The same with both norms already on the host (‖Δθ‖, ‖θ‖ before the step), for one layer. */
        void record(String layer, double updateNorm, double paramNorm);
    }
}
