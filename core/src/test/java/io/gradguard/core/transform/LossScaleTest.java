package io.gradguard.core.transform;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.RunRecorder;
import io.gradguard.core.monitor.Sinks;
import io.gradguard.core.monitor.StepRecord;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Dynamic loss scaling's rule (PyTorch GradScaler's), its checkpoint, and its place in the pipeline. */
class LossScaleTest {
    static final ReferenceOps OPS = ReferenceOps.INSTANCE;

    /** The gradient of a loss that was multiplied by {@code scale}: {@code scale · g}, overflowing as float32 would. */
    static GradientSet<ReferenceTensor> scaledGradient(double scale, boolean overflow) {
        float[] g = {(float) (scale * 0.5), (float) (scale * -0.25)};
        if (overflow) {
            g[1] = Float.POSITIVE_INFINITY;
        }
        return GradientSet.of(List.of(new GradientTensor<>("w", new long[] {2}, Role.WEIGHT, "w", Layout.outputFirst(),
                ReferenceTensor.of(g, 2))));
    }

    /** The scale sequence the rule gives: ×backoff on overflow, ×growth after {@code interval} finite calls in a row. */
    static List<Double> expectedScales(boolean[] overflow, double s, double growth, double backoff, int interval) {
        List<Double> out = new ArrayList<>();
        int good = 0;
        for (boolean o : overflow) {
            out.add(s);
            if (o) {
                s *= backoff;
                good = 0;
            } else if (++good == interval) {
                s *= growth;
                good = 0;
            }
        }
        return out;
    }

    static final boolean[] PATTERN = {false, false, false, true, false, false, false, false, true, true, false, false,
            false, false, false, false, false, true, false, false};

    @Test
    void the_scale_follows_the_rule_under_a_scripted_pattern_and_gradients_come_back_unscaled() {
        GradientPipeline p = GradientPipeline.of(Transforms.dynamicLossScale(1024, 2, 0.5, 3));
        List<Double> expected = expectedScales(PATTERN, 1024, 2, 0.5, 3);
        for (int i = 0; i < PATTERN.length; i++) {
            double scale = p.lossScale();
            assertEquals(expected.get(i), scale, "scale before call " + i);
            GradientSet<ReferenceTensor> g = scaledGradient(scale, PATTERN[i]);
            StepResult<ReferenceTensor> r = p.step(g, OPS, StepContext.ofBatch(1));
            assertEquals(scale, r.lossScale().orElseThrow(), "the result reports the scale the loss was multiplied by");
            assertEquals(PATTERN[i], r.skipped(), "call " + i + " skipped on overflow only");
            if (!PATTERN[i]) {
                float[] v = g.get(0).gradient().floats();
                assertEquals(0.5f, v[0], 0f, "unscaled exactly (a power-of-two scale)");
                assertEquals(-0.25f, v[1], 0f);
            }
        }
        assertEquals(4, p.skippedCount());
    }

    @Test
    void defaults_are_pytorch_grad_scaler() {
        LossScale s = Transforms.dynamicLossScale();
        assertEquals(65536.0, s.initialScale());
        GradientPipeline p = GradientPipeline.of(s);
        for (int i = 0; i < 2000; i++) {
            assertEquals(65536.0, p.lossScale(), "call " + i);
            p.step(scaledGradient(p.lossScale(), false), OPS, StepContext.ofBatch(1));
        }
        assertEquals(131072.0, p.lossScale(), "×2 after 2000 finite calls");
        p.step(scaledGradient(p.lossScale(), true), OPS, StepContext.ofBatch(1));
        assertEquals(65536.0, p.lossScale(), "×0.5 on overflow");
    }

    @Test
    void a_restore_mid_sequence_continues_identically() throws IOException {
        GradientPipeline a = GradientPipeline.of(Transforms.dynamicLossScale(1024, 2, 0.5, 3));
        for (int i = 0; i < 7; i++) {
            a.step(scaledGradient(a.lossScale(), PATTERN[i]), OPS, StepContext.ofBatch(1));
        }
        ByteArrayOutputStream saved = new ByteArrayOutputStream();
        a.saveState(saved);
        GradientPipeline b = GradientPipeline.of(Transforms.dynamicLossScale(1024, 2, 0.5, 3));
        b.restoreState(new ByteArrayInputStream(saved.toByteArray()), OPS);
        for (int i = 7; i < PATTERN.length; i++) {
            assertEquals(a.lossScale(), b.lossScale(), "scale before call " + i);
            StepResult<ReferenceTensor> ra = a.step(scaledGradient(a.lossScale(), PATTERN[i]), OPS, StepContext.ofBatch(1));
            StepResult<ReferenceTensor> rb = b.step(scaledGradient(b.lossScale(), PATTERN[i]), OPS, StepContext.ofBatch(1));
            assertEquals(ra.action().kind(), rb.action().kind());
        }
        assertEquals(a.lossScale(), b.lossScale());
        assertEquals(a.skippedCount(), b.skippedCount());
    }

