package io.gradguard.core.conformance;

import java.util.Random;

/**
 * The data of the adapters' attention tests: a sequence of {@link #STEPS} tokens with
 * {@link #FEATURES} features (a marker, a value, noise); exactly one token is marked, and the
 * target is that token's value. A model must route the marked token's value to its output, which a
 * one-block self-attention model does; order does not matter (no positional encoding needed).
 * Predicting the mean gives a mean squared error of about 1.
 *
 * <pre>{@code
 * MarkedValueTask.Batch b = MarkedValueTask.batch(16, seed);   // b.x(): [16, 6, 3] row-major, b.y(): [16]
 * }</pre>
 */
public final class MarkedValueTask {
    /** Tokens per sequence. */
    public static final int STEPS = 6;
    /** Features per token: marker (1 on the marked token, else 0), value N(0, 1), noise N(0, 1). */
    public static final int FEATURES = 3;

    private MarkedValueTask() {
    }

    /**
     * @param x [n, STEPS, FEATURES], row-major (batch, time, feature)
     * @param y [n]: the marked token's value
     */
    public record Batch(float[] x, float[] y, int n) {
    }

    /** {@code n} sequences drawn from {@code seed}. */
    public static Batch batch(int n, long seed) {
        Random r = new Random(seed);
        float[] x = new float[n * STEPS * FEATURES];
        float[] y = new float[n];
        for (int i = 0; i < n; i++) {
            int marked = r.nextInt(STEPS);
            for (int t = 0; t < STEPS; t++) {
                int at = (i * STEPS + t) * FEATURES;
                x[at] = t == marked ? 1f : 0f;
                x[at + 1] = (float) r.nextGaussian();
                x[at + 2] = (float) r.nextGaussian();
                if (t == marked) {
                    y[i] = x[at + 1];
                }
            }
        }
        return new Batch(x, y, n);
    }
}
