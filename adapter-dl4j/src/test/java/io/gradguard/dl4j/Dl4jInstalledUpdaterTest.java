package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.Transforms;
import java.util.Map;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.schedule.MapSchedule;
import org.nd4j.linalg.schedule.ScheduleType;
import org.nd4j.linalg.schedule.StepSchedule;

/**
 * {@link Dl4jGuard#install} with {@code net.fit} unchanged, for what {@link Dl4jInstalledGuardKitTest}
 * does not cover: an iteration-keyed learning-rate schedule and Adam's bias correction see applied
 * steps only (against plain DL4J {@code fit} on the full batch), the computation graph, a held
 * micro-batch moving nothing, the refusals, and loss scaling (both hooks that can skip).
 */
class Dl4jInstalledUpdaterTest {
    private static final int STEPS = 6;
    private static final int K = 4;

    @Test
    void an_iteration_schedule_sees_applied_steps_only_with_sgd() {
        scheduleSeesAppliedStepsOnly(new Sgd(new MapSchedule(ScheduleType.ITERATION, Map.of(0, 0.5, 2, 0.1, 4, 0.02))));
    }

    @Test
    void an_iteration_schedule_and_adams_bias_correction_see_applied_steps_only() {
        scheduleSeesAppliedStepsOnly(new Adam(new StepSchedule(ScheduleType.ITERATION, 0.05, 0.5, 2)));
    }

    /**
     * Plain {@code fit} on batches of 8 against the installed guard on micro-batches of 2, with a
     * NaN micro-batch inside two windows: DL4J counts 26 calls, the schedule must see 6 steps.
     * Three data seeds.
     */
    private static void scheduleSeesAppliedStepsOnly(IUpdater updater) {
        for (long seed : new long[] {50, 150, 250}) {
            scheduleSeesAppliedStepsOnly(updater, seed);
        }
    }

    private static void scheduleSeesAppliedStepsOnly(IUpdater updater, long seed) {
        MultiLayerNetwork reference = Nets.mlp(updater.clone());
        MultiLayerNetwork net = Nets.mlp(updater.clone());
        Dl4jGuard guard = Dl4jGuard.of(Transforms.skipNonFinite(3), Transforms.accumulate(K)).install(net);
        for (int s = 0; s < STEPS; s++) {
            DataSet batch = Nets.batch(2 * K, seed + s);
            reference.fit(batch);
            for (int m = 0; m < K; m++) {
                if (m == 2 && s % 3 == 1) {
                    DataSet poisoned = slice(batch, 0, 2);
                    poisoned.setFeatures(Nets.nanCopy(poisoned.getFeatures()));
                    net.fit(poisoned);
                    assertTrue(guard.lastResult().orElseThrow().skipped());
                }
                net.fit(slice(batch, 2 * m, 2 * m + 2));
                assertEquals(m == K - 1, guard.lastResult().orElseThrow().applies(), "micro-batch " + m + " of step " + s);
            }
        }
        assertEquals(STEPS, guard.stepCount());
        assertEquals(2, guard.skippedCount());
        assertEquals(STEPS * K + 2, net.getIterationCount(), "DL4J's own count keeps counting fit calls");
        assertEquals(0, Nets.maxRelDiff(Nets.params(reference), Nets.params(net)), 1e-5, "parameters");
        INDArray state = reference.getUpdater().getStateViewArray();
        if (state != null) {
            assertEquals(0, Nets.maxRelDiff(Nets.state(state), Nets.state(net.getUpdater().getStateViewArray())), 1e-5,
                    "updater state");
        }
    }

