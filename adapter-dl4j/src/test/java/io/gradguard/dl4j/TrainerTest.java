package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.Action;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.StepResult;
import io.gradguard.core.TransformState;
import io.gradguard.core.Transforms;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.List;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;

/** The step driver and the listener on real DL4J networks: exact math, accumulation, skips, checkpoints, refusals. */
class TrainerTest {

    // ---- global-norm vs per-layer clipping ---------------------------------------------------

    @Test
    void global_norm_and_per_layer_clipping_differ_exactly_as_the_math_says() {
        DataSet d = Nets.batch(10, 7);
        // with SGD lr 1 the parameter change is exactly the (transformed) mean gradient
        double[] g = change(GradientPipeline.of(), d);
        MultiLayerNetwork probe = Nets.mlp(new Sgd(1.0));
        long[][] ranges = layerRanges(probe);
        double global = norm(g, 0, g.length);
        double minLayer = Double.MAX_VALUE;
        for (long[] r : ranges) {
            minLayer = Math.min(minLayer, norm(g, (int) r[0], (int) r[1]));
        }
        double c = Math.sqrt(minLayer * global); // below the global norm, above the smallest layer's
        assertTrue(minLayer < c && c < global);

        double[] byGlobal = change(GradientPipeline.of(Transforms.clipByGlobalNorm(c)), d);
        double[] byLayer = change(GradientPipeline.of(Transforms.clipByLayerNorm(c)), d);
        double[] expectGlobal = new double[g.length];
        double[] expectLayer = new double[g.length];
        for (int i = 0; i < g.length; i++) {
            expectGlobal[i] = g[i] * Math.min(1, c / global);
        }
        for (long[] r : ranges) {
            double n = norm(g, (int) r[0], (int) r[1]);
            for (int i = (int) r[0]; i < r[1]; i++) {
                expectLayer[i] = g[i] * Math.min(1, c / n);
            }
        }
        assertEquals(0, Nets.maxAbsDiff(expectGlobal, byGlobal), 1e-6, "global-norm clip");
        assertEquals(0, Nets.maxAbsDiff(expectLayer, byLayer), 1e-6, "per-layer clip");
        assertEquals(c, norm(byGlobal, 0, byGlobal.length), 1e-5, "the global clip leaves norm c");
        assertTrue(Nets.maxAbsDiff(byGlobal, byLayer) > 1e-3, "the two clips differ");
    }

    // ---- the driver's own division by the batch size --------------------------------------------

    @Test
    void a_pipeline_that_does_not_scale_trains_as_fit_does_bit_for_bit() {
        // the driver divides by the batch size itself (fused with the pipeline's scaling) and runs
        // DL4J's updater without its division: with nothing scaled that is DL4J's own division, so
        // the result must be fit's to the last bit (batches of 10, 49, 99: none a power of two)
        MultiLayerNetwork reference = Nets.mlp(new Adam(0.01));
        MultiLayerNetwork guarded = Nets.mlp(new Adam(0.01));
        GuardedTrainer trainer = GuardedTrainer.of(guarded, GradientPipeline.of(Transforms.clipByGlobalNorm(1e9)));
        ComputationGraph referenceGraph = Nets.graph(new Adam(0.01));
        ComputationGraph guardedGraph = Nets.graph(new Adam(0.01));
        GuardedTrainer graphTrainer = GuardedTrainer.of(guardedGraph, GradientPipeline.of(Transforms.clipByGlobalNorm(1e9)));
        int[] sizes = {10, 49, 99, 10}; // 1/49 and 1/99 do not invert exactly in double
        for (int s = 0; s < sizes.length; s++) {
            DataSet d = Nets.batch(sizes[s], 50 + s);
            reference.fit(d);
            assertEquals(1.0, trainer.step(d).metric("clipByGlobalNorm.coefficient").orElseThrow(), "the clip must not act");
            referenceGraph.fit(d);
            graphTrainer.step(d);
        }
        assertArrayEquals(Nets.params(reference), Nets.params(guarded), "multi-layer network");
        assertArrayEquals(state(reference.getUpdater().getStateViewArray()), state(guarded.getUpdater().getStateViewArray()), "Adam moments");
        assertArrayEquals(Nets.params(referenceGraph), Nets.params(guardedGraph), "computation graph");
        assertTrue(guarded.conf().isMiniBatch(), "the network's own division is switched back on after each update");
        assertTrue(guardedGraph.conf().isMiniBatch(), "the graph's own division is switched back on after each update");
    }

