package io.gradguard.examples.compare;

/**
 * One training batch in the canonical layout: inputs {@code [batch, features]} (MLP) or
 * {@code [batch, time, features]} (RNN), row-major, and one target per example.
 *
 * @param x      the inputs, row-major
 * @param xShape their shape
 * @param y      the targets, one per example
 */
public record Batch(float[] x, long[] xShape, float[] y) {

    /** Examples in the batch. */
    public int size() {
        return y.length;
    }

    /**
     * The inputs as {@code [batch, features, time]} (DL4J's recurrent layout), row-major.
     *
     * @throws IllegalStateException if this is not a sequence batch
     */
    public float[] xBatchFeatureTime() {
        if (xShape.length != 3) {
            throw new IllegalStateException("xBatchFeatureTime() is for sequence batches; this one has shape " + java.util.Arrays.toString(xShape));
        }
        int b = (int) xShape[0];
        int t = (int) xShape[1];
        int f = (int) xShape[2];
        float[] out = new float[x.length];
        for (int i = 0; i < b; i++) {
            for (int s = 0; s < t; s++) {
                for (int k = 0; k < f; k++) {
                    out[(i * f + k) * t + s] = x[(i * t + s) * f + k];
                }
            }
        }
        return out;
    }
}
