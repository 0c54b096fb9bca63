package io.gradguard.core.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A float16 model whose small gradients underflow to zero without loss scaling, for each adapter's
 * float16 test: {@code y = (x · W1) · W2}, no bias, no activation, target 0, a mean squared error
 * (the framework's own; any constant factor). Every value below is exactly representable in
 * float16, so the float16 model and its float32 reference start from the same numbers.
 *
 * <p>Why the gradient of W1 underflows: {@code dL/dy} is about 1e-4 and {@code W2} about 5e-5, so
 * {@code dL/dh = dL/dy · W2ᵀ} is at most 2e-9 (1.6e-8 where the framework sums over the batch
 * instead of averaging, as DL4J does), below half of float16's smallest subnormal (6e-8): it
 * rounds to 0, and so does {@code dL/dW1 = xᵀ · dL/dh}, although its true value (1e-4 to 1e-3,
 * because x is about 2e4) is a normal float16. With the loss multiplied by 2¹⁵, {@code dL/dh} is
 * about 6e-5 and every product is representable (the largest scaled gradient is 176); divided by
 * 2¹⁵ again, the gradient of W1 equals the float32 one within float16 precision (relative error
 * 5e-4 in a numpy float16 emulation of both conventions). The gradient of W2 ({@code hᵀ · dL/dy})
 * does not underflow.
 */
public final class Float16Fixture {
    /** The batch: 8 examples, 2 inputs, from 6000 to 32000 in magnitude. */
    public static final float[][] X = new float[8][];
    /** The first weight matrix, {@code [in=2][out=2]}. */
    public static final float[][] W1 = {{0x1p-13f, 0x1p-12f}, {-3 * 0x1p-15f, 0x1p-14f}};
    /** The second weight matrix, {@code [in=2][out=1]} (float16 subnormals, exactly representable). */
    public static final float[][] W2 = {{0x1p-15f}, {-3 * 0x1p-16f}};
    /** The targets: zeros, {@code [8][1]}. */
    public static final float[][] Y = new float[8][1];
    /**
     * How close the float16 gradient must come to the float32 one, relative to the largest float32
     * entry: four float16 ulps (2⁻¹⁰ each) at that magnitude.
     */
    public static final double TOLERANCE = 4 * 0x1p-10;

    static {
        for (int i = 0; i < X.length; i++) {
            X[i] = new float[] {(i % 4 + 1) * 8000f, ((i * 3) % 5 + 1) * -6000f};
        }
    }

    private Float16Fixture() {
    }

    /** {@code w} transposed ({@code [out][in]}, as DJL and PyTorch store a linear layer's weight), flattened. */
    public static float[] transposed(float[][] w) {
        float[] out = new float[w.length * w[0].length];
        for (int i = 0; i < w.length; i++) {
            for (int o = 0; o < w[0].length; o++) {
                out[o * w.length + i] = w[i][o];
            }
        }
        return out;
    }

    /**
     * A clip by global norm that never acts (threshold 1e6): its measured norm checks that the
     * backend reduces the float16 gradients correctly (in float32 or float64: Σx² of float16 values
     * overflows at 65504).
     */
    public static io.gradguard.core.GradientTransform clip() {
        return io.gradguard.core.Transforms.clipByGlobalNorm(1e6);
    }

    /** The norm {@link #clip()} measured on this step. */
    public static double norm(io.gradguard.core.StepResult<?> r) {
        return r.metric("clipByGlobalNorm.norm").orElseThrow();
    }

    /** Asserts that the float16 step measured the float32 global norm within {@link #TOLERANCE}. */
    public static void assertNormClose(double float32, io.gradguard.core.StepResult<?> float16, String what) {
        assertTrue(float32 > 0 && Math.abs(norm(float16) - float32) <= TOLERANCE * float32,
                what + ": float32 norm " + float32 + ", float16 " + norm(float16));
    }

    /** Asserts that every entry is exactly 0: the gradient underflowed. */
    public static void assertAllZero(float[] gradient, String what) {
        for (int i = 0; i < gradient.length; i++) {
            assertEquals(0f, Math.abs(gradient[i]), 0f, what + "[" + i + "] underflows to 0 in float16");
        }
    }

    /**
     * Asserts that a float16 gradient equals the float32 one within {@link #TOLERANCE} of the
     * largest float32 entry, and that the float32 one is not zero.
     */
    public static void assertCloseToFloat32(float[] float32, float[] float16, String what) {
        assertEquals(float32.length, float16.length, what + ": length");
        double max = 0;
        for (float v : float32) {
            max = Math.max(max, Math.abs(v));
        }
        assertTrue(max > 0, what + ": the float32 gradient is not zero");
        for (int i = 0; i < float32.length; i++) {
            assertTrue(float16[i] != 0 && Math.abs(float16[i] - float32[i]) <= TOLERANCE * max,
                    what + "[" + i + "]: float32 " + float32[i] + ", float16 " + float16[i] + " (tolerance " + TOLERANCE * max + ")");
        }
    }
}
