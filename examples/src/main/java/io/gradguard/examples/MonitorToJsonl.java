package io.gradguard.examples;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.Sinks;
import io.gradguard.tensorflow.TfGuard;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;

/**
 * Monitoring to JSONL and an HTML report: a {@link Monitor} as the pipeline's last stage writes one
 * JSON line per optimizer step (loss, global gradient norm before and after clipping, clipped,
 * skipped, NaN/Inf count, per-layer statistics, events such as an exploding layer) and, when it is
 * closed, a self-contained HTML page with the charts:
 *
 * <pre>{@code
 * Monitor monitor = Monitor.builder().name("my-run")
 *     .sink(Sinks.jsonl(dir.resolve("gradients.jsonl")))
 *     .sink(Sinks.html(dir.resolve("gradients.html")))
 *     .sink(Sinks.slf4j(100))                       // a summary line every 100 steps, events as warnings
 *     .build();
 * GradientPipeline pipeline = GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0), monitor);
 * ... train with any adapter ...
 * monitor.close();                                  // flushes the JSONL file, writes the HTML report
 * }</pre>
 *
 * <p>The monitor measures on the framework's tensors (here TensorFlow's, through {@link TfGuard});
 * a few scalars per step come to the host. One batch of the 100 steps is poisoned with a NaN, so
 * the log (the monitor's SLF4J sink: a summary every 25 steps, events as warnings) shows a skipped
 * step as a WARN line on stderr. Run it from the repository root (the files go to the folder given
 * as the argument, by default {@code gradguard-out}):
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.MonitorToJsonl
 * </pre>
 */
public final class MonitorToJsonl {
    private MonitorToJsonl() {
    }

    public static void main(String[] args) throws IOException {
        Path dir = Path.of(args.length > 0 ? args[0] : "gradguard-out");
        run(dir, 100);
        System.out.println("one JSON line per step: " + dir.resolve("gradients.jsonl").toAbsolutePath());
        System.out.println("charts:                 " + dir.resolve("gradients.html").toAbsolutePath());
    }

    /** Trains {@code steps} steps of a linear model under a monitored guard, writing the files into {@code dir}. */
    public static void run(Path dir, int steps) throws IOException {
        Files.createDirectories(dir);
        Monitor monitor = Monitor.builder().name("tf-linear")
                .sink(Sinks.jsonl(dir.resolve("gradients.jsonl")))
                .sink(Sinks.html(dir.resolve("gradients.html")))
                .sink(Sinks.slf4j(25))                      // a summary line every 25 steps, events as warnings
                .build();
        GradientPipeline pipeline = GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0), monitor);
        try (Graph graph = new Graph(); Session session = new Session(graph)) {
            Ops tf = Ops.create(graph);
            Placeholder<TFloat32> x = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 4)));
            Placeholder<TFloat32> y = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 1)));
            Ops linear = tf.withSubScope("linear");                 // variables "linear/W", "linear/b": one layer
            Variable<TFloat32> w = linear.withName("W").variable(tf.zeros(tf.constant(new long[] {4, 1}), TFloat32.class));
            Variable<TFloat32> b = linear.withName("b").variable(tf.zeros(tf.constant(new long[] {1}), TFloat32.class));
            Operand<TFloat32> loss = tf.math.mean(tf.math.square(tf.math.sub(tf.math.add(tf.linalg.matMul(x, w), b), y)),
                    tf.constant(new int[] {0, 1}));
            try (TfGuard guard = TfGuard.of(pipeline).attach(session, loss, List.of(w, b), new GradientDescent(graph, 0.1f))) {
                session.initialize();
                Random data = new Random(3);
                for (int step = 0; step < steps; step++) {
                    float[] xs = new float[16 * 4];
                    float[] ys = new float[16];
                    for (int i = 0; i < xs.length; i++) {
                        xs[i] = (float) data.nextGaussian();
                        ys[i / 4] += 3 * xs[i];
                    }
                    if (step == steps / 2) {
                        xs[0] = Float.NaN;                          // a corrupt record: this step is skipped
                    }
                    try (TFloat32 xt = TFloat32.tensorOf(Shape.of(16, 4), DataBuffers.of(xs, true, false));
                            TFloat32 yt = TFloat32.tensorOf(Shape.of(16, 1), DataBuffers.of(ys, true, false))) {
                        guard.step(Map.of(x, xt, y, yt), 16);
                    }
                }
            }
        } finally {
            monitor.close();
        }
    }
}
