package io.gradguard.core.monitor;

/**
 * One layer's gradient statistics at one step: every parameter of the layer taken as one vector.
 *
 * @param layer       the layer's name
 * @param norm        the L2 norm of the layer's gradients before clipping, √(Σ ‖gₜ‖²)
 * @param updateRatio ‖Δθ‖ / ‖θ‖ over the layer's parameters for this step's optimizer update, where
 *                    the adapter reported it ({@link Monitor#recordUpdate}); NaN otherwise. About
 *                    1e-3 is healthy (DL4J's training UI, Karpathy's rule of thumb)
 */
public record LayerStats(String layer, double norm, double updateRatio) {

    /** The same statistics with the update ratio filled in. */
    public LayerStats withUpdateRatio(double ratio) {
        return new LayerStats(layer, norm, ratio);
    }
}
