package io.gradguard.dl4j;

import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.util.IdentityHashMap;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * {@link Nd4jOps} on arrays whose true values are a <em>pending factor</em> × their stored values:
 * how a {@link Dl4jGuard} shows the pipeline DL4J's gradient as the batch MEAN while DL4J's views
 * hold the SUM over the minibatch, without a pass over the gradient to divide it.
 *
 * <p>DL4J's backprop leaves the sum in the gradient views and its updater divides by the batch size
 * afterwards; GradGuard's thresholds mean the norm of the mean gradient, as DL4J's own
 * {@code GradientNormalization} does. So each view gets a pending factor of 1/batch
 * ({@link #setFactor}) and every primitive folds it into its result instead of scaling the array:
 * Σx² × factor², a clamp bound ÷ factor, an axpy's alpha × factor, a copy scaled on the way. A
 * clip coefficient in (0, 1) joins the factor ({@link #scaleInPlace}) rather than costing a pass;
 * {@link #settle} then applies what is pending in one pass, or in none when the view should hold
 * exactly what it stores (DL4J's sum, untouched by the pipeline). A write that cannot keep the
 * factor exactly (a fill, a copy from an array with another factor, a bound that does not survive
 * the division in the array's type) stores true values and drops the factor.
 *
 * <p>Arrays without a pending factor (pipeline state, reductions, scalars) go straight to
 * {@link Nd4jOps}, so this class costs an identity-map lookup per primitive and nothing else.
 *
 * <pre>{@code
 * PendingFactorOps ops = new PendingFactorOps(new Nd4jOps());
 * ops.setFactor(view, 1.0 / batch);          // the view holds DL4J's sum; the pipeline sees the mean
 * pipeline.step(gradients, ops, context);    // a clip's coefficient joins the factor
 * ops.settle(view, 1.0);                     // one pass: the view holds the (clipped) mean
 * ops.releaseTemporaries();
 * }</pre>
 *
 * <p>Not thread-safe, as {@link Nd4jOps}.
 */
final class PendingFactorOps implements TensorOps<INDArray> {
    /**
     * The smallest factor a coefficient may leave pending: far from float32's subnormals (the
     * factor is cast to the array's type when applied) and from float64 underflow of factor²
     * (norms fold in factor²); a smaller product is multiplied into the array at once.
     */
    private static final double MIN_JOINED_FACTOR = 1e-30;

    private final Nd4jOps ops;
    /** The true value of a key array is factor × its stored value. */
    private final Map<INDArray, Double> factors = new IdentityHashMap<>();

    PendingFactorOps(Nd4jOps ops) {
        this.ops = Checks.notNull("ops", ops);
    }

    /** The primitives this class folds pending factors into. */
    Nd4jOps nd4j() {
        return ops;
    }

    /**
     * Declares that {@code x}'s true values are {@code factor} × its stored values, until
     * {@link #settle}, a write that drops it, or {@link #release}.
     *
     * @throws IllegalArgumentException if the factor is not in (0, 1]
     */
    void setFactor(INDArray x, double factor) {
        Checks.require(factor > 0 && factor <= 1, "factor", "be in (0, 1]", factor);
        if (factor == 1.0) {
            factors.remove(x);
        } else {
            factors.put(x, factor);
        }
    }

    /** {@code x}'s pending factor: 1 if it has none. */
    double factor(INDArray x) {
        Double f = factors.get(x);
        return f == null ? 1.0 : f;
    }

    /**
     * Leaves {@code x} holding its true values divided by {@code factor} and forgets its pending
     * factor: no work when its pending factor is still {@code factor}, one pass otherwise. A pass
     * by 1/n for a whole n divides by n, as DL4J's updater divides by the batch size, so that the
     * result is the same bits as DL4J's own division.
     */
    void settle(INDArray x, double factor) {
        double f = factor(x);
        factors.remove(x);
        if (f == factor || x.isEmpty()) {
            return;
        }
        double c = f / factor;
        double n = wholeInverse(c);
        if (n > 0) {
            x.divi(n);
        } else {
            x.muli(c);
        }
    }

    /** Frees the step's temporaries ({@link Nd4jOps#releaseTemporaries()}). */
    int releaseTemporaries() {
        return ops.releaseTemporaries();
    }

    @Override
    public String toString() {
        return "PendingFactorOps[" + ops + "]";
    }

    // ---- host transfer and long-lived arrays -------------------------------------------------

    @Override
    public long[] shape(INDArray x) {
        return ops.shape(x);
    }

    @Override
    public INDArray scalar(double value) {
        return ops.scalar(value);
    }

    @Override
    public double toHost(INDArray scalar) {
        return ops.toHost(scalar) * factor(scalar);
    }

    @Override
    public float[] toHostArray(INDArray x) {
        float[] out = ops.toHostArray(x);
        double f = factor(x);
        if (f != 1.0) {
            for (int i = 0; i < out.length; i++) {
                out[i] = (float) (out[i] * f);
            }
        }
        return out;
    }

    @Override
    public double[] toHostDoubles(INDArray x) {
        double[] out = ops.toHostDoubles(x);
        double f = factor(x);
        if (f != 1.0) {
            for (int i = 0; i < out.length; i++) {
                out[i] *= f;
            }
        }
        return out;
    }

    @Override
    public INDArray fromHost(float[] data, long[] shape) {
        return ops.fromHost(data, shape);
    }

    @Override
    public INDArray fromHost(double[] data, long[] shape) {
        return ops.fromHost(data, shape);
    }

    @Override
    public INDArray zerosLike(INDArray like) {
        return ops.zerosLike(like);
    }

    @Override
    public void release(INDArray x) {
        factors.remove(x);
        ops.release(x);
    }

    @Override
    public boolean supportsFloat64() {
        return ops.supportsFloat64();
    }

    @Override
    public boolean isFloat64(INDArray x) {
        return ops.isFloat64(x);
    }

    @Override
    public boolean accumulatesInDouble() {
        return ops.accumulatesInDouble();
    }

    // ---- reductions: the factor folds into the result ------------------------------------------

    @Override
    public INDArray sumOfSquares(INDArray x) {
        double f = factor(x);
        return times(ops.sumOfSquares(x), f * f);
    }

    @Override
    public INDArray sumOfAbs(INDArray x) {
        return times(ops.sumOfAbs(x), factor(x));
    }

    @Override
    public INDArray maxAbs(INDArray x) {
        return times(ops.maxAbs(x), factor(x));
    }

    @Override
    public INDArray countNonFinite(INDArray x) {
        return ops.countNonFinite(x); // a positive factor changes no value's finiteness
    }

    @Override
    public INDArray sumOfSquares(INDArray x, int[] axes) {
        double f = factor(x);
        return times(ops.sumOfSquares(x, axes), f * f);
    }

    @Override
    public INDArray mean(INDArray x, int[] axes) {
        return times(ops.mean(x, axes), factor(x));
    }

    // ---- functional math: on true values ------------------------------------------------------

    @Override
    public INDArray add(INDArray a, INDArray b) {
        return ops.add(trueValues(a), trueValues(b));
    }

    @Override
    public INDArray mul(INDArray a, INDArray b) {
        return ops.mul(trueValues(a), trueValues(b));
    }

    @Override
    public INDArray div(INDArray a, INDArray b) {
        return ops.div(trueValues(a), trueValues(b));
    }

    @Override
    public INDArray min(INDArray a, INDArray b) {
        return ops.min(trueValues(a), trueValues(b));
    }

    @Override
    public INDArray max(INDArray a, INDArray b) {
        return ops.max(trueValues(a), trueValues(b));
    }

    @Override
    public INDArray sqrt(INDArray a) {
        return ops.sqrt(trueValues(a));
    }

    // ---- in-place updates: the factor is kept where that is exact ------------------------------

    /**
     * {@inheritDoc}
     *
     * <p>On an array with a pending factor a one-element coefficient in (0, 1) joins that factor,
     * with no pass: {@link #settle} applies both in the one pass it makes anyway (for the
     * {@link Dl4jGuard}'s step driver, the division by the batch size). Zero, NaN, a float16
     * array and a product that would leave the normal range are multiplied in at once.
     */
    @Override
    public void scaleInPlace(INDArray x, INDArray factor) {
        Double pending = factors.get(x);
        if (pending != null && factor.length() == 1 && !x.isEmpty()) {
            double c = toHost(factor);
            if (c > 0 && c < 1 && pending * c >= MIN_JOINED_FACTOR
                    && (x.dataType() == DataType.FLOAT || x.dataType() == DataType.DOUBLE)) {
                factors.put(x, pending * c);
                return;
            }
        }
        ops.scaleInPlace(x, trueValues(factor));
    }

    @Override
    public void addInPlace(INDArray x, INDArray y, double alpha) {
        // x_true + alpha·y_true = fx·(x + alpha·fy/fx · y)
        ops.addInPlace(x, y, alpha * factor(y) / factor(x));
    }

    @Override
    public void clampInPlace(INDArray x, double lo, double hi) {
        double f = keepFactorFor(x, lo, hi);
        ops.clampInPlace(x, stored(lo, f), stored(hi, f));
    }

    @Override
    public void replaceNonFinite(INDArray x, double nan, double posInf, double negInf) {
        double f = keepFactorFor(x, nan, posInf, negInf);
        ops.replaceNonFinite(x, stored(nan, f), stored(posInf, f), stored(negInf, f));
    }

    /** Copies {@code src}'s true values; {@code dst} keeps its pending factor only when {@code src} has the same one. */
    @Override
    public void assign(INDArray dst, INDArray src) {
        double fs = factor(src);
        if (fs != factor(dst)) {
            factors.remove(dst);
            if (fs != 1.0) {
                ops.assignScaled(dst, src, fs);
                return;
            }
        }
        ops.assign(dst, src);
    }

    @Override
    public void fill(INDArray x, double value) {
        factors.remove(x); // every element is overwritten: no factor to keep
        ops.fill(x, value);
    }

    // ---- helpers ------------------------------------------------------------------------------

    /** {@code a}'s true values: {@code a} itself without a pending factor, else a step temporary holding factor × a. */
    private INDArray trueValues(INDArray a) {
        double f = factor(a);
        return f == 1.0 ? a : ops.scaledCopy(a, f);
    }

    /** A reduction's temporary z times c, in place, or z itself when c is 1. */
    private static INDArray times(INDArray z, double c) {
        if (c == 1.0) {
            return z;
        }
        if (z.length() == 1) {
            z.putScalar(0, z.getDouble(0) * c);
            return z;
        }
        return z.muli(c);
    }

    /**
     * The factor {@code x} keeps while {@code values} are written into it (stored as
     * {@link #stored value × n} for a factor of 1/n): its pending factor when that factor is 1/n for a
     * whole n (the batch factor; {@link #settle} then divides by n, as DL4J does) and every value
     * comes back exactly from that division in x's type; else 1, after scaling x to its true values
     * (one pass) and dropping its factor. A factor a clip coefficient joined is thus applied before
     * a clamp, so the clamp's bound holds to the last bit.
     */
    private double keepFactorFor(INDArray x, double... values) {
        double f = factor(x);
        if (f == 1.0) {
            return 1.0;
        }
        double n = wholeInverse(f);
        boolean keep = n > 0;
        for (double v : values) {
            keep &= storable(v, n, x.dataType());
        }
        if (!keep) {
            settle(x, 1.0);
            return 1.0;
        }
        return f;
    }

    /** v as stored in an array with pending factor f (1, or 1/n for a whole n: see {@link #keepFactorFor}). */
    private static double stored(double v, double f) {
        return f == 1.0 ? v : v * wholeInverse(f);
    }

    /** Whether v · n, stored in type t and divided by n there (as {@link #settle} and DL4J do), gives v as t holds it. */
    private static boolean storable(double v, double n, DataType t) {
        if (Double.isNaN(v)) {
            return true;
        }
        double s = v * n;
        return switch (t) {
            case DOUBLE -> s / n == v;
            case FLOAT -> (float) ((float) s / n) == (float) v; // float ÷ whole n ≤ 2^24: double then float rounds once
            default -> false;
        };
    }

    /**
     * n when f is exactly 1/n (as a double) for a whole n from 1 to 2^24 (a batch size, times
     * micro-batches: exact in float32), else 0.
     */
    private static double wholeInverse(double f) {
        double n = Math.rint(1.0 / f);
        return n >= 1 && n <= (1 << 24) && 1.0 / n == f ? n : 0;
    }
}
