package io.gradguard.core.monitor;

import static io.gradguard.core.monitor.Fixtures.grad;
import static io.gradguard.core.monitor.Fixtures.set;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The record's numbers against hand-computed values, on the reference backend. */
class MonitorTest {
    static final ReferenceOps OPS = ReferenceOps.INSTANCE;
    static final double EPS = 1e-6;

    /** layer "0": W=[3,4] (norm 5), b=[0]; layer "1": W=[12]. Global norm √(9+16+144) = 13. */
    static GradientSet<ReferenceTensor> model() {
        return set(grad("0/W", "0", 3, 4), grad("0/b", "0", 0), grad("1/W", "1", 12));
    }

    static RunRecorder run(GradientPipeline p, Monitor m, int steps, StepContext ctx) {
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        for (int i = 0; i < steps; i++) {
            p.step(model(), OPS, ctx);
        }
        m.close();
        return rec;
    }

    @Test
    void globalClipRecordsNormsBeforeAndAfterTheCoefficientAndEveryTensor() {
        Monitor m = Monitor.builder().name("mlp").build();
        RunRecorder rec = run(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), m), m, 1, StepContext.ofBatch(8).withLoss(0.25));
        StepRecord r = rec.recording().records().get(0);
        assertEquals("mlp", r.run());
        assertEquals(0, r.step());
        assertFalse(r.skipped());
        assertEquals(1, r.microBatches());
        assertEquals(0.25, r.loss());
        assertEquals(13, r.normBefore(), EPS);
        assertEquals(1, r.normAfter(), EPS);
        assertEquals(1 / 13.0, r.clipCoefficient(), EPS);
        assertTrue(r.clipped());
        assertEquals(1.0, r.clipThreshold());
        assertEquals(0, r.nonFinite());
        assertTrue(r.detailed());
        assertEquals(List.of("0/W", "0/b", "1/W"), r.tensors().stream().map(TensorStats::name).toList());
        assertEquals(5, r.tensors().get(0).norm(), EPS);
        assertEquals(4, r.tensors().get(0).maxAbs(), EPS);
        assertEquals(0, r.tensors().get(1).norm(), EPS);
        assertEquals(12, r.tensors().get(2).maxAbs(), EPS);
        assertEquals("0", r.layers().get(0).layer());
        assertEquals(5, r.layers().get(0).norm(), EPS);
        assertEquals(12, r.layers().get(1).norm(), EPS);
        assertTrue(Double.isNaN(r.layers().get(0).updateRatio()));
        assertEquals(List.of(), r.events());
    }

    @Test
    void aMicroBatchSkippedInsideAWindowIsRecordedAloneAndTheStepCountsTheBatchesTheOptimizerGot() {
        Monitor m = Monitor.builder().build();
        GradientPipeline p = GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.accumulate(4), m);
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        for (int call = 0; call < 5; call++) { // calls 0, 1 good; 2 poisoned; 3, 4 good: 4 good batches, one step
            GradientSet<ReferenceTensor> g = call == 2 ? set(grad("0/W", "0", Float.NaN, 4), grad("0/b", "0", 0),
                    grad("1/W", "1", 12)) : model();
            p.step(g, OPS, StepContext.ofBatch(8).withLoss(call == 2 ? Double.NaN : call));
        }
        m.close();
        List<StepRecord> records = rec.recording().records();
        assertEquals(2, records.size(), records.toString());
        StepRecord skipped = records.get(0);
        assertTrue(skipped.skipped());
        assertEquals(1, skipped.microBatches(), "the poisoned micro-batch alone was dropped");
        assertEquals(2, skipped.call(), "the user's call index");
        assertEquals(0, skipped.step());
        StepRecord applied = records.get(1);
        assertFalse(applied.skipped());
        assertEquals(4, applied.microBatches(), "the optimizer received the mean of 4 good micro-batches");
        assertEquals(4, applied.call());
        assertEquals((0 + 1 + 3 + 4) / 4.0, applied.loss(), EPS, "the mean loss of the batches it got");
        assertEquals(1, p.skippedCount());
        assertEquals(5, p.callCount());
    }

    @Test
    void withoutClippingBeforeEqualsAfter() {
        Monitor m = Monitor.builder().build();
        StepRecord r = run(GradientPipeline.of(m), m, 1, StepContext.empty()).recording().records().get(0);
        assertEquals(13, r.normBefore(), EPS);
        assertEquals(13, r.normAfter(), EPS);
        assertEquals(1.0, r.clipCoefficient());
        assertFalse(r.clipped());
        assertTrue(Double.isNaN(r.clipThreshold()));
        assertFalse(r.hasLoss());
    }

    @Test
    void perLayerClippingIsUndoneLayerByLayer() {
        // layer 0 has norm 5 (kept), layer 1 has 12 (scaled by 5/12): after = √(25+25)
        Monitor m = Monitor.builder().every(2).build();
        List<StepRecord> rs = run(GradientPipeline.of(Transforms.clipByLayerNorm(5.0), m), m, 2, StepContext.empty())
                .recording().records();
        for (StepRecord r : rs) { // step 0 detailed (host sums), step 1 global only (device sums)
            assertEquals(13, r.normBefore(), EPS);
            assertEquals(Math.sqrt(50), r.normAfter(), EPS);
            assertEquals(Math.sqrt(50) / 13, r.clipCoefficient(), EPS);
            assertTrue(r.clipped());
        }
        assertTrue(rs.get(0).detailed());
        assertEquals(12, rs.get(0).layers().get(1).norm(), EPS);
        assertEquals(12, rs.get(0).tensors().get(2).maxAbs(), EPS);
        assertFalse(rs.get(1).detailed());
        assertEquals(List.of(), rs.get(1).tensors());
    }

    @Test
    void cadenceMeasuresTensorsEveryNthStepOnly() {
        Monitor m = Monitor.builder().every(3).build();
        List<StepRecord> rs = run(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), m), m, 7, StepContext.empty())
                .recording().records();
        assertEquals(7, rs.size());
        for (StepRecord r : rs) {
            assertEquals(r.step() % 3 == 0, r.detailed(), "step " + r.step());
            assertEquals(r.detailed() ? 3 : 0, r.tensors().size());
            assertEquals(13, r.normBefore(), EPS);
        }
    }

    @Test
    void heldMicroBatchesMakeOneRecordWithTheirWeightedMeanLoss() {
        Monitor m = Monitor.builder().build();
        GradientPipeline p = GradientPipeline.of(new Fixtures.HoldEvery(3), m);
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        p.step(model(), OPS, StepContext.ofBatch(4).withLoss(1.0).withWeight(1));
        p.step(model(), OPS, StepContext.ofBatch(4).withLoss(2.0).withWeight(2));
        p.step(model(), OPS, StepContext.ofBatch(4).withLoss(4.0).withWeight(1));
        m.close();
        List<StepRecord> rs = rec.recording().records();
        assertEquals(1, rs.size());
        assertEquals(3, rs.get(0).microBatches());
        assertEquals((1.0 + 2 * 2.0 + 4.0) / 4, rs.get(0).loss(), EPS);
        assertEquals(0, rs.get(0).step());
    }

    @Test
    void skippedStepsAreRecordedInDetailWithTheirReasonAndAnEvent() {
        Monitor m = Monitor.builder().every(100).build();
        GradientPipeline p = GradientPipeline.of(new Fixtures.SkipLossAbove(10), m);
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        p.step(model(), OPS, StepContext.empty().withLoss(1));
        p.step(model(), OPS, StepContext.empty().withLoss(50));
        p.step(model(), OPS, StepContext.empty().withLoss(1));
        m.close();
        List<StepRecord> rs = rec.recording().records();
        assertEquals(3, rs.size());
        StepRecord s = rs.get(1);
        assertTrue(s.skipped());
        assertEquals(1, s.step()); // the number the next applied step gets
        assertEquals(1, rs.get(2).step());
        assertEquals("lossGuard", s.skippedBy());
        assertEquals("loss 50.0 above 10.0", s.skipReason());
        assertTrue(s.detailed());
        assertEquals(13, s.normBefore(), EPS);
        assertEquals(1, s.events().size());
        assertEquals(MonitorEvent.Kind.SKIPPED, s.events().get(0).kind());
        assertEquals("step 1 skipped by lossGuard: loss 50.0 above 10.0", s.events().get(0).message());
        assertFalse(rs.get(2).detailed());
    }

    @Test
    void nonFiniteValuesAStageReplacedAreStillCountedAndNamed() {
        Monitor m = Monitor.builder().every(50).build();
        GradientPipeline p = GradientPipeline.of(Transforms.zeroNonFinite(), m);
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        p.step(set(grad("a/W", "a", 1, 1), grad("b/W", "b", 1)), OPS, StepContext.empty());
        p.step(set(grad("a/W", "a", 1, 1), grad("b/W", "b", Float.NaN)), OPS, StepContext.empty());
        m.close();
        StepRecord r = rec.recording().records().get(1);
        assertTrue(r.detailed(), "a non-finite step is measured in detail whatever the cadence");
        assertEquals(1, r.nonFinite());
        assertEquals(1, r.tensors().get(1).nonFinite());
        assertEquals(Math.sqrt(2), r.normAfter(), EPS);
        assertEquals(List.of("non-finite gradient at step 1: first in parameter b/W (layer b), 1 NaN/Inf values; 1 in all"),
                r.events().stream().map(MonitorEvent::message).toList());
    }

    @Test
    void updateRatiosReportedAfterTheOptimizerStepLandInThatStepsRecord() {
        Monitor m = Monitor.builder().every(2).build();
        GradientPipeline p = GradientPipeline.of(m);
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        GradientSet<ReferenceTensor> g = model();
        p.step(g, OPS, StepContext.empty());
        assertTrue(m.wantsUpdates());
        assertEquals(List.of(m), Monitor.in(p));
        assertEquals(0, rec.recording().records().size(), "a detailed record waits for the update ratios");
        // parameters are ones: ‖θ‖ of layer "0" = √3 (W has 2, b has 1), of layer "1" = 1
        m.recordUpdate(OPS, g.get(0), ReferenceTensor.of(new float[] {0.003f, 0.004f}, 2));
        m.recordUpdate(OPS, g.get(1), ReferenceTensor.of(new float[] {0}, 1));
        m.recordUpdate("1", 0.002, 1.0);
        p.step(model(), OPS, StepContext.empty()); // step 1 is not detailed: published at once, after step 0
        assertFalse(m.wantsUpdates());
        m.recordUpdate("1", 1, 1); // ignored: nothing wants it
        List<StepRecord> rs = rec.recording().records();
        assertEquals(2, rs.size());
        assertEquals(0.005 / Math.sqrt(3), rs.get(0).layers().get(0).updateRatio(), 1e-9);
        assertEquals(0.002, rs.get(0).layers().get(1).updateRatio(), 1e-12);
        m.close();
    }

    @Test
    void aRecordWaitingForUpdateRatiosIsDeliveredOnFlushOrClose() {
        Monitor m = Monitor.builder().build();
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        GradientPipeline p = GradientPipeline.of(m);
        p.step(model(), OPS, StepContext.empty());
        m.flush();
        assertEquals(1, rec.recording().records().size());
        Monitor immediate = Monitor.builder().updateRatios(false).build();
        RunRecorder rec2 = Sinks.memory();
        immediate.addListener(rec2);
        GradientPipeline.of(immediate).step(model(), OPS, StepContext.empty());
        assertEquals(1, rec2.recording().records().size());
        assertFalse(immediate.wantsUpdates());
        assertFalse(immediate.updateRatios(), "an adapter that measures updates itself asks the monitor whether to");
        assertTrue(Monitor.builder().build().updateRatios(), "on by default");
    }

    @Test
    void worksAsAPlainListenerAndOnAnEmptyModel() {
        Monitor m = Monitor.builder().build();
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(2.0)).addListener(m);
        p.step(model(), OPS, StepContext.empty());
        GradientPipeline empty = GradientPipeline.of(m);
        empty.step(GradientSet.of(List.of()), OPS, StepContext.empty());
        m.close();
        List<StepRecord> rs = rec.recording().records();
        assertEquals(13, rs.get(0).normBefore(), EPS);
        assertEquals(2, rs.get(0).normAfter(), EPS);
        assertEquals(0, rs.get(1).normBefore());
        assertEquals(List.of(), rs.get(1).layers());
    }

    @Test
    void infiniteGradientsNeverThrowAndAreReported() {
        Monitor m = Monitor.builder().build();
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), m);
        p.step(set(grad("w", "l", Float.POSITIVE_INFINITY, 1), grad("e", "l")), OPS, StepContext.empty());
        m.close();
        StepRecord r = rec.recording().records().get(0);
        assertEquals(Double.POSITIVE_INFINITY, r.normBefore());
        assertEquals(1, r.nonFinite());
        assertEquals(MonitorEvent.Kind.NON_FINITE, r.events().get(0).kind());
    }

    @Test
    void theDesignOrderSkipAccumulateClipGivesOneRecordPerRealStepAndNamesTheSkip() {
        Monitor m = Monitor.builder().every(100).build();
        GradientPipeline p = GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.accumulate(2),
                Transforms.clipByGlobalNorm(1.0), m);
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        p.step(model(), OPS, StepContext.empty().withLoss(1));
        p.step(model(), OPS, StepContext.empty().withLoss(3));
        p.step(set(grad("0/W", "0", Float.NaN, 4), grad("0/b", "0", 0), grad("1/W", "1", 12)), OPS,
                StepContext.empty().withLoss(5));
        p.step(model(), OPS, StepContext.empty().withLoss(1));
        p.step(model(), OPS, StepContext.empty().withLoss(1));
        m.close();
        List<StepRecord> rs = rec.recording().records();
        assertEquals(3, rs.size());
        assertEquals(2, rs.get(0).microBatches());
        assertEquals(2.0, rs.get(0).loss(), EPS);
        assertEquals(13, rs.get(0).normBefore(), EPS, "the mean of two equal micro-batches");
        assertEquals(1, rs.get(0).normAfter(), EPS);
        StepRecord skipped = rs.get(1);
        assertTrue(skipped.skipped());
        assertEquals(1, skipped.microBatches());
        assertEquals(1, skipped.nonFinite());
        assertEquals(List.of(MonitorEvent.Kind.SKIPPED, MonitorEvent.Kind.NON_FINITE),
                skipped.events().stream().map(MonitorEvent::kind).toList());
        assertTrue(skipped.events().get(1).message().contains("first in parameter 0/W (layer 0)"),
                skipped.events().get(1).message());
        assertEquals(1, rs.get(2).step());
        assertEquals(2, rs.get(2).microBatches());
        assertEquals(13, rs.get(2).normBefore(), EPS);
    }

    @Test
    void builderRejectsBadSettingsNamingThem() {
        assertEquals("every must be >= 1, got 0",
                assertThrows(IllegalArgumentException.class, () -> Monitor.builder().every(0)).getMessage());
        assertEquals("factor must be a finite number > 1, got 1.0",
                assertThrows(IllegalArgumentException.class, () -> Monitor.builder().exploding(1.0, 100)).getMessage());
        assertEquals("window must be >= 3, got 2",
                assertThrows(IllegalArgumentException.class, () -> Monitor.builder().exploding(5, 2)).getMessage());
        assertEquals("relative must be in [0, 1), got 1.5",
                assertThrows(IllegalArgumentException.class, () -> Monitor.builder().vanishing(1e-7, 1.5, 3)).getMessage());
        assertEquals("name must be a non-empty run name, got \"\"",
                assertThrows(IllegalArgumentException.class, () -> Monitor.builder().name("")).getMessage());
        assertEquals("everySteps must be >= 0, got -1",
                assertThrows(IllegalArgumentException.class, () -> Sinks.slf4j(-1)).getMessage());
        Monitor m = Monitor.builder().build();
        GradientSet<ReferenceTensor> noParam = set(new io.gradguard.core.GradientTensor<>("w", new long[] {1},
                io.gradguard.core.Role.WEIGHT, "l", io.gradguard.core.Layout.outputLast(), ReferenceTensor.of(new float[] {1}, 1)));
        assertEquals("parameter.param() must hold the parameter's value before the step (parameter w), got null",
                assertThrows(IllegalArgumentException.class, () -> m.recordUpdate(OPS, noParam.get(0),
                        ReferenceTensor.of(new float[] {1}, 1))).getMessage());
    }

    @Test
    void the_short_form_writes_a_line_per_step_with_per_tensor_statistics_every_tenth_step(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) {
        java.nio.file.Path file = dir.resolve("grad.jsonl");
        Monitor monitor = Monitor.toJsonl(file);
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), monitor);
        for (int i = 0; i < 25; i++) {
            p.step(set(grad("w", "dense", 3, 4)), ReferenceOps.INSTANCE, StepContext.ofBatch(1));
        }
        monitor.close();
        List<StepRecord> records = RunRecording.readJsonl(file).records();
        assertEquals(25, records.size());
        for (StepRecord r : records) {
            assertEquals(r.index() % Monitor.SHORT_FORM_EVERY == 0, r.detailed(), "record " + r.index());
            assertEquals(5.0, r.normBefore(), 1e-6);
        }
    }

    @Test
    void normAfterAGlobalClipIsTakenFromTheClipWithoutAnotherPass() {
        int[] sumOfSquares = new int[1];
        io.gradguard.core.spi.TensorOps<ReferenceTensor> counting = counting(sumOfSquares);
        Monitor m = Monitor.builder().every(10).build();
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        GradientPipeline monitored = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), m);
        GradientPipeline plain = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0));
        monitored.step(model(), counting, StepContext.empty()); // step 0: measured in detail
        plain.step(model(), counting, StepContext.empty());
        sumOfSquares[0] = 0;
        plain.step(model(), counting, StepContext.empty());
        int clipAlone = sumOfSquares[0];
        sumOfSquares[0] = 0;
        monitored.step(model(), counting, StepContext.empty()); // step 1: global norms only
        m.close();
        assertEquals(clipAlone, sumOfSquares[0], "the monitor adds no Σg² pass on a step not measured in detail");
        StepRecord r = rec.recording().records().get(1);
        assertFalse(r.detailed());
        assertEquals(13, r.normBefore(), EPS);
        assertEquals(1, r.normAfter(), EPS);
        assertEquals(1 / 13.0, r.clipCoefficient(), EPS);
    }

    @Test
    void aStageChangingGradientsAfterTheClipIsMeasuredNotAssumed() {
        // the global clip does not act (13 < 20), then the value clip leaves [1, 1], [0], [1]: norm √3
        Monitor m = Monitor.builder().every(10).build();
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(20.0), Transforms.clipByValue(1.0), m);
        p.step(model(), OPS, StepContext.empty());
        p.step(model(), OPS, StepContext.empty());
        m.close();
        StepRecord r = rec.recording().records().get(1);
        assertFalse(r.detailed());
        assertEquals(Math.sqrt(3), r.normAfter(), EPS);
        assertEquals(Math.sqrt(3), r.normBefore(), EPS, "no norm clip acted: before = after");
    }

    @Test
    void aMaskedClipIsMeasuredNotAssumed() {
        // the clip sees layer "0" only (norm 5, scaled to 1); layer "1" keeps 12: √(1 + 144) after
        Monitor m = Monitor.builder().every(10).build();
        RunRecorder rec = Sinks.memory();
        m.addListener(rec);
        GradientPipeline p = GradientPipeline.of(Transforms.matching("^0/.*", Transforms.clipByGlobalNorm(1.0)), m);
        p.step(model(), OPS, StepContext.empty());
        p.step(model(), OPS, StepContext.empty());
        m.close();
        StepRecord r = rec.recording().records().get(1);
        assertFalse(r.detailed());
        assertEquals(Math.sqrt(145), r.normAfter(), EPS);
    }

    @Test
    void observersDoNotHideTheLastChangingStage() {
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0),
                Transforms.skipNonFinite(3), Transforms.skipSpikes(3.0), Monitor.builder().build());
        assertEquals("clipByGlobalNorm", p.step(model(), OPS, StepContext.empty()).lastChangingStage());
        GradientPipeline q = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), Transforms.centralize());
        assertEquals("centralize", q.step(model(), OPS, StepContext.empty()).lastChangingStage());
        assertEquals("", GradientPipeline.of(Monitor.builder().build()).step(model(), OPS, StepContext.empty()).lastChangingStage());
    }

    /** The reference backend, counting its sumOfSquares calls (whole-tensor and per-unit). */
    @SuppressWarnings("unchecked")
    private static io.gradguard.core.spi.TensorOps<ReferenceTensor> counting(int[] sumOfSquares) {
        return (io.gradguard.core.spi.TensorOps<ReferenceTensor>) java.lang.reflect.Proxy.newProxyInstance(
                MonitorTest.class.getClassLoader(), new Class<?>[] {io.gradguard.core.spi.TensorOps.class}, (proxy, method, args) -> {
                    if (method.getName().equals("sumOfSquares")) {
                        sumOfSquares[0]++;
                    }
                    try {
                        return method.invoke(OPS, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
    }
}
