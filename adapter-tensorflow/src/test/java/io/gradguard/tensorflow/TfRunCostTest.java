package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.Sinks;
import java.io.OutputStream;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.Adam;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Variable;
import org.tensorflow.proto.RunOptions;
import org.tensorflow.types.TFloat32;

/**
 * The fixed cost of a guarded TensorFlow step, counted in graph nodes: on a small model a session
 * run costs about the number of nodes it schedules (dead branches included), not their arithmetic,
 * so this structural count is what the small-model benchmark rows follow, without their noise. It
 * builds the benchmark's 20-64-64-2 MLP (5.6k parameters) with Adam, plain and through
 * {@link TfOptimizer} with the pipelines those rows time, counts the nodes one training run reaches
 * beyond the forward pass, and holds each to a budget: a change that adds nodes to every step has
 * to raise the budget on purpose.
 */
class TfRunCostTest {

    @Test
    void a_guarded_step_adds_no_more_nodes_per_run_than_its_budget() {
        Map<String, Supplier<GradientPipeline>> pipelines = new LinkedHashMap<>();
        pipelines.put("clipByGlobalNorm", () -> GradientPipeline.of(Transforms.clipByGlobalNorm(1e-3)));
        pipelines.put("README: skipNonFinite + clipByGlobalNorm",
                () -> GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1e-3)));
        pipelines.put("README + Monitor", () -> GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1e-3),
                monitor(true)));
        pipelines.put("README + Monitor without update ratios", () -> GradientPipeline.of(Transforms.skipNonFinite(3),
                Transforms.clipByGlobalNorm(1e-3), monitor(false)));
        // nodes per run beyond the plain Adam step's, as measured when the budget was set, plus a little room
        Map<String, Integer> budget = Map.of("clipByGlobalNorm", 35, "README: skipNonFinite + clipByGlobalNorm", 60,
                "README + Monitor", 145, "README + Monitor without update ratios", 112);
        try (Graph graph = new Graph(); Session session = new Session(graph)) {
            Ops tf = Ops.create(graph);
            Operand<TFloat32> loss = mlp(tf, new int[] {20, 64, 64, 2});
            Map<String, Op> trains = new LinkedHashMap<>();
            trains.put("plain", new Adam(graph, 1e-6f).minimize(loss));
            List<TfOptimizer> guards = new ArrayList<>();
            for (var e : pipelines.entrySet()) {
                TfOptimizer guard = TfOptimizer.of(session, new Adam(graph, 1e-6f), e.getValue().get());
                guards.add(guard);
                trains.put(e.getKey(), guard.minimize(loss));
            }
            Map<String, List<String>> inputs = new HashMap<>();
            Map<String, String> types = new HashMap<>();
            for (var node : graph.toGraphDef().getNodeList()) {
                List<String> in = new ArrayList<>();
                for (String i : node.getInputList()) {
                    String name = i.startsWith("^") ? i.substring(1) : i;
                    int colon = name.indexOf(':');
                    in.add(colon < 0 ? name : name.substring(0, colon));
                }
                inputs.put(node.getName(), in);
                types.put(node.getName(), node.getOp());
            }
            Set<String> forward = reached(inputs, List.of(loss.op().name()));
            Map<String, Integer> nodes = new LinkedHashMap<>();
            for (var e : trains.entrySet()) {
                Set<String> run = reached(inputs, List.of(e.getValue().op().name(), loss.op().name()));
                run.removeAll(forward);
                nodes.put(e.getKey(), run.size());
                Map<String, Integer> byType = new TreeMap<>();
                run.forEach(n -> byType.merge(types.get(n), 1, Integer::sum));
                System.out.println("[run cost] " + e.getKey() + ": " + run.size() + " nodes per run " + byType);
            }
            int plain = nodes.get("plain");
            for (var e : budget.entrySet()) {
                int added = nodes.get(e.getKey()) - plain;
                assertTrue(added <= e.getValue(), e.getKey() + " adds " + added + " nodes per run, over its budget of " + e.getValue());
                assertTrue(added > 0, e.getKey() + " adds " + added + " nodes: the count did not see the guard");
            }
            for (TfOptimizer g : guards) {
                g.close();
            }
        }
    }

    /**
     * What the structural count cannot see: the kernels a run executes (a dead node runs none). On
     * a call between the monitor's detailed steps its per-tensor max|x| and update-ratio work is
     * dead, each branch behind one pivot: the run executes a fixed handful of nodes for it, not a
     * node per tensor. Counted from the run's own step statistics (TensorFlow's full trace).
     */
    @Test
    void a_monitored_call_between_detailed_steps_executes_no_more_kernels_than_its_budget() {
        Map<String, Supplier<GradientPipeline>> pipelines = new LinkedHashMap<>();
        pipelines.put("plain", null);
        pipelines.put("README", () -> GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1e-3)));
        pipelines.put("README + Monitor", () -> GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1e-3),
                monitor(true)));
        // kernels beyond the plain Adam run's, as measured when the budget was set, plus a little room
        Map<String, Integer> budget = Map.of("README", 46, "README + Monitor", 66);
        Map<String, Integer> kernels = new LinkedHashMap<>();
        for (var e : pipelines.entrySet()) {
            try (Graph graph = new Graph(); Session session = new Session(graph)) {
                Ops tf = Ops.create(graph);
                Operand<TFloat32> loss = mlp(tf, new int[] {20, 64, 64, 2});
                TfOptimizer guard = e.getValue() == null ? null : TfOptimizer.of(session, new Adam(graph, 1e-6f), e.getValue().get());
                Op train = guard == null ? new Adam(graph, 1e-6f).minimize(loss) : guard.minimize(loss);
                session.initialize();
                for (int i = 0; i < 3; i++) { // the traced call is the 4th: not a detailed step (every 10, from 0)
                    session.runner().addTarget(train).fetch(loss).run().close();
                }
                try (Result r = session.runner().addTarget(train).fetch(loss)
                        .setOptions(RunOptions.newBuilder().setTraceLevel(RunOptions.TraceLevel.FULL_TRACE).build()).runAndFetchMetadata()) {
                    int n = 0;
                    for (var device : r.getMetadata().orElseThrow().getStepStats().getDevStatsList()) {
                        n += device.getNodeStatsCount();
                    }
                    kernels.put(e.getKey(), n);
                    System.out.println("[run cost] " + e.getKey() + ": " + n + " kernels executed");
                }
                if (guard != null) {
                    guard.close();
                }
            }
        }
        int plain = kernels.get("plain");
        assertTrue(plain > 0, "the trace saw no kernels");
        for (var e : budget.entrySet()) {
            int added = kernels.get(e.getKey()) - plain;
            assertTrue(added <= e.getValue(), e.getKey() + " executes " + added + " kernels more per call, over its budget of " + e.getValue());
            assertTrue(added > 0, e.getKey() + " executes " + added + " kernels more: the trace did not see the guard");
        }
    }

    private static Monitor monitor(boolean updateRatios) {
        return Monitor.builder().name("cost").every(Monitor.SHORT_FORM_EVERY).updateRatios(updateRatios)
                .sink(Sinks.jsonl(OutputStream.nullOutputStream())).build();
    }

    /** Every node {@code roots} depend on, through data and control edges. */
    private static Set<String> reached(Map<String, List<String>> inputs, List<String> roots) {
        Set<String> seen = new HashSet<>();
        Deque<String> todo = new ArrayDeque<>(roots);
        while (!todo.isEmpty()) {
            String n = todo.pop();
            if (seen.add(n)) {
                todo.addAll(inputs.getOrDefault(n, List.of()));
            }
        }
        return seen;
    }

    /** The benchmark's small MLP (ReLU, softmax cross-entropy, one fixed batch of 64); returns the loss. */
    private static Operand<TFloat32> mlp(Ops tf, int[] widths) {
        SplittableRandom rnd = new SplittableRandom(42);
        float[][] xs = new float[64][widths[0]];
        float[][] ys = new float[64][widths[widths.length - 1]];
        for (int i = 0; i < 64; i++) {
            for (int j = 0; j < widths[0]; j++) {
                xs[i][j] = (float) rnd.nextDouble();
            }
            ys[i][i % ys[i].length] = 1f;
        }
        Operand<TFloat32> h = tf.constant(xs);
        for (int l = 1; l < widths.length; l++) {
            float[][] w = new float[widths[l - 1]][widths[l]];
            for (float[] row : w) {
                for (int j = 0; j < row.length; j++) {
                    row[j] = (float) ((rnd.nextDouble() * 2 - 1) * 0.3);
                }
            }
            Variable<TFloat32> wv = tf.variable(tf.constant(w));
            Variable<TFloat32> bv = tf.variable(tf.constant(new float[widths[l]]));
            Operand<TFloat32> z = tf.math.add(tf.linalg.matMul(h, wv), bv);
            h = l < widths.length - 1 ? tf.nn.relu(z) : z;
        }
        return tf.math.mean(tf.nn.softmaxCrossEntropyWithLogits(h, tf.constant(ys)).loss(), tf.constant(0));
    }
}
