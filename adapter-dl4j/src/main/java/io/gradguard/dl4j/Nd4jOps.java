package io.gradguard.dl4j;

import io.gradguard.core.spi.TensorOps;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.impl.reduce.floating.Mean;
import org.nd4j.linalg.api.ops.impl.reduce.floating.Norm1;
import org.nd4j.linalg.api.ops.impl.reduce.floating.NormMax;
import org.nd4j.linalg.api.ops.impl.reduce.floating.SquaredNorm;
import org.nd4j.linalg.api.ops.impl.reduce.longer.MatchCondition;
import org.nd4j.linalg.api.ops.impl.scalar.ScalarMultiplication;
import org.nd4j.linalg.api.ops.impl.transforms.clip.ClipByValue;
import org.nd4j.linalg.api.ops.impl.transforms.comparison.CompareAndSet;
import org.nd4j.linalg.api.ops.impl.transforms.custom.Max;
import org.nd4j.linalg.api.ops.impl.transforms.custom.Min;
import org.nd4j.linalg.api.ops.impl.transforms.floating.Sqrt;
import org.nd4j.linalg.api.ops.impl.transforms.pairwise.arithmetic.AddOp;
import org.nd4j.linalg.api.ops.impl.transforms.pairwise.arithmetic.Axpy;
import org.nd4j.linalg.api.ops.impl.transforms.pairwise.arithmetic.DivOp;
import org.nd4j.linalg.api.ops.impl.transforms.pairwise.arithmetic.MulOp;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.conditions.Conditions;

/**
 * GradGuard's tensor primitives on ND4J arrays ({@link INDArray}), with ND4J's native ops, on the
 * arrays' own off-heap (or device) memory: gradients never travel to the Java heap, and only a
 * scalar a decision or a monitor needs is ever read back.
 *
 * <p><b>Precision.</b> By default reductions run in the gradient's dtype, as DL4J's own
 * {@code GradientNormalization}, TensorFlow's {@code tf.clip_by_global_norm} and PyTorch's
 * {@code clip_grad_norm_} do: Σx² and Σ|x| of a contiguous float32 array are one vectorised BLAS
 * pass in float32 ({@code sdot(x, x)}, {@code sasum(x)}), and only the per-tensor result is widened
 * to a float64 scalar, so sums across tensors, norms and coefficients are float64.
 * {@link #accumulatesInDouble()} is then {@code false}: Σx² of float32 values near 1e30 overflows
 * to infinity, near 1e-30 underflows to 0. {@link #accumulateInDouble()} asks for float64
 * reductions (a float32 gradient is reduced straight into a float64 result, libnd4j accumulating in
 * the result's type, with no float64 copy) where that range matters more than speed: libnd4j's
 * float64 reduction of a float32 array is several times slower than the BLAS pass. Per-unit sums of squares ({@link #sumOfSquares(INDArray, int[])}) are
 * float64 either way (libnd4j's float32 loop is no faster), max-abs is exact in any type, and
 * float64 arrays always reduce in float64. Scalars and per-unit coefficients are float64; in-place
 * updates keep the target's type.
 *
 * <p><b>Temporaries.</b> Every array this backend creates for a reduction, a scalar or functional
 * math is a temporary of the current step: {@link #releaseTemporaries()} closes them all and frees
 * their off-heap memory at once. The adapters call it after each pipeline step (after the
 * pipeline's listeners ran and the step's metrics were copied to the host); whoever drives a
 * pipeline by hand does the same. Arrays made by {@link #zerosLike} and {@link #fromHost} are
 * long-lived (pipeline state) and freed by {@link #release}. All arrays are created outside any
 * ND4J workspace, so a step inside a DL4J workspace scope cannot invalidate pipeline state.
 *
 * <pre>{@code
 * Nd4jOps ops = new Nd4jOps();
 * StepResult<INDArray> r = pipeline.step(gradients, ops, StepContext.ofBatch(32));
 * double norm = r.metric("clipByGlobalNorm.norm").orElse(Double.NaN);
 * ops.releaseTemporaries();
 * }</pre>
 *
 * <p>One instance serves one training loop: it is not thread-safe (it tracks its temporaries).
 *
 * <p>Non-finite values follow IEEE 754 as the SPI requires: NaN propagates through every
 * reduction and through {@link #min}/{@link #max} (libnd4j's own max/min and max-abs reduction
 * drop a NaN in some positions; this class corrects that).
 */
