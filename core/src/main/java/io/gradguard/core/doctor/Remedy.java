package io.gradguard.core.doctor;

/**
 * One change the {@link Doctor} recommends, with its number and the evidence it comes from.
 *
 * @param kind     what to change
 * @param value    the number (clip threshold, learning-rate factor, micro-batches, consecutive
 *                 skips); NaN for structural advice
 * @param layers   the layers it concerns, "" for the whole model
 * @param advice   what to do, one sentence
 * @param evidence the measurements from the run that lead to it
 */
public record Remedy(Kind kind, double value, String layers, String advice, String evidence) {

    /** What a remedy changes. The first four go into the suggested pipeline or the optimizer. */
    public enum Kind {
        /** Clip the global gradient norm ({@code Transforms.clipByGlobalNorm}). */
        CLIP_THRESHOLD,
        /** Multiply the learning rate. */
        LEARNING_RATE,
        /** Skip steps with NaN/Inf gradients ({@code Transforms.skipNonFinite}). */
        SKIP_NON_FINITE,
        /** Average several micro-batches per step ({@code Transforms.accumulate}). */
        ACCUMULATE,
        /** Add normalization (BatchNorm, LayerNorm) to the named layers. */
        NORMALIZATION,
        /** Add residual (skip) connections around the named layers. */
        RESIDUAL,
        /** Replace a vanilla recurrent layer by gated cells (LSTM, GRU). */
        GATED_CELLS,
        /** Re-initialize with a variance-preserving scheme (He for ReLU, Xavier/Glorot for tanh and sigmoid). */
        INITIALIZATION,
        /** Revive a layer whose gradient is zero (dead ReLUs, a layer cut off from the loss). */
        REVIVE_LAYER
    }

    @Override
    public String toString() {
        return advice + " [" + evidence + "]";
    }
}
