package io.gradguard.tensorflow;

import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.exceptions.TFInvalidArgumentException;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import io.gradguard.tensorflow.GraphMemo.Kind;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.ReduceMax;
import org.tensorflow.op.core.ReduceSum;
import org.tensorflow.op.core.SwitchCond;
import org.tensorflow.op.core.VarHandleOp;
import org.tensorflow.op.math.Mean;
import org.tensorflow.types.TBool;
import org.tensorflow.types.TFloat16;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.TInt32;
import org.tensorflow.types.TInt64;
import org.tensorflow.types.family.TNumber;

/**
 * The GradGuard {@link TensorOps} for TensorFlow Java in graph mode: every primitive adds
 * TensorFlow operations to a {@link Graph}, and nothing leaves the graph except the scalars a
 * transform or a monitor explicitly reads ({@link #toHost}).
 *
 * <h2>Memoized graph construction</h2>
 * A GradGuard pipeline runs on the host once per step and calls these primitives. Each primitive
 * is a pure function of its input nodes and its parameters, and is memoized on them
 * ({@link GraphMemo}, one {@link GraphMemo.Kind} per kind of node): the same
 * primitive on the same input nodes returns the node built the first time. Because the adapter
 * presents the same input nodes every step (the gradient nodes or gradient buffers, the state
 * variables' read nodes, the scalar slots below), replaying a pipeline adds no node after its first
 * step (or first steps, when a transform takes another branch later).
 *
 * <h2>Scalars are fed, not baked in</h2>
 * {@link #scalar(double)} does not create a constant: the k-th scalar of a step is the k-th
 * float64 placeholder ("scalar slot"), and its value is fed on every session run. A threshold that
 * changes every step (an adaptive clip, an accumulation weight) therefore reuses the same graph.
 * Fed tensors are cached per slot and only re-created when the value changes.
 *
 * <h2>Precision</h2>
 * By default reductions run in the tensor's dtype, as TensorFlow's own
 * {@code tf.clip_by_global_norm} and PyTorch's {@code clip_grad_norm_} do: Σx² of a float32
 * gradient is one fused {@code L2Loss} pass in float32 ({@code 2 · L2Loss(x)}), and only the
 * per-tensor result is widened to a float64 scalar, so sums across tensors, norms and coefficients
 * are float64; a float16 tensor is reduced in float32. {@link #accumulatesInDouble()} is then {@code false}: Σx² of float32 values near
 * 1e30 overflows to infinity, near 1e-30 underflows to 0. Casting every gradient to float64 first
 * made a guarded step of a 5M-parameter MLP 1.66&times; slower than the plain one.
 * {@link #accumulateInDouble()} asks for float64 reductions (a float32 gradient is cast to float64
 * before it is squared and summed) where that range matters more than speed. Either way gradients
 * keep their dtype; in-place updates cast their scalar or per-unit operand to it.
 *
 * <h2>State</h2>
 * {@link #zerosLike} and {@link #fromHost} create resource variables. Writes into them during a
 * step rebind the handle; {@link #commit()} returns the assign operations that store them, which
 * the adapter runs at the end of the step. Every assignment runs after the variable's read node,
 * so the values the step computed from the old state are not affected.
 *
 * <pre>{@code
 * try (Graph g = new Graph(); Session s = new Session(g)) {
 *     TfOps ops = new TfOps(s);              // or new TfOps(s).accumulateInDouble()
 *     TfTensor x = ops.fromHost(new float[] {3, 4}, new long[] {2});
 *     GradientPipeline.of(Transforms.clipByGlobalNorm(1.0))
 *         .step(GradientSet.of(new GradientTensor<>("x", new long[] {2}, Role.OTHER, "x", Layout.outputLast(), x)),
 *               ops, StepContext.ofBatch(1));
 *     float[] clipped = ops.toHostArray(x);    // [0.6, 0.8]
 *     ops.close();
 * }
 * }</pre>
 *
 * <p>Not thread-safe: one training loop drives it. Closing it closes the fed scalar tensors; the
 * graph and the session belong to the caller.
 *
 * @throws IllegalArgumentException from the primitives, for a non-float tensor or data that does
 *     not match its shape
 */
public final class TfOps implements TensorOps<TfTensor>, AutoCloseable {

    /** Called before any session run the ops make during a step (the adapter's hook). */
    interface RunHook {
        void beforeRun();
    }

    private final Session session;
    private final Graph graph;
    private final Ops tf;

    private final GraphMemo memo;
    private final Map<List<Output<?>>, Op> assigns = new HashMap<>();

