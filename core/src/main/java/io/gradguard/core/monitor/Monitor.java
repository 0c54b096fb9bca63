package io.gradguard.core.monitor;

import io.gradguard.core.Action;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.NormType;
import io.gradguard.core.Norms;
import io.gradguard.core.Step;
import io.gradguard.core.StateFormatException;
import io.gradguard.core.StateInput;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepListener;
import io.gradguard.core.StepResult;
import io.gradguard.core.TransformState;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Watches a pipeline's gradients and produces one {@link StepRecord} per optimizer step, runs the
 * exploding / vanishing / non-finite detectors, and hands records and events to its sinks.
 *
 * <p>Add it to a pipeline as a stage (it changes nothing; {@link GradientPipeline#of} registers it
 * as the pipeline's {@link StepListener}), or register it with {@link GradientPipeline#addListener}:
 *
 * <pre>{@code
 * Monitor monitor = Monitor.builder()
 *     .name("djl-mlp")
 *     .every(10)                                   // per-tensor statistics on every 10th step
 *     .sink(Sinks.jsonl(Path.of("grad.jsonl")))
 *     .sink(Sinks.slf4j(100))                      // a summary line every 100 steps, events as warnings
 *     .build();
 * GradientPipeline guard = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), monitor);
 * ... train ...
 * monitor.close();                                 // delivers the last record, closes the files
 * }</pre>
 *
 * <h2>What is measured, and where</h2>
 * After every pipeline call that ends a step (applied or skipped), while the step's tensors are
 * alive, the monitor measures the gradients as the pipeline left them, that is, what the optimizer
 * receives: the global L2 norm (one scalar copied to the host) and, on detailed steps, each tensor's
 * Σg², max|g| and NaN/Inf count (three scalars per tensor). Gradients never leave the backend.
 * Detailed steps are every {@link Builder#every n}-th step, every skipped step, and every step
 * whose norm is non-finite or spikes (so a detector can name the layer).
 *
 * <p>Norms "before clipping" are reconstructed exactly from the {@link io.gradguard.core.Scaling}s
 * that scaling stages report ({@link StepResult#scalings()}: one coefficient for the whole model or
 * per layer or tensor, as {@code clipByGlobalNorm}, {@code clipByLayerNorm} and {@code clipByNorm}
 * report): norm clipping multiplies a group by one coefficient, so the pre-clip norm is the measured
 * norm divided by it, whatever norm type the clip uses. This holds for the order of
 * docs/transforms.md (accumulate, then clip). Scalings of a subset ({@code masked(...)}, {@link
 * io.gradguard.core.Scaling#partial()}) are ignored (the monitor cannot name the subset), and
 * element-wise changes without a coefficient ({@code clipByValue}, {@code adaptiveClip}) are seen as
 * they left the gradient. Non-finite counts that a stage reported before replacing the values
 * ({@link StepResult#nonFiniteCounts()}, as {@code zeroNonFinite} does) are included.
 *
 * <h2>Update-to-parameter ratios (for adapters)</h2>
 * After the optimizer has stepped, an adapter may report each parameter's update, when
 * {@link #wantsUpdates()} says the step was measured in detail:
 * <pre>{@code
 * for (Monitor m : Monitor.in(pipeline)) {
 *     if (m.wantsUpdates()) {
 *         for (GradientTensor<T> p : params) m.recordUpdate(ops, p, update(p)); // Δθ; p.param() is θ before the step
 *     }
 * }
 * }</pre>
 * The record of an applied, detailed step is therefore delivered to the sinks when the next step
 * begins (or on {@link #flush()} / {@link #close()}), with ‖Δθ‖/‖θ‖ per layer filled in; turn this
 * off with {@link Builder#updateRatios(boolean) updateRatios(false)} to get every record at once.
 *
 * <h2>State and checkpoints</h2>
 * The monitor object is configuration, sinks and listeners. What it carries from call to call —
 * the next record's index, the micro-batches and loss of an unfinished accumulation window, the
 * detectors' running medians and counters — is a {@link TransformState} that a pipeline creates
 * with {@link #init} and owns, like any stage's. So {@link GradientPipeline#saveState} /
 * {@link GradientPipeline#restoreState} checkpoint it (a run restored mid-window continues with the
 * records the uninterrupted run makes) and {@link GradientPipeline#reset} starts it afresh. Only a
 * monitor placed as a stage is checkpointed: one registered with {@link GradientPipeline#addListener}
 * alone keeps its own state, which checkpoints and {@code reset()} do not touch. A record waiting
 * for update ratios is delivery, not state: {@link #flush()} or {@link #close()} the old monitor
 * before a restore.
 *
 * <pre>{@code
 * Monitor monitor = Monitor.builder().sink(Sinks.jsonl(path)).build();
 * GradientPipeline guard = GradientPipeline.of(Transforms.accumulate(4), Transforms.clipByGlobalNorm(1.0), monitor);
 * ... train, then guard.saveState(out) ...
 * // later, in a new process: the same stages, a new monitor
 * GradientPipeline resumed = GradientPipeline.of(Transforms.accumulate(4), Transforms.clipByGlobalNorm(1.0), newMonitor);
 * resumed.restoreState(in, ops);                   // record indexes, the open window and the detectors continue
 * }</pre>
 *
 * <p>The monitor never throws on training data; a sink that throws is reported once through SLF4J
 * and switched off. One monitor watches one pipeline, driven by one thread.
 */
public final class Monitor implements GradientTransform, StepListener, AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Monitor.class);

    private final String run;
    private final int every;
    private final boolean updateRatios;
    private final Detectors detectors;
    private final List<MonitorListener> listeners = new CopyOnWriteArrayList<>();
    private final Set<MonitorListener> broken = ConcurrentHashMap.newKeySet();

    /** The state of a monitor that is only a listener (no pipeline owns one for it). */
    private final MonitorState own;
    /** The state measurements go to: the pipeline's (as a stage) or {@link #own}. */
    private MonitorState state;
    private StepRecord pending;
    private final Map<String, double[]> updates = new LinkedHashMap<>();
    private boolean closed;
    private boolean failureLogged;

    private Monitor(Builder b) {
        this.run = b.name;
        this.every = b.every;
        this.updateRatios = b.updateRatios;
        this.detectors = new Detectors(b.detectors, b.factor, b.window, b.warmup, b.vanishAbsolute, b.vanishRelative,
                b.vanishSteps);
        this.listeners.addAll(b.sinks);
        this.own = newState();
        this.state = own;
    }

    /** A worker's monitor ({@link #forWorker}): the parent's configuration, records delivered to the parent's sinks. */
    private Monitor(Monitor parent, String run) {
        this.run = run;
        this.every = parent.every;
        this.updateRatios = parent.updateRatios;
        this.detectors = parent.detectors;
        this.listeners.add(new MonitorListener() {
            @Override
            public void onRecord(StepRecord record) {
                parent.deliverFromWorker(null, record);
            }

            @Override
            public void onEvent(MonitorEvent event) {
                parent.deliverFromWorker(event, null);
            }

            @Override
            public String toString() {
                return "to " + parent;
            }
        });
        this.own = newState();
        this.state = own;
    }

    /**
     * A monitor for one worker of data-parallel training (one pipeline per worker, each driven by
     * its own thread): this monitor's configuration, its own state (record index, detectors), and
     * records under the run name {@code <run>/worker-<worker>} delivered to this monitor's sinks, one
     * worker at a time. Closing it delivers its last record and leaves the sinks open; closing this
     * monitor closes them. Reports show each worker as a run ({@link RunRecorder#recordings()}).
     *
     * <pre>{@code
     * Monitor monitor = Monitor.toJsonl(Path.of("grad.jsonl"));
     * GradientPipeline worker1 = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), monitor.forWorker(1));
     * }</pre>
     *
     * @throws IllegalArgumentException if {@code worker} is negative
     */
    public Monitor forWorker(int worker) {
        Checks.require(worker >= 0, "worker", "be >= 0", worker);
        return new Monitor(this, run + "/worker-" + worker);
    }

    /** A worker's record or event, delivered to this monitor's sinks one at a time (sinks are not thread-safe). */
    private void deliverFromWorker(MonitorEvent event, StepRecord record) {
        synchronized (listeners) {
            if (closed) {
                return;
            }
            for (MonitorListener l : listeners) {
                deliver(l, event, record);
            }
        }
    }

    private MonitorState newState() {
        return new MonitorState(this, detectors.newState());
    }

    /** A builder with the defaults: name "run", every step detailed, detectors on, update ratios on, no sinks. */
    public static Builder builder() {
        return new Builder();
    }

    /** The cadence of per-tensor statistics in the short forms {@link #toJsonl} and {@link #toLog}. */
    public static final int SHORT_FORM_EVERY = 10;

    /**
     * A monitor writing one JSON line per step to {@code path}, with events logged as SLF4J warnings.
     * Global statistics are measured on every step, per-tensor
     * statistics on every {@value #SHORT_FORM_EVERY}th step (and on every skipped, non-finite or
     * spiking step), which keeps the cost a fraction of a training step; use {@link #builder()} with
     * {@code every(1)} for every step.
     *
     * @throws IllegalArgumentException if the file cannot be created
     */
    public static Monitor toJsonl(Path path) {
        return builder().every(SHORT_FORM_EVERY).sink(Sinks.jsonl(path)).sink(Sinks.slf4j(0)).build();
    }

    /**
     * A monitor logging a summary every {@code everySteps} steps and events as warnings through SLF4J,
     * with per-tensor statistics every {@value #SHORT_FORM_EVERY}th step as {@link #toJsonl}.
     */
    public static Monitor toLog(int everySteps) {
        return builder().every(SHORT_FORM_EVERY).sink(Sinks.slf4j(everySteps)).build();
    }

    /** The monitors of a pipeline, placed as stages or added as listeners (for adapters reporting update ratios). */
    public static List<Monitor> in(GradientPipeline pipeline) {
        Checks.notNull("pipeline", pipeline);
        List<Monitor> out = new ArrayList<>();
        for (GradientTransform t : pipeline.transforms()) {
            if (t instanceof Monitor m) {
                out.add(m);
            }
        }
        for (io.gradguard.core.StepListener l : pipeline.listeners()) {
            if (l instanceof Monitor m && !out.contains(m)) {
                out.add(m);
            }
        }
        return out;
    }

    /** Adds a listener or sink; it receives the records and events from now on. */
    public Monitor addListener(MonitorListener listener) {
        listeners.add(Checks.notNull("listener", listener));
        return this;
    }

    /** The run name records carry. */
    public String runName() {
        return run;
    }

    // ---- as a pipeline stage -----------------------------------------------------------------

    @Override
    public boolean changesGradients() {
        return false;
    }

    @Override
    public String name() {
        return "monitor";
    }

    /**
     * A fresh running state (record index 0, no micro-batches, detectors without history), owned
     * by the pipeline from now on: {@link GradientPipeline#saveState} writes it,
     * {@link GradientPipeline#reset} drops it.
     */
    @Override
    public <T> TransformState init(GradientSet<T> gradients, TensorOps<T> ops) {
        MonitorState s = newState();
        state = s;
        return s;
    }

    /** Changes nothing: the monitor measures after the whole pipeline ran, in {@link #onStep}. */
    @Override
    public <T> Action update(Step<T> step, TransformState state) {
        // the state the pipeline holds for this stage is the one onStep uses (this also recovers from a
        // restore the pipeline rejected after this monitor read its state, without releasing that state)
        this.state = (MonitorState) state;
        return Action.proceed();
    }

    /**
     * Reads the running state a checkpoint holds (record index, the micro-batches and loss of an
     * unfinished accumulation window, the detectors' running medians and counters). Running
     * medians saved with a longer window than this monitor's keep their newest values.
     *
     * @throws StateFormatException if the state is of an unknown format or holds impossible values
     *     (negative counters or norms, a non-finite loss weight, a layer listed twice)
     */
    @Override
    public <T> TransformState readState(StateInput<T> in) throws IOException {
        MonitorState s = MonitorState.read(in, this, detectors);
        s.previous = state;
        state = s;
        return s;
    }

    /** The pipeline dropped {@code s}: after a failed restore go back to the state in use before it. */
    void released(MonitorState s) {
        if (state == s) {
            state = s.previous != null ? s.previous : own;
        } else if (state.previous == s) {
            state.previous = null; // a restore replaced s for good
        }
    }

    // ---- as the pipeline's listener ----------------------------------------------------------------

    /** Measures a finished step (called by the pipeline after every call; held micro-batches only add their loss). */
    @Override
    @SuppressWarnings("unchecked")
    public void onStep(GradientSet<?> gradients, StepResult<?> result) {
        if (closed) {
            if (!failureLogged) {
                failureLogged = true;
                LOG.warn("GradGuard monitor '{}' was closed; later steps are not recorded", run);
            }
            return;
        }
        try {
            observe((GradientSet<Object>) gradients, (StepResult<Object>) result);
        } catch (RuntimeException e) {
            if (!failureLogged) {
                failureLogged = true;
                LOG.warn("GradGuard monitor '{}' could not measure {}; training continues, later failures are not logged",
                        run, result, e);
            }
            state.clearWindow();
        }
    }

    private <T> void observe(GradientSet<T> g, StepResult<T> r) {
        publishPending();
        MonitorState s = state;
        StepContext ctx = r.context();
        double loss;
        int calls;
        if (r.skipped() && !r.closesWindow()) {
            // dropped before accumulation: this micro-batch alone, the window it interrupted goes on
            loss = ctx.hasLoss() ? ctx.loss() : Double.NaN;
            calls = 1;
        } else {
            s.microBatches++;
            if (ctx.hasLoss() && ctx.weight() > 0) {
                s.lossSum += ctx.weight() * ctx.loss();
                s.lossWeight += ctx.weight();
            }
            if (r.held()) {
                return;
            }
            loss = s.lossWeight > 0 ? s.lossSum / s.lossWeight : Double.NaN;
            calls = s.microBatches;
            s.clearWindow();
        }

        Recorded rec = Recorded.scan(g, r);
        boolean skipped = r.skipped();
        Measured m = null;
        if (!skipped && ctx.step() % every != 0) {
            m = Measured.global(g, r.ops(), rec);
            if (wantsDetail(s, ctx.step(), false, m.normBefore, m.normAfter, rec.nonFiniteTotal)) {
                m = null; // something to explain: measure each tensor
            }
        }
        if (m == null) {
            m = Measured.detailed(g, r.ops(), rec);
        }
        double coefficient = !rec.hasGroups ? rec.globalCoefficient
                : Double.isNaN(m.normBefore) ? Double.NaN
                : m.normBefore > 0 && Double.isFinite(m.normBefore) ? m.normAfter / m.normBefore : 1.0;
        StepRecord record = new StepRecord(run, s.index++, ctx.step(), ctx.call(), skipped, r.action().reason(), r.decidedBy(), calls, loss,
                m.normBefore, m.normAfter, coefficient, rec.clipped, rec.threshold, m.nonFinite, m.detailed, m.layers,
                m.tensors, List.of(), r.lossScale().orElse(Double.NaN));
        record = checked(s, record);
        updates.clear();
        if (updateRatios && !skipped && record.detailed() && !record.layers().isEmpty()) {
            pending = record;
        } else {
            publish(record);
        }
    }

    /**
     * Every how many steps the monitor measures each tensor ({@link Builder#every}); in between it
     * records the global norms only, unless a step needs explaining.
     */
    public int every() {
        return every;
    }

    /**
     * Whether applied, detailed records carry update-to-parameter ratios ({@link Builder#updateRatios}):
     * an adapter that measures the updates itself (TensorFlow's one-op step) measures them only for
     * a monitor that wants them.
     */
    public boolean updateRatios() {
        return updateRatios;
    }

    /**
     * Records one optimizer step measured outside the pipeline's host step: TensorFlow's one-op
     * training step ({@code TfOptimizer}) keeps its scalars in graph variables and hands them over
     * here at its own cadence. The record gets this monitor's run name and next index, the detectors
     * check it, and it goes to every sink, exactly as a step observed by {@link #onStep}. Its
     * per-tensor and per-layer statistics are kept on the steps {@link #onStep} would detail (every
     * {@link #every()}-th, skipped, non-finite, a norm spike) and dropped on the others, so both
     * paths write the same records.
     *
     * <pre>{@code
     * monitor.accept(new StepRecord("", 0, step, call, false, "", "", 1, loss, normBefore, normAfter, coefficient,
     *         coefficient < 1, 1.0, 0, false, List.of(), List.of(), List.of(), Double.NaN));
     * }</pre>
     *
     * @throws IllegalArgumentException if record is null
     */
    public void accept(StepRecord record) {
        io.gradguard.core.internal.Checks.notNull("record", record);
        if (closed) {
            return;
        }
        publishPending();
        MonitorState s = state;
        boolean detailed = record.detailed() && wantsDetail(s, record.step(), record.skipped(), record.normBefore(),
                record.normAfter(), record.nonFinite());
        StepRecord r = new StepRecord(run, s.index++, record.step(), record.call(), record.skipped(), record.skipReason(),
                record.skippedBy(), record.microBatches(), record.loss(), record.normBefore(), record.normAfter(),
                record.clipCoefficient(), record.clipped(), record.clipThreshold(), record.nonFinite(), detailed,
                detailed ? record.layers() : List.of(), detailed ? record.tensors() : List.of(), List.of(), record.lossScale());
        publish(checked(s, r));
    }

    /**
     * Whether a step's record carries per-tensor and per-layer statistics: on every {@link #every()}-th
     * step, and on any step with something to explain (skipped, a non-finite norm or value, a norm
     * spike).
     */
    private boolean wantsDetail(MonitorState s, long step, boolean skipped, double normBefore, double normAfter, double nonFinite) {
        return skipped || step % every == 0 || !Double.isFinite(normBefore) || !Double.isFinite(normAfter) || nonFinite > 0
                || detectors.isSpike(s.detectors, normBefore);
    }

    /** The record with what the detectors found at it, each event delivered to every listener first. */
    private StepRecord checked(MonitorState s, StepRecord r) {
        List<MonitorEvent> events = detectors.check(s.detectors, r);
        if (events.isEmpty()) {
            return r;
        }
        for (MonitorEvent e : events) {
            for (MonitorListener l : listeners) {
                deliver(l, e, null);
            }
        }
        return new StepRecord(r.run(), r.index(), r.step(), r.call(), r.skipped(), r.skipReason(), r.skippedBy(), r.microBatches(),
                r.loss(), r.normBefore(), r.normAfter(), r.clipCoefficient(), r.clipped(), r.clipThreshold(), r.nonFinite(),
                r.detailed(), r.layers(), r.tensors(), events, r.lossScale());
    }

    // ---- update ratios (adapters) ------------------------------------------------------------------

    /**
     * Whether the monitor wants the optimizer's updates of the step just applied: true between an
     * applied, detailed step and the next pipeline call. Adapters check it to avoid the work.
     */
    public boolean wantsUpdates() {
        return pending != null;
    }

    /**
     * Reports one parameter's optimizer update, after the optimizer stepped. Reductions run on the
     * backend ({@code ‖Δθ‖²}, {@code ‖θ‖²}); the caller frees the temporaries as for a pipeline step.
     * Ignored unless {@link #wantsUpdates()}.
     *
     * @param ops       the backend
     * @param parameter the parameter, with its value before the step in {@link GradientTensor#param()} (the ratio is ‖Δθ‖ / ‖θ_before‖)
     * @param update    Δθ = θ_after − θ_before (or the update the optimizer applied)
     * @throws IllegalArgumentException if an argument is null or the parameter carries no value
     */
    public <T> void recordUpdate(TensorOps<T> ops, GradientTensor<T> parameter, T update) {
        Checks.notNull("ops", ops);
        Checks.notNull("parameter", parameter);
        Checks.notNull("update", update);
        Checks.require(parameter.param() != null, "parameter.param()", "hold the parameter's value before the step (parameter "
                + parameter.name() + ")", null);
        if (!wantsUpdates()) {
            return;
        }
        double u = ops.toHost(ops.sumOfSquares(update));
        double p = ops.toHost(ops.sumOfSquares(parameter.param()));
        addUpdate(parameter.layer(), u, p);
    }

    /**
     * Reports a parameter's update as host norms (for adapters that compute them themselves). Several
     * calls for one layer add up: the layer's ratio is √(Σ‖Δθ‖²) / √(Σ‖θ‖²). Ignored unless
     * {@link #wantsUpdates()}.
     *
     * @throws IllegalArgumentException if the layer is empty or a norm is negative
     */
    public void recordUpdate(String layer, double updateNorm, double paramNorm) {
        Checks.require(layer != null && !layer.isEmpty(), "layer", "be a non-empty layer name", layer);
        Checks.require(!(updateNorm < 0), "updateNorm", "be >= 0", updateNorm);
        Checks.require(!(paramNorm < 0), "paramNorm", "be >= 0", paramNorm);
        if (wantsUpdates()) {
            addUpdate(layer, updateNorm * updateNorm, paramNorm * paramNorm);
        }
    }

    private void addUpdate(String layer, double updateSquares, double paramSquares) {
        double[] a = updates.computeIfAbsent(layer, k -> new double[2]);
        a[0] += updateSquares;
        a[1] += paramSquares;
    }

    // ---- delivery ------------------------------------------------------------------------------

    /** Delivers the record still waiting for update ratios, if any. */
    public void flush() {
        publishPending();
    }

    /** Delivers the last record and closes every sink (each failure reported once). Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        publishPending();
        synchronized (listeners) {
            closed = true;
            for (MonitorListener l : listeners) {
                if (!broken.contains(l)) {
                    try {
                        l.close();
                    } catch (RuntimeException e) {
                        LOG.warn("GradGuard monitor sink {} failed to close", l, e);
                    }
                }
            }
        }
    }

    private void publishPending() {
        if (pending == null) {
            return;
        }
        StepRecord r = pending;
        pending = null;
        if (!updates.isEmpty()) {
            List<LayerStats> layers = new ArrayList<>(r.layers().size());
            for (LayerStats l : r.layers()) {
                double[] a = updates.get(l.layer());
                layers.add(a == null ? l : l.withUpdateRatio(a[1] > 0 ? Math.sqrt(a[0] / a[1]) : a[0] == 0 ? 0 : Double.POSITIVE_INFINITY));
            }
            r = r.withLayers(layers);
            updates.clear();
        }
        publish(r);
    }

    private void publish(StepRecord r) {
        for (MonitorListener l : listeners) {
            deliver(l, null, r);
        }
    }

    private void deliver(MonitorListener l, MonitorEvent e, StepRecord r) {
        if (broken.contains(l)) {
            return;
        }
        try {
            if (e != null) {
                l.onEvent(e);
            } else {
                l.onRecord(r);
            }
        } catch (RuntimeException | Error x) {
            if (x instanceof VirtualMachineError) {
                throw x;
            }
            broken.add(l);
            LOG.warn("GradGuard monitor sink {} failed and is switched off; training continues", l, x);
        }
    }

    @Override
    public String toString() {
        return "Monitor(" + run + ", every " + every + ")";
    }

    // ---- what the stages recorded --------------------------------------------------------------

    /** The metrics of clipping and non-finite stages that the monitor folds into its record. */
    private static final class Recorded {
        double globalCoefficient = 1.0;
        boolean hasGroups;
        boolean clipped;
        double threshold = Double.NaN;
        double nonFiniteTotal;
        double[] coefficient; // per tensor, product of every coefficient that applies to it
        final Map<String, Double> nonFiniteByTensor = new HashMap<>();
        StepResult<?> result;

        static Recorded scan(GradientSet<?> g, StepResult<?> r) {
            Recorded rec = new Recorded();
            rec.result = r;
            Map<String, Double> groups = new HashMap<>();
            for (io.gradguard.core.Scaling s : r.scalings()) {
                if (s.partial()) {
                    continue; // a masked stage scaled a subset the monitor cannot name
                }
                rec.clipped |= s.clipped();
                if (s.group().isEmpty()) {
                    rec.globalCoefficient *= s.coefficient();
                } else {
                    groups.merge(s.group(), s.coefficient(), (a, b) -> a * b);
                }
                if (!Double.isNaN(s.threshold())) {
                    rec.threshold = s.threshold();
                }
            }
            for (io.gradguard.core.NonFiniteCount c : r.nonFiniteCounts()) {
                if (c.tensor().isEmpty()) {
                    rec.nonFiniteTotal += c.count();
                } else {
                    rec.nonFiniteByTensor.merge(c.tensor(), c.count(), Double::sum);
                }
            }
            rec.coefficient = new double[g.size()];
            for (int i = 0; i < g.size(); i++) {
                GradientTensor<?> t = g.get(i);
                double c = rec.globalCoefficient;
                Double byName = groups.get(t.name());
                Double byLayer = t.layer().equals(t.name()) ? null : groups.get(t.layer());
                if (byName != null) {
                    c *= byName;
                    rec.hasGroups = true;
                }
                if (byLayer != null) {
                    c *= byLayer;
                    rec.hasGroups = true;
                }
                rec.coefficient[i] = c;
            }
            return rec;
        }

        /** What stages reported as NaN/Inf values of one tensor. */
        long recordedNonFinite(String tensor) {
            return Math.round(nonFiniteByTensor.getOrDefault(tensor, 0.0));
        }
    }

    /** Divides a measured value by a clip coefficient: unknown (NaN) where the coefficient erased it. */
    private static double unclip(double measured, double coefficient) {
        return coefficient > 0 ? measured / coefficient : Double.NaN;
    }

    /** The norm before clipping of a whole group: +Inf where a coefficient was 0 (only an infinite norm gives 0). */
    private static double unclipNorm(double measured, double coefficient) {
        return Double.isNaN(coefficient) ? Double.NaN : coefficient == 0 ? Double.POSITIVE_INFINITY : measured / coefficient;
    }

    private static final class Measured {
        double normBefore;
        double normAfter;
        long nonFinite;
        boolean detailed;
        List<LayerStats> layers = List.of();
        List<TensorStats> tensors = List.of();

        /** Global norms only: one or two scalars to the host. */
        static <T> Measured global(GradientSet<T> g, TensorOps<T> ops, Recorded rec) {
            Measured m = new Measured();
            if (!rec.hasGroups) {
                double known = normLeftByLastStage(rec.result);
                m.normAfter = !Double.isNaN(known) ? known : ops.toHost(Norms.globalNorm(ops, g, NormType.L2));
                m.normBefore = unclipNorm(m.normAfter, rec.globalCoefficient);
                return m;
            }
            T after = null;
            T before = null;
            boolean erased = false;
            for (int i = 0; i < g.size(); i++) {
                T ss = ops.sumOfSquares(g.get(i).gradient());
                after = after == null ? ss : ops.add(after, ss);
                double c = rec.coefficient[i];
                if (!(c > 0)) {
                    erased = true;
                    continue;
                }
                T pre = c == 1 ? ss : ops.div(ss, ops.scalar(c * c));
                before = before == null ? pre : ops.add(before, pre);
            }
            m.normAfter = after == null ? 0 : Math.sqrt(ops.toHost(after));
            m.normBefore = erased ? Double.POSITIVE_INFINITY : before == null ? 0 : Math.sqrt(ops.toHost(before));
            return m;
        }

        /**
         * The global L2 norm the gradients leave the pipeline with, when the last stage that may
         * change them already knows it, NaN otherwise (then it is measured). A global L2 clip
         * (clipByGlobalNorm, autoClip, zClip) records the norm n of its input, its threshold and the
         * coefficient c it multiplied every gradient by: the norm after it is n·c (up to one float
         * rounding per value, far below what a monitor reports). This saves a read pass over every
         * gradient on the steps that are not measured in detail.
         */
        private static double normLeftByLastStage(StepResult<?> r) {
            String stage = r.lastChangingStage();
            double left = Double.NaN;
            for (io.gradguard.core.Scaling s : r.scalings()) {
                if (s.stage().equals(stage)) {
                    if (!s.global() || Double.isNaN(s.threshold()) || !Double.isNaN(left)) {
                        return Double.NaN; // a subset, a per-group or normalizing stage: measure instead
                    }
                    double c = s.coefficient();
                    left = Double.isFinite(s.norm()) && c >= 0 && c <= 1 ? s.norm() * c : Double.NaN;
                }
            }
            return left;
        }

        /** Every tensor: Σg², max|g| and the NaN/Inf count, three scalars each. */
        static <T> Measured detailed(GradientSet<T> g, TensorOps<T> ops, Recorded rec) {
            Measured m = new Measured();
            m.detailed = true;
            List<TensorStats> tensors = new ArrayList<>(g.size());
            Map<String, double[]> layers = new LinkedHashMap<>();
            double after = 0;
            double before = 0;
            boolean nan = false;
            boolean erased = false;
            long nonFinite = 0;
            // Σg² and max|g| of every tensor in one host copy; NaN/Inf counted only where Σg² is not
            // finite (a NaN makes Σg² NaN, an infinity makes it infinite: a finite Σg² proves none)
            int n = g.size();
            List<T> scalars = new ArrayList<>(2 * n);
            for (GradientTensor<T> t : g) {
                scalars.add(ops.sumOfSquares(t.gradient()));
            }
            for (GradientTensor<T> t : g) {
                scalars.add(ops.maxAbs(t.gradient()));
            }
            double[] host = ops.toHost(scalars);
            List<T> counts = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                if (!Double.isFinite(host[i])) {
                    counts.add(ops.countNonFinite(g.get(i).gradient()));
                }
            }
            double[] counted = counts.isEmpty() ? new double[0] : ops.toHost(counts);
            int nextCount = 0;
            for (int i = 0; i < n; i++) {
                GradientTensor<T> t = g.get(i);
                double ss = host[i];
                double maxAbs = host[n + i];
                long found = Double.isFinite(ss) ? 0 : Math.round(counted[nextCount++]);
                long bad = Math.max(found, rec.recordedNonFinite(t.name()));
                double c = rec.coefficient[i];
                double norm = unclip(Math.sqrt(ss), c);
                tensors.add(new TensorStats(t.name(), t.layer(), norm, unclip(maxAbs, c), bad));
                after += ss;
                before += norm * norm;
                nan |= Double.isNaN(c);
                erased |= c == 0;
                nonFinite += bad;
                layers.computeIfAbsent(t.layer(), k -> new double[1])[0] += norm * norm;
            }
            m.normAfter = Math.sqrt(after);
            m.normBefore = nan ? Double.NaN : erased ? Double.POSITIVE_INFINITY : Math.sqrt(before);
            m.nonFinite = Math.max(nonFinite, Math.round(rec.nonFiniteTotal));
            m.tensors = tensors;
            List<LayerStats> ls = new ArrayList<>(layers.size());
            layers.forEach((layer, ss) -> ls.add(new LayerStats(layer, Math.sqrt(ss[0]), Double.NaN)));
            m.layers = ls;
            return m;
        }
    }

    // ---- configuration -------------------------------------------------------------------------

    /**
     * Configures a {@link Monitor}. Every setter validates its argument and throws
     * {@link IllegalArgumentException} naming it and the value it got.
     */
    public static final class Builder {
        private String name = "run";
        private int every = 1;
        private boolean detectors = true;
        private double factor = 10;
        private int window = 100;
        private int warmup = 20;
        private double vanishAbsolute = 1e-7;
        private double vanishRelative = 1e-4;
        private int vanishSteps = 20;
        private boolean updateRatios = true;
        private final List<MonitorListener> sinks = new ArrayList<>();

        private Builder() {
        }

        /** The run's name, carried by every record and shown in reports (default "run"). */
        public Builder name(String runName) {
            Checks.require(runName != null && !runName.isEmpty(), "name", "be a non-empty run name", runName);
            this.name = runName;
            return this;
        }

        /**
         * Measure per-tensor and per-layer statistics on every n-th optimizer step (default 1: every
         * step). Other steps cost one scalar copy; skipped and suspicious steps are always detailed.
         */
        public Builder every(int n) {
            this.every = Checks.atLeast("every", n, 1);
            return this;
        }

        /** Turn the exploding, vanishing and non-finite detectors on or off (skipped steps are always reported). */
        public Builder detectors(boolean on) {
            this.detectors = on;
            return this;
        }

        /**
         * Exploding-gradient detection: a norm above {@code factor} × the median of the last
         * {@code window} steps (defaults 10 and 100).
         */
        public Builder exploding(double factor, int window) {
            Checks.require(Double.isFinite(factor) && factor > 1, "factor", "be a finite number > 1", factor);
            this.factor = factor;
            this.window = Checks.atLeast("window", window, 3);
            return this;
        }

        /** Steps of baseline the exploding detector needs before it fires (default 20). */
        public Builder warmup(int steps) {
            this.warmup = Checks.atLeast("warmup", steps, 1);
            return this;
        }

        /**
         * Vanishing-gradient detection: a layer whose norm is below {@code absolute}, or below
         * {@code relative} × the largest layer's norm, on {@code steps} measured steps in a row
         * (defaults 1e-7, 1e-4, 20). Pass 0 to disable either threshold.
         */
        public Builder vanishing(double absolute, double relative, int steps) {
            this.vanishAbsolute = Checks.nonNegative("absolute", absolute);
            Checks.require(relative >= 0 && relative < 1, "relative", "be in [0, 1)", relative);
            this.vanishRelative = relative;
            this.vanishSteps = Checks.atLeast("steps", steps, 1);
            return this;
        }

        /**
         * Whether detailed records wait for the adapter's {@link Monitor#recordUpdate update ratios}
         * until the next step begins (default true).
         */
        public Builder updateRatios(boolean on) {
            this.updateRatios = on;
            return this;
        }

        /** Adds a sink (or any {@link MonitorListener}). */
        public Builder sink(MonitorListener sink) {
            sinks.add(Checks.notNull("sink", sink));
            return this;
        }

        public Monitor build() {
            return new Monitor(this);
        }
    }
}