    @Test
    void where_dl4j_divides_other_parameters_than_gradguard_sees_the_trainer_leaves_the_division_to_dl4j() {
        // a batch normalization's running mean and variance are parameters DL4J does not divide; a
        // frozen layer's parameters have no gradient entry. Either way fit's bits must come out.
        MultiLayerNetwork withNorm = normNet(false);
        assertTrue(Dl4jGradients.coversMinibatchDivision(trained(withNorm)), "top-level batch norm: GradGuard sees DL4J's set");
        MultiLayerNetwork frozen = normNet(true);
        assertTrue(!Dl4jGradients.coversMinibatchDivision(trained(frozen)), "a frozen layer: DL4J divides a view GradGuard leaves out");
        for (boolean freeze : new boolean[] {false, true}) {
            MultiLayerNetwork reference = normNet(freeze);
            MultiLayerNetwork guarded = normNet(freeze);
            GuardedTrainer trainer = GuardedTrainer.of(guarded, GradientPipeline.of(Transforms.clipByGlobalNorm(1e9)));
            for (int s = 0; s < 3; s++) {
                DataSet d = Nets.batch(10, 80 + s);
                reference.fit(d);
                trainer.step(d);
            }
            assertArrayEquals(Nets.params(reference), Nets.params(guarded), freeze ? "frozen first layer" : "batch norm");
        }
    }

    private static MultiLayerNetwork trained(MultiLayerNetwork net) {
        net.fit(Nets.batch(10, 1));
        return net;
    }

    /** dense, batch norm, output; with the first layer frozen on request. */
    private static MultiLayerNetwork normNet(boolean freezeFirst) {
        org.deeplearning4j.nn.conf.layers.Layer first = new org.deeplearning4j.nn.conf.layers.DenseLayer.Builder()
                .nIn(Nets.IN).nOut(8).activation(org.nd4j.linalg.activations.Activation.TANH).build();
        MultiLayerNetwork net = new MultiLayerNetwork(Nets.base(new Adam(0.01), null, 0).list()
                .layer(freezeFirst ? new org.deeplearning4j.nn.conf.layers.misc.FrozenLayer(first) : first)
                .layer(new org.deeplearning4j.nn.conf.layers.BatchNormalization.Builder().nOut(8).build())
                .layer(new org.deeplearning4j.nn.conf.layers.OutputLayer.Builder(org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction.MCXENT)
                        .nIn(8).nOut(Nets.OUT).activation(org.nd4j.linalg.activations.Activation.SOFTMAX).build())
                .build());
        net.init();
        return net;
    }

