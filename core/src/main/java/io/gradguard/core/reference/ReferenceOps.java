package io.gradguard.core.reference;

import io.gradguard.core.spi.TensorOps;
import java.util.Arrays;
import java.util.function.DoubleBinaryOperator;
import java.util.function.DoubleUnaryOperator;
import java.util.stream.IntStream;

/**
 * The pure-Java reference backend: every {@link TensorOps} primitive over {@link ReferenceTensor}s,
 * with reductions accumulated in float64. It is the oracle the framework adapters are compared to
 * and runs the same conformance kit; it is also fast enough to use for real on the CPU: large
 * tensors (&ge; 4M elements) are processed in fixed 1M-element chunks on all cores, and partial
 * sums are combined in chunk order, so results are bit-identical whatever the thread count.
 *
 * <pre>{@code
 * ReferenceOps ops = ReferenceOps.INSTANCE;
 * pipeline.step(gradients, ops, StepContext.ofBatch(32));
 * }</pre>
 */
public final class ReferenceOps implements TensorOps<ReferenceTensor> {
    /** The shared instance (the backend holds no state). */
    public static final ReferenceOps INSTANCE = new ReferenceOps();

    static final int CHUNK = 1 << 20;
    static final int PARALLEL_THRESHOLD = 1 << 22;

    private ReferenceOps() {
    }

    @Override
    public String toString() {
        return "ReferenceOps";
    }

    /**
     * Whether Σx² of float32 tensors runs on JDK 17's incubating Vector API (about three times the
     * scalar loop's speed): true when the JVM was started with
     * {@code --add-modules jdk.incubator.vector} on a CPU with 256- or 512-bit vectors, unless
     * {@code -Dgradguard.simd=false}. Results are bit-identical either way.
     */
    public static boolean usesVectorApi() {
        return Kernels.SIMD;
    }

    // ---- shape and host transfer -------------------------------------------------------------

    @Override
    public long[] shape(ReferenceTensor x) {
        return x.shape();
    }

    @Override
    public ReferenceTensor scalar(double value) {
        return ReferenceTensor.scalar(value);
    }

    @Override
    public double toHost(ReferenceTensor scalar) {
        if (scalar.size() != 1) {
            throw new IllegalArgumentException("toHost needs a single-element tensor, got shape " + Arrays.toString(scalar.shape()));
        }
        return scalar.get(0);
    }

    @Override
    public float[] toHostArray(ReferenceTensor x) {
        if (x.floats() != null) {
            return x.floats().clone();
        }
        double[] d = x.doubles();
        float[] out = new float[d.length];
        for (int i = 0; i < d.length; i++) {
            out[i] = (float) d[i];
        }
        return out;
    }

    @Override
    public double[] toHostDoubles(ReferenceTensor x) {
        return x.toDoubles();
    }

    @Override
    public ReferenceTensor fromHost(float[] data, long[] shape) {
        return ReferenceTensor.of(data.clone(), shape);
    }

    @Override
    public ReferenceTensor fromHost(double[] data, long[] shape) {
        return ReferenceTensor.ofDoubles(data.clone(), shape);
    }

    @Override
    public boolean isFloat64(ReferenceTensor x) {
        return x.isDouble();
    }

    @Override
    public boolean supportsFloat64() {
        return true;
    }

    @Override
    public boolean accumulatesInDouble() {
        return true;
    }

    @Override
    public ReferenceTensor zerosLike(ReferenceTensor like) {
        return like.isDouble() ? ReferenceTensor.ofDoubles(new double[like.size()], like.shapeRef())
                : ReferenceTensor.of(new float[like.size()], like.shapeRef());
    }

    @Override
    public void release(ReferenceTensor x) {
        // heap memory: the garbage collector frees it
    }

    // ---- reductions -----------------------------------------------------------------------------

    @Override
    public ReferenceTensor sumOfSquares(ReferenceTensor x) {
        float[] f = x.floats();
        if (f != null) {
            return scalar(sumChunks(f.length, (lo, hi) -> Kernels.sumSquares(f, lo, hi)));
        }
        double[] d = x.doubles();
        return scalar(sumChunks(d.length, (lo, hi) -> Kernels.sumSquares(d, lo, hi)));
    }

    @Override
    public ReferenceTensor sumOfAbs(ReferenceTensor x) {
        return scalar(sumChunks(x.size(), (lo, hi) -> {
            double s = 0;
            for (int i = lo; i < hi; i++) {
                s += Math.abs(x.get(i));
            }
            return s;
        }));
    }

