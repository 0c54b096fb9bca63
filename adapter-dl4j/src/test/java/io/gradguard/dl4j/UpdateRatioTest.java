package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.LayerStats;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.RunRecorder;
import io.gradguard.core.monitor.Sinks;
import io.gradguard.core.monitor.StepRecord;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * Update-to-parameter ratios on real DL4J training, beyond the kit's check that they exist: through
 * both hooks (the listener rebuilds θ before the step from DL4J's subtracted update) and on both
 * network kinds, the ratio a monitor records for a layer is
 * ‖θ_after − θ_before‖ / ‖θ_before‖ computed here from host copies of the parameters; steps the
 * monitor does not sample carry no update statistics; no temporary outlives a step.
 */
class UpdateRatioTest {
    private static final int STEPS = 6;
    private static final int EVERY = 2;
    /** Relative: float32 rounding of θ − Δθ moves ‖θ_after − θ_before‖ by about 6e-8 / ratio; ratios here are above 1e-2. */
    private static final double TOL = 1e-5;

    @Test
    void step_driver_sgd_multilayer_network() {
        MultiLayerNetwork net = Nets.mlp(new Sgd(0.5));
        Run run = new Run();
        Dl4jGuard guard = Dl4jGuard.of(run.pipeline);
        run.train(net, d -> guard.step(net, d));
        run.check();
        assertEquals(0, guard.ops().nd4j().temporaryCount(), "temporaries left after the steps");
    }

    @Test
    void step_driver_adam_computation_graph() {
        ComputationGraph graph = Nets.graph(new Adam(0.02));
        Run run = new Run();
        Dl4jGuard guard = Dl4jGuard.of(run.pipeline);
        run.train(graph, d -> guard.step(graph, d));
        run.check();
        assertEquals(0, guard.ops().nd4j().temporaryCount(), "temporaries left after the steps");
    }

    @Test
    void listener_sgd_multilayer_network() {
        MultiLayerNetwork net = Nets.mlp(new Sgd(0.5));
        Run run = new Run();
        Dl4jGuard guard = Dl4jGuard.of(run.pipeline);
        net.addListeners(guard.listener());
        run.train(net, net::fit);
        run.check();
        assertEquals(0, guard.ops().nd4j().temporaryCount(), "temporaries left after the steps");
    }

    @Test
    void listener_adam_computation_graph() {
        ComputationGraph graph = Nets.graph(new Adam(0.02));
        Run run = new Run();
        Dl4jGuard guard = Dl4jGuard.of(run.pipeline);
        graph.addListeners(guard.listener());
        run.train(graph, graph::fit);
        run.check();
        assertEquals(0, guard.ops().nd4j().temporaryCount(), "temporaries left after the steps");
    }

    @Test
    void a_monitor_that_does_not_wait_for_updates_gets_none_and_records_at_once() {
        Monitor monitor = Monitor.builder().updateRatios(false).build();
        RunRecorder recorder = Sinks.memory();
        monitor.addListener(recorder);
        MultiLayerNetwork net = Nets.mlp(new Sgd(0.5));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.clipByGlobalNorm(1.0), monitor);
        guard.step(net, Nets.batch(10, 1));
        assertFalse(monitor.wantsUpdates());
        assertEquals(1, recorder.recording().records().size(), "delivered at once");
        for (LayerStats l : recorder.recording().records().get(0).layers()) {
            assertTrue(Double.isNaN(l.updateRatio()), "no update ratio for layer " + l.layer());
        }
    }

    /** A monitored pipeline, the parameters around every step, and the expected ratios. */
    private static final class Run {
        final Monitor monitor = Monitor.builder().every(EVERY).build();
        final RunRecorder recorder = Sinks.memory();
        final GradientPipeline pipeline = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), monitor);
        final List<Map<String, Double>> expected = new ArrayList<>();
        final List<Map<String, Double>> againstAfter = new ArrayList<>();

        Run() {
            monitor.addListener(recorder);
        }

        void train(Model model, Consumer<DataSet> step) {
            for (int s = 0; s < STEPS; s++) {
                Map<String, double[]> before = params(model);
                step.accept(Nets.batch(10, 100 + s));
                Map<String, double[]> after = params(model);
                assertEquals(s % EVERY == 0, monitor.wantsUpdates(), "the monitor waits for updates only on sampled steps");
                expected.add(ratios(before, after, before));
                againstAfter.add(ratios(before, after, after));
            }
            monitor.close();
        }

        void check() {
            List<StepRecord> records = recorder.recording().records();
            assertEquals(STEPS, records.size());
            double discrimination = 0;
            for (StepRecord r : records) {
                int s = (int) r.step();
                if (s % EVERY != 0) {
                    assertFalse(r.detailed(), "step " + s + " is not sampled");
                    assertTrue(r.layers().isEmpty(), "no layer (and no update) statistics on step " + s);
                    continue;
                }
                Map<String, Double> want = expected.get(s);
                assertEquals(List.copyOf(want.keySet()), layerNames(r), "layers of step " + s);
                for (LayerStats l : r.layers()) {
                    double e = want.get(l.layer());
                    assertTrue(e > 1e-2, "the test needs ratios well above float32 rounding, got " + e);
                    assertEquals(e, l.updateRatio(), TOL * e, "update ratio of layer " + l.layer() + " at step " + s);
                    discrimination = Math.max(discrimination, Math.abs(againstAfter.get(s).get(l.layer()) - e) / e);
                }
            }
            // the check above can tell ‖θ_before‖ from ‖θ_after‖ in the denominator
            assertTrue(discrimination > 10 * TOL, "ratios against θ before and after differ by only " + discrimination);
        }
    }

    private static List<String> layerNames(StepRecord r) {
        return r.layers().stream().map(LayerStats::layer).toList();
    }

    /** Host copies of every parameter, by DL4J key ("0_W", "dense1_b"). */
    private static Map<String, double[]> params(Model model) {
        Map<String, double[]> out = new LinkedHashMap<>();
        for (Map.Entry<String, INDArray> e : model.paramTable().entrySet()) {
            out.put(e.getKey(), e.getValue().castTo(DataType.DOUBLE).dup().data().asDouble());
        }
        return out;
    }

    /** Per layer: √Σ‖after − before‖² / √Σ‖denominator‖² over the layer's parameters. */
    private static Map<String, Double> ratios(Map<String, double[]> before, Map<String, double[]> after,
            Map<String, double[]> denominator) {
        Map<String, double[]> sums = new LinkedHashMap<>();
        for (String key : before.keySet()) {
            double[] b = before.get(key);
            double[] a = after.get(key);
            double[] d = denominator.get(key);
            double[] acc = sums.computeIfAbsent(key.substring(0, key.lastIndexOf('_')), k -> new double[2]);
            for (int i = 0; i < b.length; i++) {
                acc[0] += (a[i] - b[i]) * (a[i] - b[i]);
                acc[1] += d[i] * d[i];
            }
        }
        Map<String, Double> out = new LinkedHashMap<>();
        sums.forEach((layer, acc) -> out.put(layer, Math.sqrt(acc[0] / acc[1])));
        return out;
    }
}
