package io.gradguard.tensorflow;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.Sinks;
import java.io.OutputStream;
import java.util.*;
import org.junit.jupiter.api.Test;
import org.tensorflow.*;
import org.tensorflow.framework.optimizers.Adam;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Variable;
import org.tensorflow.proto.RunOptions;
import org.tensorflow.types.TFloat32;

class ScratchTraceTest {
    @Test
    void trace() {
        try (Graph graph = new Graph(); Session session = new Session(graph)) {
            Ops tf = Ops.create(graph);
            Operand<TFloat32> loss = mlp(tf, new int[] {20, 64, 64, 2});
            TfOptimizer guard = TfOptimizer.of(session, new Adam(graph, 1e-6f), GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1e-3),
                    Monitor.builder().name("cost").every(10).sink(Sinks.jsonl(OutputStream.nullOutputStream())).build()));
            Op train = guard.minimize(loss);
            session.initialize();
            for (int i = 0; i < 13; i++) session.runner().addTarget(train).fetch(loss).run().close();
            try (Result r = session.runner().addTarget(train).fetch(loss)
                    .setOptions(RunOptions.newBuilder().setTraceLevel(RunOptions.TraceLevel.FULL_TRACE).build()).runAndFetchMetadata()) {
                var md = r.getMetadata().orElseThrow();
                List<String> names = new ArrayList<>();
                for (var dev : md.getStepStats().getDevStatsList()) for (var ns : dev.getNodeStatsList()) if (ns.getNodeName().startsWith("gradguard")) names.add(ns.getTimelineLabel());
                Collections.sort(names);
                System.out.println("[names] " + names.size() + "\n" + String.join("\n", names));
            }
            guard.close();
        }
    }

    private static Operand<TFloat32> mlp(Ops tf, int[] widths) {
        SplittableRandom rnd = new SplittableRandom(42);
        float[][] xs = new float[64][widths[0]];
        float[][] ys = new float[64][widths[widths.length - 1]];
        for (int i = 0; i < 64; i++) {
            for (int j = 0; j < widths[0]; j++) xs[i][j] = (float) rnd.nextDouble();
            ys[i][i % ys[i].length] = 1f;
        }
        Operand<TFloat32> h = tf.constant(xs);
        for (int l = 1; l < widths.length; l++) {
            float[][] w = new float[widths[l - 1]][widths[l]];
            for (float[] row : w) for (int j = 0; j < row.length; j++) row[j] = (float) ((rnd.nextDouble() * 2 - 1) * 0.3);
            Variable<TFloat32> wv = tf.variable(tf.constant(w));
            Variable<TFloat32> bv = tf.variable(tf.constant(new float[widths[l]]));
            Operand<TFloat32> z = tf.math.add(tf.linalg.matMul(h, wv), bv);
            h = l < widths.length - 1 ? tf.nn.relu(z) : z;
        }
        return tf.math.mean(tf.nn.softmaxCrossEntropyWithLogits(h, tf.constant(ys)).loss(), tf.constant(0));
    }
}
