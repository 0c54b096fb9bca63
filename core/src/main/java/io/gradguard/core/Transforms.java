package io.gradguard.core;

import io.gradguard.core.internal.Checks;
import io.gradguard.core.transform.Accumulate;
import io.gradguard.core.transform.LossScale;
import io.gradguard.core.transform.AdaptiveClip;
import io.gradguard.core.transform.AutoClip;
import io.gradguard.core.transform.Centralize;
import io.gradguard.core.transform.ClipByNorm;
import io.gradguard.core.transform.ClipByValue;
import io.gradguard.core.transform.Masked;
import io.gradguard.core.transform.NonFiniteGuard;
import io.gradguard.core.transform.Normalize;
import io.gradguard.core.transform.SkipSpikes;
import io.gradguard.core.transform.ZClip;
import io.gradguard.core.transform.ZeroNonFinite;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Factories for every GradGuard transform. Each transform lives in one file of
 * {@code io.gradguard.core.transform} with its formula and reference; this class is the short way
 * to build them. Every factory validates its arguments and throws {@link IllegalArgumentException}
 * naming the parameter and the value it got.
 *
 * <pre>{@code
 * GradientPipeline guard = GradientPipeline.of(
 *     Transforms.zeroNonFinite(),
 *     Transforms.clipByGlobalNorm(1.0));
 * }</pre>
 */
public final class Transforms {
    private Transforms() {
    }

    /** Clip every element into [-c, c]. @throws IllegalArgumentException unless c is finite and &gt; 0 */
    public static GradientTransform clipByValue(double c) {
        Checks.positive("c", c);
        return new ClipByValue(-c, c);
    }

    /** Clip every element into [lo, hi]. @throws IllegalArgumentException if a bound is NaN or lo &gt; hi */
    public static GradientTransform clipByValue(double lo, double hi) {
        return new ClipByValue(lo, hi);
    }

    /** Scale all gradients together so their global L2 norm is at most maxNorm. */
    public static GradientTransform clipByGlobalNorm(double maxNorm) {
        return new ClipByNorm(maxNorm, NormType.L2, Scope.GLOBAL);
    }

    /** Scale all gradients together so their global norm of the given type is at most maxNorm. */
    public static GradientTransform clipByGlobalNorm(double maxNorm, NormType normType) {
        return new ClipByNorm(maxNorm, normType, Scope.GLOBAL);
    }

    /** Scale each gradient tensor so its L2 norm is at most maxNorm (Keras {@code clipnorm}). */
    public static GradientTransform clipByNorm(double maxNorm) {
        return new ClipByNorm(maxNorm, NormType.L2, Scope.TENSOR);
    }

    /** Scale each layer's gradients together so their L2 norm is at most maxNorm (DL4J {@code ClipL2PerLayer}). */
    public static GradientTransform clipByLayerNorm(double maxNorm) {
        return new ClipByNorm(maxNorm, NormType.L2, Scope.LAYER);
    }

    /** Norm clipping with every option spelled out. */
    public static GradientTransform clipByNorm(double maxNorm, NormType normType, Scope scope) {
        return new ClipByNorm(maxNorm, normType, scope);
    }

    /** Scale each tensor so its root mean square is at most c (Optax {@code clip_by_block_rms}). */
    public static GradientTransform clipByBlockRms(double c) {
        return new ClipByNorm(c, NormType.RMS, Scope.TENSOR);
    }

    /** Unit-wise adaptive gradient clipping with ε = 1e-3 (Brock et al. 2021). */
    public static GradientTransform adaptiveClip(double clipping) {
        return new AdaptiveClip(clipping, 1e-3);
    }

    /** Unit-wise adaptive gradient clipping with an explicit weight-norm floor ε. */
    public static GradientTransform adaptiveClip(double clipping, double eps) {
        return new AdaptiveClip(clipping, eps);
    }

    /** Renormalize to unit L2 norm per tensor, per layer or globally. */
    public static GradientTransform normalize(Scope scope) {
        return new Normalize(scope);
    }

    /** Gradient centralization (Yong et al. 2020). */
    public static GradientTransform centralize() {
        return new Centralize();
    }

    /** Replace NaN, +Inf and -Inf by 0, counting them. */
    public static GradientTransform zeroNonFinite() {
        return new ZeroNonFinite(false);
    }

