package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
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

/**
 * Both hooks of {@link Dl4jGuard} on real DL4J networks, for what the {@link Dl4jGuardKitTest} does
 * not cover: per-layer grouping, the driver's own division by the batch size against DL4J's
 * {@code fit} bit for bit, the computation graph, DL4J's iteration count and gradient after a skip,
 * the listener's refusals and sum convention, and bad input.
 */
class Dl4jGuardTest {

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
        Dl4jGuard trainer = Dl4jGuard.of(Transforms.clipByGlobalNorm(1e9));
        ComputationGraph referenceGraph = Nets.graph(new Adam(0.01));
        ComputationGraph guardedGraph = Nets.graph(new Adam(0.01));
        Dl4jGuard graphTrainer = Dl4jGuard.of(Transforms.clipByGlobalNorm(1e9));
        int[] sizes = {10, 49, 99, 10}; // 1/49 and 1/99 do not invert exactly in double
        for (int s = 0; s < sizes.length; s++) {
            DataSet d = Nets.batch(sizes[s], 50 + s);
            reference.fit(d);
            assertEquals(1.0, trainer.step(guarded, d).metric("clipByGlobalNorm.coefficient").orElseThrow(), "the clip must not act");
            referenceGraph.fit(d);
            graphTrainer.step(guardedGraph, d);
        }
        assertArrayEquals(Nets.params(reference), Nets.params(guarded), "multi-layer network");
        assertArrayEquals(Nets.state(reference.getUpdater().getStateViewArray()), Nets.state(guarded.getUpdater().getStateViewArray()), "Adam moments");
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
            Dl4jGuard trainer = Dl4jGuard.of(Transforms.clipByGlobalNorm(1e9));
            for (int s = 0; s < 3; s++) {
                DataSet d = Nets.batch(10, 80 + s);
                reference.fit(d);
                trainer.step(guarded, d);
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
            Dl4jGuard listening = Dl4jGuard.of(Transforms.clipByGlobalNorm(0.05));
            Dl4jGuard driving = Dl4jGuard.of(Transforms.clipByGlobalNorm(0.05));
            viaFit.setListeners(listening.listener());
            for (int s = 0; s < 4; s++) {
                DataSet d = Nets.batch(10, 70 + s, 5.0);
                OracleTest.fit(viaFit, d);
                StepResult<INDArray> r = OracleTest.step(driving, viaTrainer, d);
                assertTrue(r.metric("clipByGlobalNorm.coefficient").orElseThrow() < 0.5, "the clip must act");
                assertEquals(listening.lastResult().orElseThrow().metric("clipByGlobalNorm.norm").orElseThrow(),
                        r.metric("clipByGlobalNorm.norm").orElseThrow(), 1e-5, "the same norm at step " + s);
            }
            assertEquals(0, Nets.maxRelDiff(Nets.params(viaFit), Nets.params(viaTrainer)), 1e-5, graph ? "graph" : "multi-layer network");
            assertTrue(viaTrainer.conf().isMiniBatch(), "division switched back on");
        }
    }

    private static double[] change(GradientPipeline p, DataSet d) {
        MultiLayerNetwork net = Nets.mlp(new Sgd(1.0));
        double[] before = Nets.params(net);
        assertTrue(Dl4jGuard.of(p).step(net, d).applies());
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
    void four_micro_batches_of_8_equal_one_fit_on_32_with_adam_on_a_computation_graph() {
        ComputationGraph reference = Nets.graph(new Adam(0.01));
        ComputationGraph guarded = Nets.graph(new Adam(0.01));
        Dl4jGuard trainer = Dl4jGuard.of(Transforms.accumulate(4), Transforms.clipByGlobalNorm(100));
        for (int s = 0; s < 5; s++) {
            List<DataSet> micro = micro(s);
            reference.fit(DataSet.merge(micro));
            for (DataSet m : micro) {
                trainer.step(guarded, m);
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

    // ---- skips ---------------------------------------------------------------------------------

    @Test
    void a_skipped_step_leaves_dl4js_iteration_count_and_no_nan_in_the_gradient() {
        MultiLayerNetwork net = Nets.mlp(new Adam(0.01));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
        for (int s = 0; s < 3; s++) {
            assertTrue(guard.step(net, Nets.batch(8, s)).applies());
        }
        DataSet poisoned = Nets.batch(8, 99);
        poisoned.setFeatures(Nets.nanCopy(poisoned.getFeatures()));
        assertTrue(guard.step(net, poisoned).skipped());
        assertEquals(3, net.getIterationCount());
        assertEquals(0.0, net.gradient().gradient().amaxNumber().doubleValue(), "the NaN gradient was cleared");
        assertTrue(guard.step(net, Nets.batch(8, 4)).applies());
        assertEquals(4, net.getIterationCount());
    }

    // ---- the listener ----------------------------------------------------------------------------

    @Test
    void the_listener_refuses_pipelines_that_hold_or_skip_and_says_what_to_do() {
        for (GradientTransform t : new GradientTransform[] {Transforms.accumulate(2), Transforms.skipNonFinite(3), Transforms.skipSpikes(4)}) {
            Dl4jGuard guard = Dl4jGuard.of(Transforms.clipByValue(1), t);
            IllegalStateException e = assertThrows(IllegalStateException.class, guard::listener);
            assertTrue(e.getMessage().startsWith("Dl4jGuard.listener(): stage '" + t.name() + "'")
                    && e.getMessage().contains("guard.step(net, batch) or guard.fit(net, data)"), e.getMessage());
        }
    }

    @Test
    void a_stage_that_skips_inside_fit_stops_the_listener_before_the_update() {
        MultiLayerNetwork net = Nets.mlp(new Adam(0.01));
        net.addListeners(Dl4jGuard.of(new AlwaysSkip()).listener());
        double[] before = Nets.params(net);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> net.fit(Nets.batch(8, 1)));
        assertTrue(e.getMessage().contains("alwaysSkip") && e.getMessage().contains("guard.step(net, batch)"), e.getMessage());
        assertArrayEquals(before, Nets.params(net));
        assertEquals(0, net.getIterationCount());
    }

    @Test
    void the_listener_keeps_dl4js_sum_convention_and_reports_mean_gradient_norms() {
        MultiLayerNetwork net = Nets.mlp(new Sgd(1.0));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.clipByGlobalNorm(1e6));
        net.addListeners(guard.listener());
        DataSet d = Nets.batch(10, 3);
        double[] meanGradient = change(GradientPipeline.of(), d);
        net.fit(d);
        assertEquals(norm(meanGradient, 0, meanGradient.length),
                guard.lastResult().orElseThrow().metric("clipByGlobalNorm.norm").orElseThrow(), 1e-5);
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
        assertEquals("pipeline must not be null", assertThrows(IllegalArgumentException.class,
                () -> Dl4jGuard.of((GradientPipeline) null)).getMessage());
        Dl4jGuard g = Dl4jGuard.of(Transforms.clipByGlobalNorm(1.0));
        DataSet d = Nets.batch(2, 1);
        assertEquals("net must not be null", assertThrows(IllegalArgumentException.class,
                () -> g.step((MultiLayerNetwork) null, d)).getMessage());
        assertEquals("graph must not be null", assertThrows(IllegalArgumentException.class,
                () -> g.step((ComputationGraph) null, d)).getMessage());
        MultiLayerNetwork net = Nets.mlp(new Sgd(0.1));
        assertEquals("batch must not be null", assertThrows(IllegalArgumentException.class,
                () -> g.step(net, (DataSet) null)).getMessage());
        assertEquals("data must not be null", assertThrows(IllegalArgumentException.class,
                () -> g.fit(net, (org.nd4j.linalg.dataset.api.iterator.DataSetIterator) null)).getMessage());
        DataSet noLabels = new DataSet(d.getFeatures(), null);
        assertEquals("batch must have features and labels, got \"features [2, 4], labels null\"",
                assertThrows(IllegalArgumentException.class, () -> g.step(net, noLabels)).getMessage());
    }

    @Test
    void the_driver_trains_an_epoch_of_an_iterator_and_counts_it() {
        MultiLayerNetwork net = Nets.mlp(new Sgd(0.1));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.accumulate(2));
        List<DataSet> batches = micro(0);
        org.nd4j.linalg.dataset.api.iterator.DataSetIterator data =
                new org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator<>(batches, 1);
        guard.fit(net, data);
        guard.fit(net, data); // exhausted: rewound
        assertEquals(8, guard.callCount());
        assertEquals(4, net.getIterationCount());
        assertEquals(2, net.getEpochCount());
    }
}