public final class Nd4jOps implements TensorOps<INDArray> {
    private final List<INDArray> temporaries = new ArrayList<>();
    /** Pending factors: the true value of a key array is factor × its stored value (see {@link #setFactor}). */
    private final Map<INDArray, Double> factors = new IdentityHashMap<>();
    private boolean doubleAccumulation;

    /** A new backend with no temporaries, reducing float32 arrays in float32 (see "Precision"). */
    public Nd4jOps() {
    }

    /**
     * Makes reductions accumulate in float64 (see "Precision" in the class comment): slower on
     * float32 gradients, but Σx² of values near 1e30 or 1e-30 stays finite and non-zero. Takes
     * effect from the next reduction.
     *
     * <pre>{@code
     * Nd4jOps ops = new Nd4jOps().accumulateInDouble();
     * }</pre>
     *
     * @return this
     */
    public Nd4jOps accumulateInDouble() {
        doubleAccumulation = true;
        return this;
    }

    /**
     * Declares that {@code x}'s true values are {@code factor} × its stored values, until
     * {@link #settle} or {@link #release}: every primitive then reads and writes true values, folding
     * the factor into its result (Σx² × factor², a clamp bound ÷ factor, an axpy's alpha...) rather
     * than scaling the array. The runner uses it to present DL4J's minibatch SUM as the MEAN
     * (factor 1/batch) without two passes over the gradient; a clip coefficient in (0, 1) then
     * joins the factor ({@link #scaleInPlace}) and {@link #settle} applies both. A write that cannot keep the factor
     * exactly (a fill, an assign from an array with another factor, a value that does not survive
     * the division in the array's type) stores true values and drops the factor.
     *
     * @throws IllegalArgumentException if the factor is not in (0, 1]
     */
    void setFactor(INDArray x, double factor) {
        if (!(factor > 0 && factor <= 1)) {
            throw new IllegalArgumentException("factor must be in (0, 1], got " + factor);
        }
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

    /**
     * n when f is exactly 1/n (as a double) for a whole n from 1 to 2^24 (a batch size, times
     * micro-batches: exact in float32), else 0.
     */
    private static double wholeInverse(double f) {
        double n = Math.rint(1.0 / f);
        return n >= 1 && n <= (1 << 24) && 1.0 / n == f ? n : 0;
    }

    /**
     * Closes every temporary array created since the last call (reductions, scalars, functional
     * results), freeing their off-heap memory now. Call it once per step, after the step's metrics
     * were read. Arrays from {@link #zerosLike} and {@link #fromHost} are not affected.
     *
     * @return how many arrays were freed
     */
    public int releaseTemporaries() {
        int n = temporaries.size();
        for (INDArray t : temporaries) {
            factors.remove(t);
            close(t);
        }
        temporaries.clear();
        return n;
    }

    /** The number of temporaries alive now (for tests and leak checks). */
    public int temporaryCount() {
        return temporaries.size();
    }

    @Override
    public String toString() {
        return "Nd4jOps[" + Nd4j.getBackend().getClass().getSimpleName() + "]";
    }

    // ---- shape and host transfer -------------------------------------------------------------

    @Override
    public long[] shape(INDArray x) {
        return x.shape();
    }

    @Override
    public INDArray scalar(double value) {
        INDArray s = temp(DataType.DOUBLE, new long[0]);
        s.putScalar(0, value);
        return s;
    }

    /**
     * @throws IllegalArgumentException if {@code scalar} has more or fewer than one element
     */
    @Override
    public double toHost(INDArray scalar) {
        if (scalar.length() != 1) {
            throw new IllegalArgumentException("scalar must have exactly one element, got shape " + Arrays.toString(scalar.shape()));
        }
        return scalar.getDouble(0) * factor(scalar);
    }

    @Override
    public float[] toHostArray(INDArray x) {
        if (x.isEmpty()) {
            return new float[0];
        }
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            INDArray f = x.castTo(DataType.FLOAT);
            INDArray c = f.dup('c');
            float[] out = c.data().asFloat();
            close(c);
            if (f != x) {
                close(f);
            }
            out = out.length == x.length() ? out : Arrays.copyOf(out, (int) x.length());
            double k = factor(x);
            if (k != 1.0) {
                for (int i = 0; i < out.length; i++) {
                    out[i] = (float) (out[i] * k);
                }
            }
            return out;
        }
    }