    @Test
    void a_computation_graph_accumulates_as_one_fit_on_the_full_batch() {
        ComputationGraph reference = Nets.graph(new Adam(0.01));
        ComputationGraph graph = Nets.graph(new Adam(0.01));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.skipNonFinite(3), Transforms.accumulate(K),
                Transforms.clipByGlobalNorm(100)).install(graph);
        for (int s = 0; s < STEPS; s++) {
            DataSet batch = Nets.batch(8 * K, 70 + s);
            reference.fit(batch);
            for (int m = 0; m < K; m++) {
                graph.fit(slice(batch, 8 * m, 8 * m + 8));
            }
            if (s == 2) {
                DataSet poisoned = slice(batch, 0, 8);
                poisoned.setFeatures(Nets.nanCopy(poisoned.getFeatures()));
                graph.fit(poisoned);
                assertTrue(guard.lastResult().orElseThrow().skipped());
            }
        }
        assertEquals(STEPS, guard.stepCount());
        assertEquals(0, Nets.maxRelDiff(Nets.params(reference), Nets.params(graph)), 1e-5, "parameters");
        assertEquals(0, Nets.maxRelDiff(Nets.state(reference.getUpdater().getStateViewArray()),
                Nets.state(graph.getUpdater().getStateViewArray())), 1e-5, "Adam's moments");
    }

    @Test
    void a_held_or_skipped_call_moves_nothing_and_leaves_a_zero_gradient() {
        MultiLayerNetwork net = Nets.mlp(new Adam(0.01));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.skipNonFinite(3), Transforms.accumulate(2)).install(net);
        net.fit(Nets.batch(8, 1));
        net.fit(Nets.batch(8, 2)); // one applied step: Adam's moments are not zero
        double[] params = Nets.params(net);
        double[] state = Nets.state(net.getUpdater().getStateViewArray());
        DataSet poisoned = Nets.batch(8, 3);
        poisoned.setFeatures(Nets.nanCopy(poisoned.getFeatures()));
        for (DataSet d : new DataSet[] {Nets.batch(8, 3), poisoned}) {
            net.fit(d);
            assertTrue(!guard.lastResult().orElseThrow().applies());
            assertArrayEquals(params, Nets.params(net), "parameters");
            assertArrayEquals(state, Nets.state(net.getUpdater().getStateViewArray()), "updater state");
            assertEquals(0.0, net.gradient().gradient().amaxNumber().doubleValue(), "the update DL4J subtracted was 0");
        }
    }

    @Test
    void one_hook_per_guard_and_one_guard_per_network() {
        MultiLayerNetwork net = Nets.mlp(new Sgd(0.1));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.accumulate(2)).install(net);
        Object installed = net.getUpdater();
        assertSame(guard, guard.install(net));
        assertSame(installed, net.getUpdater(), "installing again changes nothing");
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> guard.step(net, Nets.batch(4, 1)));
        assertTrue(e.getMessage().contains("one hook per guard"), e.getMessage());
        e = assertThrows(IllegalStateException.class, () -> Dl4jGuard.of(Transforms.accumulate(2)).install(net));
        assertTrue(e.getMessage().contains("already has") && e.getMessage().contains("one guard per network"), e.getMessage());
        Dl4jGuard listening = Dl4jGuard.of(Transforms.clipByGlobalNorm(1));
        listening.listener();
        e = assertThrows(IllegalStateException.class, () -> listening.install(Nets.mlp(new Sgd(0.1))));
        assertTrue(e.getMessage().contains("already runs through listener()"), e.getMessage());
        MultiLayerNetwork uninitialised = new MultiLayerNetwork(Nets.mlp(new Sgd(0.1)).getLayerWiseConfigurations());
        e = assertThrows(IllegalStateException.class, () -> Dl4jGuard.of().install(uninitialised));
        assertTrue(e.getMessage().contains("net.init()"), e.getMessage());
        IllegalArgumentException a = assertThrows(IllegalArgumentException.class, () -> Dl4jGuard.of().install((ComputationGraph) null));
        assertTrue(a.getMessage().contains("graph"), a.getMessage());
    }

    // ---- loss scaling ----------------------------------------------------------------------------

    @Test
    void a_loss_scale_multiplies_the_loss_gradient_and_the_pipeline_divides_it_back() throws java.io.IOException {
        MultiLayerNetwork reference = Nets.mlp(new Sgd(0.1));
        MultiLayerNetwork installed = Nets.mlp(new Sgd(0.1));
        MultiLayerNetwork driven = Nets.mlp(new Sgd(0.1));
        Dl4jGuard onFit = Dl4jGuard.of(Transforms.lossScale(1024)).install(installed);
        Dl4jGuard driver = Dl4jGuard.of(Transforms.lossScale(1024));
        for (int s = 0; s < 3; s++) {
            DataSet batch = Nets.batch(8, 90 + s);
            reference.fit(batch);
            installed.fit(batch);
            assertTrue(driver.step(driven, batch).applies());
        }
        assertEquals(1024, onFit.lossScale());
        assertTrue(lossOf(installed) instanceof ScaledLoss, "the output layer's loss is scaled: " + lossOf(installed));
        // without the multiply the stage's division alone would make steps 1024 times smaller
        assertEquals(0, Nets.maxRelDiff(Nets.params(reference), Nets.params(installed)), 1e-5, "installed");
        assertEquals(0, Nets.maxRelDiff(Nets.params(reference), Nets.params(driven)), 1e-5, "driver");

        java.io.ByteArrayOutputStream saved = new java.io.ByteArrayOutputStream();
        org.deeplearning4j.util.ModelSerializer.writeModel(installed, saved, true);
        MultiLayerNetwork restored = org.deeplearning4j.util.ModelSerializer.restoreMultiLayerNetwork(
                new java.io.ByteArrayInputStream(saved.toByteArray()), true);
        assertEquals(lossOf(reference).getClass(), lossOf(restored).getClass(), "a saved network holds the plain loss");
        assertTrue(!restored.getLayerWiseConfigurations().toJson().contains("ScaledLoss"));
    }

    @Test
    void an_overflowing_loss_scale_skips_the_step_and_backs_off() {
        MultiLayerNetwork net = Nets.mlp(new Adam(0.01));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.dynamicLossScale(1e39, 2, 1e-4, 2000)).install(net);
        double[] before = Nets.params(net);
        net.fit(Nets.batch(8, 1)); // the loss gradient × 1e39 overflows float32
        assertTrue(guard.lastResult().orElseThrow().skipped());
        assertArrayEquals(before, Nets.params(net));
        assertEquals(1e35, guard.lossScale(), 1e21);
        net.fit(Nets.batch(8, 2));
        assertTrue(guard.lastResult().orElseThrow().applies());
        double[] after = Nets.params(net);
        assertTrue(Nets.maxAbsDiff(before, after) > 0 && java.util.Arrays.stream(after).allMatch(Double::isFinite));
    }

    private static org.nd4j.linalg.lossfunctions.ILossFunction lossOf(MultiLayerNetwork net) {
        return ((org.deeplearning4j.nn.conf.layers.BaseOutputLayer) net.getOutputLayer().conf().getLayer()).getLossFn();
    }

    private static DataSet slice(DataSet d, int from, int to) {
        return new DataSet(rows(d.getFeatures(), from, to), rows(d.getLabels(), from, to));
    }

    private static INDArray rows(INDArray a, int from, int to) {
        return a.get(NDArrayIndex.interval(from, to), NDArrayIndex.all()).dup();
    }
}
