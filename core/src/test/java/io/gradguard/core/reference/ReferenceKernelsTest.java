package io.gradguard.core.reference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The reference backend's fast paths (per-unit reductions and scales, chunked parallel loops,
 * branch-free clamp) against plain element-by-element definitions, on small tensors and on
 * tensors large enough to run on all cores.
 */
class ReferenceKernelsTest {
    private final ReferenceOps ops = ReferenceOps.INSTANCE;

    @Test
    void coreTestsRunTheSimdSumOfSquares() {
        // core's surefire starts the JVM with --add-modules jdk.incubator.vector (core/pom.xml); without
        // it the tests below would silently compare the scalar loop with itself. A CPU without
        // 256-bit vectors (no AVX2) has no SIMD path to test.
        org.junit.jupiter.api.Assumptions.assumeTrue(VectorKernels.supported(), "the CPU has 256- or 512-bit vectors");
        assertTrue(Kernels.SIMD, "the Vector API path is active (JVM with jdk.incubator.vector)");
    }

    @Test
    void sumOfSquaresFollowsItsDocumentedOrderBitForBitOnBothPaths() {
        SplittableRandom r = new SplittableRandom(11);
        float[] x = new float[70_000];
        for (int i = 0; i < x.length; i++) {
            // values spanning float's range: squares from 1e-76 to 1e76, all exact in float64
            x[i] = (float) (r.nextGaussian() * Math.pow(10, r.nextInt(-38, 39)));
        }
        x[17] = Float.MAX_VALUE;
        x[18] = Float.MIN_VALUE;
        for (int t = 0; t < 400; t++) {
            int lo = r.nextInt(0, 64);
            int hi = lo + (t < 40 ? t : r.nextInt(0, x.length - 64));
            long expected = Double.doubleToRawLongBits(documentedOrder(x, lo, hi));
            assertEquals(expected, Double.doubleToRawLongBits(Kernels.sumSquaresScalar(x, lo, hi)), "scalar [" + lo + ", " + hi + ")");
            assertEquals(expected, Double.doubleToRawLongBits(Kernels.sumSquares(x, lo, hi)), "SIMD [" + lo + ", " + hi + ")");
        }
    }

    @Test
    void sumOfSquaresPropagatesNonFiniteOnBothPaths() {
        for (float bad : new float[] {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}) {
            float[] x = random(100, 4);
            x[37] = bad;
            double expected = Float.isNaN(bad) ? Double.NaN : Double.POSITIVE_INFINITY;
            assertEquals(expected, Kernels.sumSquaresScalar(x, 0, 100), 0.0, "scalar with " + bad);
            assertEquals(expected, Kernels.sumSquares(x, 0, 100), 0.0, "SIMD with " + bad);
        }
    }

    /** Kernels.sumSquares's documented order, written out plainly: 16 accumulators, tail, pairwise. */
    private static double documentedOrder(float[] x, int lo, int hi) {
        double[] acc = new double[16];
        int full = lo + (hi - lo) / 16 * 16;
        for (int i = lo; i < full; i++) {
            acc[(i - lo) % 16] += (double) x[i] * x[i];
        }
        for (int i = full; i < hi; i++) {
            acc[i - full] += (double) x[i] * x[i];
        }
        double[] level = acc;
        while (level.length > 1) {
            double[] next = new double[level.length / 2];
            for (int k = 0; k < next.length; k++) {
                next[k] = level[2 * k] + level[2 * k + 1];
            }
            level = next;
        }
        return level[0];
    }

    @Test
    void perUnitSumOfSquaresMatchesDefinitionForEveryKeptAxis() {
        long[] shape = {3, 5, 4};
        float[] x = random(60, 1);
        for (int kept = 0; kept < 3; kept++) {
            int[] axes = otherAxes(3, kept);
            double[] actual = ops.sumOfSquares(ReferenceTensor.of(x.clone(), shape), axes).doubles();
            double[] expected = naiveSumSquares(x, shape, kept);
            assertArrayEquals(expected, actual, 1e-12, "kept axis " + kept);
        }
    }

