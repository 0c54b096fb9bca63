package io.gradguard.benchmarks;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.Sinks;
import java.io.OutputStream;

/**
 * The GradGuard pipelines every framework section times, so that all backends run the same
 * guard: {@code clipByGlobalNorm(1.0)} (part 2's guarded step), {@code clipByValue(1e-3)}, and the
 * global clip with full per-layer monitoring on every step, its records serialised as JSON lines
 * (to a discarding stream, so the disk is not measured).
 */
public final class Pipelines {
    /** The global-norm bound of the guarded steps. */
    public static final double MAX_NORM = 1.0;
    /** The element bound of the value clips. */
    public static final double MAX_VALUE = 1e-3;

    private Pipelines() {
    }

    /** {@code clipByGlobalNorm(1.0)}. */
    public static GradientPipeline globalClip() {
        return GradientPipeline.of(Transforms.clipByGlobalNorm(MAX_NORM));
    }

    /** {@code clipByValue(1e-3)}. */
    public static GradientPipeline valueClip() {
        return GradientPipeline.of(Transforms.clipByValue(MAX_VALUE));
    }

    /** {@code clipByLayerNorm(1.0)} (DL4J's {@code ClipL2PerLayer}). */
    public static GradientPipeline layerClip() {
        return GradientPipeline.of(Transforms.clipByLayerNorm(MAX_NORM));
    }

    /** {@code clipByGlobalNorm(1.0)} and a monitor taking per-tensor statistics on every step. */
    public static GradientPipeline globalClipMonitored() {
        Monitor monitor = Monitor.builder().name("benchmark").every(1)
                .sink(Sinks.jsonl(OutputStream.nullOutputStream())).build();
        return GradientPipeline.of(Transforms.clipByGlobalNorm(MAX_NORM), monitor);
    }
}