    @Test
    void an_acting_clip_folded_into_the_division_matches_the_listener_inside_fit() {
        // the listener scales and DL4J divides afterwards (two passes); the driver does both in one:
        // the same math, rounded once instead of twice
        for (boolean graph : new boolean[] {false, true}) {
            org.deeplearning4j.nn.api.Model viaFit = graph ? Nets.graph(new Adam(0.01)) : Nets.mlp(new Adam(0.01));
            org.deeplearning4j.nn.api.Model viaTrainer = graph ? Nets.graph(new Adam(0.01)) : Nets.mlp(new Adam(0.01));
            GuardListener listener = GuardListener.of(GradientPipeline.of(Transforms.clipByGlobalNorm(0.05)));
            GuardedTrainer trainer = viaTrainer instanceof ComputationGraph g ? GuardedTrainer.of(g, GradientPipeline.of(Transforms.clipByGlobalNorm(0.05)))
                    : GuardedTrainer.of((MultiLayerNetwork) viaTrainer, GradientPipeline.of(Transforms.clipByGlobalNorm(0.05)));
            viaFit.setListeners(listener);
            for (int s = 0; s < 4; s++) {
                DataSet d = Nets.batch(10, 70 + s, 5.0);
                OracleTest.fit(viaFit, d);
                StepResult<INDArray> r = trainer.step(d);
                assertTrue(r.metric("clipByGlobalNorm.coefficient").orElseThrow() < 0.5, "the clip must act");
                assertEquals(listener.lastResult().metric("clipByGlobalNorm.norm").orElseThrow(),
                        r.metric("clipByGlobalNorm.norm").orElseThrow(), 1e-5, "the same norm at step " + s);
            }
            assertEquals(0, Nets.maxRelDiff(Nets.params(viaFit), Nets.params(viaTrainer)), 1e-5, graph ? "graph" : "multi-layer network");
            assertTrue(viaTrainer.conf().isMiniBatch(), "division switched back on");
        }
    }

    private static double[] change(GradientPipeline p, DataSet d) {
        MultiLayerNetwork net = Nets.mlp(new Sgd(1.0));
        double[] before = Nets.params(net);
        assertTrue(GuardedTrainer.of(net, p).step(d).applies());
        double[] after = Nets.params(net);
        double[] out = new double[before.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = before[i] - after[i];
        }
        return out;
    }

    /** [start, end) of each layer's parameters in the flat parameter vector. */
    private static long[][] layerRanges(MultiLayerNetwork net) {
        long[][] out = new long[net.getnLayers()][];
        long start = 0;
        for (int i = 0; i < out.length; i++) {
            long n = net.getLayer(i).numParams();
            out[i] = new long[] {start, start + n};
            start += n;
        }
        return out;
    }

    private static double norm(double[] v, int from, int to) {
        double s = 0;
        for (int i = from; i < to; i++) {
            s += v[i] * v[i];
        }
        return Math.sqrt(s);
    }

    // ---- accumulation --------------------------------------------------------------------------

    @Test
    void four_micro_batches_of_8_equal_one_fit_on_32_with_adam_on_a_multilayer_network() {
        MultiLayerNetwork reference = Nets.mlp(new Adam(0.01));
        MultiLayerNetwork guarded = Nets.mlp(new Adam(0.01));
        GuardedTrainer trainer = GuardedTrainer.of(guarded, GradientPipeline.of(Transforms.accumulate(4)));
        for (int s = 0; s < 5; s++) {
            List<DataSet> micro = micro(s);
            reference.fit(DataSet.merge(micro));
            for (int m = 0; m < 4; m++) {
                StepResult<INDArray> r = trainer.step(micro.get(m));
                assertEquals(m < 3, r.held(), "micro-batch " + m);
            }
        }
        assertEquals(0, Nets.maxAbsDiff(Nets.params(reference), Nets.params(guarded)), 1e-5);
        assertEquals(5, reference.getIterationCount());
        assertEquals(5, guarded.getIterationCount());
        assertEquals(0, Nets.maxAbsDiff(state(reference.getUpdater().getStateViewArray()),
                state(guarded.getUpdater().getStateViewArray())), 1e-5, "Adam moments");
    }