    @Test
    void an_overflow_never_counts_against_skip_non_finite() {
        // skipNonFinite(0) throws on the first non-finite step it sees: overflows must never reach it
        GradientPipeline p = GradientPipeline.of(Transforms.dynamicLossScale(1024, 2, 0.5, 1000), Transforms.skipNonFinite(0));
        for (int i = 0; i < 5; i++) {
            StepResult<ReferenceTensor> r = p.step(scaledGradient(p.lossScale(), true), OPS, StepContext.ofBatch(1));
            assertTrue(r.skipped());
            assertEquals("dynamicLossScale", r.decidedBy());
        }
        assertEquals(1024 / 32.0, p.lossScale());
        assertFalse(p.step(scaledGradient(p.lossScale(), false), OPS, StepContext.ofBatch(1)).skipped());
    }

    @Test
    void a_fixed_scale_never_moves_but_still_skips_an_overflow() {
        GradientPipeline p = GradientPipeline.of(Transforms.lossScale(128));
        for (boolean o : PATTERN) {
            assertEquals(128.0, p.lossScale());
            assertEquals(o, p.step(scaledGradient(128, o), OPS, StepContext.ofBatch(1)).skipped());
        }
    }

    @Test
    void clip_thresholds_apply_to_unscaled_gradients() {
        GradientPipeline p = GradientPipeline.of(Transforms.dynamicLossScale(), Transforms.clipByGlobalNorm(10.0));
        GradientSet<ReferenceTensor> g = scaledGradient(p.lossScale(), false); // unscaled norm ≈ 0.56 < 10
        StepResult<ReferenceTensor> r = p.step(g, OPS, StepContext.ofBatch(1));
        assertEquals(1.0, r.metric("clipByGlobalNorm.coefficient").orElseThrow(), "the clip sees the unscaled norm");
        assertEquals(Math.sqrt(0.25 + 0.0625), r.metric("clipByGlobalNorm.norm").orElseThrow(), 1e-6);
    }

    @Test
    void the_monitor_records_the_scale_of_every_step_overflows_included() {
        RunRecorder rec = Sinks.memory();
        Monitor m = Monitor.builder().sink(rec).build();
        GradientPipeline p = GradientPipeline.of(Transforms.dynamicLossScale(1024, 2, 0.5, 3), m);
        for (boolean o : PATTERN) {
            p.step(scaledGradient(p.lossScale(), o), OPS, StepContext.ofBatch(1));
        }
        m.close();
        List<StepRecord> records = rec.recording().records();
        List<Double> expected = expectedScales(PATTERN, 1024, 2, 0.5, 3);
        assertEquals(PATTERN.length, records.size());
        for (int i = 0; i < PATTERN.length; i++) {
            assertEquals(expected.get(i), records.get(i).lossScale(), "record " + i);
            assertEquals(PATTERN[i], records.get(i).skipped());
        }
    }

    @Test
    void a_loss_scale_must_be_the_first_stage_and_its_values_are_checked() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> GradientPipeline.of(Transforms.clipByGlobalNorm(1), Transforms.dynamicLossScale()));
        assertTrue(e.getMessage().contains("transforms[1]") && e.getMessage().contains("first stage"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Transforms.lossScale(0));
        assertThrows(IllegalArgumentException.class, () -> Transforms.dynamicLossScale(1, 0.5, 0.5, 10));
        assertThrows(IllegalArgumentException.class, () -> Transforms.dynamicLossScale(1, 2, 1.5, 10));
        IllegalArgumentException i = assertThrows(IllegalArgumentException.class, () -> Transforms.dynamicLossScale(1, 2, 0.5, 0));
        assertTrue(i.getMessage().contains("growthInterval"), i.getMessage());
        assertEquals(1.0, GradientPipeline.of(Transforms.clipByGlobalNorm(1)).lossScale(), "no loss scale: 1");
    }
}
