package io.gradguard.examples;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.tensorflow.TfGuard;
import io.gradguard.tensorflow.TfTensor;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
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
 * Guard an existing TensorFlow Java training loop. A typical graph-mode loop builds
 * {@code optimizer.minimize(loss)} and runs it each step; with GradGuard, {@link TfGuard} builds
 * the gradients of the loss with respect to the variables you name, runs the pipeline on them as
 * graph operations, and lets the optimizer apply them only when the step applies:
 *
 * <pre>{@code
 * // before                                          // after
 * Op train = sgd.minimize(loss);                     TfGuard guard = TfGuard.of(pipeline).attach(session, loss, variables, sgd);
 * session.runner().feed(x, xs).feed(y, ys)           guard.step(Map.of(x, xs, y, ys), batchSize);
 *        .addTarget(train).run();
 * }</pre>
 *
 * <p>Here a two-layer MLP is trained with a learning rate high enough to make plain SGD diverge;
 * the guard (skip NaN/Inf steps, clip the global gradient norm to 1) keeps it finite. Run it from
 * the repository root:
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.GuardTensorFlowLoop
 * </pre>
 */
public final class GuardTensorFlowLoop {
    private GuardTensorFlowLoop() {
    }

    public static void main(String[] args) {
        System.out.printf("plain SGD:   loss after 300 steps %.4f%n", train(300, false));
        System.out.printf("GradGuard:   loss after 300 steps %.4f%n", train(300, true));
    }

    /** Trains for {@code steps} steps, guarded or not, and returns the last loss. */
    public static double train(int steps, boolean guarded) {
        try (Graph graph = new Graph(); Session session = new Session(graph)) {
            // the user's model: y = relu(x·W1 + b1)·W2 + b2, mean squared error
            Ops tf = Ops.create(graph);
            Random rnd = new Random(1);
            Placeholder<TFloat32> x = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 8)));
            Placeholder<TFloat32> y = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 1)));
            // variables "dense/W", "dense/b": GradGuard groups them as layer "dense". With a slot optimizer
            // (Momentum, Adam) use flat names instead ("dense_W"): its slot names may not contain '/'
            Ops dense = tf.withSubScope("dense");
            Ops out = tf.withSubScope("out");
            Variable<TFloat32> w1 = variable(dense, "W", rnd, 8, 32);
            Variable<TFloat32> b1 = variable(dense, "b", rnd, 32);
            Variable<TFloat32> w2 = variable(out, "W", rnd, 32, 1);
            Variable<TFloat32> b2 = variable(out, "b", rnd, 1);
            Operand<TFloat32> h = tf.nn.relu(tf.math.add(tf.linalg.matMul(x, w1), b1));
            Operand<TFloat32> loss = tf.math.mean(tf.math.square(tf.math.sub(tf.math.add(tf.linalg.matMul(h, w2), b2), y)),
                    tf.constant(new int[] {0, 1}));
            GradientDescent sgd = new GradientDescent(graph, 0.5f);

            // GradGuard: the pipeline, and the guard in place of sgd.minimize(loss)
            GradientPipeline pipeline = guarded
                    ? GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0))
                    : GradientPipeline.of();                                 // no stage: plain SGD
            try (TfGuard guard = TfGuard.of(pipeline).attach(session, loss, List.of(w1, b1, w2, b2), sgd)) {
                session.initialize();
                for (int step = 0; step < steps; step++) {
                    float[] xs = new float[64 * 8];
                    float[] ys = new float[64];
                    for (int i = 0; i < 64; i++) {
                        for (int j = 0; j < 8; j++) {
                            xs[i * 8 + j] = (float) rnd.nextGaussian();
                            ys[i] += 3 * xs[i * 8 + j];                    // a large-scale linear target
                        }
                    }
                    try (TFloat32 xt = TFloat32.tensorOf(Shape.of(64, 8), DataBuffers.of(xs, true, false));
                            TFloat32 yt = TFloat32.tensorOf(Shape.of(64, 1), DataBuffers.of(ys, true, false))) {
                        Map<Operand<?>, Tensor> feeds = Map.of(x, xt, y, yt);
                        StepResult<TfTensor> r = guard.step(feeds, 64);
                        if (r.skipped()) {
                            System.out.printf("step %d skipped: %s%n", step, r.action().reason());
                        }
                    }
                }
                return guard.lastLoss();
            }
        }
    }

    /** He-initialised weights, zero biases. */
    private static Variable<TFloat32> variable(Ops layer, String name, Random rnd, long... shape) {
        float[] init = new float[(int) Shape.of(shape).size()];
        for (int i = 0; shape.length == 2 && i < init.length; i++) {
            init[i] = (float) (rnd.nextGaussian() * Math.sqrt(2.0 / shape[0]));
        }
        return layer.withName(name).variable(layer.constant(Shape.of(shape), DataBuffers.of(init, true, false)));
    }
}