    @Override
    public ReferenceTensor maxAbs(ReferenceTensor x) {
        double m = 0;
        for (int i = 0, n = x.size(); i < n; i++) {
            double a = Math.abs(x.get(i));
            if (!(a <= m)) { // also true for NaN: NaN wins
                m = a;
                if (Double.isNaN(a)) {
                    break;
                }
            }
        }
        return scalar(m);
    }

    @Override
    public ReferenceTensor countNonFinite(ReferenceTensor x) {
        return scalar(sumChunks(x.size(), (lo, hi) -> {
            long c = 0;
            for (int i = lo; i < hi; i++) {
                if (!Double.isFinite(x.get(i))) {
                    c++;
                }
            }
            return c;
        }));
    }

    @Override
    public ReferenceTensor sumOfSquares(ReferenceTensor x, int[] axes) {
        return reduce(x, axes, false);
    }

    @Override
    public ReferenceTensor mean(ReferenceTensor x, int[] axes) {
        return reduce(x, axes, true);
    }

    private ReferenceTensor reduce(ReferenceTensor x, int[] axes, boolean mean) {
        long[] shape = x.shapeRef();
        long[] outShape = shape.clone();
        for (int a : axes) {
            if (a < 0 || a >= shape.length) {
                throw new IllegalArgumentException("axes must be in [0, " + shape.length + "), got " + Arrays.toString(axes));
            }
            outShape[a] = 1;
        }
        int kept = keptAxis(shape, outShape);
        float[] f = x.floats();
        if (!mean && f != null && kept >= 0) {
            double[] out = new double[(int) shape[kept]];
            Units u = new Units(shape, kept);
            if (u.inner == 1 && u.units <= COLUMN_PARTIALS_MAX_UNITS && u.size >= PARALLEL_THRESHOLD) {
                sumSquaresPerColumnInRowChunks(f, u, out);
            } else {
                forUnitBlocks(u, (lo, hi) -> Kernels.sumSquaresPerUnit(f, u.outer, u.units, u.inner, lo, hi, out));
            }
            return ReferenceTensor.ofDoubles(out, outShape);
        }
        double[] out = new double[(int) count(outShape)];
        long reduced = out.length == 0 ? 0 : count(shape) / out.length;
        Broadcast map = Broadcast.of(shape, outShape);
        for (int i = 0, n = x.size(); i < n; i++) {
            double v = x.get(i);
            out[map.index(i)] += mean ? v : v * v;
        }
        if (mean && reduced > 0) {
            for (int i = 0; i < out.length; i++) {
                out[i] /= reduced;
            }
        }
        return ReferenceTensor.ofDoubles(out, outShape);
    }

    // ---- functional element-wise math -----------------------------------------------------------

    @Override
    public ReferenceTensor add(ReferenceTensor a, ReferenceTensor b) {
        return binary(a, b, Double::sum);
    }

    @Override
    public ReferenceTensor mul(ReferenceTensor a, ReferenceTensor b) {
        return binary(a, b, (p, q) -> p * q);
    }

    @Override
    public ReferenceTensor div(ReferenceTensor a, ReferenceTensor b) {
        return binary(a, b, (p, q) -> p / q);
    }

    @Override
    public ReferenceTensor min(ReferenceTensor a, ReferenceTensor b) {
        return binary(a, b, Math::min);
    }

    @Override
    public ReferenceTensor max(ReferenceTensor a, ReferenceTensor b) {
        return binary(a, b, Math::max);
    }

    @Override
    public ReferenceTensor sqrt(ReferenceTensor a) {
        return unary(a, Math::sqrt);
    }

    private static ReferenceTensor unary(ReferenceTensor a, DoubleUnaryOperator op) {
        double[] out = new double[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = op.applyAsDouble(a.get(i));
        }
        return ReferenceTensor.ofDoubles(out, a.shapeRef());
    }

    private static ReferenceTensor binary(ReferenceTensor a, ReferenceTensor b, DoubleBinaryOperator op) {
        long[] shape = Broadcast.resultShape(a.shapeRef(), b.shapeRef());
        Broadcast ia = Broadcast.of(shape, a.shapeRef());
        Broadcast ib = Broadcast.of(shape, b.shapeRef());
        double[] out = new double[(int) count(shape)];
        for (int i = 0; i < out.length; i++) {
            out[i] = op.applyAsDouble(a.get(ia.index(i)), b.get(ib.index(i)));
        }
        return ReferenceTensor.ofDoubles(out, shape);
    }

    // ---- in-place updates -------------------------------------------------------------------