    @Test
    void perUnitScaleMatchesDefinitionForEveryKeptAxis() {
        long[] shape = {3, 5, 4};
        float[] x = random(60, 2);
        for (int kept = 0; kept < 3; kept++) {
            long[] fs = {1, 1, 1};
            fs[kept] = shape[kept];
            double[] f = new double[(int) shape[kept]];
            for (int i = 0; i < f.length; i++) {
                f[i] = 0.5 + i;
            }
            ReferenceTensor t = ReferenceTensor.of(x.clone(), shape);
            ops.scaleInPlace(t, ReferenceTensor.ofDoubles(f, fs));
            int[] idx = new int[3];
            for (int i = 0; i < x.length; i++) {
                idx[0] = i / 20;
                idx[1] = i / 4 % 5;
                idx[2] = i % 4;
                assertEquals(x[i] * (float) f[idx[kept]], t.floats()[i], 0f, "kept axis " + kept + ", element " + i);
            }
        }
    }

    @Test
    void largeTensorsGiveTheSequentialDefinitionsResult() {
        int rows = 5000;
        int cols = 1024; // 5.1M values: above the parallel threshold
        assertTrue((long) rows * cols >= ReferenceOps.PARALLEL_THRESHOLD);
        float[] x = random(rows * cols, 3);
        long[] shape = {rows, cols};
        for (int kept = 0; kept < 2; kept++) {
            double[] actual = ops.sumOfSquares(ReferenceTensor.of(x, shape), otherAxes(2, kept)).doubles();
            assertArrayEquals(naiveSumSquares(x, shape, kept), actual, 1e-9, "kept axis " + kept);
        }
        double whole = ops.sumOfSquares(ReferenceTensor.of(x, shape)).get(0);
        double expected = 0;
        for (float v : x) {
            expected += (double) v * v;
        }
        assertEquals(expected, whole, 1e-9 * expected);
        assertEquals(whole, ops.sumOfSquares(ReferenceTensor.of(x, shape)).get(0), 0.0, "the same sum every time");

        for (int kept = 0; kept < 2; kept++) {
            long[] fs = {1, 1};
            fs[kept] = shape[kept];
            double[] f = new double[(int) shape[kept]];
            for (int i = 0; i < f.length; i++) {
                f[i] = 0.25 + i % 7;
            }
            float[] y = x.clone();
            ops.scaleInPlace(ReferenceTensor.of(y, shape), ReferenceTensor.ofDoubles(f, fs));
            for (int i = 0; i < y.length; i++) {
                int unit = kept == 0 ? i / cols : i % cols;
                if (y[i] != x[i] * (float) f[unit]) {
                    assertEquals(x[i] * (float) f[unit], y[i], 0f, "kept axis " + kept + ", element " + i);
                }
            }
        }
    }

    @Test
    void clampKeepsNaNAndClipsBothSides() {
        float[] x = {-3f, -0.5f, 0f, 0.5f, 3f, Float.NaN, Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY};
        ops.clampInPlace(ReferenceTensor.of(x, x.length), -1, 1);
        assertArrayEquals(new float[] {-1f, -0.5f, 0f, 0.5f, 1f, Float.NaN, -1f, 1f}, x);
    }

    private static int[] otherAxes(int rank, int kept) {
        int[] axes = new int[rank - 1];
        for (int i = 0, j = 0; i < rank; i++) {
            if (i != kept) {
                axes[j++] = i;
            }
        }
        return axes;
    }

    private static double[] naiveSumSquares(float[] x, long[] shape, int kept) {
        double[] out = new double[(int) shape[kept]];
        long inner = 1;
        for (int i = kept + 1; i < shape.length; i++) {
            inner *= shape[i];
        }
        for (int i = 0; i < x.length; i++) {
            int u = (int) (i / inner % shape[kept]);
            out[u] += (double) x[i] * x[i];
        }
        return out;
    }

    private static float[] random(int n, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return x;
    }
}
