package io.gradguard.core.conformance;

import java.util.Arrays;

/**
 * Per-unit L2 norms by plain loops over a row-major array, the independent side of the adapters'
 * layout tests: a unit is one index of the kept axes, and its norm sums the squares of every element
 * with that index. {@code unitNorms(x, {2, 3}, 1)} gives the three column norms of a 2×3 matrix;
 * with no kept axis the whole array is one unit.
 */
public final class UnitNormLoops {
    private UnitNormLoops() {
    }

    /**
     * @param x    the elements, row-major (C order)
     * @param shape the array's shape
     * @param kept the axes that index the units, in increasing order (the result is row-major over them)
     * @return one norm per unit
     * @throws IllegalArgumentException if {@code x} does not have {@code shape}'s element count
     */
    public static double[] unitNorms(double[] x, long[] shape, int... kept) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        if (n != x.length) {
            throw new IllegalArgumentException("x must have " + n + " elements for shape " + Arrays.toString(shape) + ", got " + x.length);
        }
        int units = 1;
        for (int a : kept) {
            units *= (int) shape[a];
        }
        double[] sums = new double[units];
        int[] idx = new int[shape.length];
        for (double v : x) {
            int unit = 0;
            for (int a : kept) {
                unit = unit * (int) shape[a] + idx[a];
            }
            sums[unit] += v * v;
            for (int a = shape.length - 1; a >= 0 && ++idx[a] == shape[a]; a--) {
                idx[a] = 0;
            }
        }
        return Arrays.stream(sums).map(Math::sqrt).toArray();
    }
}
