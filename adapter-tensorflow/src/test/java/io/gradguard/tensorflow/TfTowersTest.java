package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;

/**
 * Two towers on two virtual CPU devices in one graph ({@link TfTowers#cpus}), the guard attached to
 * the mean of the towers' losses, against one device on the whole batch.
 */
class TfTowersTest {
    private static final Logger LOG = LoggerFactory.getLogger(TfTowersTest.class);
    private static final int IN = 5;
    private static final int HIDDEN = 12;
    private static final int OUT = 3;
    private static final int BATCH = 16;

    /**
     * A two-layer MLP (ReLU, mean squared error) whose batch is split over {@code towers} towers,
     * tower i on {@code /device:CPU:i} (one tower: no device request); variables on the default device.
     */
    private static final class TowerNet implements AutoCloseable {
        final Graph graph = new Graph();
        final Session session;
        final Ops tf = Ops.create(graph);
        final List<Variable<TFloat32>> variables = new ArrayList<>();
        final List<Placeholder<TFloat32>> xs = new ArrayList<>();
        final List<Placeholder<TFloat32>> ys = new ArrayList<>();
        final List<Operand<TFloat32>> towerLosses = new ArrayList<>();
        final Operand<TFloat32> loss;

        TowerNet(int towers, long seed) {
            session = new Session(graph, TfTowers.cpus(towers));
            Random r = new Random(seed);
            Variable<TFloat32> w1 = variable("w1", r, IN, HIDDEN);
            Variable<TFloat32> b1 = variable("b1", r, HIDDEN);
            Variable<TFloat32> w2 = variable("w2", r, HIDDEN, OUT);
            Variable<TFloat32> b2 = variable("b2", r, OUT);
            Operand<TFloat32> sum = null;
            for (int i = 0; i < towers; i++) {
                Ops t = towers == 1 ? tf : tf.withDevice(TfTowers.cpu(i)).withSubScope("tower_" + i);
                Placeholder<TFloat32> x = tf.withName("x_" + i).placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, IN)));
                Placeholder<TFloat32> y = tf.withName("y_" + i).placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, OUT)));
                Operand<TFloat32> h = t.nn.relu(t.math.add(t.linalg.matMul(x, w1), b1));
                Operand<TFloat32> p = t.math.add(t.linalg.matMul(h, w2), b2);
                Operand<TFloat32> l = t.withName("loss").math.mean(t.math.square(t.math.sub(p, y)), t.constant(new int[] {0, 1}));
                xs.add(x);
                ys.add(y);
                towerLosses.add(l);
                sum = sum == null ? l : tf.math.add(sum, l);
            }
            loss = tf.math.div(sum, tf.constant((float) towers));
        }

        private Variable<TFloat32> variable(String name, Random r, long... shape) {
            int n = (int) Shape.of(shape).size();
            float[] init = new float[n];
            for (int i = 0; i < n; i++) {
                init[i] = (float) (r.nextGaussian() * (shape.length == 1 ? 0.1 : Math.sqrt(2.0 / shape[0])));
            }
            Variable<TFloat32> v = tf.withName(name).variable(tf.constant(Shape.of(shape), DataBuffers.of(init, true, false)));
            variables.add(v);
            return v;
        }

        /** The batch's rows split in equal parts over the towers; the caller closes the tensors. */
        Map<Operand<?>, Tensor> feeds(float[][] x, float[][] y) {
            int towers = xs.size();
            int part = x.length / towers;
            Map<Operand<?>, Tensor> f = new LinkedHashMap<>();
            for (int i = 0; i < towers; i++) {
                f.put(xs.get(i), matrix(x, i * part, part, IN));
                f.put(ys.get(i), matrix(y, i * part, part, OUT));
            }
            return f;
        }

        float[] value(Operand<TFloat32> v) {
            try (Result result = session.runner().fetch(v).run()) {
                TFloat32 t = (TFloat32) result.get(0);
                float[] a = new float[(int) t.shape().size()];
                t.copyTo(DataBuffers.of(a, false, false));
                return a;
            }
        }

        @Override
        public void close() {
            session.close();
            graph.close();
        }
    }

    private static TFloat32 matrix(float[][] rows, int from, int count, int cols) {
        float[] flat = new float[count * cols];
        for (int i = 0; i < count; i++) {
            System.arraycopy(rows[from + i], 0, flat, i * cols, cols);
        }
        return TFloat32.tensorOf(Shape.of(count, cols), DataBuffers.of(flat, true, false));
    }

    private static float[][] data(Random r, int rows, int cols) {
        float[][] out = new float[rows][cols];
        for (float[] row : out) {
            for (int j = 0; j < cols; j++) {
                row[j] = (float) (r.nextGaussian() * 2);
            }
        }
        return out;
    }

    /**
     * Global-norm clip at 0.1 (active on every applied step) after skipNonFinite, SGD, 8 steps of 16
     * examples, a NaN in the second tower's half at step 4: the two-tower run skips that step and its
     * variables equal the one-device run on the whole batch within 1e-5 after every step. Seeds 1, 2, 3.
     */
    @Test
    void two_towers_guarded_on_the_mean_loss_train_as_one_device_on_the_whole_batch() {
        for (long seed = 1; seed <= 3; seed++) {
            try (TowerNet towers = new TowerNet(2, seed); TowerNet single = new TowerNet(1, seed);
                    TfGuard guarded = TfGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.1))
                            .attach(towers.session, towers.loss, towers.variables, new GradientDescent(towers.graph, 0.05f));
                    TfGuard reference = TfGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.1))
                            .attach(single.session, single.loss, single.variables, new GradientDescent(single.graph, 0.05f))) {
                Random r = new Random(100 + seed);
                for (int step = 0; step < 8; step++) {
                    float[][] x = data(r, BATCH, IN);
                    float[][] y = data(r, BATCH, OUT);
                    if (step == 4) {
                        x[11][3] = Float.NaN; // row 11: the second tower's half
                    }
                    Map<Operand<?>, Tensor> tf = towers.feeds(x, y);
                    Map<Operand<?>, Tensor> sf = single.feeds(x, y);
                    StepResult<TfTensor> a = guarded.step(tf, BATCH);
                    StepResult<TfTensor> b = reference.step(sf, BATCH);
                    tf.values().forEach(Tensor::close);
                    sf.values().forEach(Tensor::close);
                    assertEquals(b.skipped(), a.skipped(), "step " + step);
                    assertEquals(step == 4, a.skipped(), "step " + step);
                    if (step != 4) {
                        assertTrue(a.clipped(), "clip active at step " + step);
                    }
                    for (int v = 0; v < towers.variables.size(); v++) {
                        float[] p = towers.value(towers.variables.get(v));
                        float[] q = single.value(single.variables.get(v));
                        assertArrayEquals(q, p, 1e-5f, "seed " + seed + " step " + step + " variable " + v);
                    }
                }
                assertEquals(1, guarded.skippedCount());
                assertEquals(7, guarded.stepCount());
            }
        }
    }

    /**
     * The same with the optimizer wrapper ({@link TfOptimizer}) on the mean loss, driven by a plain
     * {@code session.runner()}: the two-tower run equals the one-device run within 1e-5 after every
     * step, and the NaN step is skipped by both. Seeds 1, 2, 3.
     */
    @Test
    void two_towers_through_the_optimizer_wrapper_train_as_one_device() {
        for (long seed = 1; seed <= 3; seed++) {
            try (TowerNet towers = new TowerNet(2, seed); TowerNet single = new TowerNet(1, seed)) {
                TfOptimizer guarded = TfOptimizer.of(towers.session, new GradientDescent(towers.graph, 0.05f),
                        Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.1));
                TfOptimizer reference = TfOptimizer.of(single.session, new GradientDescent(single.graph, 0.05f),
                        Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.1));
                org.tensorflow.op.Op trainTowers = guarded.minimize(towers.loss, towers.variables);
                org.tensorflow.op.Op trainSingle = reference.minimize(single.loss, single.variables);
                Random r = new Random(100 + seed);
                for (int step = 0; step < 8; step++) {
                    float[][] x = data(r, BATCH, IN);
                    float[][] y = data(r, BATCH, OUT);
                    if (step == 4) {
                        x[11][3] = Float.NaN; // row 11: the second tower's half
                    }
                    for (var pair : List.of(Map.entry(towers, trainTowers), Map.entry(single, trainSingle))) {
                        Map<Operand<?>, Tensor> f = pair.getKey().feeds(x, y);
                        Session.Runner runner = pair.getKey().session.runner().addTarget(pair.getValue());
                        f.forEach(runner::feed);
                        runner.run().close();
                        f.values().forEach(Tensor::close);
                    }
                    for (int v = 0; v < towers.variables.size(); v++) {
                        float[] p = towers.value(towers.variables.get(v));
                        float[] q = single.value(single.variables.get(v));
                        assertArrayEquals(q, p, 1e-5f, "seed " + seed + " step " + step + " variable " + v);
                    }
                }
                assertEquals(new TfOptimizer.Counters(8, 7, 1, 0), guarded.counters());
                assertEquals(new TfOptimizer.Counters(8, 7, 1, 0), reference.counters());
            }
        }
    }

    /**
     * Each tower's forward pass runs on its own device: a traced run of the two towers' losses
     * ({@link TfTowers#placement}, from the run's step statistics) shows every op of tower 0 that ran
     * (the fused MatMul + Add, ReLU, Sub, the loss) on {@code CPU:0} and every op of tower 1 on
     * {@code CPU:1}. Where TensorFlow's placer puts the gradient ops of the mean loss (they carry no
     * device request) is logged.
     */
    @Test
    void each_towers_operations_run_on_its_own_cpu_device() {
        try (TowerNet towers = new TowerNet(2, 5);
                TfGuard guard = TfGuard.of(Transforms.clipByGlobalNorm(1.0))
                        .attach(towers.session, towers.loss, towers.variables, new GradientDescent(towers.graph, 0.05f))) {
            Random r = new Random(9);
            Map<Operand<?>, Tensor> feeds = towers.feeds(data(r, BATCH, IN), data(r, BATCH, OUT));
            try {
                guard.step(feeds, BATCH); // runs the variables' initializers and one step
                Map<String, String> placed = TfTowers.placement(towers.session, feeds,
                        towers.towerLosses.get(0), towers.towerLosses.get(1));
                for (int i = 0; i < 2; i++) {
                    String prefix = "tower_" + i + "/";
                    List<String> ops = placed.keySet().stream().filter(n -> n.startsWith(prefix)).toList();
                    assertTrue(ops.size() >= 4, prefix + " ops traced: " + placed); // Grappler fuses MatMul + Add
                    for (String n : ops) {
                        assertTrue(placed.get(n).endsWith("/device:CPU:" + i), n + " ran on " + placed.get(n));
                    }
                }
                // the gradients of the mean loss, built as the guard builds its own (Graph.addGradients)
                Operand<?>[] grads = towers.tf.gradients(towers.loss, towers.variables).dy().toArray(new Operand<?>[0]);
                Map<String, Integer> byDevice = new TreeMap<>();
                TfTowers.placement(towers.session, feeds, grads)
                        .forEach((node, device) -> byDevice.merge(device.substring(device.lastIndexOf("device:")), 1, Integer::sum));
                LOG.info("ops of the traced gradient run by device: {}", byDevice);
                assertFalse(byDevice.isEmpty());
            } finally {
                feeds.values().forEach(Tensor::close);
            }
        }
    }

    @Test
    void bad_device_counts_and_indices_are_refused_with_the_parameter_named() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> TfTowers.cpus(0));
        assertTrue(e.getMessage().contains("count") && e.getMessage().contains("0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> TfTowers.cpu(-1));
        assertTrue(e.getMessage().contains("index") && e.getMessage().contains("-1"), e.getMessage());
        try (TowerNet net = new TowerNet(1, 1)) {
            e = assertThrows(IllegalArgumentException.class, () -> TfTowers.placement(net.session, Map.of()));
            assertTrue(e.getMessage().contains("fetches"), e.getMessage());
        }
    }
}
