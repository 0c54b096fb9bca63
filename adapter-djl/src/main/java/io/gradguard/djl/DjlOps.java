package io.gradguard.djl;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * GradGuard's tensor primitives on DJL {@link NDArray}s, written for the PyTorch engine: every
 * primitive is a native NDArray operation on the device the gradients live on. Gradients never
 * travel to the Java heap; only scalars do, through {@link #toHost(NDArray)}.
 *
 * <p><b>Memory.</b> Two {@link NDManager}s, both children of the manager given to {@link #on}:
 * <ul>
 *   <li>a <i>state</i> manager for long-lived buffers ({@link #zerosLike}, {@link #fromHost}: the
 *       accumulators and histories of stateful transforms), freed one by one by {@link #release}
 *       or all together by {@link #close()};</li>
 *   <li>a <i>step</i> manager that every other array the primitives create is attached to
 *       (reductions, coefficients, scalars, intermediate results). {@link #freeTemporaries()}
 *       closes it; the next primitive opens a fresh one. A {@link DjlGuard} calls it once per
 *       step, when the step ends ({@code GuardedModel.endStep()}, also after a failure): the one
 *       scope of a step's temporaries, so a long run does not grow native memory. Arrays that are handed to the primitives
 *       (gradients, parameters) are never closed by them.</li>
 * </ul>
 *
 * <p><b>Precision.</b> By default ({@link #on(NDManager)}) reductions run in the tensors' dtype, as
 * PyTorch's own {@code clip_grad_norm_} does ({@code torch.linalg.vector_norm} accumulates float32
 * in float32); per-tensor results are then widened to float64 scalars, so sums across tensors,
 * norms and clip coefficients are float64. Σx² of float32 values near 1e30 then overflows to
 * infinity (and near 1e-30 underflows to 0), as in PyTorch. A float16 or bfloat16 tensor is reduced
 * in float32 (a float32 temporary of the step): in float16, Σx² overflows at 65504 and the squares
 * of gradients below 2.4e-4 are subnormal or 0. With {@code on(parent, true)}
 * ({@code DjlGuard.of(...).accumulateInDouble()}) every reduction that can overflow or underflow
 * (Σx², Σ|x|, means) first widens its input to a float64 temporary of the step: exact to float64,
 * at the price of one conversion pass and a float64 copy of each gradient while it is reduced.
 * {@link #accumulatesInDouble()} says which mode an instance runs.
 *
 * <p><b>One read of each gradient per step.</b> Σx² of an array is kept until the step ends
 * ({@link #freeTemporaries()}) or the array changes through these primitives, so a skip's
 * all-finite test and a global clip after it read each gradient once. An array whose values
 * change by other means within a step (between two pipeline calls that share a step) must not be
 * handed to them again before {@code freeTemporaries()}. Likewise a rank-0 float64 temporary whose
 * value is known on the host (a bound made by {@link #scalar(double)}, the CPU's summed Σg², a
 * scalar read once) is read again without a copy, and on the CPU arithmetic between such scalars
 * (a clip's √, max and ÷) runs on the host in float64, the same results as PyTorch's float64
 * kernels (bit for bit but for a NaN's sign and payload; torch's rules for NaN and signed zeros in
 * max and min) without a framework call each.
 *
 * <p>Not thread-safe: one training loop drives one instance.
 *
 * <pre>{@code
 * try (DjlOps ops = DjlOps.on(trainer.getManager())) {
 *     StepResult<NDArray> r = pipeline.step(gradients, ops, StepContext.ofBatch(64));
 *     double norm = r.metric("clipByGlobalNorm.norm").orElse(Double.NaN);
 *     ops.freeTemporaries();
 * }
 * }</pre>
 *
 * <p>Reference: PyTorch {@code torch.nn.utils.clip_grad_norm_},
 * {@code torch.nan_to_num}; DJL {@code NDManager} memory scopes.
 */
public final class DjlOps implements TensorOps<NDArray>, AutoCloseable {
    private static final NDIndex ALL = new NDIndex("...");

    private final NDManager state;
    private final boolean inDouble;
    private NDManager step;
    /**
     * The step's gradients whose scaling may be left to the optimizer ({@link #adoptDeferrable}), and
     * what is pending on them: the true value of such a gradient is its factor × what it stores.
     */
    private final Map<NDArray, Double> deferrable = new IdentityHashMap<>();
    /**
     * Deferrable gradients a clamp left in a new array ({@link #clampInPlace}): their true values,
     * which the optimizer reads instead ({@link #takeReplacement}) with no copy back. A gradient has
     * a replacement or a pending factor, never both.
     */
    private final Map<NDArray, NDArray> replaced = new IdentityHashMap<>();
    /**
     * Σx² of arrays this step, before any pending factor (a float64 rank-0 temporary), until the
     * array changes: the skip's all-finite test and a global clip after it read each gradient once.
     */
    private final Map<NDArray, NDArray> squares = new IdentityHashMap<>();
    /** As {@link #squares}, read to the host by {@link #sumOfSquares(List)} on the CPU. */
    private final Map<NDArray, Double> hostSquares = new IdentityHashMap<>();
    /**
     * The values of this step's rank-0 float64 temporaries known on the host (made by
     * {@link #scalar(double)} or read by {@link #toHost(NDArray)}): read again without a copy, and
     * on the CPU combined on the host (the same results as PyTorch's float64 kernels, without a framework call).
     */
    private final Map<NDArray, Double> known = new IdentityHashMap<>();

    private DjlOps(NDManager parent, boolean inDouble) {
        this.inDouble = inDouble;
        this.state = parent.newSubManager();
        this.state.setName("gradguard-state");
    }

    /**
     * Primitives whose arrays live under {@code parent} (and on its device): close this instance,
     * or {@code parent}, to free them all.
     *
     * @throws IllegalArgumentException if {@code parent} is null
     * @throws IllegalStateException if {@code parent} is closed
     */
    public static DjlOps on(NDManager parent) {
        return on(parent, false);
    }

    /**
     * As {@link #on(NDManager)}, with reductions in float64 when {@code accumulateInDouble} (see
     * the class documentation, "Precision").
     *
     * @throws IllegalArgumentException if {@code parent} is null
     * @throws IllegalStateException if {@code parent} is closed
     */
    public static DjlOps on(NDManager parent, boolean accumulateInDouble) {
        Checks.notNull("parent", parent);
        if (!parent.isOpen()) {
            throw new IllegalStateException("the NDManager " + parent.getName()
                    + " is closed: create DjlOps on an open manager, e.g. trainer.getManager()");
        }
        return new DjlOps(parent, accumulateInDouble);
    }

    /** The manager the current step's temporaries are attached to (opened on demand). */
    public NDManager stepManager() {
        if (step == null || !step.isOpen()) {
            if (!state.isOpen()) {
                throw new IllegalStateException("these DjlOps are closed (or their parent NDManager is): create new ones");
            }
            step = state.newSubManager();
            step.setName("gradguard-step");
        }
        return step;
    }

    /**
     * Closes every array the primitives created since the last call, except long-lived buffers
     * ({@link #zerosLike}, {@link #fromHost}). Backend metrics of a step must be read before.
     */
    public void freeTemporaries() {
        settleAll();
        deferrable.clear();
        replaced.clear();
        squares.clear();
        hostSquares.clear();
        known.clear();
        if (step != null) {
            step.close();
            step = null;
        }
    }

    /** Attaches an array the adapter obtained for this step (a gradient handle) to the step manager. */
    NDArray adopt(NDArray x) {
        return track(x);
    }

    /**
     * As {@link #adopt}, for a float32 gradient that the optimizer will read through a gradient
     * rescale ({@link DjlOptimizer}): a clip's scale of it by a factor in (0, 1) is then kept
     * pending instead of costing a pass ({@link #scaleInPlace}), until {@link #takePending} hands it
     * to the optimizer. Every primitive sees the true values: reductions fold the factor into their
     * result (Σx² × c², max|x| × c); any other use of the array applies the factor first, with the
     * same multiplication the clip would have made.
     */
    NDArray adoptDeferrable(NDArray x) {
        track(x);
        if (x.getDataType() == DataType.FLOAT32 && !x.getDevice().isGpu()) {
            deferrable.put(x, 1.0);
        }
        return x;
    }

    /**
     * The array holding {@code x}'s true values when a clamp left them in a new one (null if none),
     * which the caller now reads instead of {@code x} (and {@code x} is left as it was: the caller
     * resets it). Call before {@link #takePending}.
     */
    NDArray takeReplacement(NDArray x) {
        return replaced.remove(x);
    }

    /** The factor pending on {@code x} (1 if none), which the caller now applies; {@code x} is no longer deferrable. */
    double takePending(NDArray x) {
        Double f = deferrable.remove(x);
        return f == null ? 1.0 : f;
    }

    /** Applies what is pending on {@code x}, if anything, as the clip's own multiplication would have. */
    private NDArray settled(NDArray x) {
        NDArray r = replaced.remove(x);
        if (r != null) {
            x.set(ALL, r);
            r.close();
            return x;
        }
        Double f = deferrable.get(x);
        if (f != null && f != 1.0) {
            deferrable.put(x, 1.0);
            changes(x);
            x.muli(stepManager().create(f.doubleValue()));
        }
        return x;
    }

    /**
     * Forgets what was measured of {@code x}, whose values are about to change (or changed outside
     * these primitives); returns it.
     */
    NDArray changes(NDArray x) {
        squares.remove(x);
        hostSquares.remove(x);
        known.remove(x);
        return x;
    }

    /** Nothing pending is ever dropped: what a step did not hand to the optimizer is applied. */
    private void settleAll() {
        for (NDArray x : deferrable.keySet()) {
            if (!x.isReleased()) {
                settled(x);
            }
        }
    }

    /** Frees {@code x}'s replacement, if a clamp left one (its values are no longer wanted). */
    private void dropReplacement(NDArray x) {
        NDArray r = replaced.remove(x);
        if (r != null) {
            r.close();
        }
    }

    /** The array to read {@code x}'s values from: its replacement, if a clamp left one. */
    private NDArray source(NDArray x) {
        NDArray r = replaced.get(x);
        return r == null ? x : r;
    }

    /** {@code reduced} (a rank-0 temporary) times what is pending on {@code x} to the given power. */
    private NDArray folded(NDArray reduced, NDArray x, int power) {
        Double f = deferrable.get(x);
        if (f == null || f == 1.0) {
            return reduced;
        }
        return track(reduced.mul(power == 2 ? f * f : f));
    }

    /** Frees the temporaries and every long-lived buffer. */
    @Override
    public void close() {
        freeTemporaries();
        state.close();
    }

    @Override
    public String toString() {
        return "DjlOps[" + state.getEngine().getEngineName() + ", " + state.getDevice() + "]";
    }

    private NDArray track(NDArray x) {
        NDManager m = stepManager();
        if (x.getManager() != m) {
            x.attach(m);
        }
        return x;
    }

    /** A rank-0 float64 array holding the reduction's value, in the step manager. */
    private NDArray widen(NDArray reduced) {
        track(reduced);
        return reduced.getDataType() == DataType.FLOAT64 ? reduced : track(reduced.toType(DataType.FLOAT64, false));
    }

    /** A rank-0 array of x's dtype holding {@code value}, in the step manager. */
    private NDArray scalarLike(NDArray x, double value) {
        NDManager m = stepManager();
        return x.getDataType() == DataType.FLOAT64 ? m.create(value) : track(m.create(value).toType(x.getDataType(), false));
    }

    /**
     * x itself, or a copy (a temporary of the step) in float64 when reductions run in float64, in
     * float32 for a float16 or bfloat16 x (squares of float16 values below 2.4e-4 are subnormal or
     * 0, and Σx² overflows at 65504).
     */
    private NDArray reducible(NDArray x) {
        DataType t = x.getDataType();
        if (inDouble && t != DataType.FLOAT64) {
            return track(x.toType(DataType.FLOAT64, true));
        }
        return t == DataType.FLOAT16 || t == DataType.BFLOAT16 ? track(x.toType(DataType.FLOAT32, true)) : x;
    }

    private static boolean empty(NDArray x) {
        return x.getShape().size() == 0;
    }

    // ---- shape and host transfer -------------------------------------------------------------

    @Override
    public long[] shape(NDArray x) {
        return x.getShape().getShape();
    }

    @Override
    public NDArray scalar(double value) {
        NDArray s = stepManager().create(value);
        known.put(s, value);
        return s;
    }

    /** The host value of a rank-0 float64 temporary of this step, or null if it is not known. */
    private Double hostValue(NDArray x) {
        return known.isEmpty() ? null : known.get(x);
    }

    /** Both operands' values are known and they live on the CPU: the arithmetic is done on the host. */
    private boolean onHost(NDArray a, NDArray b) {
        return hostValue(a) != null && hostValue(b) != null && !a.getDevice().isGpu();
    }

    /**
     * @throws IllegalArgumentException if {@code scalar} has more than one element
     */
    @Override
    public double toHost(NDArray scalar) {
        Double k = hostValue(scalar);
        if (k != null) {
            return k;
        }
        if (scalar.getShape().size() != 1) {
            throw new IllegalArgumentException("toHost needs a single-element array, got shape " + scalar.getShape());
        }
        if (scalar.getDataType() == DataType.FLOAT64) {
            double v = scalar.toDoubleArray()[0];
            if (scalar.getShape().dimension() == 0 && scalar.getManager() == step) {
                known.put(scalar, v); // a temporary of this step: it changes only through these primitives
            }
            return v;
        }
        try (NDArray d = scalar.toType(DataType.FLOAT64, true)) {
            return d.toDoubleArray()[0];
        }
    }

    /** One device-to-host copy for all of them: the scalars are widened, concatenated on the device, then copied. */
    @Override
    public double[] toHost(java.util.List<NDArray> scalars) {
        if (scalars.size() <= 1) {
            return scalars.isEmpty() ? new double[0] : new double[] {toHost(scalars.get(0))};
        }
        double[] values = new double[scalars.size()];
        for (int i = 0; i < values.length; i++) {
            Double k = hostValue(scalars.get(i));
            if (k == null) {
                return copied(scalars);
            }
            values[i] = k;
        }
        return values;
    }

    private double[] copied(List<NDArray> scalars) {
        ai.djl.ndarray.NDList parts = new ai.djl.ndarray.NDList(scalars.size());
        for (NDArray s : scalars) {
            if (s.getShape().size() != 1) {
                throw new IllegalArgumentException("toHost needs single-element arrays, got shape " + s.getShape());
            }
            NDArray d = s.getDataType() == DataType.FLOAT64 ? s : track(s.toType(DataType.FLOAT64, false));
            parts.add(track(d.reshape(1)));
        }
        return track(ai.djl.ndarray.NDArrays.concat(parts)).toDoubleArray();
    }

    @Override
    public float[] toHostArray(NDArray x) {
        settled(x);
        if (x.getDataType() == DataType.FLOAT32) {
            return x.toFloatArray();
        }
        try (NDArray f = x.toType(DataType.FLOAT32, true)) {
            return f.toFloatArray();
        }
    }

    @Override
    public double[] toHostDoubles(NDArray x) {
        settled(x);
        if (x.getDataType() == DataType.FLOAT64) {
            return x.toDoubleArray();
        }
        try (NDArray d = x.toType(DataType.FLOAT64, true)) {
            return d.toDoubleArray();
        }
    }

    /**
     * @throws IllegalArgumentException if the data does not fill the shape
     */
    @Override
    public NDArray fromHost(float[] data, long[] shape) {
        return state.create(data, checkedShape(data.length, shape));
    }

    @Override
    public boolean supportsFloat64() {
        return true;
    }

    @Override
    public boolean isFloat64(NDArray x) {
        return x.getDataType() == DataType.FLOAT64;
    }

    /**
     * @throws IllegalArgumentException if the data does not fill the shape
     */
    @Override
    public NDArray fromHost(double[] data, long[] shape) {
        return state.create(data, checkedShape(data.length, shape));
    }

    private static Shape checkedShape(int length, long[] shape) {
        Objects.requireNonNull(shape, "shape");
        Shape s = new Shape(shape);
        if (s.size() != length) {
            throw new IllegalArgumentException("data must fill shape " + Arrays.toString(shape) + " (" + s.size()
                    + " elements), got " + length + " values");
        }
        return s;
    }

    @Override
    public NDArray zerosLike(NDArray like) {
        return state.zeros(like.getShape(), like.getDataType(), like.getDevice());
    }

    @Override
    public void release(NDArray x) {
        changes(x);
        deferrable.remove(x);
        dropReplacement(x);
        x.close();
    }

    // ---- reductions -----------------------------------------------------------------------------

    @Override
    public NDArray sumOfSquares(NDArray x) {
        if (empty(x)) {
            return scalar(0.0);
        }
        NDArray raw = squares.get(x);
        Double known = hostSquares.get(x);
        if (raw == null && known != null) {
            raw = scalar(known);
            squares.put(x, raw);
        }
        if (raw == null) {
            // one fused pass (BLAS dot) over a flat view: no x² temporary
            try (NDArray flat = reducible(source(x)).reshape(-1)) {
                raw = widen(flat.dot(flat));
            }
            squares.put(x, raw);
        }
        return folded(raw, x, 2);
    }

    /**
     * {@inheritDoc}
     *
     * <p>On the CPU each array's Σx² (the dot {@link #sumOfSquares(NDArray)} takes) is copied to the
     * host with the others in one read and added there, in float64 and in order: the same numbers
     * as adding the rank-0 sums in DJL, in fewer DJL calls, which cost more than the arithmetic on
     * small tensors. Each is kept for the step until its array changes, so a later read is free. On
     * a GPU the sums stay on the device (no sync).
     */
    @Override
    public NDArray sumOfSquares(List<NDArray> xs) {
        for (NDArray x : xs) {
            if (x.getDevice().isGpu()) {
                return TensorOps.super.sumOfSquares(xs);
            }
        }
        NDList dots = new NDList();
        for (NDArray x : xs) {
            if (!empty(x) && !hostSquares.containsKey(x)) {
                try (NDArray flat = reducible(source(x)).reshape(-1)) {
                    dots.add(track(flat.dot(flat)));
                }
            }
        }
        double[] read = readAll(dots);
        double sum = 0;
        int k = 0;
        for (NDArray x : xs) {
            double raw = 0;
            if (!empty(x)) {
                Double known = hostSquares.get(x);
                raw = known != null ? known : read[k++];
                hostSquares.put(x, raw);
            }
            Double f = deferrable.get(x);
            sum += f == null || f == 1.0 ? raw : raw * (f * f);
        }
        return scalar(sum);
    }

    /** Rank-0 arrays' values, widened to float64, in one host copy. */
    private double[] readAll(NDList scalars) {
        if (scalars.isEmpty()) {
            return new double[0];
        }
        boolean f32 = true;
        for (NDArray s : scalars) {
            f32 &= s.getDataType() == DataType.FLOAT32;
        }
        if (!f32) {
            NDList wide = new NDList(scalars.size());
            for (NDArray s : scalars) {
                wide.add(widen(s));
            }
            return scalars.size() == 1 ? wide.head().toDoubleArray() : track(NDArrays.stack(wide)).toDoubleArray();
        }
        float[] values = scalars.size() == 1 ? scalars.head().toFloatArray() : track(NDArrays.stack(scalars)).toFloatArray();
        double[] out = new double[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = values[i];
        }
        return out;
    }

    @Override
    public NDArray sumOfAbs(NDArray x) {
        if (empty(x)) {
            return scalar(0.0);
        }
        try (NDArray abs = reducible(source(x)).abs()) {
            return folded(widen(abs.sum()), x, 1);
        }
    }

    @Override
    public NDArray maxAbs(NDArray x) {
        if (empty(x)) {
            return scalar(0.0);
        }
        // max(|max x|, |min x|): two reductions, no |x| copy of the whole tensor; NaN propagates
        NDArray v = source(x);
        try (NDArray hi = v.max(); NDArray lo = v.min(); NDArray absHi = hi.abs(); NDArray absLo = lo.abs()) {
            return folded(widen(absHi.maximum(absLo)), x, 1);
        }
    }

    @Override
    public NDArray countNonFinite(NDArray x) {
        if (empty(x)) {
            return scalar(0.0);
        }
        // x - x is 0 for finite x and NaN for NaN and ±Inf
        NDArray v = source(x);
        try (NDArray diff = v.sub(v); NDArray bad = diff.isNaN(); NDArray count = bad.sum()) {
            return track(count.toType(DataType.FLOAT64, false));
        }
    }

    @Override
    public NDArray sumOfSquares(NDArray x, int[] axes) {
        try (NDArray sq = reducible(settled(x)).square()) {
            return widen(sq.sum(axes, true));
        }
    }

    @Override
    public NDArray mean(NDArray x, int[] axes) {
        return widen(reducible(settled(x)).mean(axes, true));
    }

    // ---- functional element-wise math -------------------------------------------------------------

    @Override
    public NDArray add(NDArray a, NDArray b) {
        if (onHost(a, b)) {
            return scalar(hostValue(a) + hostValue(b));
        }
        return track(settled(a).add(settled(b)));
    }

    @Override
    public NDArray mul(NDArray a, NDArray b) {
        if (onHost(a, b)) {
            return scalar(hostValue(a) * hostValue(b));
        }
        return track(settled(a).mul(settled(b)));
    }

    @Override
    public NDArray div(NDArray a, NDArray b) {
        if (onHost(a, b)) {
            return scalar(hostValue(a) / hostValue(b));
        }
        return track(settled(a).div(settled(b)));
    }

    @Override
    public NDArray min(NDArray a, NDArray b) {
        if (onHost(a, b)) {
            return scalar(minimum(hostValue(a), hostValue(b)));
        }
        return track(settled(a).minimum(settled(b)));
    }

    @Override
    public NDArray max(NDArray a, NDArray b) {
        if (onHost(a, b)) {
            return scalar(maximum(hostValue(a), hostValue(b)));
        }
        return track(settled(a).maximum(settled(b)));
    }

    /** torch.minimum on two float64 values: NaN propagates; of two equal values (0 and -0) the first. */
    private static double minimum(double a, double b) {
        return Double.isNaN(a) ? a : Double.isNaN(b) ? b : b < a ? b : a;
    }

    /** torch.maximum on two float64 values: NaN propagates; of two equal values (0 and -0) the first. */
    private static double maximum(double a, double b) {
        return Double.isNaN(a) ? a : Double.isNaN(b) ? b : b > a ? b : a;
    }

    @Override
    public NDArray sqrt(NDArray a) {
        if (onHost(a, a)) {
            return scalar(Math.sqrt(hostValue(a)));
        }
        return track(settled(a).sqrt());
    }

    // ---- in-place updates ---------------------------------------------------------------------

    /**
     * {@inheritDoc}
     *
     * <p>On the CPU a rank-0 factor of exactly 1 (a clip that does not bite) is read and the
     * multiplication skipped: the result is bit-identical (x·1 = x, NaN included) and a full pass
     * over the gradient is saved. On a GPU the factor is always multiplied in, with no sync.
     */
    @Override
    public void scaleInPlace(NDArray x, NDArray factor) {
        if (factor.getShape().dimension() == 0 && !factor.getDevice().isGpu()) {
            double c = toHost(factor);
            if (c == 1.0) {
                return;
            }
            Double pending = deferrable.get(x);
            if (pending != null && c > 0 && c < 1) {
                settled(x); // a second scale: the first is applied, as the clip would have, and this one waits
                deferrable.put(x, c);
                return;
            }
        }
        changes(settled(x)).muli(factor);
    }

    @Override
    public void addInPlace(NDArray x, NDArray y, double alpha) {
        changes(settled(x));
        settled(y);
        if (alpha == 1.0) {
            x.addi(y);
            return;
        }
        try (NDArray scaled = y.mul(scalarLike(y, alpha))) {
            x.addi(scaled);
        }
    }

    /**
     * {@inheritDoc}
     *
     * <p>DJL has no in-place clamp: the clamped values go to a new array. For a gradient the
     * optimizer reads through {@link #takeReplacement} ({@link DjlOptimizer}) that array becomes
     * the gradient's values, and the optimizer reads it; any other use of the gradient first copies
     * it back. Elsewhere it is copied back at once.
     */
    @Override
    public void clampInPlace(NDArray x, double lo, double hi) {
        if (empty(x)) {
            return;
        }
        changes(x);
        NDManager step = stepManager();
        if (deferrable.containsKey(x) && x.getManager() == step) {
            if (!replaced.containsKey(x)) {
                settled(x); // a pending factor, applied as the clip would have
            }
            NDArray from = source(x);
            NDArray clamped = track(x.getDataType() == DataType.FLOAT64 ? from.clip(lo, hi) : from.clip((float) lo, (float) hi));
            dropReplacement(x);
            replaced.put(x, clamped);
            return;
        }
        settled(x);
        if (x.getManager() == step) {
            clampInto(x, lo, hi);
            return;
        }
        // NDArray.clip leaves its two bound scalars in x's manager: lend x to a scope for the call
        try (NDManager scope = step.newSubManager()) {
            x.tempAttach(scope);
            clampInto(x, lo, hi);
        }
    }

    /** torch.clamp (NaN stays NaN) into a new array, copied back into x's storage. */
    private static void clampInto(NDArray x, double lo, double hi) {
        boolean f64 = x.getDataType() == DataType.FLOAT64;
        try (NDArray clamped = f64 ? x.clip(lo, hi) : x.clip((float) lo, (float) hi)) {
            x.set(ALL, clamped);
        }
    }

    @Override
    public void replaceNonFinite(NDArray x, double nan, double posInf, double negInf) {
        if (empty(x)) {
            return;
        }
        changes(settled(x));
        // masks first (from the unchanged x), then masked_fill_ in place; the indexer closes each mask
        NDArray nanMask = x.isNaN();
        NDArray posMask = posInf == Double.POSITIVE_INFINITY ? null : x.eq(scalarLike(x, Double.POSITIVE_INFINITY));
        NDArray negMask = negInf == Double.NEGATIVE_INFINITY ? null : x.eq(scalarLike(x, Double.NEGATIVE_INFINITY));
        maskedFill(x, nanMask, nan);
        maskedFill(x, posMask, posInf);
        maskedFill(x, negMask, negInf);
    }

    private void maskedFill(NDArray x, NDArray mask, double value) {
        if (mask != null) {
            track(mask);
            x.set(new NDIndex("{}", mask), scalarLike(x, value));
        }
    }

    @Override
    public void assign(NDArray dst, NDArray src) {
        if (!dst.getShape().equals(src.getShape())) {
            throw new IllegalArgumentException("src must have dst's shape " + dst.getShape() + ", got " + src.getShape());
        }
        settled(src);
        changes(dst);
        dropReplacement(dst); // every element is overwritten
        if (deferrable.containsKey(dst)) {
            deferrable.put(dst, 1.0); // every element is overwritten
        }
        if (!empty(dst)) {
            dst.set(ALL, src);
        }
    }

    @Override
    public void fill(NDArray x, double value) {
        changes(x);
        dropReplacement(x); // every element is overwritten
        if (deferrable.containsKey(x)) {
            deferrable.put(x, 1.0); // every element is overwritten
        }
        if (!empty(x)) {
            x.set(ALL, scalarLike(x, value));
        }
    }

    /** Whether reductions run in float64 ({@code on(parent, true)}) rather than the gradients' dtype. */
    @Override
    public boolean accumulatesInDouble() {
        return inDouble;
    }
}
