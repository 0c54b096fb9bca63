package io.gradguard.benchmarks;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.Sinks;
import java.io.OutputStream;

/**
 * The GradGuard pipelines every framework section times, so that all backends run the same
 * guard: {@code clipByGlobalNorm(1e-3)} with a norm monitor (part 2's guarded step), the clip alone
 * (part 4), {@code clipByValue(1e-3)}, and the
 * global clip with full per-layer monitoring on every step, its records serialised as JSON lines
 * (to a discarding stream, so the disk is not measured).
 */
public final class Pipelines {
    /**
     * The norm bound of the guarded steps: small enough that the clip acts on every step of the
     * benchmark models (a clip that does not act can be cheaper: some backends skip multiplying by
     * exactly 1), so the rows measure the full work.
     */
    public static final double MAX_NORM = 1e-3;
    /**
     * Adam's learning rate in the training-step benchmarks: small enough that a model trained on
     * one fixed batch does not memorise it during the run, so its gradients, and what the clips
     * do to them, stay the same from the first step to the last (at 1e-3 the gradients had
     * shrunk below every bound by the end, and the clips no longer acted).
     */
    public static final float LEARNING_RATE = 1e-6f;

    /**
     * The norm bound of the "armed, not acting" rows: far above any gradient norm of the benchmark
     * models, so the clip measures its norm on every step and never scales. That is the common case
     * in stable training (a clip that acts on every step is a sign the bound is too small); backends
     * that skip multiplying by exactly 1 then cost one read pass.
     */
    public static final double IDLE_NORM = 1e9;

    /** The element bound of the value clips. */
    public static final double MAX_VALUE = 1e-3;

    /** The metric {@link #globalClip()} records its coefficient under. */
    public static final String COEFFICIENT = "clipByGlobalNorm.coefficient";

    private Pipelines() {
    }

    /**
     * A note saying whether the global clip acted on the measured steps (a clip that never acts
     * may cost less than one that does, on backends that skip multiplying by exactly 1).
     */
    public static String clipActivity(java.util.OptionalDouble coefficient) {
        if (coefficient.isEmpty()) {
            return "clip coefficient not available";
        }
        double c = coefficient.getAsDouble();
        return String.format(java.util.Locale.ROOT, c < 1 ? "clip acts: coefficient %.3g at the last step"
                : "the clip did not act (coefficient %.3g at the last step)", c);
    }

    /** {@code clipByGlobalNorm(1e-3)}. */
    public static GradientPipeline globalClip() {
        return GradientPipeline.of(Transforms.clipByGlobalNorm(MAX_NORM));
    }

    /** {@code clipByGlobalNorm(1e9)}: measures the norm on every step, never acts on the benchmark models. */
    public static GradientPipeline globalClipIdle() {
        return GradientPipeline.of(Transforms.clipByGlobalNorm(IDLE_NORM));
    }

    /**
     * The guarded step of the speed goals, "global-norm clip + norm monitoring":
     * {@code clipByGlobalNorm(1e-3)} and a monitor in its short form (the global norm on every step,
     * per-tensor statistics on every {@value Monitor#SHORT_FORM_EVERY}th, records as JSON lines to a
     * discarding stream). A median over the rounds is a step without per-tensor statistics; those
     * steps cost what the "monitor every step" rows show.
     */
    public static GradientPipeline guarded() {
        return GradientPipeline.of(Transforms.clipByGlobalNorm(MAX_NORM), normMonitor());
    }

    /** {@link #guarded()} with the clip armed at {@link #IDLE_NORM}: it measures, never scales. */
    public static GradientPipeline guardedIdle() {
        return GradientPipeline.of(Transforms.clipByGlobalNorm(IDLE_NORM), normMonitor());
    }

    private static Monitor normMonitor() {
        return normMonitor(true);
    }

    private static Monitor normMonitor(boolean updateRatios) {
        return Monitor.builder().name("benchmark").every(Monitor.SHORT_FORM_EVERY).updateRatios(updateRatios)
                .sink(Sinks.jsonl(OutputStream.nullOutputStream())).build();
    }

    /**
     * The README's pipeline: {@code skipNonFinite(3)} and {@code clipByGlobalNorm(1e-3)}. Skipping
     * is a host decision, so on graph backends the step needs the non-finite count on the host.
     */
    public static GradientPipeline readme() {
        return GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(MAX_NORM));
    }

    /**
     * {@link #readme()} with the README's monitor ({@code Monitor.toJsonl}: a record every step,
     * per-tensor statistics every {@value Monitor#SHORT_FORM_EVERY}th, JSON lines to a discarding
     * stream; without its SLF4J sink, which logs nothing on steps without events).
     */
    public static GradientPipeline readmeMonitored() {
        return GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(MAX_NORM), normMonitor());
    }

    /**
     * {@link #readmeMonitored()} with the monitor's update-to-parameter ratios off: on a graph
     * backend, the monitor without the ratios' gating and ordering on every step.
     */
    public static GradientPipeline readmeMonitoredWithoutRatios() {
        return GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(MAX_NORM), normMonitor(false));
    }

    /** {@code clipByValue(1e-3)}. */
    public static GradientPipeline valueClip() {
        return GradientPipeline.of(Transforms.clipByValue(MAX_VALUE));
    }

    /** {@code clipByLayerNorm(1e-3)} (DL4J's {@code ClipL2PerLayer}). */
    public static GradientPipeline layerClip() {
        return GradientPipeline.of(Transforms.clipByLayerNorm(MAX_NORM));
    }

    /**
     * {@code clipByGlobalNorm(1e-3)} and a monitor taking per-tensor statistics on every step: the
     * statistics the "monitor every step" goal names (Σx², max|x|, the non-finite count where Σx²
     * is not finite). Update ratios are off: they need a copy of every parameter before the update
     * (a model-sized copy and three reductions per parameter), which a monitor takes on its
     * detailed steps only, every n-th with {@code every(n)}; the small-model rows, whose monitor is
     * the README's, keep them.
     */
    public static GradientPipeline globalClipMonitored() {
        Monitor monitor = Monitor.builder().name("benchmark").every(1).updateRatios(false)
                .sink(Sinks.jsonl(OutputStream.nullOutputStream())).build();
        return GradientPipeline.of(Transforms.clipByGlobalNorm(MAX_NORM), monitor);
    }
}
