package io.gradguard.core.spi;

/**
 * The tensor primitives a backend implements so that every GradGuard transform runs on its tensors.
 *
 * <p>The set is deliberately small: the tree-level math (global norms, unit-wise norms, clip
 * coefficients) is written once in core on top of it. A backend implements it with its framework's
 * own operations on its own tensors, on whatever device they live on; gradients never have to
 * travel to the Java heap. The only host traffic is {@link #toHost(Object)} of a scalar, which
 * transforms avoid on the hot path (a clip coefficient is computed as a tensor and multiplied in,
 * never branched on).
 *
 * <p>Three kinds of methods:
 * <ul>
 *   <li><b>Reductions</b> return a new scalar tensor (rank 0), accumulated in float64 or, as the
 *       frameworks' own clips do, in the tensor's dtype; {@link #accumulatesInDouble()} says which
 *       (the reference backend: float64; TensorFlow and ND4J: float32 by default, float64 on
 *       request; DJL: float32).</li>
 *   <li><b>Functional element-wise math</b> ({@link #add}, {@link #mul}, {@link #div},
 *       {@link #min}, {@link #max}, {@link #sqrt}) returns a new tensor and is meant for scalars
 *       and small per-unit tensors (numpy broadcasting of equal ranks or of a rank-0 operand).</li>
 *   <li><b>In-place updates</b> change a gradient (or state buffer) tensor where it lives.</li>
 * </ul>
 *
 * <p>Temporaries created by reductions and functional math belong to the current step; the adapter
 * frees them when the step ends (for example by closing an NDManager scope). Buffers created with
 * {@link #zerosLike(Object)} or {@link #fromHost(float[], long[])} belong to pipeline state and
 * are freed with {@link #release(Object)}.
 *
 * <p>Non-finite values follow IEEE 754: NaN propagates through every reduction and through
 * {@link #min}/{@link #max}; transforms document what they do with it.
 *
 * @param <T> the backend's tensor type (a float array wrapper, an {@code NDArray}, an {@code INDArray},
 *     an {@code Operand})
 */
public interface TensorOps<T> {

    // ---- shape and host transfer ---------------------------------------------------------

    /** The tensor's shape; {@code long[0]} for a scalar. */
    long[] shape(T x);

    /** A new rank-0 tensor holding {@code value} (float64 where the backend has it). */
    T scalar(double value);

    /** Copies a scalar tensor to the host. The only device-to-host sync a transform may cause. */
    double toHost(T scalar);

    /**
     * Copies several scalar tensors to the host at once: one device-to-host sync (or one session run)
     * instead of one per scalar. The default calls {@link #toHost(Object)} for each; backends with a
     * device or a graph override it.
     */
    default double[] toHost(java.util.List<T> scalars) {
        double[] out = new double[scalars.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = toHost(scalars.get(i));
        }
        return out;
    }

    /**
     * Copies a whole tensor to the host as float32, row-major. For checkpoints and tests only,
     * never on the per-step path.
     */
    float[] toHostArray(T x);

    /** A new long-lived tensor of the given shape holding {@code data} (row-major), for state restore and tests. */
    T fromHost(float[] data, long[] shape);

    /** A new long-lived zero tensor of the same shape, dtype and device as {@code like} (accumulators). */
    T zerosLike(T like);

    /** Frees a long-lived tensor created by {@link #zerosLike} or {@link #fromHost}; a no-op where memory is managed. */
    void release(T x);

    // ---- reductions to a rank-0 tensor --------------------------------------------------------

    /** Σ x², over all elements. */
    T sumOfSquares(T x);

    /**
     * Σ x² over all elements of all of {@code xs} (0 for none): each one's {@link #sumOfSquares(Object)},
     * added in order. A backend whose per-call cost dominates small tensors may override it with the
     * same arithmetic in fewer calls.
     */
    default T sumOfSquares(java.util.List<T> xs) {
        T acc = null;
        for (T x : xs) {
            T part = sumOfSquares(x);
            acc = acc == null ? part : add(acc, part);
        }
        return acc == null ? scalar(0.0) : acc;
    }

    /** Σ |x|, over all elements. */
    T sumOfAbs(T x);

    /** max |x| over all elements (0 for an empty tensor; NaN if any element is NaN). */
    T maxAbs(T x);

    /** The number of NaN and ±Inf elements, as a scalar tensor. */
    T countNonFinite(T x);

    /**
     * Σ x² over the given axes, keeping them with size 1 so that the result broadcasts against
     * {@code x} (for unit-wise norms).
     */
    T sumOfSquares(T x, int[] axes);

    /** The mean over the given axes, keeping them with size 1 (for centralization). */
    T mean(T x, int[] axes);

    // ---- functional element-wise math (broadcasting) ------------------------------------------

    T add(T a, T b);

    T mul(T a, T b);

    T div(T a, T b);

    /** Element-wise minimum; NaN if either operand is NaN. */
    T min(T a, T b);

    /** Element-wise maximum; NaN if either operand is NaN. */
    T max(T a, T b);

    T sqrt(T a);

    // ---- in-place updates ---------------------------------------------------------------------

    /**
     * x ← x · factor, where factor is a scalar or broadcasts against x.
     *
     * <p><b>Contract:</b> scaling by a scalar that is exactly 1 changes nothing and costs no pass
     * over x. Transforms scale unconditionally (a clip that does not act multiplies by 1, so graph
     * backends build one branch and GPU backends never sync to decide); backends must make that
     * free. The conformance kit checks it with a signalling NaN, which a real multiply would quiet.
     */
    void scaleInPlace(T x, T factor);

    /** x ← x + alpha · y, where y has x's shape or broadcasts against it. */
    void addInPlace(T x, T y, double alpha);

    /** x ← min(max(x, lo), hi), element-wise; NaN stays NaN. */
    void clampInPlace(T x, double lo, double hi);

    /**
     * Replaces NaN by {@code nan}, +Inf by {@code posInf} and -Inf by {@code negInf}
     * ({@code torch.nan_to_num} semantics). Pass ±Infinity for the last two to touch NaN only.
     */
    void replaceNonFinite(T x, double nan, double posInf, double negInf);

    /** dst ← src (same shape). */
    void assign(T dst, T src);

    /** x ← value everywhere. Unlike multiplying by 0, this also clears NaN and Inf. */
    void fill(T x, double value);

    // ---- capabilities -------------------------------------------------------------------------

    /** Whether reductions accumulate in float64 (so Σx² of 1e30 or 1e-30 float32 values neither overflows nor underflows). */
    default boolean accumulatesInDouble() {
        return false;
    }

    /** Whether {@link #fromHost(double[], long[])} creates float64 tensors. */
    default boolean supportsFloat64() {
        return false;
    }

    /** A new long-lived float64 tensor; only where {@link #supportsFloat64()}. */
    default T fromHost(double[] data, long[] shape) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no float64 tensors");
    }

    /** Whether this tensor holds float64 values (checkpoints then store it in float64). */
    default boolean isFloat64(T x) {
        return false;
    }

    /** Copies a float64 tensor to the host; only where {@link #supportsFloat64()}. */
    default double[] toHostDoubles(T x) {
        float[] f = toHostArray(x);
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            d[i] = f[i];
        }
        return d;
    }
}
