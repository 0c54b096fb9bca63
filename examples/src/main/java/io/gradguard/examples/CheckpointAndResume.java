package io.gradguard.examples;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.tensorflow.TfGuard;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;

/**
 * Checkpoint and resume: a pipeline with state (here the accumulator of {@code accumulate(4)},
 * stopped in the middle of an accumulation window) is saved with the model in ONE TensorFlow
 * checkpoint, and a fresh process restores both and continues exactly where the first one stopped:
 *
 * <pre>{@code
 * guard.save(dir + "/ckpt");          // every variable of the graph + GradGuard's state, one TF checkpoint
 * // ... later, in a new process, with the same graph and an equal pipeline, before the first step:
 * guard.restore(dir + "/ckpt");
 * }</pre>
 *
 * <p>({@code session.restore(dir + "/ckpt")} reads the model alone from the same files; other
 * frameworks use {@link GradientPipeline#saveState} / {@code restoreState} next to their own
 * checkpoint.)
 *
 * <p>The program (argument: the checkpoint folder, by default a new temporary one) trains 20 micro-batches straight through, then 10, checkpoint, and 10 more in a
 * new graph and session, and prints the largest difference between the final weights: 0 when the
 * guard's state is restored too (the resumed run is the same run), not 0 when only the model is. Run it from the repository root:
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.CheckpointAndResume
 * </pre>
 */
public final class CheckpointAndResume {
    private CheckpointAndResume() {
    }

    public static void main(String[] args) throws IOException {
        Path dir = args.length > 0 ? Files.createDirectories(Path.of(args[0])) : Files.createTempDirectory("gradguard-checkpoint");
        float[] straight = train(0, 20, null, null, true);
        train(0, 10, null, dir, true);                             // stops in the middle of the 3rd window
        float[] resumed = train(10, 20, dir, null, true);
        float[] modelOnly = train(10, 20, dir, null, false);       // the guard's accumulator is lost
        System.out.printf("weights after 20 micro-batches: %s (checkpoint in %s)%n", Arrays.toString(straight), dir);
        System.out.printf("largest difference, resumed model + guard: %.3g%n", maxDiff(straight, resumed));
        System.out.printf("largest difference, resumed model only:    %.3g%n", maxDiff(straight, modelOnly));
    }

    static double maxDiff(float[] a, float[] b) {
        double d = 0;
        for (int i = 0; i < a.length; i++) {
            d = Math.max(d, Math.abs(a[i] - b[i]));
        }
        return d;
    }

    /** The guard: four micro-batches per SGD step, then a global-norm clip. */
    static GradientPipeline pipeline() {
        return GradientPipeline.of(Transforms.accumulate(4), Transforms.clipByGlobalNorm(1.0));
    }

    /**
     * Trains micro-batches {@code from} to {@code to} (exclusive) of a linear model, restoring from
     * {@code restore} (the guard's state too if {@code restoreGuard}) and saving to {@code save}
     * when they are not null; returns the final weights.
     */
    static float[] train(int from, int to, Path restore, Path save, boolean restoreGuard) throws IOException {
        try (Graph graph = new Graph(); Session session = new Session(graph)) {
            Ops tf = Ops.create(graph);
            Placeholder<TFloat32> x = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 4)));
            Placeholder<TFloat32> y = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 1)));
            Ops linear = tf.withSubScope("linear");                 // variables "linear/W", "linear/b": one layer
            Variable<TFloat32> w = linear.withName("W").variable(tf.zeros(tf.constant(new long[] {4, 1}), TFloat32.class));
            Variable<TFloat32> b = linear.withName("b").variable(tf.zeros(tf.constant(new long[] {1}), TFloat32.class));
            Operand<TFloat32> loss = tf.math.mean(tf.math.square(tf.math.sub(tf.math.add(tf.linalg.matMul(x, w), b), y)),
                    tf.constant(new int[] {0, 1}));
            GradientPipeline pipeline = pipeline();
            try (TfGuard guard = TfGuard.of(pipeline).attach(session, loss, List.of(w, b), new GradientDescent(graph, 0.1f))) {
                if (restore == null) {
                    session.initialize();
                } else if (restoreGuard) {
                    guard.restore(restore.resolve("ckpt").toString());        // model and guard
                } else {
                    session.restore(restore.resolve("ckpt").toString());      // the model alone
                }
                for (int step = from; step < to; step++) {
                    Random data = new Random(step);                 // micro-batch "step" of the data set
                    float[] xs = new float[16 * 4];
                    float[] ys = new float[16];
                    for (int i = 0; i < xs.length; i++) {
                        xs[i] = (float) data.nextGaussian();
                        ys[i / 4] += (i % 4 + 1) * xs[i];
                    }
                    try (TFloat32 xt = TFloat32.tensorOf(Shape.of(16, 4), DataBuffers.of(xs, true, false));
                            TFloat32 yt = TFloat32.tensorOf(Shape.of(16, 1), DataBuffers.of(ys, true, false))) {
                        guard.step(Map.of(x, xt, y, yt), 16);
                    }
                }
                if (save != null) {
                    guard.save(save.resolve("ckpt").toString());
                }
                try (Result r = session.runner().fetch(w).run()) {
                    float[] weights = new float[4];
                    ((TFloat32) r.get(0)).copyTo(DataBuffers.of(weights, false, false));
                    return weights;
                }
            }
        }
    }
}
