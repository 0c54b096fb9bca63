package io.gradguard.core;

/**
 * What a scaling stage (a clip, a normalization) did to one group of gradients on one step: it
 * measured their norm {@code n} and multiplied every one of them by the same coefficient {@code c}.
 * For a norm clip with threshold {@code t}:
 *
 * <pre>c = min(1, t / (n + ε))        norm after the stage = n · c</pre>
 *
 * <p>Stages report it through {@link Step#reportScaling}; a {@link StepResult} lists them
 * ({@link StepResult#scalings()}), and the {@link io.gradguard.core.monitor.Monitor} reads them to
 * tell clipped steps and to rebuild the norm before clipping, without knowing how stages name
 * their metrics.
 *
 * <pre>{@code
 * for (Scaling s : result.scalings()) {
 *     if (s.clipped()) log.info("{} clipped {} by {}", s.stage(), s.group().isEmpty() ? "all" : s.group(), s.coefficient());
 * }
 * }</pre>
 *
 * @param stage       the stage's name ({@code "clipByGlobalNorm"})
 * @param group       the group scaled: {@code ""} for every gradient the stage saw, else a layer or
 *                    tensor name (per-layer and per-tensor scopes)
 * @param partial     whether the stage saw only part of the model's gradients (inside
 *                    {@code masked(...)}): then {@code ""} means "the selected subset", not the model
 * @param norm        the norm the stage measured before scaling (NaN where it measured none)
 * @param coefficient the factor every gradient of the group was multiplied by
 * @param threshold   the stage's threshold for the whole model, NaN where it has none (normalize)
 *                    or it is per group
 */
public record Scaling(String stage, String group, boolean partial, double norm, double coefficient, double threshold) {

    /** Whether the stage made the group smaller ({@code coefficient < 1}). */
    public boolean clipped() {
        return coefficient < 1;
    }

    /** Whether this scaling covered every gradient of the model with one coefficient. */
    public boolean global() {
        return group.isEmpty() && !partial;
    }
}
