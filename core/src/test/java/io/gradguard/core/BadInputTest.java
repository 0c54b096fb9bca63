package io.gradguard.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import io.gradguard.core.transform.Accumulate;
import io.gradguard.core.transform.SkipSpikes;
import io.gradguard.core.transform.ZClip;
import org.junit.jupiter.api.DisplayNameGeneration;
import org.junit.jupiter.api.DisplayNameGenerator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** Every factory rejects bad hyperparameters with a message naming the parameter and the value. */
@DisplayNameGeneration(DisplayNameGenerator.ReplaceUnderscores.class)
class BadInputTest {

    private static void rejects(String message, Executable e) {
        IllegalArgumentException x = assertThrows(IllegalArgumentException.class, e);
        assertEquals(message, x.getMessage());
    }

    @Test
    void value_clip_thresholds() {
        rejects("c must be a finite number > 0, got -1.0", () -> Transforms.clipByValue(-1));
        rejects("c must be a finite number > 0, got NaN", () -> Transforms.clipByValue(Double.NaN));
        rejects("c must be a finite number > 0, got 0.0", () -> Transforms.clipByValue(0));
        rejects("lo must be <= hi, got lo=2.0, hi=1.0", () -> Transforms.clipByValue(2, 1));
        rejects("lo must be a number, got NaN", () -> Transforms.clipByValue(Double.NaN, 1));
        rejects("hi must be a number, got NaN", () -> Transforms.clipByValue(0, Double.NaN));
    }

    @Test
    void norm_clip_thresholds_and_types() {
        rejects("maxNorm must be a finite number > 0, got 0.0", () -> Transforms.clipByGlobalNorm(0));
        rejects("maxNorm must be a finite number > 0, got -2.0", () -> Transforms.clipByNorm(-2));
        rejects("maxNorm must be a finite number > 0, got Infinity", () -> Transforms.clipByLayerNorm(Double.POSITIVE_INFINITY));
        rejects("maxNorm must be a finite number > 0, got NaN", () -> Transforms.clipByBlockRms(Double.NaN));
        rejects("normType must not be null", () -> Transforms.clipByGlobalNorm(1, null));
        rejects("scope must not be null", () -> Transforms.clipByNorm(1, NormType.L2, null));
        rejects("scope must not be null", () -> Transforms.normalize(null));
    }

    @Test
    void adaptive_clip_parameters() {
        rejects("clipping must be a finite number > 0, got 0.0", () -> Transforms.adaptiveClip(0));
        rejects("eps must be a finite number > 0, got -0.001", () -> Transforms.adaptiveClip(0.1, -1e-3));
    }