    @Override
    public double[] toHostDoubles(INDArray x) {
        if (x.isEmpty()) {
            return new double[0];
        }
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            INDArray d = x.castTo(DataType.DOUBLE);
            INDArray c = d.dup('c');
            double[] out = c.data().asDouble();
            close(c);
            if (d != x) {
                close(d);
            }
            out = out.length == x.length() ? out : Arrays.copyOf(out, (int) x.length());
            double f = factor(x);
            if (f != 1.0) {
                for (int i = 0; i < out.length; i++) {
                    out[i] *= f;
                }
            }
            return out;
        }
    }

    /**
     * A new long-lived float32 array (row-major), freed by {@link #release}.
     *
     * @throws IllegalArgumentException if the data's length does not match the shape
     */
    @Override
    public INDArray fromHost(float[] data, long[] shape) {
        checkLength(data.length, shape);
        return filled(DataType.FLOAT, shape, data.length, () -> Nd4j.create(data, new long[] {data.length}, 'c'));
    }

    /**
     * A new long-lived float64 array (row-major), freed by {@link #release}.
     *
     * @throws IllegalArgumentException if the data's length does not match the shape
     */
    @Override
    public INDArray fromHost(double[] data, long[] shape) {
        checkLength(data.length, shape);
        return filled(DataType.DOUBLE, shape, data.length, () -> Nd4j.create(data, new long[] {data.length}, 'c'));
    }

    /** A detached array of the given type and shape holding the flat host values {@code source} creates. */
    private INDArray filled(DataType type, long[] shape, int length, java.util.function.Supplier<INDArray> source) {
        INDArray a = detached(type, shape, 'c');
        if (length > 0) {
            try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
                INDArray src = source.get();
                a.assign(src.reshape('c', shape));
                close(src);
            }
        }
        return a;
    }

    @Override
    public boolean supportsFloat64() {
        return true;
    }

    @Override
    public boolean isFloat64(INDArray x) {
        return x.dataType() == DataType.DOUBLE;
    }

    /** {@code true} only after {@link #accumulateInDouble()} (see "Precision" in the class comment). */
    @Override
    public boolean accumulatesInDouble() {
        return doubleAccumulation;
    }

    /** A long-lived zero array of {@code like}'s shape, type and memory order (DL4J views are 'f'). */
    @Override
    public INDArray zerosLike(INDArray like) {
        INDArray z = detached(like.dataType(), like.shape(), like.ordering());
        if (!z.isEmpty()) {
            z.assign(0);
        }
        return z;
    }

    @Override
    public void release(INDArray x) {
        factors.remove(x);
        close(x);
    }

    // ---- reductions -----------------------------------------------------------------------------

    @Override
    public INDArray sumOfSquares(INDArray x) {
        double f = factor(x);
        if (x.isEmpty()) {
            return scalarOut();
        }
        if (blasReduces(x)) {
            double ss = Nd4j.getBlasWrapper().level1().dot(x.length(), 1.0, x, x);
            if (!Double.isInfinite(ss)) {
                return scalar(ss * f * f);
            }
            // float32 overflowed, maybe only because DL4J's stored sum is batch × the mean: reduce in
            // float64 (one more pass, on such steps only)
        }
        INDArray z = scalarOut();
        Nd4j.exec(new SquaredNorm(x, z));
        return times(z, f * f);
    }

    @Override
    public INDArray sumOfAbs(INDArray x) {
        double f = factor(x);
        if (x.isEmpty()) {
            return scalarOut();
        }
        if (blasReduces(x)) {
            double sa = Nd4j.getBlasWrapper().level1().asum(x);
            if (!Double.isInfinite(sa)) {
                return scalar(sa * f);
            }
        }
        INDArray z = scalarOut();
        Nd4j.exec(new Norm1(x, z));
        return times(z, f);
    }

    /** max |x|, reduced in x's own type (a maximum is exact in any type) and widened to float64. */
    @Override
    public INDArray maxAbs(INDArray x) {
        if (x.isEmpty()) {
            return scalarOut();
        }
        INDArray m = detached(x.dataType().isFPType() ? x.dataType() : DataType.DOUBLE, new long[0], 'c');
        Nd4j.exec(new NormMax(x, m));
        INDArray z = track(castToDouble(m));
        // libnd4j's max-abs reduction can skip a NaN: add NaN when there is one. A Σx² that is not
        // NaN proves there is none (one BLAS pass, much cheaper than libnd4j's MatchCondition)
        if (Double.isNaN(squaresOrNaN(x))) {
            z.addi(nanFlag(countNaN(x)));
        }
        return times(z, factor(x));
    }

    @Override
    public INDArray countNonFinite(INDArray x) {
        if (x.isEmpty()) {
            return scalarOut();
        }
        if (Double.isFinite(squaresOrNaN(x))) {
            return scalarOut(); // a finite Σx² proves every value finite: no count needed
        }
        INDArray count = Nd4j.exec(new MatchCondition(x, Conditions.notFinite()));
        return track(castToDouble(count));
    }

    /**
     * Σx² of the stored values by one BLAS pass where x allows it (either precision mode), else NaN
     * (unknown). Squares are never negative, so a NaN value makes the sum NaN and an infinite one
     * makes it infinite: a finite result proves every value finite, and a result that is not NaN
     * proves there is no NaN. libnd4j's MatchCondition, which counts exactly, is several times slower
     * than the BLAS pass, so it runs only when this check cannot rule the case out.
     */
    private static double squaresOrNaN(INDArray x) {
        return blasReadable(x) ? Nd4j.getBlasWrapper().level1().dot(x.length(), 1.0, x, x) : Double.NaN;
    }

    /** Σ x² over {@code axes}, accumulated in float64 in both precision modes (libnd4j's float32 loop is no faster). */
    @Override
    public INDArray sumOfSquares(INDArray x, int[] axes) {
        INDArray z = temp(DataType.DOUBLE, keptShape(x.shape(), axes));
        if (x.isEmpty()) {
            if (!z.isEmpty()) {
                z.assign(0);
            }
            return z;
        }
        Nd4j.exec(new SquaredNorm(x, z, true, axes));
        double f = factor(x);
        return times(z, f * f);
    }

    /** The mean over {@code axes} (kept with size 1), in {@code x}'s type so it subtracts in place cheaply. */
    @Override
    public INDArray mean(INDArray x, int[] axes) {
        INDArray z = temp(x.dataType(), keptShape(x.shape(), axes));
        if (!x.isEmpty()) {
            Nd4j.exec(new Mean(x, z, true, axes));
        }
        return times(z, factor(x));
    }

    // ---- functional element-wise math -------------------------------------------------------

    @Override
    public INDArray add(INDArray a, INDArray b) {
        return scalars(a, b) ? onHost(a, b, Double::sum) : binary(plain(a), plain(b), AddOp::new);
    }

    @Override
    public INDArray mul(INDArray a, INDArray b) {
        return scalars(a, b) ? onHost(a, b, (x, y) -> x * y) : binary(plain(a), plain(b), MulOp::new);
    }

    @Override
    public INDArray div(INDArray a, INDArray b) {
        return scalars(a, b) ? onHost(a, b, (x, y) -> x / y) : binary(plain(a), plain(b), DivOp::new);
    }

    @Override
    public INDArray min(INDArray a, INDArray b) {
        if (scalars(a, b)) {
            return onHost(a, b, Math::min); // NaN propagates
        }
        INDArray pa = plain(a);
        INDArray pb = plain(b);
        return propagateNaN(binary(pa, pb, Min::new), pa, pb);
    }

    @Override
    public INDArray max(INDArray a, INDArray b) {
        if (scalars(a, b)) {
            return onHost(a, b, Math::max);
        }
        INDArray pa = plain(a);
        INDArray pb = plain(b);
        return propagateNaN(binary(pa, pb, Max::new), pa, pb);
    }

    private static boolean scalars(INDArray a, INDArray b) {
        return a.length() == 1 && b.length() == 1;
    }

    /**
     * One-element operands (norms, coefficients: the tree math of every step) are combined on the
     * host, where the CPU backend keeps them anyway: a libnd4j op dispatch costs far more than the
     * arithmetic, and a NaN-propagating min/max needs several. IEEE float64 +, −, ×, ÷, min, max give the bits
     * libnd4j's kernels give; a float32 result is the float64 one rounded once, which for these
     * operations on float32 inputs is the correctly rounded float32 result too.
     */
    private INDArray onHost(INDArray a, INDArray b, java.util.function.DoubleBinaryOperator op) {
        INDArray z = binaryOut(a, b);
        z.putScalar(0, op.applyAsDouble(a.getDouble(0) * factor(a), b.getDouble(0) * factor(b)));
        return z;
    }

    /** An ND4J op computing z from a and b. */
    private interface BinaryOp {
        org.nd4j.linalg.api.ops.CustomOp of(INDArray a, INDArray b, INDArray z);
    }

    /** A new temporary z = op(a, b) of plain (unfactored) operands, broadcast as numpy does. */
    private INDArray binary(INDArray a, INDArray b, BinaryOp op) {
        INDArray z = binaryOut(a, b);
        Nd4j.exec(op.of(a, b, z));
        return z;
    }

    @Override
    public INDArray sqrt(INDArray a) {
        if (a.length() == 1) {
            INDArray z = temp(a.dataType(), a.shape());
            z.putScalar(0, Math.sqrt(a.getDouble(0) * factor(a)));
            return z;
        }
        a = plain(a);
        INDArray z = temp(a.dataType(), a.shape());
        if (!a.isEmpty()) {
            Nd4j.exec(new Sqrt(a, z));
        }
        return z;
    }

    // ---- in-place updates -------------------------------------------------------------------

    /**
     * {@inheritDoc}
     *
     * <p>A one-element factor (a clip coefficient) is read to the host, a scalar read that costs
     * nothing on the CPU backend, and multiplied in {@code x}'s own type; a factor of exactly 1 (a
     * clip that does not bite) skips the multiplication: the result is bit-identical (x·1 = x, NaN
     * and -0 included) and a full pass over the gradient is saved. On an array with a pending
     * factor ({@link #setFactor}: a DL4J gradient view during a step) a coefficient in (0, 1) joins
     * that factor instead, with no pass: the runner's {@link #settle} applies both in the one pass it
     * makes anyway (for the {@link GuardedTrainer}, the division by the batch size). Zero, NaN and a
     * factor that would leave the normal range are multiplied in at once. A per-unit factor is
     * multiplied in with broadcasting.
     */
    @Override
    public void scaleInPlace(INDArray x, INDArray factor) {
        if (x.isEmpty()) {
            return;
        }
        if (factor.length() == 1) {
            double c = toHost(factor);
            if (c == 1.0) {
                return;
            }
            Double pending = factors.get(x);
            if (pending != null && c > 0 && c < 1 && pending * c >= MIN_JOINED_FACTOR
                    && (x.dataType() == DataType.FLOAT || x.dataType() == DataType.DOUBLE)) {
                factors.put(x, pending * c);
            } else {
                x.muli(c);
            }
            return;
        }
        Nd4j.exec(new MulOp(x, plain(factor), x));
    }

    /**
     * The smallest factor a coefficient may leave pending: far from float32's subnormals (the
     * factor is cast to the array's type when applied) and from float64 underflow of factor²
     * (norms fold in factor²); a smaller product is multiplied into the array at once.
     */
    private static final double MIN_JOINED_FACTOR = 1e-30;

    @Override
    public void addInPlace(INDArray x, INDArray y, double alpha) {
        if (x.isEmpty()) {
            return;
        }
        double a = alpha * factor(y) / factor(x); // x_true + alpha·y_true = fx·(x + alpha·fy/fx · y)
        if (Arrays.equals(x.shape(), y.shape()) && x.dataType() == y.dataType()) {
            if (a == 1.0) {
                x.addi(y);
            } else if (a == -1.0) {
                x.subi(y);
            } else {
                Nd4j.exec(new Axpy(y, x, x, a));
            }
            return;
        }
        INDArray scaled = a == 1.0 ? y : track(y.mul(a));
        Nd4j.exec(new AddOp(x, scaled, x));
    }

    @Override
    public void clampInPlace(INDArray x, double lo, double hi) {
        if (x.isEmpty()) {
            return;
        }
        double f = keepFactorFor(x, lo, hi, hi);
        ClipByValue op = new ClipByValue(x, stored(lo, f), stored(hi, f));
        op.addOutputArgument(x);
        Nd4j.exec(op);
    }

    @Override
    public void replaceNonFinite(INDArray x, double nan, double posInf, double negInf) {
        if (x.isEmpty()) {
            return;
        }
        double f = keepFactorFor(x, nan, posInf, negInf);
        double maxFinite = x.dataType() == DataType.DOUBLE ? Double.MAX_VALUE : x.dataType() == DataType.FLOAT ? Float.MAX_VALUE : 65504.0;
        if (posInf != Double.POSITIVE_INFINITY) {
            Nd4j.exec(new CompareAndSet(x, stored(posInf, f), Conditions.greaterThan(maxFinite)));
        }
        if (negInf != Double.NEGATIVE_INFINITY) {
            Nd4j.exec(new CompareAndSet(x, stored(negInf, f), Conditions.lessThan(-maxFinite)));
        }
        if (!Double.isNaN(nan)) {
            Nd4j.exec(new CompareAndSet(x, stored(nan, f), Conditions.isNan()));
        }
    }

    /** Copies {@code src}'s true values; {@code dst} keeps its pending factor only when {@code src} has the same one. */
    @Override
    public void assign(INDArray dst, INDArray src) {
        double fs = factor(src);
        if (fs != factor(dst)) {
            factors.remove(dst);
            if (fs != 1.0 && !dst.isEmpty()) {
                if (dst.ordering() == src.ordering() && dst.dataType() == src.dataType() && Arrays.equals(dst.shape(), src.shape())) {
                    Nd4j.exec(new ScalarMultiplication(src, null, dst, fs));
                } else {
                    dst.assign(src);
                    dst.muli(fs);
                }
                return;
            }
        }
        if (!dst.isEmpty()) {
            dst.assign(src);
        }
    }

    @Override
    public void fill(INDArray x, double value) {
        factors.remove(x); // every element is overwritten: no factor to keep
        if (!x.isEmpty()) {
            x.assign(value);
        }
    }

    // ---- helpers ------------------------------------------------------------------------------

    /**
     * Whether Σx² and Σ|x| of {@code x} run as one BLAS pass in its own type: a contiguous float32
     * array in the default precision, or any contiguous float64 array.
     */
    private boolean blasReduces(INDArray x) {
        return blasReadable(x) && !(x.dataType() == DataType.FLOAT && doubleAccumulation);
    }

    /** Whether BLAS level-1 can read x directly: float32 or float64, contiguous, an int length. */
    private static boolean blasReadable(INDArray x) {
        DataType t = x.dataType();
        return (t == DataType.FLOAT || t == DataType.DOUBLE) && x.length() <= Integer.MAX_VALUE && x.elementWiseStride() == 1;
    }

    /** A step temporary: z · c, in place (z is one), or z itself when c is 1. */
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
     * {@code a}'s true values: {@code a} itself without a pending factor, else a step temporary
     * holding factor × a (functional math wants plain operands).
     */
    private INDArray plain(INDArray a) {
        double f = factor(a);
        if (f == 1.0) {
            return a;
        }
        INDArray z = track(detached(a.dataType(), a.shape(), a.ordering()));
        if (!a.isEmpty()) {
            Nd4j.exec(new ScalarMultiplication(a, null, z, f));
        }
        return z;
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

    private INDArray scalarOut() {
        INDArray z = temp(DataType.DOUBLE, new long[0]);
        z.assign(0);
        return z;
    }

    private INDArray temp(DataType type, long[] shape) {
        return track(detached(type, shape, 'c'));
    }

    private INDArray track(INDArray a) {
        temporaries.add(a);
        return a;
    }

    private static INDArray detached(DataType type, long[] shape, char order) {
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            for (long d : shape) {
                if (d == 0) {
                    return Nd4j.create(type, shape, order);
                }
            }
            return Nd4j.createUninitializedDetached(type, order, shape);
        }
    }

    private static void close(INDArray a) {
        if (a != null && a.closeable() && !a.wasClosed()) {
            a.close();
        }
    }

    private INDArray castToDouble(INDArray a) {
        if (a.dataType() == DataType.DOUBLE) {
            return a;
        }
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            INDArray d = a.castTo(DataType.DOUBLE);
            close(a);
            return d;
        }
    }

    /** The number of NaN elements, as a float64 scalar. */
    private INDArray countNaN(INDArray x) {
        return track(castToDouble(Nd4j.exec(new MatchCondition(x, Conditions.isNan()))));
    }

    /** 0 for a zero count, NaN for a positive one. */
    private INDArray nanFlag(INDArray count) {
        INDArray f = temp(DataType.DOUBLE, count.shape());
        f.assign(count);
        Nd4j.exec(new CompareAndSet(f, Double.NaN, Conditions.greaterThan(0)));
        return f;
    }

    /** libnd4j's min/max drop a NaN in the first operand: add a NaN flag per element for each operand. */
    private INDArray propagateNaN(INDArray z, INDArray a, INDArray b) {
        z.addi(nanMask(a, z.shape()));
        z.addi(nanMask(b, z.shape()));
        return z;
    }

    /** A float64 array of z's shape: NaN where {@code a} (broadcast) is NaN, else 0. */
    private INDArray nanMask(INDArray a, long[] shape) {
        INDArray m = temp(DataType.DOUBLE, shape);
        m.assign(a);
        // libnd4j's CompareAndSet knows no isFinite condition: comparisons are false for NaN only
        Nd4j.exec(new CompareAndSet(m, 0.0, Conditions.lessThan(Double.POSITIVE_INFINITY)));
        Nd4j.exec(new CompareAndSet(m, 0.0, Conditions.greaterThan(Double.MAX_VALUE)));
        return m;
    }

    private INDArray binaryOut(INDArray a, INDArray b) {
        DataType type = a.dataType() == DataType.DOUBLE || b.dataType() == DataType.DOUBLE ? DataType.DOUBLE
                : a.dataType();
        long[] shape = broadcastShape(a.shape(), b.shape());
        // laid out as the full-size operand (DL4J's views are 'f'): one contiguous pass, where a
        // 'c' output of 'f' inputs sent libnd4j down a much slower strided loop
        char order = Arrays.equals(a.shape(), shape) ? a.ordering() : Arrays.equals(b.shape(), shape) ? b.ordering() : 'c';
        return track(detached(type, shape, order));
    }

    /**
     * Numpy broadcasting as the SPI allows it: a rank-0 (or one-element) operand, or equal ranks with
     * each dimension equal or 1.
     */
    static long[] broadcastShape(long[] a, long[] b) {
        if (a.length == 0) {
            return b.clone();
        }
        if (b.length == 0) {
            return a.clone();
        }
        if (a.length != b.length) {
            throw new IllegalArgumentException("operands must have equal ranks or one must be a scalar, got shapes "
                    + Arrays.toString(a) + " and " + Arrays.toString(b));
        }
        long[] out = new long[a.length];
        for (int i = 0; i < a.length; i++) {
            if (a[i] != b[i] && a[i] != 1 && b[i] != 1) {
                throw new IllegalArgumentException("operands must broadcast, got shapes " + Arrays.toString(a)
                        + " and " + Arrays.toString(b));
            }
            out[i] = a[i] == 1 ? b[i] : a[i];
        }
        return out;
    }

    static long[] keptShape(long[] shape, int[] axes) {
        long[] out = shape.clone();
        for (int ax : axes) {
            int a = ax < 0 ? ax + shape.length : ax;
            if (a < 0 || a >= shape.length) {
                throw new IllegalArgumentException("axes must exist in a tensor of rank " + shape.length + ", got "
                        + Arrays.toString(axes));
            }
            out[a] = 1;
        }
        return out;
    }

    private static void checkLength(int length, long[] shape) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("shape must have no negative dimension, got " + Arrays.toString(shape));
            }
            n *= d;
        }
        if (n != length) {
            throw new IllegalArgumentException("data must have " + n + " elements for shape " + Arrays.toString(shape)
                    + ", got " + length);
        }
    }
}