    private final List<Output<TFloat64>> slots = new ArrayList<>();
    /** Graph-only ops: each scalar is a constant, one per value. */
    private final Map<Long, Output<?>> constants = new HashMap<>();
    private double[] slotValues = new double[16];
    private TFloat64[] slotTensors = new TFloat64[16];
    private int slotCursor;

    private final Set<TfTensor> buffers = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
    private final List<TfTensor> temporaries = new ArrayList<>();
    private Map<? extends Operand<?>, ? extends Tensor> feeds = Map.of();
    private RunHook hook;
    /** Host values of this step's scalars fetched by its last run (see {@link #keepScalars}), kept until the next step. */
    private final Map<Output<?>, Double> lastStepScalars = new HashMap<>();
    private static final java.util.concurrent.atomic.AtomicLong BUFFER_IDS = new java.util.concurrent.atomic.AtomicLong();
    private int bufferCount;
    private boolean doubleAccumulation;
    private boolean closed;
    /**
     * Graph-only ops gate {@code x · f} on {@code f != 1} for tensors of at least this many elements
     * (64 KiB of float32): below it the multiply is cheaper than the gate's two nodes in a run.
     */
    static final long GATE_MIN_ELEMENTS = 1 << 14;
    /** Whether {@link #scaleInPlace} by a scalar gates {@code x · 1} on every tensor (see there); graph-only ops gate large ones only. */
    private final boolean gateScaleByOne;

    /**
     * Ops that build into the session's graph and run on the session.
     *
     * @throws IllegalArgumentException if the session is null
     */
    public TfOps(Session session) {
        this(Checks.notNull("session", session).graph(), session, Ops.create(session.graph()).withSubScope("gradguard"));
    }

    /**
     * Graph-only ops, for a step that is built once and then runs entirely in the graph
     * ({@link TfOptimizer}): {@link #scalar} is a constant, and any host read or state buffer is refused
     * with a {@link HostReadException}. Their gradients feed only the wrapped optimizer's update (and
     * later stages), never a user's fetch, so {@link #scaleInPlace} needs no gate for exactness: the
     * one value {@code x · 1} can change is a subnormal, flushed to zero, and every consumer's
     * arithmetic (an {@code ApplyAdam}, an accumulation's add) runs on the same flushing kernels and
     * reads that subnormal as zero anyway, so the update is bit-identical either way. It keeps the
     * gate only on tensors of at least {@link #GATE_MIN_ELEMENTS} elements, where skipping a pass
     * over the tensor saves more than the gate's nodes cost a run.
     */
    static TfOps graphOnly(Graph graph, Ops scope) {
        return new TfOps(graph, null, scope, false);
    }

    private TfOps(Graph graph, Session session, Ops scope) {
        this(graph, session, scope, true);
    }

    private TfOps(Graph graph, Session session, Ops scope, boolean gateScaleByOne) {
        this.session = session;
        this.graph = graph;
        this.tf = scope;
        this.memo = new GraphMemo(tf);
        this.gateScaleByOne = gateScaleByOne;
    }

    /** Thrown by graph-only ops when a stage reads a host value or keeps state in a buffer. */
    static final class HostReadException extends IllegalStateException {
        HostReadException(String what) {
            super(what);
        }
    }

    private void requireSession(String what) {
        if (session == null) {
            throw new HostReadException(what);
        }
    }

    /**
     * Makes reductions accumulate in float64 (see "Precision" in the class comment): slower on
     * float32 gradients, but Σx² of values near 1e30 or 1e-30 stays finite and non-zero.
     *
     * @return this
     * @throws IllegalStateException if a primitive already built graph nodes (choose the precision
     *     before the first step)
     */
    public TfOps accumulateInDouble() {
        if (memo.size() > 0) {
            throw new IllegalStateException("accumulateInDouble() must be called before the first step: "
                    + "this TfOps already built graph nodes with " + (doubleAccumulation ? "float64" : "dtype") + " reductions");
        }
        doubleAccumulation = true;
        return this;
    }

    /** The graph the primitives build into. */
    public Graph graph() {
        return graph;
    }

    /** The session the host reads run on. */
    public Session session() {
        return session;
    }

    @Override
    public String toString() {
        return "TfOps@" + Integer.toHexString(System.identityHashCode(this));
    }

    // ---- adapter protocol -------------------------------------------------------------------------

    /** Starts a step: host reads feed these tensors (the step's inputs), scalar slots restart at 0. */
    void beginStep(Map<? extends Operand<?>, ? extends Tensor> stepFeeds, RunHook runHook) {
        this.feeds = stepFeeds;
        this.hook = runHook;
        this.slotCursor = 0;
        this.temporaries.clear();
        this.lastStepScalars.clear();
    }