    @Test
    void four_micro_batches_of_8_equal_one_fit_on_32_with_adam_on_a_computation_graph() {
        ComputationGraph reference = Nets.graph(new Adam(0.01));
        ComputationGraph guarded = Nets.graph(new Adam(0.01));
        GuardedTrainer trainer = GuardedTrainer.of(guarded, GradientPipeline.of(Transforms.accumulate(4), Transforms.clipByGlobalNorm(100)));
        for (int s = 0; s < 5; s++) {
            List<DataSet> micro = micro(s);
            reference.fit(DataSet.merge(micro));
            for (DataSet m : micro) {
                trainer.step(m);
            }
        }
        assertEquals(0, Nets.maxAbsDiff(Nets.params(reference), Nets.params(guarded)), 1e-5);
        assertEquals(5, guarded.getIterationCount());
        assertEquals(reference.getIterationCount(), guarded.getIterationCount());
    }

    private static List<DataSet> micro(int step) {
        List<DataSet> out = new ArrayList<>();
        for (int m = 0; m < 4; m++) {
            out.add(Nets.batch(8, 1000 + 10L * step + m));
        }
        return out;
    }

    private static double[] state(INDArray a) {
        return a.castTo(org.nd4j.linalg.api.buffer.DataType.DOUBLE).dup().data().asDouble();
    }

    // ---- skips ---------------------------------------------------------------------------------

