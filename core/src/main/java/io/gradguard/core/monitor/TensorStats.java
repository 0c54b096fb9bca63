package io.gradguard.core.monitor;

/**
 * One parameter's gradient statistics at one step, measured on the backend as scalars (no gradient
 * is copied to the host). Values are those of the gradient <em>before</em> the pipeline's norm
 * clipping: the monitor measures what the optimizer receives and divides by the clip coefficients
 * the clipping stages recorded (exact, since norm clipping scales a group uniformly).
 *
 * @param name      the parameter's name
 * @param layer     its layer
 * @param norm      the L2 norm ‖g‖₂; NaN where a clip coefficient of 0 (an infinite norm) erased it
 * @param maxAbs    max |gᵢ|
 * @param nonFinite the number of NaN and ±Inf elements (as measured, or as a non-finite policy
 *                  stage recorded before it replaced them, whichever is larger)
 */
public record TensorStats(String name, String layer, double norm, double maxAbs, long nonFinite) {
}