    /** Ends a step: forgets the feeds and the step's temporaries. Call after {@link #commit()} ran. */
    void endStep() {
        for (int k = 0; k < slotCursor; k++) {
            lastStepScalars.put(slots.get(k), slotValues[k]);
        }
        this.feeds = Map.of();
        this.hook = null;
        this.temporaries.clear();
    }

    /**
     * The assignments that store what this step wrote into state buffers, and rebinds every buffer
     * to its variable's read node for the next step. Run the returned ops (with the step's apply op,
     * if any) before the next step reads the buffers.
     */
    List<Op> commit(List<Output<?>> committedValues) {
        List<Op> ops = new ArrayList<>();
        for (TfTensor b : buffers) {
            if (b.dirty()) {
                committedValues.add(b.value());
                ops.add(assignOp(b.variable, b.value(), b.read));
                b.rebind(b.read);
            }
        }
        return ops;
    }

    /**
     * The step's single-element float temporaries built so far (norms, coefficients, counts: what
     * the stages record as metrics), whose host values are not known yet. The step's last run
     * fetches them (as {@link #packed}) so that the metrics cost no run of their own.
     */
    List<Output<?>> pendingScalars() {
        Set<Output<?>> out = new java.util.LinkedHashSet<>();
        for (TfTensor t : temporaries) {
            Output<?> o = t.value();
            if (t.shapeRef().length == 0 && memo.built(o) && isFloat(dtype(o)) && !lastStepScalars.containsKey(o)) {
                out.add(o);
            }
        }
        return new ArrayList<>(out);
    }

    /** One float64 vector of the given scalars (a single fetch instead of one tensor each); memoized. */
    Output<?> packed(List<Output<?>> scalars) {
        Output<?>[] in = new Output<?>[scalars.size()];
        for (int i = 0; i < in.length; i++) {
            in[i] = f64(scalars.get(i));
        }
        return memo.node(Kind.STACK, null, in);
    }

    /** Keeps the host values of scalars fetched (as {@link #packed}) by the step's last run, for reads after the step. */
    void keepScalars(List<Output<?>> scalars, Tensor packedValues) {
        double[] v = new double[scalars.size()];
        ((TFloat64) packedValues).copyTo(DataBuffers.of(v, false, false));
        for (int i = 0; i < v.length; i++) {
            lastStepScalars.put(scalars.get(i), v[i]);
        }
    }

    static double hostScalar(Tensor t) {
        long[] at = new long[t.shape().numDimensions()];
        return t instanceof TFloat32 f ? f.getFloat(at) : t instanceof TFloat16 h ? h.getFloat(at) : ((TFloat64) t).getDouble(at);
    }

    /** float16, float32 or float64: the dtypes whose gradients GradGuard handles. */
    static boolean isFloat(Class<?> type) {
        return type == TFloat32.class || type == TFloat64.class || type == TFloat16.class;
    }

    /**
     * Moves every node of the step built so far onto other leaves (the gradient buffers): the step's
     * temporaries, the state buffers and {@code more} are rebound to the same chains rebuilt on
     * {@code leaves}.
     */
    void rebase(Map<Output<?>, Output<?>> leaves, List<TfTensor> more) {
        Map<Output<?>, Output<?>> done = new HashMap<>();
        List<TfTensor> all = new ArrayList<>(temporaries);
        all.addAll(buffers);
        all.addAll(more);
        for (TfTensor h : all) {
            h.rebind(memo.rebase(h.value(), leaves, done));
        }
    }

    /** Runs the session with the step's feeds and scalar slots; the caller closes the result. */
    Result run(Consumer<Session.Runner> setup) {
        requireSession("reads a value on the host");
        if (hook != null) {
            hook.beforeRun();
        }
        Session.Runner r = session.runner();
        for (Map.Entry<? extends Operand<?>, ? extends Tensor> e : feeds.entrySet()) {
            r.feed(e.getKey(), e.getValue());
        }
        for (int i = 0; i < slots.size(); i++) {
            r.feed(slots.get(i), slotTensor(i));
        }
        setup.accept(r);
        return r.run();
    }

    /** Number of operations in the graph (for tests and diagnostics). */
    static int operationCount(Graph g) {
        int n = 0;
        for (var it = g.operations(); it.hasNext(); it.next()) {
            n++;
        }
        return n;
    }

    private Op assignOp(Output<?> variable, Output<?> value, Output<?> read) {
        return assigns.computeIfAbsent(List.of(variable, value, read),
                k -> {
                    Op readOp = read::op;
                    return tf.withControlDependencies(List.of(readOp)).assignVariableOp(variable, value);
                });
    }