    @Override
    public void scaleInPlace(ReferenceTensor x, ReferenceTensor factor) {
        if (factor.size() == 1 && factor.shapeRef().length <= x.shapeRef().length) {
            double c = factor.get(0);
            if (c == 1.0) {
                return; // x·1 == x, bit for bit (NaN and -0 included): no pass over x
            }
            float[] f = x.floats();
            if (f != null) {
                float cf = (float) c;
                forChunks(f.length, (lo, hi) -> Kernels.scale(f, lo, hi, cf));
            } else {
                double[] d = x.doubles();
                forChunks(d.length, (lo, hi) -> Kernels.scale(d, lo, hi, c));
            }
            return;
        }
        float[] xf = x.floats();
        long[] shape = x.shapeRef();
        int kept = factor.shapeRef().length == shape.length ? keptAxis(shape, factor.shapeRef()) : -1;
        if (xf != null && kept >= 0) {
            float[] f = new float[(int) shape[kept]];
            for (int i = 0; i < f.length; i++) {
                f[i] = (float) factor.get(i);
            }
            Units u = new Units(shape, kept);
            if (u.inner == 1) {
                // one factor per column: whole rows per task, read front to back
                int rows = (int) u.outer;
                int rowsPerChunk = Math.max(1, CHUNK / Math.max(1, u.units));
                if (u.size < PARALLEL_THRESHOLD) {
                    Kernels.scaleRows(xf, 0, rows, u.units, f);
                } else {
                    IntStream.range(0, (rows + rowsPerChunk - 1) / rowsPerChunk).parallel().forEach(c ->
                            Kernels.scaleRows(xf, c * rowsPerChunk, Math.min(rows, (c + 1) * rowsPerChunk), u.units, f));
                }
            } else {
                forUnitBlocks(u, (lo, hi) -> Kernels.scalePerUnit(xf, u.outer, u.units, u.inner, lo, hi, f));
            }
            return;
        }
        Broadcast map = Broadcast.of(x.shapeRef(), factor.shapeRef());
        for (int i = 0, n = x.size(); i < n; i++) {
            x.set(i, x.get(i) * factor.get(map.index(i)));
        }
    }

    @Override
    public void addInPlace(ReferenceTensor x, ReferenceTensor y, double alpha) {
        float[] xf = x.floats();
        float[] yf = y.floats();
        if (xf != null && yf != null && Arrays.equals(x.shapeRef(), y.shapeRef())) {
            float a = (float) alpha;
            forChunks(xf.length, (lo, hi) -> Kernels.axpy(xf, yf, lo, hi, a));
            return;
        }
        Broadcast map = Broadcast.of(x.shapeRef(), y.shapeRef());
        for (int i = 0, n = x.size(); i < n; i++) {
            x.set(i, x.get(i) + alpha * y.get(map.index(i)));
        }
    }

    @Override
    public void clampInPlace(ReferenceTensor x, double lo, double hi) {
        float[] f = x.floats();
        if (f != null) {
            float l = (float) lo;
            float h = (float) hi;
            forChunks(f.length, (a, b) -> Kernels.clamp(f, a, b, l, h));
            return;
        }
        double[] d = x.doubles();
        for (int i = 0; i < d.length; i++) {
            double v = d[i];
            d[i] = v < lo ? lo : v > hi ? hi : v;
        }
    }

