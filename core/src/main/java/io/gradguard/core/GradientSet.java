package io.gradguard.core;

import io.gradguard.core.internal.Checks;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Predicate;

/**
 * The gradients of one model for one step, in a fixed order: what a pipeline transforms.
 * Adapters build one from their framework's parameters; the tensors inside are the framework's
 * own gradient storage and are changed in place.
 *
 * <pre>{@code
 * GradientSet<float[]> g = GradientSet.of(List.of(
 *     new GradientTensor<>("w", new long[] {2, 2}, Role.WEIGHT, "dense", Layout.outputLast(), gw)));
 * }</pre>
 *
 * @param <T> the backend's tensor type
 */
public final class GradientSet<T> implements Iterable<GradientTensor<T>> {
    private final List<GradientTensor<T>> tensors;

    private GradientSet(List<GradientTensor<T>> tensors) {
        this.tensors = tensors;
    }

    /**
     * @throws IllegalArgumentException if two tensors share a name or an entry is null
     */
    public static <T> GradientSet<T> of(List<GradientTensor<T>> tensors) {
        Checks.notNull("tensors", tensors);
        Set<String> names = new HashSet<>();
        for (GradientTensor<T> t : tensors) {
            Checks.notNull("tensor", t);
            Checks.require(names.add(t.name()), "tensor names", "be unique", t.name());
        }
        return new GradientSet<>(List.copyOf(tensors));
    }

    @SafeVarargs
    public static <T> GradientSet<T> of(GradientTensor<T>... tensors) {
        return of(List.of(tensors));
    }

    public List<GradientTensor<T>> tensors() {
        return tensors;
    }

    public int size() {
        return tensors.size();
    }

    public boolean isEmpty() {
        return tensors.isEmpty();
    }

    public GradientTensor<T> get(int i) {
        return tensors.get(i);
    }

    /** The tensors whose metadata matches, in order (a view for masked transforms). */
    public GradientSet<T> filter(Predicate<? super GradientTensor<T>> keep) {
        List<GradientTensor<T>> out = new ArrayList<>();
        for (GradientTensor<T> t : tensors) {
            if (keep.test(t)) {
                out.add(t);
            }
        }
        return new GradientSet<>(Collections.unmodifiableList(out));
    }

    /** The tensors grouped by layer, in order of first appearance. */
    public Map<String, List<GradientTensor<T>>> byLayer() {
        Map<String, List<GradientTensor<T>>> out = new LinkedHashMap<>();
        for (GradientTensor<T> t : tensors) {
            out.computeIfAbsent(t.layer(), k -> new ArrayList<>()).add(t);
        }
        return out;
    }

    /** Total number of gradient elements. */
    public long elementCount() {
        long n = 0;
        for (GradientTensor<T> t : tensors) {
            n += t.size();
        }
        return n;
    }

    @Override
    public Iterator<GradientTensor<T>> iterator() {
        return tensors.iterator();
    }

    @Override
    public String toString() {
        return tensors.toString();
    }
}