    @Test
    void masks() {
        rejects("namePattern must be a non-empty regular expression, got \"\"", () -> Transforms.matching("", Transforms.centralize()));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Transforms.matching("([a", Transforms.centralize()));
        assertEquals(true, e.getMessage().startsWith("namePattern must be a valid regular expression, got \"([a\""), e.getMessage());
        rejects("inner must not be null", () -> Transforms.matching("W", null));
        rejects("mask must not be null", () -> Transforms.masked(null, Transforms.centralize()));
        IllegalArgumentException held = assertThrows(IllegalArgumentException.class,
                () -> Transforms.matching("W", Transforms.accumulate(2)));
        assertEquals(true, held.getMessage().startsWith("inner must not hold or skip steps"), held.getMessage());
    }

    @Test
    void stateful_transforms() {
        rejects("k must be >= 1, got 0", () -> Transforms.accumulate(0));
        rejects("weighting must not be null", () -> Accumulate.every(2).weightedBy(null));
        rejects("maxConsecutive must be >= 0, got -1", () -> Transforms.skipNonFinite(-1));
        rejects("percentile must be in (0, 100], got 0.0", () -> Transforms.autoClip(0));
        rejects("percentile must be in (0, 100], got 101.0", () -> Transforms.autoClip(101));
        rejects("historySize must be >= 1, got 0", () -> Transforms.autoClip(10, 0));
        rejects("alpha must be in (0, 1), got 1.0", () -> ZClip.defaults().alpha(1));
        rejects("zThreshold must be a finite number > 0, got -2.5", () -> ZClip.defaults().zThreshold(-2.5));
        rejects("warmup must be >= 1, got 0", () -> ZClip.defaults().warmup(0));
        rejects("cap must be a finite number > 0, got 0.0", () -> ZClip.defaults().cap(0));
        rejects("mode must not be null", () -> ZClip.defaults().mode(null));
        rejects("zThreshold must be a finite number > 0, got NaN", () -> SkipSpikes.zAbove(Double.NaN));
        rejects("minHistory must be in [2, window=100], got 200", () -> SkipSpikes.zAbove(3).minHistory(200));
        rejects("window must be >= 2, got 1", () -> SkipSpikes.zAbove(3).window(1));
    }

    @Test
    void gradient_metadata() {
        ReferenceTensor t = ReferenceTensor.of(new float[] {1}, 1);
        rejects("name must be a non-empty parameter name, got \"\"",
                () -> new GradientTensor<>("", new long[] {1}, Role.WEIGHT, "l", Layout.outputLast(), t));
        rejects("layer must be a non-empty layer name (parameter w), got null",
                () -> new GradientTensor<>("w", new long[] {1}, Role.WEIGHT, null, Layout.outputLast(), t));
        rejects("shape must have no negative dimension (parameter w), got [-1]",
                () -> new GradientTensor<>("w", new long[] {-1}, Role.WEIGHT, "l", Layout.outputLast(), t));
        GradientTensor<ReferenceTensor> w = new GradientTensor<>("w", new long[] {1}, Role.WEIGHT, "l", Layout.outputLast(), t);
        rejects("tensor names must be unique, got \"w\"", () -> GradientSet.of(w, w));
        rejects("shape must hold exactly data.length=1 elements, got [2]", () -> ReferenceTensor.of(new float[] {1}, 2));
        rejects("output axis must exist in a tensor of rank 2, got 3", () -> Layout.outputAxis(3).reductionAxes(2));
        rejects("axes must name at least one axis, got \"[]\"", () -> Layout.outputAxes());
        rejects("output axes must name distinct axes, got outputAxes(1, -1)", () -> Layout.outputAxes(1, -1).reductionAxes(2));
        rejects("output axes must leave an axis to reduce at rank 2, got outputAxes(0, 1)", () -> Layout.outputAxes(0, 1).reductionAxes(2));
    }

    @Test
    void step_context() {
        rejects("batchSize must be >= 0, got -1", () -> StepContext.ofBatch(-1));
        rejects("weight must be a finite number >= 0, got NaN", () -> StepContext.ofBatch(1).withWeight(Double.NaN));
    }

    @Test
    void pipelines() {
        rejects("transforms[1] must not be null, got null", () -> GradientPipeline.of(Transforms.centralize(), null));
        GradientPipeline p = GradientPipeline.of(Transforms.centralize(), Transforms.centralize());
        assertEquals(java.util.List.of("centralize", "centralize#2"), p.stageNames());
        rejects("stage must be one of [centralize, centralize#2], got \"clip\"", () -> p.state("clip"));
        rejects("ops must not be null", () -> p.step(GradientSet.of(java.util.List.of()), null, StepContext.empty()));
        assertEquals(0, p.stepCount());
        p.step(GradientSet.<ReferenceTensor>of(java.util.List.of()), ReferenceOps.INSTANCE, StepContext.empty());
        assertEquals(1, p.stepCount());
    }

    /** An adapter without a guard (TensorFlow's one-op step) claims its pipeline as a guard does: one owner per pipeline. */
    @Test
    void a_pipeline_has_one_owner() {
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0));
        Object first = new Object();
        p.claim(first);
        p.claim(first);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> p.claim(new Object()));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("one pipeline per model"), e.getMessage());
        IllegalArgumentException n = assertThrows(IllegalArgumentException.class, () -> p.claim(null));
        org.junit.jupiter.api.Assertions.assertTrue(n.getMessage().contains("owner"), n.getMessage());
    }
}
