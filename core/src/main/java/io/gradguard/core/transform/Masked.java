package io.gradguard.core.transform;

import io.gradguard.core.Action;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.util.function.Predicate;

/**
 * Applies an inner transform only to the gradients whose metadata matches a predicate; the others
 * pass through untouched. Global norms inside the inner transform are taken over the selected
 * gradients only.
 *
 * <pre>g_sel ← inner(g_sel);   g_rest unchanged</pre>
 *
 * <p>Reference: Optax {@code masked}.
 *
 * <pre>{@code
 * Transforms.masked(Transforms.weightsOnly(), Transforms.centralize());
 * Transforms.matching("^(?!output).*", Transforms.clipByGlobalNorm(1.0)); // leave the classifier alone
 * }</pre>
 *
 * @throws IllegalArgumentException (at construction) if the predicate, the description or the inner transform is null
 */
public final class Masked implements GradientTransform {
    private final Predicate<GradientTensor<?>> mask;
    private final String description;
    private final GradientTransform inner;

    /** Use {@link io.gradguard.core.Transforms#masked(Predicate, GradientTransform)}. */
    public Masked(Predicate<GradientTensor<?>> mask, String description, GradientTransform inner) {
        this.mask = Checks.notNull("mask", mask);
        this.description = Checks.notNull("description", description);
        this.inner = Checks.notNull("inner", inner);
        Checks.require(!inner.mayHoldOrSkip(), "inner", "not hold or skip steps (masked, it would hold or skip the whole"
                + " model's step: put it in the pipeline unmasked)", inner);
    }

    public GradientTransform inner() {
        return inner;
    }

    @Override
    public String name() {
        return "masked(" + inner.name() + ")";
    }

    @Override
    public <T> TransformState init(GradientSet<T> gradients, TensorOps<T> ops) {
        return inner.init(select(gradients), ops);
    }

    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        return inner.update(step.withGradients(select(step.gradients())), state);
    }

    @Override
    public boolean mayHoldOrSkip() {
        return inner.mayHoldOrSkip();
    }

    @Override
    public <T> TransformState readState(io.gradguard.core.StateInput<T> in) throws java.io.IOException {
        return inner.readState(in);
    }

    private <T> GradientSet<T> select(GradientSet<T> gradients) {
        return gradients.filter(mask::test);
    }

    @Override
    public String toString() {
        return "masked(" + description + ", " + inner + ")";
    }
}
