package io.gradguard.examples;

import io.gradguard.core.Transforms;
import io.gradguard.tensorflow.TfGuard;
import io.gradguard.tensorflow.TfTowers;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
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
 * Data-parallel TensorFlow Java training with two towers in one graph, guarded by GradGuard.
 * TensorFlow Java has no distribution strategy; the classic pattern is one copy of the forward
 * pass per device ({@code tf.withDevice}), all reading the same variables, each fed its share of
 * the batch, and one optimizer step on the mean of the towers' losses (whose gradient is the mean
 * of the towers' gradients). {@link TfGuard} attached to that mean loss guards the averaged
 * gradient: one skip decision and one global norm for both towers.
 *
 * <p>Here the two devices are virtual CPU devices of one session ({@link TfTowers#cpus}), so it runs
 * anywhere; for GPUs use {@code DeviceSpec.DeviceType.GPU}. The program trains the same MLP as
 * {@link GuardTensorFlowLoop} with two towers and with one device on the whole batch, and prints
 * the largest difference between their variables, and where each tower's ops ran (read from a
 * traced run, {@link TfTowers#placement}). Run it from the repository root:
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.GuardTensorFlowTowers
 * </pre>
 */
public final class GuardTensorFlowTowers {
    private static final int BATCH = 64;
    private static final int STEPS = 200;

    private GuardTensorFlowTowers() {
    }

    public static void main(String[] args) {
        List<float[]> towers = train(2);
        List<float[]> single = train(1);
        double diff = 0;
        for (int v = 0; v < towers.size(); v++) {
            for (int i = 0; i < towers.get(v).length; i++) {
                diff = Math.max(diff, Math.abs(towers.get(v)[i] - single.get(v)[i]));
            }
        }
        System.out.printf("max |two towers - one device| over the variables after %d steps: %.3g%n", STEPS, diff);
    }

    /** Trains with {@code towers} towers (1: one device, no device request) and returns the variables' values. */
    static List<float[]> train(int towers) {
        try (Graph graph = new Graph(); Session session = new Session(graph, TfTowers.cpus(towers))) {
            Ops tf = Ops.create(graph);
            Random rnd = new Random(1);
            // the shared variables, on the default device
            Variable<TFloat32> w1 = variable(tf, "dense_W", rnd, 8, 32);
            Variable<TFloat32> b1 = variable(tf, "dense_b", rnd, 32);
            Variable<TFloat32> w2 = variable(tf, "out_W", rnd, 32, 1);
            Variable<TFloat32> b2 = variable(tf, "out_b", rnd, 1);
            // one tower per device: its own inputs, the forward pass and loss pinned to its device
            List<Placeholder<TFloat32>> xs = new ArrayList<>();
            List<Placeholder<TFloat32>> ys = new ArrayList<>();
            List<Operand<?>> losses = new ArrayList<>();
            Operand<TFloat32> sum = null;
            for (int t = 0; t < towers; t++) {
                Ops tower = towers == 1 ? tf : tf.withDevice(TfTowers.cpu(t)).withSubScope("tower_" + t);
                Placeholder<TFloat32> x = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 8)));
                Placeholder<TFloat32> y = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 1)));
                Operand<TFloat32> h = tower.nn.relu(tower.math.add(tower.linalg.matMul(x, w1), b1));
                Operand<TFloat32> p = tower.math.add(tower.linalg.matMul(h, w2), b2);
                Operand<TFloat32> loss = tower.math.mean(tower.math.square(tower.math.sub(p, y)), tower.constant(new int[] {0, 1}));
                xs.add(x);
                ys.add(y);
                losses.add(loss);
                sum = sum == null ? loss : tf.math.add(sum, loss);
            }
            Operand<TFloat32> meanLoss = tf.math.div(sum, tf.constant((float) towers)); // gradient: the towers' mean

            try (TfGuard guard = TfGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0))
                    .attach(session, meanLoss, List.of(w1, b1, w2, b2), new GradientDescent(graph, 0.5f))) {
                session.initialize();
                int part = BATCH / towers;
                for (int step = 0; step < STEPS; step++) {
                    float[] x = new float[BATCH * 8];
                    float[] y = new float[BATCH];
                    for (int i = 0; i < BATCH; i++) {
                        for (int j = 0; j < 8; j++) {
                            x[i * 8 + j] = (float) rnd.nextGaussian();
                            y[i] += 3 * x[i * 8 + j];
                        }
                    }
                    Map<Operand<?>, Tensor> feeds = new HashMap<>();
                    for (int t = 0; t < towers; t++) { // tower t gets rows [t·part, (t+1)·part)
                        feeds.put(xs.get(t), TFloat32.tensorOf(Shape.of(part, 8),
                                DataBuffers.of(java.util.Arrays.copyOfRange(x, t * part * 8, (t + 1) * part * 8), true, false)));
                        feeds.put(ys.get(t), TFloat32.tensorOf(Shape.of(part, 1),
                                DataBuffers.of(java.util.Arrays.copyOfRange(y, t * part, (t + 1) * part), true, false)));
                    }
                    try {
                        guard.step(feeds, BATCH);
                        if (towers > 1 && step == STEPS - 1) {
                            printPlacement(session, feeds, losses);
                        }
                    } finally {
                        feeds.values().forEach(Tensor::close);
                    }
                }
                System.out.printf("%s: loss after %d steps %.4f, %d skipped%n", towers > 1 ? towers + " towers" : "one device",
                        STEPS, guard.lastLoss(), guard.skippedCount());
                List<float[]> values = new ArrayList<>();
                for (Variable<TFloat32> v : List.of(w1, b1, w2, b2)) {
                    values.add(value(session, v));
                }
                return values;
            }
        }
    }

    /** Where each tower's operations ran in one traced run of the towers' forward passes. */
    private static void printPlacement(Session session, Map<Operand<?>, Tensor> feeds, List<Operand<?>> losses) {
        Map<String, String> placed = TfTowers.placement(session, feeds, losses.toArray(new Operand<?>[0]));
        for (int t = 0; t < losses.size(); t++) {
            String prefix = "tower_" + t + "/";
            Map<String, Long> devices = new java.util.TreeMap<>();
            placed.forEach((op, device) -> {
                if (op.startsWith(prefix)) {
                    devices.merge(device.substring(device.lastIndexOf("device:") + 7), 1L, Long::sum);
                }
            });
            System.out.printf("tower %d ops by device: %s%n", t, devices);
        }
    }

    private static float[] value(Session session, Variable<TFloat32> v) {
        try (Result r = session.runner().fetch(v).run()) {
            TFloat32 t = (TFloat32) r.get(0);
            float[] a = new float[(int) t.shape().size()];
            t.copyTo(DataBuffers.of(a, false, false));
            return a;
        }
    }

    /** He-initialised weights, zero biases. */
    private static Variable<TFloat32> variable(Ops tf, String name, Random rnd, long... shape) {
        float[] init = new float[(int) Shape.of(shape).size()];
        for (int i = 0; shape.length == 2 && i < init.length; i++) {
            init[i] = (float) (rnd.nextGaussian() * Math.sqrt(2.0 / shape[0]));
        }
        return tf.withName(name).variable(tf.constant(Shape.of(shape), DataBuffers.of(init, true, false)));
    }
}