    // ---- dtype helpers ----------------------------------------------------------------------------

    private Class<?> dtype(Output<?> o) {
        return memo.type(o);
    }

    private Output<?> f64(Output<?> o) {
        return dtype(o) == TFloat64.class ? o : memo.node(Kind.CAST, TFloat64.class, o);
    }

    private Output<?> as(Output<?> o, Class<?> type) {
        return memo.as(o, type);
    }

    private void requireFloat(TfTensor x, String what) {
        if (!isFloat(dtype(x.value()))) {
            throw new IllegalArgumentException(what + " must be a float16, float32 or float64 tensor, got " + x.value().dataType()
                    + " (" + x.value().name() + ")");
        }
    }

    private static final long[] SCALAR = new long[0];

    private TfTensor temp(Output<?> o, long[] shape) {
        TfTensor t = new TfTensor(shape.clone(), o, null, null);
        temporaries.add(t);
        return t;
    }

    /** Promotes two operands to a common dtype (float64 if either is). */
    private Output<?>[] promote(TfTensor a, TfTensor b) {
        Output<?> x = a.value();
        Output<?> y = b.value();
        if (dtype(x) != dtype(y)) {
            x = f64(x);
            y = f64(y);
        }
        return new Output<?>[] {x, y};
    }

    // ---- shape and host transfer ------------------------------------------------------------------

    @Override
    public long[] shape(TfTensor x) {
        return x.shape();
    }

    /** A float64 scalar fed through the step's next scalar slot (see the class comment). */
    @Override
    public TfTensor scalar(double value) {
        if (session == null) {
            return temp(constants.computeIfAbsent(Double.doubleToRawLongBits(value), bits -> tf.constant(value).asOutput()), SCALAR);
        }
        int k = slotCursor++;
        if (k == slots.size()) {
            slots.add(tf.withName("scalar_" + k).placeholder(TFloat64.class, Placeholder.shape(Shape.scalar())).output());
            if (k == slotValues.length) {
                slotValues = Arrays.copyOf(slotValues, k * 2);
                slotTensors = Arrays.copyOf(slotTensors, k * 2);
            }
        }
        if (slotTensors[k] == null || Double.doubleToRawLongBits(slotValues[k]) != Double.doubleToRawLongBits(value)) {
            if (slotTensors[k] != null) {
                slotTensors[k].close();
                slotTensors[k] = null;
            }
            slotValues[k] = value;
        }
        return temp(slots.get(k), SCALAR);
    }

    private TFloat64 slotTensor(int k) {
        if (slotTensors[k] == null) {
            slotTensors[k] = TFloat64.scalarOf(slotValues[k]);
        }
        return slotTensors[k];
    }

    @Override
    public double toHost(TfTensor scalar) {
        long n = size(scalar.shapeRef());
        if (n != 1) {
            throw new IllegalArgumentException("scalar must be a single-element tensor, got shape " + Arrays.toString(scalar.shapeRef()));
        }
        Double kept = lastStepScalars.get(scalar.value());
        if (kept != null) {
            return kept;
        }
        Output<?> o = fetchable(f64(scalar.value()));
        try (Result r = run(runner -> runner.fetch(o))) {
            return hostScalar(r.get(0));
        } catch (TFInvalidArgumentException e) {
            if (hook == null && e.getMessage() != null && e.getMessage().contains("You must feed a value for placeholder")) {
                throw new IllegalStateException("this value of the last step is gone with the step's inputs: after a step, "
                        + "only the scalars its update computed can be read (norms, coefficients); read other metrics "
                        + "inside a StepListener", e);
            }
            throw e;
        }
    }

    /** All the scalars in one session run (those the step's last run already returned are not fetched again). */
    @Override
    public double[] toHost(List<TfTensor> scalars) {
        double[] out = new double[scalars.size()];
        List<Output<?>> fetches = new ArrayList<>();
        List<Integer> at = new ArrayList<>();
        for (int i = 0; i < out.length; i++) {
            TfTensor scalar = scalars.get(i);
            if (size(scalar.shapeRef()) != 1) {
                throw new IllegalArgumentException("scalars[" + i + "] must be a single-element tensor, got shape "
                        + Arrays.toString(scalar.shapeRef()));
            }
            Double kept = lastStepScalars.get(scalar.value());
            if (kept != null) {
                out[i] = kept;
            } else {
                fetches.add(fetchable(f64(scalar.value())));
                at.add(i);
            }
        }
        if (fetches.size() == 1) {
            out[at.get(0)] = toHost(scalars.get(at.get(0)));
        } else if (!fetches.isEmpty()) {
            try (Result r = run(runner -> fetches.forEach(runner::fetch))) {
                for (int k = 0; k < fetches.size(); k++) {
                    out[at.get(k)] = hostScalar(r.get(k));
                }
            } catch (TFInvalidArgumentException e) {
                if (hook == null && e.getMessage() != null && e.getMessage().contains("You must feed a value for placeholder")) {
                    throw new IllegalStateException("a value of the last step is gone with the step's inputs: after a step, "
                            + "only the scalars its update computed can be read (norms, coefficients); read other metrics "
                            + "inside a StepListener", e);
                }
                throw e;
            }
        }
        return out;
    }