    @Test
    void a_nan_batch_is_skipped_leaving_params_adam_state_and_iteration_count_unchanged() {
        MultiLayerNetwork net = Nets.mlp(new Adam(0.01));
        GuardedTrainer trainer = GuardedTrainer.of(net, GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0)));
        for (int s = 0; s < 3; s++) {
            assertTrue(trainer.step(Nets.batch(8, s)).applies());
        }
        double[] params = Nets.params(net);
        double[] adam = state(net.getUpdater().getStateViewArray());
        DataSet poisoned = Nets.batch(8, 99);
        poisoned.setFeatures(Nets.nanCopy(poisoned.getFeatures()));

        StepResult<INDArray> r = trainer.step(poisoned);

        assertTrue(r.skipped(), r.toString());
        assertArrayEquals(params, Nets.params(net), "parameters");
        assertArrayEquals(adam, state(net.getUpdater().getStateViewArray()), "Adam moments");
        assertEquals(3, net.getIterationCount());
        assertEquals(0.0, net.gradient().gradient().amaxNumber().doubleValue(), "the NaN gradient was cleared");
        assertEquals(1, trainer.pipeline().skippedCount());
        assertTrue(trainer.step(Nets.batch(8, 4)).applies());
        assertEquals(4, net.getIterationCount());
        for (double p : Nets.params(net)) {
            assertTrue(Double.isFinite(p));
        }
    }

    // ---- checkpoints ---------------------------------------------------------------------------

    @Test
    void a_checkpoint_taken_mid_window_resumes_bit_identically() throws Exception {
        MultiLayerNetwork net = Nets.mlp(new Adam(0.01));
        GuardedTrainer trainer = GuardedTrainer.of(net, pipeline());
        for (int m = 0; m < 6; m++) { // one real step, then 2 of 4 micro-batches
            trainer.step(Nets.batch(8, 500 + m));
        }
        assertEquals(2, trainer.pipeline().microStep());
        ByteArrayOutputStream model = new ByteArrayOutputStream();
        ModelSerializer.writeModel(net, model, true);
        ByteArrayOutputStream guard = new ByteArrayOutputStream();
        trainer.saveState(guard);

        for (int m = 6; m < 14; m++) {
            trainer.step(Nets.batch(8, 500 + m));
        }

        MultiLayerNetwork resumed = ModelSerializer.restoreMultiLayerNetwork(new ByteArrayInputStream(model.toByteArray()), true);
        GuardedTrainer again = GuardedTrainer.of(resumed, pipeline());
        again.restoreState(new ByteArrayInputStream(guard.toByteArray()));
        for (int m = 6; m < 14; m++) {
            again.step(Nets.batch(8, 500 + m));
        }
        assertArrayEquals(Nets.params(net), Nets.params(resumed));
        assertEquals(net.getIterationCount(), resumed.getIterationCount());
        assertEquals(3, resumed.getIterationCount());
        assertArrayEquals(state(net.getUpdater().getStateViewArray()), state(resumed.getUpdater().getStateViewArray()));
    }

    private static GradientPipeline pipeline() {
        return GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.accumulate(4), Transforms.clipByGlobalNorm(0.5));
    }

    // ---- the listener ----------------------------------------------------------------------------

    @Test
    void the_listener_refuses_pipelines_that_hold_or_skip_and_says_what_to_do() {
        for (GradientTransform t : new GradientTransform[] {Transforms.accumulate(2), Transforms.skipNonFinite(3), Transforms.skipSpikes(4)}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> GuardListener.of(GradientPipeline.of(Transforms.clipByValue(1), t)));
            assertTrue(e.getMessage().startsWith("pipeline must not hold or skip steps for a GuardListener")
                    && e.getMessage().contains("GuardedTrainer.of(net, pipeline)") && e.getMessage().contains(t.name()), e.getMessage());
        }
    }

    @Test
    void a_stage_that_skips_inside_fit_stops_the_listener_before_the_update() {
        MultiLayerNetwork net = Nets.mlp(new Adam(0.01));
        net.addListeners(GuardListener.of(GradientPipeline.of(new AlwaysSkip())));
        double[] before = Nets.params(net);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> net.fit(Nets.batch(8, 1)));
        assertTrue(e.getMessage().contains("alwaysSkip") && e.getMessage().contains("GuardedTrainer"), e.getMessage());
        assertArrayEquals(before, Nets.params(net));
        assertEquals(0, net.getIterationCount());
    }

    @Test
    void the_listener_keeps_dl4js_sum_convention_and_reports_mean_gradient_norms() {
        MultiLayerNetwork net = Nets.mlp(new Sgd(1.0));
        GuardListener listener = GuardListener.of(GradientPipeline.of(Transforms.clipByGlobalNorm(1e6)));
        net.addListeners(listener);
        DataSet d = Nets.batch(10, 3);
        double[] meanGradient = change(GradientPipeline.of(), d);
        net.fit(d);
        assertNotNull(listener.lastResult());
        assertEquals(norm(meanGradient, 0, meanGradient.length), listener.lastResult().metric("clipByGlobalNorm.norm").orElseThrow(), 1e-5);
    }

    /** A test-only stage that always skips. */
    private static final class AlwaysSkip implements GradientTransform {
        @Override
        public String name() {
            return "alwaysSkip";
        }

        @Override
        public <T> Action update(Step<T> step, TransformState state) {
            return Action.skip("test");
        }
    }

    // ---- bad input -------------------------------------------------------------------------------

    @Test
    void bad_input_is_rejected_naming_the_parameter() {
        GradientPipeline p = GradientPipeline.of();
        assertEquals("net must not be null", assertThrows(IllegalArgumentException.class, () -> GuardedTrainer.of((MultiLayerNetwork) null, p)).getMessage());
        assertEquals("graph must not be null", assertThrows(IllegalArgumentException.class, () -> GuardedTrainer.of((ComputationGraph) null, p)).getMessage());
        assertEquals("pipeline must not be null", assertThrows(IllegalArgumentException.class, () -> GuardedTrainer.of(Nets.mlp(new Sgd(0.1)), null)).getMessage());
        assertEquals("pipeline must not be null", assertThrows(IllegalArgumentException.class, () -> GuardListener.of(null)).getMessage());
        GuardedTrainer t = GuardedTrainer.of(Nets.mlp(new Sgd(0.1)), p);
        assertEquals("batch must not be null", assertThrows(IllegalArgumentException.class, () -> t.step((DataSet) null)).getMessage());
        DataSet noLabels = new DataSet(Nets.batch(2, 1).getFeatures(), null);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> t.step(noLabels)).getMessage().startsWith("batch must have features and labels, got features=[2, 4], labels=null"));
    }
}
