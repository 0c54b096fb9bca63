package io.gradguard.core;

import io.gradguard.core.spi.TensorOps;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.OptionalDouble;

/**
 * The outcome of one {@link GradientPipeline#step pipeline step}: what the adapter must do with the
 * optimizer, why, and what the transforms measured.
 *
 * <p>Metrics recorded as backend scalars are copied to the host on first read. Read them before
 * the adapter frees the step's temporaries (inside the adapter's step, or in a
 * {@link StepListener}); {@link #hostMetrics()} copies them all.
 *
 * @param <T> the backend's tensor type
 */
public final class StepResult<T> {
    private final Action action;
    private final String stage;
    private final StepContext context;
    private final Map<String, Object> metrics;
    private final java.util.List<StepRecords.Entry> entries;
    private final TensorOps<T> ops;
    private final String lastChangingStage;
    private Runnable clipCounter;
    private boolean closesWindow;
    private final double lossScale;

    StepResult(Action action, String stage, StepContext context, StepRecords records, TensorOps<T> ops,
            String lastChangingStage) {
        this.action = action;
        this.stage = stage;
        this.context = context;
        this.metrics = records.metrics;
        this.entries = records.entries;
        this.lossScale = records.lossScale;
        this.ops = ops;
        this.lastChangingStage = lastChangingStage;
    }

    /**
     * The name of the last stage that ran on this step and may have changed the gradient values
     * ({@link GradientTransform#changesGradients()}), or "" if none did: what that stage recorded
     * about the gradients it left (say, a global clip's norm and coefficient) still holds after
     * the pipeline.
     */
    public String lastChangingStage() {
        return lastChangingStage;
    }

    /** What the adapter does: step the optimizer ({@code PROCEED}), or not ({@code HOLD}, {@code SKIP}). */
    public Action action() {
        return action;
    }

    /** Whether the optimizer must step now. */
    public boolean applies() {
        return action.kind() == Action.Kind.PROCEED;
    }

    public boolean skipped() {
        return action.kind() == Action.Kind.SKIP;
    }

    public boolean held() {
        return action.kind() == Action.Kind.HOLD;
    }

    /** The stage that held or skipped; empty when the step proceeds. */
    public String decidedBy() {
        return stage;
    }

    /** The context the transforms saw (step and micro-step counters filled in). */
    public StepContext context() {
        return context;
    }

    /** A recorded metric ({@code "clipByGlobalNorm.norm"}), copied to the host on first read. */
    @SuppressWarnings("unchecked")
    public OptionalDouble metric(String key) {
        Object v = metrics.get(key);
        if (v == null) {
            return OptionalDouble.empty();
        }
        if (v instanceof Double d) {
            return OptionalDouble.of(d);
        }
        double host = ops.toHost((T) v);
        metrics.put(key, host);
        return OptionalDouble.of(host);
    }

    /**
     * A recorded metric as the backend scalar the stage recorded, without copying it to the host:
     * for adapters that keep metrics on the device (TensorFlow's one-run step stores them in graph
     * variables). Empty if the key is unknown or the value is already a host value ({@link #metric}).
     */
    @SuppressWarnings("unchecked")
    public java.util.Optional<T> metricTensor(String key) {
        Object v = metrics.get(key);
        return v == null || v instanceof Double ? java.util.Optional.empty() : java.util.Optional.of((T) v);
    }

    /** The names of the recorded metrics, in recording order. */
    public java.util.Set<String> metricNames() {
        return Collections.unmodifiableSet(metrics.keySet());
    }

    /** Every metric copied to the host, all in one {@link TensorOps#toHost(java.util.List) batched copy}. */
    @SuppressWarnings("unchecked")
    public Map<String, Double> hostMetrics() {
        java.util.List<String> keys = new java.util.ArrayList<>();
        java.util.List<T> scalars = new java.util.ArrayList<>();
        for (Map.Entry<String, Object> e : metrics.entrySet()) {
            if (!(e.getValue() instanceof Double)) {
                keys.add(e.getKey());
                scalars.add((T) e.getValue());
            }
        }
        if (!scalars.isEmpty()) {
            double[] values = ops.toHost(scalars);
            for (int i = 0; i < values.length; i++) {
                metrics.put(keys.get(i), values[i]);
            }
        }
        if (clipCounter != null) {
            Runnable count = clipCounter;
            clipCounter = null;
            if (clipped()) {
                count.run();
            }
        }
        Map<String, Double> out = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : metrics.entrySet()) {
            out.put(e.getKey(), (Double) e.getValue());
        }
        return out;
    }

    /**
     * What the scaling stages (clips, normalizations) did on this step, in the order they ran, with
     * host values (copied on first read, like {@link #metric}).
     */
    public java.util.List<Scaling> scalings() {
        java.util.List<Scaling> out = new java.util.ArrayList<>(entries.size());
        for (StepRecords.Entry e : entries) {
            if (!e.nonFinite()) {
                double norm = e.normKey() == null ? Double.NaN : metric(e.normKey()).orElse(Double.NaN);
                out.add(new Scaling(e.stage(), e.group(), e.partial(), norm, metric(e.coefficientKey()).orElse(1.0),
                        e.threshold()));
            }
        }
        return out;
    }

    /** The counts of non-finite values the stages reported on this step, with host values. */
    public java.util.List<NonFiniteCount> nonFiniteCounts() {
        java.util.List<NonFiniteCount> out = new java.util.ArrayList<>(2);
        for (StepRecords.Entry e : entries) {
            if (e.nonFinite()) {
                out.add(new NonFiniteCount(e.stage(), e.group(), metric(e.coefficientKey()).orElse(0)));
            }
        }
        return out;
    }

    /** The loss scale this call's loss was multiplied by, where a loss-scale stage ran ({@link io.gradguard.core.transform.LossScale}). */
    public java.util.OptionalDouble lossScale() {
        return Double.isNaN(lossScale) ? java.util.OptionalDouble.empty() : java.util.OptionalDouble.of(lossScale);
    }

    /** Whether a scaling stage made some gradients smaller on this step ({@link Scaling#clipped()}). */
    public boolean clipped() {
        for (StepRecords.Entry e : entries) {
            if (!e.nonFinite() && metric(e.coefficientKey()).orElse(1.0) < 1) {
                return true;
            }
        }
        return false;
    }

    /**
     * Whether this call ended the current optimizer step's window: it applies, or a stage skipped
     * the accumulated step. False while accumulation holds, and for a micro-batch skipped before
     * it reached accumulation (the window goes on without it).
     */
    public boolean closesWindow() {
        return closesWindow;
    }

    void closesWindow(boolean closes) {
        closesWindow = closes;
    }

    /** The pipeline's clipped-step counter, run once when the metrics of this applied step reach the host. */
    void onClipped(Runnable counter) {
        clipCounter = counter;
    }

    /** The backend the metrics live on. */
    public TensorOps<T> ops() {
        return ops;
    }

    @Override
    public String toString() {
        return "StepResult{" + action + (stage.isEmpty() ? "" : " by " + stage) + ", step " + context.step()
                + ", micro " + context.microStep() + "}";
    }
}
