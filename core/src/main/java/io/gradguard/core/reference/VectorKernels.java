package io.gradguard.core.reference;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * The reference backend's Σx² on JDK 17's incubating Vector API: float32 values widened to float64
 * eight (or four) at a time, squared and summed in sixteen float64 lanes, about three times the
 * scalar loop's speed (C2 on JDK 17 does not vectorize the float-to-double conversion itself).
 * The lanes follow {@link Kernels#sumSquares(float[], int, int)} exactly (lane k sums
 * x[lo + 16m + k]; the square of a float is exact in float64, so only the add rounds, as in the
 * scalar loop; a plain multiply and add, not {@code fma}, which a CPU without FMA would emulate
 * slowly), and the same code finishes both: the two paths return the same bits.
 *
 * <p>Loaded only when {@link Kernels#SIMD} found the module; otherwise never touched, so the
 * library runs on a JVM without {@code --add-modules jdk.incubator.vector}.
 */
final class VectorKernels {
    private static final VectorSpecies<Double> DOUBLES = DoubleVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Float> FLOATS =
            VectorSpecies.of(float.class, VectorShape.forBitSize(DOUBLES.length() * Float.SIZE));

    private VectorKernels() {
    }

    /** Whether the CPU's preferred vectors hold 8 or 4 doubles (AVX-512, AVX2): the two layouts below. */
    static boolean supported() {
        return DOUBLES.length() == 8 || DOUBLES.length() == 4;
    }

    /** Σ x² over [lo, hi), bit-identical to the scalar {@link Kernels#sumSquares(float[], int, int)}. */
    static double sumSquares(float[] x, int lo, int hi) {
        return DOUBLES.length() == 8 ? sumSquares8(x, lo, hi) : sumSquares4(x, lo, hi);
    }

    private static double sumSquares8(float[] x, int lo, int hi) {
        DoubleVector a0 = DoubleVector.zero(DOUBLES);
        DoubleVector a1 = DoubleVector.zero(DOUBLES);
        int i = lo;
        for (; i + 15 < hi; i += 16) {
            DoubleVector d0 = widen(x, i);
            DoubleVector d1 = widen(x, i + 8);
            a0 = a0.add(d0.mul(d0));
            a1 = a1.add(d1.mul(d1));
        }
        double[] acc = new double[Kernels.LANES];
        a0.intoArray(acc, 0);
        a1.intoArray(acc, 8);
        return Kernels.finishSumSquares(acc, x, i, hi);
    }

    private static double sumSquares4(float[] x, int lo, int hi) {
        DoubleVector a0 = DoubleVector.zero(DOUBLES);
        DoubleVector a1 = DoubleVector.zero(DOUBLES);
        DoubleVector a2 = DoubleVector.zero(DOUBLES);
        DoubleVector a3 = DoubleVector.zero(DOUBLES);
        int i = lo;
        for (; i + 15 < hi; i += 16) {
            DoubleVector d0 = widen(x, i);
            DoubleVector d1 = widen(x, i + 4);
            DoubleVector d2 = widen(x, i + 8);
            DoubleVector d3 = widen(x, i + 12);
            a0 = a0.add(d0.mul(d0));
            a1 = a1.add(d1.mul(d1));
            a2 = a2.add(d2.mul(d2));
            a3 = a3.add(d3.mul(d3));
        }
        double[] acc = new double[Kernels.LANES];
        a0.intoArray(acc, 0);
        a1.intoArray(acc, 4);
        a2.intoArray(acc, 8);
        a3.intoArray(acc, 12);
        return Kernels.finishSumSquares(acc, x, i, hi);
    }

    private static DoubleVector widen(float[] x, int i) {
        return (DoubleVector) FloatVector.fromArray(FLOATS, x, i).convertShape(VectorOperators.F2D, DOUBLES, 0);
    }
}