    @Override
    public void replaceNonFinite(ReferenceTensor x, double nan, double posInf, double negInf) {
        forChunks(x.size(), (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                double v = x.get(i);
                if (Double.isNaN(v)) {
                    x.set(i, nan);
                } else if (v == Double.POSITIVE_INFINITY) {
                    x.set(i, posInf);
                } else if (v == Double.NEGATIVE_INFINITY) {
                    x.set(i, negInf);
                }
            }
        });
    }

    @Override
    public void assign(ReferenceTensor dst, ReferenceTensor src) {
        if (!Arrays.equals(dst.shapeRef(), src.shapeRef())) {
            throw new IllegalArgumentException("assign needs equal shapes, got dst " + Arrays.toString(dst.shapeRef())
                    + " and src " + Arrays.toString(src.shapeRef()));
        }
        if (dst.floats() != null && src.floats() != null) {
            float[] from = src.floats();
            float[] to = dst.floats();
            forChunks(from.length, (lo, hi) -> System.arraycopy(from, lo, to, lo, hi - lo));
        } else if (dst.doubles() != null && src.doubles() != null) {
            double[] from = src.doubles();
            double[] to = dst.doubles();
            forChunks(from.length, (lo, hi) -> System.arraycopy(from, lo, to, lo, hi - lo));
        } else {
            for (int i = 0, n = src.size(); i < n; i++) {
                dst.set(i, src.get(i));
            }
        }
    }

    @Override
    public void fill(ReferenceTensor x, double value) {
        if (x.floats() != null) {
            float[] f = x.floats();
            float v = (float) value;
            forChunks(f.length, (lo, hi) -> Arrays.fill(f, lo, hi, v));
        } else {
            double[] d = x.doubles();
            forChunks(d.length, (lo, hi) -> Arrays.fill(d, lo, hi, value));
        }
    }

    // ---- chunked execution ----------------------------------------------------------------------

    @FunctionalInterface
    interface RangeSum {
        double sum(int lo, int hi);
    }

    @FunctionalInterface
    interface RangeTask {
        void run(int lo, int hi);
    }

    /** Sums a range function; large ranges in fixed chunks on all cores, combined in chunk order. */
    static double sumChunks(int n, RangeSum fn) {
        if (n < PARALLEL_THRESHOLD) {
            return fn.sum(0, n);
        }
        int chunks = (n + CHUNK - 1) / CHUNK;
        double[] parts = new double[chunks];
        IntStream.range(0, chunks).parallel().forEach(c -> parts[c] = fn.sum(c * CHUNK, Math.min(n, (c + 1) * CHUNK)));
        double s = 0;
        for (double p : parts) {
            s += p;
        }
        return s;
    }

    static void forChunks(int n, RangeTask fn) {
        if (n < PARALLEL_THRESHOLD) {
            fn.run(0, n);
            return;
        }
        int chunks = (n + CHUNK - 1) / CHUNK;
        IntStream.range(0, chunks).parallel().forEach(c -> fn.run(c * CHUNK, Math.min(n, (c + 1) * CHUNK)));
    }

    /**
     * The one axis where {@code small} keeps {@code full}'s size while every other axis of
     * {@code small} is 1 (a per-unit tensor), or -1. Equal ranks are assumed.
     */
    private static int keptAxis(long[] full, long[] small) {
        int kept = -1;
        for (int i = 0; i < full.length; i++) {
            if (small[i] == full[i] && full[i] != 1) {
                if (kept >= 0) {
                    return -1;
                }
                kept = i;
            } else if (small[i] != 1) {
                return -1;
            }
        }
        return kept;
    }

    /** A tensor viewed as [outer, units, inner] around its output-unit axis. */
    private static final class Units {
        final long outer;
        final int units;
        final int inner;
        final long size;

        Units(long[] shape, int axis) {
            long o = 1;
            long in = 1;
            for (int i = 0; i < axis; i++) {
                o *= shape[i];
            }
            for (int i = axis + 1; i < shape.length; i++) {
                in *= shape[i];
            }
            outer = o;
            units = (int) shape[axis];
            inner = (int) in;
            size = o * units * in;
        }
    }

    /** Up to this many columns, per-column sums run over chunks of rows with partial sums (see below). */
    static final int COLUMN_PARTIALS_MAX_UNITS = 4096;

    /**
     * Per-column Σx² of a large [rows, units] matrix: chunks of about {@link #CHUNK} elements
     * (whole rows) on all cores, each reading its rows front to back into its own partial sums;
     * the partials are added in chunk order, so the result does not depend on the thread count.
     */
    private static void sumSquaresPerColumnInRowChunks(float[] f, Units u, double[] out) {
        int rowsPerChunk = Math.max(4, CHUNK / u.units);
        int chunks = (int) ((u.outer + rowsPerChunk - 1) / rowsPerChunk);
        double[][] parts = new double[chunks][];
        IntStream.range(0, chunks).parallel().forEach(c -> {
            double[] p = new double[u.units];
            Kernels.sumSquaresPerColumn(f, (long) c * rowsPerChunk, Math.min(u.outer, (long) (c + 1) * rowsPerChunk),
                    u.units, 0, u.units, p);
            parts[c] = p;
        });
        for (double[] p : parts) {
            for (int i = 0; i < out.length; i++) {
                out[i] += p[i];
            }
        }
    }

    /**
     * Runs {@code fn} over blocks of units. Large tensors are split into about one block per
     * {@link #CHUNK} elements, run on all cores; each unit is handled whole by one block, so
     * per-unit sums do not depend on the split. When a unit is a single column (inner = 1) a block
     * keeps at least 1024 units, so rows are read in runs of at least 4 KiB.
     */
    private static void forUnitBlocks(Units u, RangeTask fn) {
        long wanted = (u.size + CHUNK - 1) / CHUNK;
        int blocks = (int) Math.min(wanted, u.inner == 1 ? u.units / 1024 : u.units);
        if (u.size < PARALLEL_THRESHOLD || blocks < 2) {
            fn.run(0, u.units);
            return;
        }
        IntStream.range(0, blocks).parallel().forEach(b -> fn.run(
                (int) ((long) u.units * b / blocks), (int) ((long) u.units * (b + 1) / blocks)));
    }

    static long count(long[] shape) {
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        return n;
    }
}