    /** A fed scalar slot cannot be fetched in the same run: fetch an identity of it. */
    private Output<?> fetchable(Output<?> o) {
        return o.op().type().equals("Placeholder") ? memo.node(Kind.IDENTITY, null, o) : o;
    }

    @Override
    public float[] toHostArray(TfTensor x) {
        Output<?> o = fetchable(as(x.value(), TFloat32.class));
        float[] out = new float[Math.toIntExact(size(x.shapeRef()))];
        try (Result r = run(runner -> runner.fetch(o))) {
            ((TFloat32) r.get(0)).copyTo(DataBuffers.of(out, false, false));
        }
        return out;
    }

    @Override
    public double[] toHostDoubles(TfTensor x) {
        Output<?> o = fetchable(f64(x.value()));
        double[] out = new double[Math.toIntExact(size(x.shapeRef()))];
        try (Result r = run(runner -> runner.fetch(o))) {
            ((TFloat64) r.get(0)).copyTo(DataBuffers.of(out, false, false));
        }
        return out;
    }

    @Override
    public TfTensor fromHost(float[] data, long[] shape) {
        checkData(data == null ? -1 : data.length, shape);
        try (TFloat32 t = TFloat32.tensorOf(Shape.of(shape), DataBuffers.of(data, true, false))) {
            return newBuffer(TFloat32.class, shape, t, true);
        }
    }

    @Override
    public TfTensor fromHost(double[] data, long[] shape) {
        checkData(data == null ? -1 : data.length, shape);
        try (TFloat64 t = TFloat64.tensorOf(Shape.of(shape), DataBuffers.of(data, true, false))) {
            return newBuffer(TFloat64.class, shape, t, true);
        }
    }

