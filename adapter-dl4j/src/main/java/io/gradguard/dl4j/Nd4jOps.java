package io.gradguard.dl4j;

import io.gradguard.core.spi.TensorOps;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
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
 * {@link #accumulatesInDouble()} is then {@code false}: Σx² of float32 values near 1e-30
 * underflows to 0, and near 1e30 the BLAS pass overflows, so that tensor is reduced again in float64
 * (a second pass, on such steps only). {@link #accumulateInDouble()} asks for float64
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
     * Closes every temporary array created since the last call (reductions, scalars, functional
     * results), freeing their off-heap memory now. Call it once per step, after the step's metrics
     * were read. Arrays from {@link #zerosLike} and {@link #fromHost} are not affected.
     *
     * @return how many arrays were freed
     */
    public int releaseTemporaries() {
        int n = temporaries.size();
        for (INDArray t : temporaries) {
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
        return scalar.getDouble(0);
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
            return out.length == x.length() ? out : Arrays.copyOf(out, (int) x.length());
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
            return out.length == x.length() ? out : Arrays.copyOf(out, (int) x.length());
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
        close(x);
    }

    // ---- reductions -----------------------------------------------------------------------------

    @Override
    public INDArray sumOfSquares(INDArray x) {
        if (x.isEmpty()) {
            return scalarOut();
        }
        if (blasReduces(x)) {
            double ss = Nd4j.getBlasWrapper().level1().dot(x.length(), 1.0, x, x);
            if (!Double.isInfinite(ss)) {
                return scalar(ss);
            }
            // float32 overflowed (DL4J's stored sum is batch × the mean, so it can happen while the
            // mean's norm is finite): reduce in float64 (one more pass, on such steps only)
        }
        INDArray z = scalarOut();
        Nd4j.exec(new SquaredNorm(x, z));
        return z;
    }

    @Override
    public INDArray sumOfAbs(INDArray x) {
        if (x.isEmpty()) {
            return scalarOut();
        }
        if (blasReduces(x)) {
            double sa = Nd4j.getBlasWrapper().level1().asum(x);
            if (!Double.isInfinite(sa)) {
                return scalar(sa);
            }
        }
        INDArray z = scalarOut();
        Nd4j.exec(new Norm1(x, z));
        return z;
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
        return z;
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
        return z;
    }

    /** The mean over {@code axes} (kept with size 1), in {@code x}'s type so it subtracts in place cheaply. */
    @Override
    public INDArray mean(INDArray x, int[] axes) {
        INDArray z = temp(x.dataType(), keptShape(x.shape(), axes));
        if (!x.isEmpty()) {
            Nd4j.exec(new Mean(x, z, true, axes));
        }
        return z;
    }

    // ---- functional element-wise math -------------------------------------------------------

    @Override
    public INDArray add(INDArray a, INDArray b) {
        return scalars(a, b) ? onHost(a, b, Double::sum) : binary(a, b, AddOp::new);
    }

    @Override
    public INDArray mul(INDArray a, INDArray b) {
        return scalars(a, b) ? onHost(a, b, (x, y) -> x * y) : binary(a, b, MulOp::new);
    }

    @Override
    public INDArray div(INDArray a, INDArray b) {
        return scalars(a, b) ? onHost(a, b, (x, y) -> x / y) : binary(a, b, DivOp::new);
    }

    @Override
    public INDArray min(INDArray a, INDArray b) {
        if (scalars(a, b)) {
            return onHost(a, b, Math::min); // NaN propagates
        }
        return propagateNaN(binary(a, b, Min::new), a, b);
    }

    @Override
    public INDArray max(INDArray a, INDArray b) {
        if (scalars(a, b)) {
            return onHost(a, b, Math::max);
        }
        return propagateNaN(binary(a, b, Max::new), a, b);
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
        z.putScalar(0, op.applyAsDouble(a.getDouble(0), b.getDouble(0)));
        return z;
    }

    /** An ND4J op computing z from a and b. */
    private interface BinaryOp {
        org.nd4j.linalg.api.ops.CustomOp of(INDArray a, INDArray b, INDArray z);
    }

    /** A new temporary z = op(a, b), broadcast as numpy does. */
    private INDArray binary(INDArray a, INDArray b, BinaryOp op) {
        INDArray z = binaryOut(a, b);
        Nd4j.exec(op.of(a, b, z));
        return z;
    }

    @Override
    public INDArray sqrt(INDArray a) {
        if (a.length() == 1) {
            INDArray z = temp(a.dataType(), a.shape());
            z.putScalar(0, Math.sqrt(a.getDouble(0)));
            return z;
        }
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
     * and -0 included) and a full pass over the gradient is saved. A per-unit factor is multiplied
     * in with broadcasting.
     */
    @Override
    public void scaleInPlace(INDArray x, INDArray factor) {
        if (x.isEmpty()) {
            return;
        }
        if (factor.length() == 1) {
            double c = toHost(factor);
            if (c != 1.0) {
                x.muli(c);
            }
            return;
        }
        Nd4j.exec(new MulOp(x, factor, x));
    }

    @Override
    public void addInPlace(INDArray x, INDArray y, double alpha) {
        if (x.isEmpty()) {
            return;
        }
        if (Arrays.equals(x.shape(), y.shape()) && x.dataType() == y.dataType()) {
            if (alpha == 1.0) {
                x.addi(y);
            } else if (alpha == -1.0) {
                x.subi(y);
            } else {
                Nd4j.exec(new Axpy(y, x, x, alpha));
            }
            return;
        }
        INDArray scaled = alpha == 1.0 ? y : track(y.mul(alpha));
        Nd4j.exec(new AddOp(x, scaled, x));
    }

    @Override
    public void clampInPlace(INDArray x, double lo, double hi) {
        if (x.isEmpty()) {
            return;
        }
        ClipByValue op = new ClipByValue(x, lo, hi);
        op.addOutputArgument(x);
        Nd4j.exec(op);
    }

    @Override
    public void replaceNonFinite(INDArray x, double nan, double posInf, double negInf) {
        if (x.isEmpty()) {
            return;
        }
        double maxFinite = x.dataType() == DataType.DOUBLE ? Double.MAX_VALUE : x.dataType() == DataType.FLOAT ? Float.MAX_VALUE : 65504.0;
        if (posInf != Double.POSITIVE_INFINITY) {
            Nd4j.exec(new CompareAndSet(x, posInf, Conditions.greaterThan(maxFinite)));
        }
        if (negInf != Double.NEGATIVE_INFINITY) {
            Nd4j.exec(new CompareAndSet(x, negInf, Conditions.lessThan(-maxFinite)));
        }
        if (!Double.isNaN(nan)) {
            Nd4j.exec(new CompareAndSet(x, nan, Conditions.isNan()));
        }
    }

    @Override
    public void assign(INDArray dst, INDArray src) {
        if (!dst.isEmpty()) {
            dst.assign(src);
        }
    }

    /**
     * dst ← factor × src in one pass (for {@link PendingFactorOps}: a copy of an array with a pending
     * factor), in dst's type.
     */
    void assignScaled(INDArray dst, INDArray src, double factor) {
        if (dst.isEmpty()) {
            return;
        }
        if (dst.ordering() == src.ordering() && dst.dataType() == src.dataType() && Arrays.equals(dst.shape(), src.shape())) {
            Nd4j.exec(new ScalarMultiplication(src, null, dst, factor));
        } else {
            dst.assign(src);
            dst.muli(factor);
        }
    }

    /** A step temporary holding factor × a, in a's type, shape and memory order. */
    INDArray scaledCopy(INDArray a, double factor) {
        INDArray z = track(detached(a.dataType(), a.shape(), a.ordering()));
        if (!a.isEmpty()) {
            Nd4j.exec(new ScalarMultiplication(a, null, z, factor));
        }
        return z;
    }

    @Override
    public void fill(INDArray x, double value) {
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
