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