    private static void checkData(int length, long[] shape) {
        if (length < 0) {
            throw new IllegalArgumentException("data must not be null");
        }
        Checks.notNull("shape", shape);
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("shape must have no negative dimension, got " + Arrays.toString(shape));
            }
        }
        if (size(shape) != length) {
            throw new IllegalArgumentException("data must have " + size(shape) + " elements for shape "
                    + Arrays.toString(shape) + ", got " + length);
        }
    }

    @Override
    public boolean supportsFloat64() {
        return true;
    }

    @Override
    public boolean isFloat64(TfTensor x) {
        return dtype(x.value()) == TFloat64.class;
    }

    /** {@code true} only after {@link #accumulateInDouble()} (see "Precision" in the class comment). */
    @Override
    public boolean accumulatesInDouble() {
        return doubleAccumulation;
    }

    @Override
    public TfTensor zerosLike(TfTensor like) {
        requireFloat(like, "like");
        return newBuffer(dtype(like.value()), like.shapeRef(), null, true);
    }

    /** Creates a resource variable of that shape and fills it (with {@code init}, or zeros) right away; state buffers are committed each step. */
    @SuppressWarnings({"unchecked", "rawtypes"})
    TfTensor newBuffer(Class<?> type, long[] shape, Tensor init, boolean state) {
        requireSession("keeps state in a buffer");
        // a unique shared name: an empty one makes every VarHandleOp of the session share one resource
        String name = "gradguard_buffer_" + BUFFER_IDS.incrementAndGet();
        Ops scope = tf.withSubScope("state").withName("buffer_" + bufferCount++);
        Output<?> handle = scope.varHandleOp((Class) type, Shape.of(shape), VarHandleOp.sharedName(name)).asOutput();
        Output<?> read = tf.readVariableOp(handle, (Class) type).asOutput();
        Op fillOp;
        Placeholder<?> fed = null;
        if (init == null) {
            fillOp = tf.assignVariableOp(handle, tf.zeros(tf.constant(shape), (Class) type));
        } else {
            fed = tf.placeholder((Class) type, Placeholder.shape(Shape.of(shape)));
            fillOp = tf.assignVariableOp(handle, fed);
        }
        Session.Runner r = session.runner().addTarget(fillOp);
        if (fed != null) {
            r.feed(fed, init);
        }
        try (Result ignored = r.run()) {
            // the assignment has no outputs
        }
        TfTensor b = new TfTensor(shape.clone(), read, handle, read);
        if (state) {
            buffers.add(b);
        }
        return b;
    }

    /** Forgets a buffer: it is no longer committed. Its variable stays in the graph until the session closes. */
    @Override
    public void release(TfTensor x) {
        buffers.remove(x);
    }

    // ---- reductions ---------------------------------------------------------------------------------

    /**
     * The input of a summing reduction: float64 when accumulating in double, float32 for a float16
     * tensor (Σx² of float16 values overflows at 65504), else the tensor itself.
     */
    private Output<?> accumuland(TfTensor x) {
        return doubleAccumulation ? f64(x.value()) : dtype(x.value()) == TFloat16.class ? as(x.value(), TFloat32.class) : x.value();
    }

    @Override
    public TfTensor sumOfSquares(TfTensor x) {
        requireFloat(x, "x");
        // L2Loss(x) = Σx²/2 in one fused pass (as tf.clip_by_global_norm); the factor 2 is exact
        Output<?> half = f64(halfSumOfSquares(x));
        return temp(memo.node(Kind.MUL, null, half, memo.node(Kind.CONST, 2.0)), SCALAR);
    }

    /**
     * {@inheritDoc}
     *
     * <p>One L2Loss node per tensor (Σx²/2 in the accumulation dtype), stacked, widened to float64,
     * summed once and doubled: a third of the nodes of one widened sum per tensor added up, and on a
     * small model it is the number of nodes a run schedules, not their arithmetic, that costs. The
     * same float64 parts, added in the reduction's order. The stacked vector
     * ({@link #halfSquares(List)}) is memoized: every caller over the same tensors (a non-finite
     * gate, a global clip, a monitor's per-tensor Σx²) shares its nodes.
     */
    @Override
    public TfTensor sumOfSquares(List<TfTensor> xs) {
        if (xs.size() < 2) {
            return xs.isEmpty() ? scalar(0.0) : sumOfSquares(xs.get(0));
        }
        Output<?> sum = memo.node(Kind.SUM, 1, halfSquares(xs));
        return temp(memo.node(Kind.MUL, null, sum, memo.node(Kind.CONST, 2.0)), SCALAR);
    }

    /** Each tensor's Σx²/2 ({@link #halfSumOfSquares}), as one float64 vector; memoized. */
    Output<?> halfSquares(List<TfTensor> xs) {
        Output<?>[] in = new Output<?>[xs.size()];
        boolean same = true;
        for (int i = 0; i < in.length; i++) {
            requireFloat(xs.get(i), "xs[" + i + "]");
            in[i] = halfSumOfSquares(xs.get(i));
            same &= dtype(in[i]) == dtype(in[0]);
        }
        if (!same) {
            for (int i = 0; i < in.length; i++) {
                in[i] = f64(in[i]);
            }
        }
        return f64(memo.node(Kind.STACK, null, in));
    }

    /**
     * Σx²/2 in the accumulation dtype, not yet widened: for a caller that stacks many such scalars
     * and widens and doubles them once ({@link TfOptimizer}'s monitor row).
     */
    Output<?> halfSumOfSquares(TfTensor x) {
        return memo.node(Kind.L2LOSS, null, accumuland(x));
    }

    /** max|x| of a tensor of this rank in its dtype (exact), not yet widened or floored at 0 (an empty tensor gives -inf). */
    Output<?> rawMaxAbs(Output<?> x, int rank) {
        return memo.node(Kind.REDUCE_MAX, rank, memo.node(Kind.ABS, null, x));
    }

    @Override
    public TfTensor sumOfAbs(TfTensor x) {
        requireFloat(x, "x");
        return temp(f64(memo.node(Kind.SUM, x.shapeRef().length, memo.node(Kind.ABS, null, accumuland(x)))), SCALAR);
    }

    @Override
    public TfTensor maxAbs(TfTensor x) {
        requireFloat(x, "x");
        // reduce in the tensor's dtype (exact), then max with 0: an empty tensor's max is -inf, NaN propagates
        Output<?> m = f64(rawMaxAbs(x.value(), x.shapeRef().length));
        return temp(memo.node(Kind.MAX, null, m, memo.node(Kind.CONST, 0.0)), SCALAR);
    }

    @Override
    public TfTensor countNonFinite(TfTensor x) {
        requireFloat(x, "x");
        // an exact integer count (int64 only for tensors too large for int32), widened afterwards
        Class<?> counter = size(x.shapeRef()) <= Integer.MAX_VALUE ? TInt32.class : TInt64.class;
        return temp(f64(memo.node(Kind.SUM, x.shapeRef().length, memo.node(Kind.CAST, counter, memo.node(Kind.NOT_FINITE, null, x.value())))), SCALAR);
    }

    @Override
    public TfTensor sumOfSquares(TfTensor x, int[] axes) {
        requireFloat(x, "x");
        return temp(f64(memo.node(Kind.SUM, axesParam(axes, x), memo.node(Kind.SQUARE, null, accumuland(x)))), keptShape(x, axes));
    }

    @Override
    public TfTensor mean(TfTensor x, int[] axes) {
        requireFloat(x, "x");
        return temp(f64(memo.node(Kind.MEAN, axesParam(axes, x), accumuland(x))), keptShape(x, axes));
    }

    private static long[] keptShape(TfTensor x, int[] axes) {
        long[] s = x.shape();
        for (int a : axes) {
            s[a] = 1;
        }
        return s;
    }

    /** Numpy broadcasting of a rank-0 operand or of equal ranks with size-1 axes. */
    private static long[] broadcast(TfTensor a, TfTensor b) {
        long[] x = a.shapeRef();
        long[] y = b.shapeRef();
        if (x.length == 0) {
            return y;
        }
        if (y.length == 0) {
            return x;
        }
        if (x.length != y.length) {
            throw new IllegalArgumentException("operands must have equal ranks or one must be a scalar, got "
                    + Arrays.toString(x) + " and " + Arrays.toString(y));
        }
        long[] out = new long[x.length];
        for (int i = 0; i < x.length; i++) {
            if (x[i] != y[i] && x[i] != 1 && y[i] != 1) {
                throw new IllegalArgumentException("operands must broadcast, got " + Arrays.toString(x) + " and " + Arrays.toString(y));
            }
            out[i] = x[i] == 1 ? y[i] : x[i];
        }
        return out;
    }

    private static List<Integer> axesParam(int[] axes, TfTensor x) {
        Checks.notNull("axes", axes);
        List<Integer> l = new ArrayList<>();
        for (int a : axes) {
            if (a < 0 || a >= x.shapeRef().length) {
                throw new IllegalArgumentException("axes must lie in [0, " + x.shapeRef().length + "), got " + Arrays.toString(axes));
            }
            l.add(a);
        }
        return l;
    }

    // ---- functional math ----------------------------------------------------------------------------

    @Override
    public TfTensor add(TfTensor a, TfTensor b) {
        Output<?>[] p = promote(a, b);
        return temp(memo.node(Kind.ADD, null, p[0], p[1]), broadcast(a, b));
    }

    @Override
    public TfTensor mul(TfTensor a, TfTensor b) {
        Output<?>[] p = promote(a, b);
        return temp(memo.node(Kind.MUL, null, p[0], p[1]), broadcast(a, b));
    }

    @Override
    public TfTensor div(TfTensor a, TfTensor b) {
        Output<?>[] p = promote(a, b);
        return temp(memo.node(Kind.DIV, null, p[0], p[1]), broadcast(a, b));
    }

    @Override
    public TfTensor min(TfTensor a, TfTensor b) {
        Output<?>[] p = promote(a, b);
        return temp(memo.node(Kind.MIN, null, p[0], p[1]), broadcast(a, b));
    }

    @Override
    public TfTensor max(TfTensor a, TfTensor b) {
        Output<?>[] p = promote(a, b);
        return temp(memo.node(Kind.MAX, null, p[0], p[1]), broadcast(a, b));
    }

    @Override
    public TfTensor sqrt(TfTensor a) {
        return temp(memo.node(Kind.SQRT, null, a.value()), a.shapeRef());
    }

    // ---- in-place updates -----------------------------------------------------------------------------

    /**
     * {@code x ·= factor}. A single-element factor gates the multiply in the graph (v1 control flow,
     * {@code Switch}/{@code Merge} on {@code factor != 1}): when the factor is exactly 1 (a clip that
     * does not act, the common case in stable training) the multiply kernel does not run and
     * {@code x} passes through unchanged, bit-identical to {@code x · 1}, with no host round trip.
     * The gate is kept on small tensors too, where its two nodes cost a run more than the multiply:
     * TensorFlow's CPU kernels flush subnormals to zero, so {@code x · 1} is not always {@code x}
     * (the conformance kit's "scaling by exactly one changes no bit"). Graph-only ops
     * ({@link TfOptimizer}) gate only large tensors (see {@link #graphOnly}).
     */
    @Override
    public void scaleInPlace(TfTensor x, TfTensor factor) {
        requireFloat(x, "x");
        Output<?> f = as(factor.value(), dtype(x.value()));
        boolean gate = gateScaleByOne || x.value().shape().hasUnknownDimension() || size(x.shapeRef()) >= GATE_MIN_ELEMENTS;
        x.rebind(factor.shapeRef().length == 0 && gate
                ? memo.node(Kind.SCALE_UNLESS_ONE, null, x.value(), f)
                : memo.node(Kind.MUL, null, x.value(), f));
    }

    /** {@code [a, f]} where {@code x} is a product {@code a · f} this built by a scalar factor {@code f}; else empty. */
    List<Output<?>> scalarProduct(Output<?> x) {
        List<Output<?>> in = memo.kindOf(x) == Kind.MUL ? memo.inputsOf(x) : List.of();
        return in.size() == 2 && in.get(1).shape().numDimensions() == 0 ? in : List.of();
    }

    @Override
    public void addInPlace(TfTensor x, TfTensor y, double alpha) {
        requireFloat(x, "x");
        Class<?> t = dtype(x.value());
        Output<?> yy = as(y.value(), t);
        if (alpha == 1.0) {
            x.rebind(memo.node(Kind.ADD, null, x.value(), yy));
        } else if (alpha == -1.0) {
            x.rebind(memo.node(Kind.SUB, null, x.value(), yy));
        } else {
            x.rebind(memo.node(Kind.ADD, null, x.value(), memo.node(Kind.MUL, null, yy, as(scalar(alpha).value(), t))));
        }
    }

    @Override
    public void clampInPlace(TfTensor x, double lo, double hi) {
        requireFloat(x, "x");
        Class<?> t = dtype(x.value());
        Output<?> l = as(scalar(lo).value(), t);
        Output<?> h = as(scalar(hi).value(), t);
        x.rebind(memo.node(Kind.MIN, null, memo.node(Kind.MAX, null, x.value(), l), h));
    }

    @Override
    public void replaceNonFinite(TfTensor x, double nan, double posInf, double negInf) {
        requireFloat(x, "x");
        Output<?> v = x.value();
        if (nan == 0.0 && posInf == 0.0 && negInf == 0.0 && Double.doubleToRawLongBits(nan) == 0L) {
            x.rebind(memo.node(Kind.SELECT, null, memo.node(Kind.NOT_FINITE, null, v), filled(x, 0.0), v));
            return;
        }
        Output<?> r = memo.node(Kind.SELECT, null, memo.node(Kind.IS_NAN, null, v), filled(x, nan), v);
        if (posInf != Double.POSITIVE_INFINITY) {
            r = memo.node(Kind.SELECT, null, memo.node(Kind.EQUAL, null, v, as(memo.node(Kind.CONST, Double.POSITIVE_INFINITY), dtype(v))), filled(x, posInf), r);
        }
        if (negInf != Double.NEGATIVE_INFINITY) {
            r = memo.node(Kind.SELECT, null, memo.node(Kind.EQUAL, null, v, as(memo.node(Kind.CONST, Double.NEGATIVE_INFINITY), dtype(v))), filled(x, negInf), r);
        }
        x.rebind(r);
    }

    /** A tensor of x's shape and dtype filled with a fed scalar. */
    private Output<?> filled(TfTensor x, double value) {
        List<Long> shape = new ArrayList<>();
        for (long d : x.shapeRef()) {
            shape.add(d);
        }
        return memo.node(Kind.FILL, shape, as(scalar(value).value(), dtype(x.value())));
    }

    @Override
    public void assign(TfTensor dst, TfTensor src) {
        if (!Arrays.equals(dst.shapeRef(), src.shapeRef())) {
            throw new IllegalArgumentException("src must have dst's shape " + Arrays.toString(dst.shapeRef()) + ", got "
                    + Arrays.toString(src.shapeRef()));
        }
        dst.rebind(as(src.value(), dtype(dst.value())));
    }

    @Override
    public void fill(TfTensor x, double value) {
        requireFloat(x, "x");
        x.rebind(filled(x, value));
    }

    // ---- lifecycle ----------------------------------------------------------------------------------

    /** Closes the fed scalar tensors. The graph, the session and their variables belong to the caller. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        for (int i = 0; i < slotTensors.length; i++) {
            if (slotTensors[i] != null) {
                slotTensors[i].close();
                slotTensors[i] = null;
            }
        }
    }

    static long size(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    /** Nodes built so far by the memo (for tests). */
    int memoSize() {
        return memo.size();
    }

    /** The memo of the nodes the primitives built. */
    GraphMemo memo() {
        return memo;
    }

}
