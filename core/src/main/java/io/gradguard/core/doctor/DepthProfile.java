package io.gradguard.core.doctor;

import java.util.ArrayList;
import java.util.List;

/**
 * The per-layer gradient norms of one step across depth, in model order (input first), and how
 * they change from one layer to the next going from the output down, the direction
 * backpropagation travels. A factor below 1 means the gradient shrinks on its way down
 * (vanishing through depth), above 1 that it grows (exploding through depth).
 *
 * <pre>{@code
 * profile.meanFactor()   // 0.3: "gradients shrink x0.3 per layer from the output down"
 * }</pre>
 *
 * @param step   the optimizer step measured
 * @param layers the layers, in model order
 * @param norms  each layer's gradient L2 norm (before clipping), same order
 */
public record DepthProfile(long step, List<String> layers, List<Double> norms) {

    /** Copies the lists. @throws IllegalArgumentException if their sizes differ */
    public DepthProfile {
        layers = List.copyOf(layers);
        norms = List.copyOf(norms);
        if (layers.size() != norms.size()) {
            throw new IllegalArgumentException("norms must hold one norm per layer (" + layers.size() + "), got " + norms.size());
        }
    }

    /**
     * For each layer but the last, its norm divided by the norm of the layer above it
     * ({@code norm[i] / norm[i + 1]}): the factor the gradient picks up passing down through layer i+1.
     */
    public List<Double> factors() {
        List<Double> out = new ArrayList<>();
        for (int i = 0; i + 1 < norms.size(); i++) {
            out.add(norms.get(i) / norms.get(i + 1));
        }
        return out;
    }

    /**
     * The geometric mean factor per layer from the output down,
     * {@code (norm[first] / norm[last])^(1 / (layers - 1))}; NaN with fewer than two layers or a
     * zero norm at either end.
     */
    public double meanFactor() {
        if (norms.size() < 2) {
            return Double.NaN;
        }
        double first = norms.get(0);
        double last = norms.get(norms.size() - 1);
        return first > 0 && last > 0 ? Math.pow(first / last, 1.0 / (norms.size() - 1)) : Double.NaN;
    }

    /** "gradients shrink x0.30 per layer from the output down (dense8 1.2e-01 -> dense0 3.4e-05)". */
    public String describe() {
        double f = meanFactor();
        if (Double.isNaN(f)) {
            return norms.size() < 2 ? "one layer only" : "a layer with a zero gradient at the end of the profile";
        }
        String trend = f < 1 ? "shrink" : "grow";
        return "gradients " + trend + " " + Text.factor(f) + " per layer from the output down (" + layers.get(layers.size() - 1) + " "
                + Text.sci(norms.get(norms.size() - 1)) + " -> " + layers.get(0) + " " + Text.sci(norms.get(0)) + ")";
    }

    /** One line per layer from the output down: name, norm, factor relative to the layer above. */
    public String table() {
        StringBuilder b = new StringBuilder();
        List<Double> f = factors();
        for (int i = norms.size() - 1; i >= 0; i--) {
            b.append(String.format(java.util.Locale.ROOT, "    %-24s %10s  %s%n", layers.get(i), Text.sci(norms.get(i)),
                    i == norms.size() - 1 ? "(output end)" : Text.factor(f.get(i))));
        }
        return b.toString();
    }
}