    /** Replace NaN (only) by 0, counting NaN and Inf. */
    public static GradientTransform zeroNaN() {
        return new ZeroNonFinite(true);
    }

    // ---- stateful ---------------------------------------------------------------------------------

    /**
     * Dynamic loss scaling for float16 training with PyTorch GradScaler's defaults (2¹⁶, ×2 after
     * 2000 finite calls, ×0.5 on overflow); must be the pipeline's first stage ({@link LossScale}).
     */
    public static LossScale dynamicLossScale() {
        return LossScale.dynamic();
    }

    /**
     * Dynamic loss scaling with every value chosen ({@link LossScale#dynamic(double, double, double, int)}).
     *
     * @throws IllegalArgumentException if a value is out of range (see {@link LossScale})
     */
    public static LossScale dynamicLossScale(double initialScale, double growth, double backoff, int growthInterval) {
        return LossScale.dynamic(initialScale, growth, backoff, growthInterval);
    }

    /**
     * A fixed loss scale: gradients divided by {@code scale}, overflowing steps skipped.
     *
     * @throws IllegalArgumentException if scale is not finite and &gt; 0
     */
    public static LossScale lossScale(double scale) {
        return LossScale.fixed(scale);
    }

    /** The mean of every k micro-batches as one optimizer step (see {@link Accumulate} for weights, sums, schedules). */
    public static Accumulate accumulate(int k) {
        return Accumulate.every(k);
    }

    /**
     * Skip steps with NaN/Inf gradients (optimizer and its state untouched), up to
     * {@code maxConsecutive} in a row; the next consecutive one throws an
     * {@link IllegalStateException}: {@code skipNonFinite(3)} skips 3 bad steps in a row and throws on
     * the 4th. A finite step resets the count. @throws IllegalArgumentException if maxConsecutive &lt; 0
     */
    public static NonFiniteGuard skipNonFinite(int maxConsecutive) {
        return NonFiniteGuard.skip(maxConsecutive);
    }

    /** The non-finite policy of your choice: SKIP, ZERO, THROW or PROPAGATE. */
    public static NonFiniteGuard nonFinite(NonFiniteGuard.Policy policy) {
        return NonFiniteGuard.of(policy);
    }

    /** AutoClip at the p-th percentile of the last 10,000 norms (Seetharaman et al. 2020). */
    public static GradientTransform autoClip(double percentile) {
        return new AutoClip(percentile, 10_000);
    }

    /** AutoClip at the p-th percentile of the last {@code historySize} norms. */
    public static GradientTransform autoClip(double percentile, int historySize) {
        return new AutoClip(percentile, historySize);
    }

    /** ZClip with the paper's defaults (Kumar et al. 2025); configure with {@link ZClip}'s withers. */
    public static ZClip zClip() {
        return ZClip.defaults();
    }

    /** Skip steps whose global norm is more than z standard deviations above the recent mean. */
    public static SkipSpikes skipSpikes(double z) {
        return SkipSpikes.zAbove(z);
    }

    /** Apply {@code inner} only to the gradients the predicate accepts. */
    public static GradientTransform masked(Predicate<GradientTensor<?>> mask, GradientTransform inner) {
        return new Masked(Checks.notNull("mask", mask), "predicate", inner);
    }

    /**
     * Apply {@code inner} only to gradients whose name matches the regular expression (anywhere in
     * the name; anchor it with ^ and $ for whole names).
     *
     * @throws IllegalArgumentException if the pattern is empty or not a valid regular expression
     */
    public static GradientTransform matching(String namePattern, GradientTransform inner) {
        Checks.require(namePattern != null && !namePattern.isEmpty(), "namePattern", "be a non-empty regular expression", namePattern);
        Pattern p;
        try {
            p = Pattern.compile(namePattern);
        } catch (PatternSyntaxException e) {
            throw new IllegalArgumentException("namePattern must be a valid regular expression, got \"" + namePattern
                    + "\": " + e.getDescription(), e);
        }
        return new Masked(t -> p.matcher(t.name()).find(), "name ~ /" + namePattern + "/", inner);
    }

    /** A mask that keeps weights (role {@link Role#WEIGHT}) only. */
    public static Predicate<GradientTensor<?>> weightsOnly() {
        return t -> t.role() == Role.WEIGHT;
    }
}
