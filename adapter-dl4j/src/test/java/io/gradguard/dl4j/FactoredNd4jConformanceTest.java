package io.gradguard.dl4j;

import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import java.util.List;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Every {@link io.gradguard.core.spi.TensorOps} primitive of {@link PendingFactorOps} is correct on
 * arrays with a pending factor (how a {@link Dl4jGuard} presents DL4J's minibatch sum as the mean):
 * the whole conformance kit runs on a backend whose {@code fromHost} arrays store each value × 64
 * with a pending factor of 1/64, as DL4J's gradient views do for a batch of 64 (float32 reductions;
 * {@link FactoredNd4jFloat64ConformanceTest} runs the float64 ones). An array whose values × 64
 * overflow its type (no DL4J sum can hold them) is stored plainly.
 */
class FactoredNd4jConformanceTest extends ConformanceKit<INDArray> {
    static final double B = 64;

    private final PendingFactorOps ops = new PendingFactorOps(new Nd4jOps());
    private final TensorOps<INDArray> factored = new Factored(ops);

    @Override
    protected TensorOps<INDArray> ops() {
        return factored;
    }

    @Override
    protected void cleanUp() {
        ops.releaseTemporaries();
    }

    /** {@link PendingFactorOps} with factored {@code fromHost} arrays; every other primitive delegates. */
    static final class Factored implements TensorOps<INDArray> {
        private final PendingFactorOps ops;

        Factored(PendingFactorOps ops) {
            this.ops = ops;
        }
        @Override
        public INDArray fromHost(float[] data, long[] shape) {
            float[] stored = new float[data.length];
            boolean fits = true;
            for (int i = 0; i < data.length; i++) {
                stored[i] = (float) (data[i] * B);
                fits &= Float.isFinite(stored[i]) || !Float.isFinite(data[i]);
            }
            INDArray a = ops.fromHost(fits ? stored : data, shape);
            if (fits) {
                ops.setFactor(a, 1 / B);
            }
            return a;
        }

        @Override
        public INDArray fromHost(double[] data, long[] shape) {
            double[] stored = new double[data.length];
            boolean fits = true;
            for (int i = 0; i < data.length; i++) {
                stored[i] = data[i] * B;
                fits &= Double.isFinite(stored[i]) || !Double.isFinite(data[i]);
            }
            INDArray a = ops.fromHost(fits ? stored : data, shape);
            if (fits) {
                ops.setFactor(a, 1 / B);
            }
            return a;
        }

        // ---- delegated ----

        @Override public long[] shape(INDArray x) { return ops.shape(x); }
        @Override public INDArray scalar(double value) { return ops.scalar(value); }
        @Override public double toHost(INDArray scalar) { return ops.toHost(scalar); }
        @Override public double[] toHost(List<INDArray> scalars) { return ops.toHost(scalars); }
        @Override public float[] toHostArray(INDArray x) { return ops.toHostArray(x); }
        @Override public INDArray zerosLike(INDArray like) { return ops.zerosLike(like); }
        @Override public void release(INDArray x) { ops.release(x); }
        @Override public INDArray sumOfSquares(INDArray x) { return ops.sumOfSquares(x); }
        @Override public INDArray sumOfAbs(INDArray x) { return ops.sumOfAbs(x); }
        @Override public INDArray maxAbs(INDArray x) { return ops.maxAbs(x); }
        @Override public INDArray countNonFinite(INDArray x) { return ops.countNonFinite(x); }
        @Override public INDArray sumOfSquares(INDArray x, int[] axes) { return ops.sumOfSquares(x, axes); }
        @Override public INDArray mean(INDArray x, int[] axes) { return ops.mean(x, axes); }
        @Override public INDArray add(INDArray a, INDArray b) { return ops.add(a, b); }
        @Override public INDArray mul(INDArray a, INDArray b) { return ops.mul(a, b); }
        @Override public INDArray div(INDArray a, INDArray b) { return ops.div(a, b); }
        @Override public INDArray min(INDArray a, INDArray b) { return ops.min(a, b); }
        @Override public INDArray max(INDArray a, INDArray b) { return ops.max(a, b); }
        @Override public INDArray sqrt(INDArray a) { return ops.sqrt(a); }
        @Override public void scaleInPlace(INDArray x, INDArray factor) { ops.scaleInPlace(x, factor); }
        @Override public void addInPlace(INDArray x, INDArray y, double alpha) { ops.addInPlace(x, y, alpha); }
        @Override public void clampInPlace(INDArray x, double lo, double hi) { ops.clampInPlace(x, lo, hi); }
        @Override public void replaceNonFinite(INDArray x, double nan, double posInf, double negInf) { ops.replaceNonFinite(x, nan, posInf, negInf); }
        @Override public void assign(INDArray dst, INDArray src) { ops.assign(dst, src); }
        @Override public void fill(INDArray x, double value) { ops.fill(x, value); }
        @Override public boolean accumulatesInDouble() { return ops.accumulatesInDouble(); }
        @Override public boolean supportsFloat64() { return ops.supportsFloat64(); }
        @Override public boolean isFloat64(INDArray x) { return ops.isFloat64(x); }
        @Override public double[] toHostDoubles(INDArray x) { return ops.toHostDoubles(x); }
    }
}
