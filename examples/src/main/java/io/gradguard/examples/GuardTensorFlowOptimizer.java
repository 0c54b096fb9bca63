package io.gradguard.examples;

import io.gradguard.core.Transforms;
import io.gradguard.tensorflow.TfOptimizer;
import java.util.Random;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.Momentum;
import org.tensorflow.framework.optimizers.Optimizer;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TFloat64;

/**
 * Guard a TensorFlow Java loop by wrapping its optimizer: the loop stays as it is, one
 * {@code session.runner()} run per step, and GradGuard runs inside that run ({@link TfOptimizer}):
 *
 * <pre>{@code
 * // before                                   // after
 * Op train = momentum.minimize(loss);         Op train = TfOptimizer.of(session, momentum, pipeline).minimize(loss);
 * }</pre>
 *
 * <p>A two-layer MLP with a learning rate high enough to make plain Momentum diverge; the guard
 * (skip NaN/Inf steps, accumulate 2 micro-batches per update, clip the global norm to 1) keeps it
 * finite. The loop fetches the step's action and the clip's norm with its own run, and logs them
 * about every 100 steps. Run it from the
 * repository root:
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.GuardTensorFlowOptimizer
 * </pre>
 */
public final class GuardTensorFlowOptimizer {
    private GuardTensorFlowOptimizer() {
    }

    public static void main(String[] args) {
        System.out.printf("plain Momentum: loss after 400 steps %.4f%n", train(400, false));
        System.out.printf("GradGuard:      loss after 400 steps %.4f%n", train(400, true));
    }

    /** Trains for {@code steps} loop iterations, guarded or not, and returns the last loss. */
    public static double train(int steps, boolean guarded) {
        try (Graph graph = new Graph(); Session session = new Session(graph)) {
            Ops tf = Ops.create(graph);
            Random rnd = new Random(1);
            Placeholder<TFloat32> x = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 8)));
            Placeholder<TFloat32> y = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 1)));
            // flat names ("dense_W"): Momentum names its slots after the variables and rejects a '/'
            Variable<TFloat32> w1 = variable(tf, "dense_W", rnd, 8, 32);
            Variable<TFloat32> b1 = variable(tf, "dense_b", rnd, 32);
            Variable<TFloat32> w2 = variable(tf, "out_W", rnd, 32, 1);
            Variable<TFloat32> b2 = variable(tf, "out_b", rnd, 1);
            Operand<TFloat32> h = tf.nn.relu(tf.math.add(tf.linalg.matMul(x, w1), b1));
            Operand<TFloat32> loss = tf.math.mean(tf.math.square(tf.math.sub(tf.math.add(tf.linalg.matMul(h, w2), b2), y)),
                    tf.constant(new int[] {0, 1}));
            Optimizer momentum = new Momentum(graph, 0.2f, 0.9f);

            // GradGuard: the only change is the line that builds the training op
            TfOptimizer guard = guarded ? TfOptimizer.of(session, momentum,
                    Transforms.skipNonFinite(3), Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0)) : null;
            Op train = guarded ? guard.minimize(loss) : momentum.minimize(loss);
            Operand<TFloat64> norm = guarded ? guard.metric("clipByGlobalNorm.norm") : null;
            Operand<TFloat64> action = guarded ? guard.metric("action") : null;     // 0 applied, 1 held, 2 skipped
            session.initialize();

            double last = Double.NaN;
            boolean logDue = false;
            for (int step = 0; step < steps; step++) {
                float[] xs = new float[32 * 8];
                float[] ys = new float[32];
                for (int i = 0; i < 32; i++) {
                    for (int j = 0; j < 8; j++) {
                        xs[i * 8 + j] = (float) rnd.nextGaussian();
                        ys[i] += 3 * xs[i * 8 + j];                          // a large-scale linear target
                    }
                }
                if (step == 150) {
                    xs[5] = Float.NaN;                                       // one corrupt batch
                }
                try (TFloat32 xt = TFloat32.tensorOf(Shape.of(32, 8), DataBuffers.of(xs, true, false));
                        TFloat32 yt = TFloat32.tensorOf(Shape.of(32, 1), DataBuffers.of(ys, true, false))) {
                    Session.Runner runner = session.runner().feed(x, xt).feed(y, yt).addTarget(train).fetch(loss);
                    if (guarded) {
                        runner.fetch(action).fetch(norm);                    // fetched with the step: no extra run
                    }
                    logDue |= step % 100 == 99;
                    try (Result r = runner.run()) {
                        last = ((TFloat32) r.get(0)).getFloat();
                        // the clip runs on the call that closes a window: log the first such call once one is due
                        if (guarded && logDue && ((TFloat64) r.get(1)).getDouble() == 0) {
                            logDue = false;
                            System.out.printf("step %d: loss %.4f, global norm before the clip %.3f%n", step, last,
                                    ((TFloat64) r.get(2)).getDouble());
                        }
                    }
                }
            }
            if (guarded) {
                TfOptimizer.Counters c = guard.counters();
                System.out.printf("%d calls: %d optimizer steps, %d skipped, %d held%n", c.calls(), c.steps(), c.skipped(), c.held());
                guard.close();
            }
            return last;
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
