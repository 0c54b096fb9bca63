package io.gradguard.tensorflow.bench;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.tensorflow.Mlp;
import io.gradguard.tensorflow.TfGuard;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.framework.optimizers.Optimizer;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.family.TType;

/**
 * Speed of a GradGuard-protected TensorFlow step (a benchmark program, not a test).
 *
 * <p>An MLP of about 5M parameters, batch 64, SGD. Variants, each on its own graph with the same
 * initial weights: {@code plain} (GradientDescent.minimize), {@code handClip} (global-norm clip
 * written by hand as TF ops, float64 accumulation like GradGuard), {@code guardClip} (TfGuard with
 * clipByGlobalNorm: one session run per step), {@code guardClipMonitor} (the same plus reading the
 * norm on the host every step: gradient buffers, three runs per step). Rounds alternate the
 * variants; the per-step time reported is the median of the rounds.
 *
 * <pre>
 * mvn -B -o -q -pl adapter-tensorflow -am test-compile
 * java -cp adapter-tensorflow/target/test-classes:adapter-tensorflow/target/classes:core/target/classes:$(cat cp.txt) \
 *     io.gradguard.tensorflow.bench.TfGuardBenchmark [hidden] [steps] [rounds]
 * </pre>
 */
public final class TfGuardBenchmark {
    private TfGuardBenchmark() {
    }

    /** One way of training: runs one step on the given feeds. */
    interface Variant extends AutoCloseable {
        void step(Map<Operand<?>, Tensor> feeds);

        @Override
        void close();
    }

    public static void main(String[] args) {
        int hidden = args.length > 0 ? Integer.parseInt(args[0]) : 2400;
        int steps = args.length > 1 ? Integer.parseInt(args[1]) : 30;
        int rounds = args.length > 2 ? Integer.parseInt(args[2]) : 5;
        int in = 1024;
        int out = 1024;
        int batch = 64;
        String[] names = {"plain", "handClip", "guardClip", "guardClipMonitor"};
        List<Variant> variants = List.of(plain(in, hidden, out), handClip(in, hidden, out), guard(in, hidden, out, false),
                guard(in, hidden, out, true));
        long params = (long) in * hidden + hidden + (long) hidden * out + out;
        System.out.printf("MLP %d-%d-%d (%,d parameters), batch %d, %d steps x %d rounds%n", in, hidden, out, params, batch, steps, rounds);
        Random data = new Random(1);
        List<Map<Operand<?>, Tensor>> batches = new ArrayList<>();
        double[][] perStep = new double[names.length][rounds];
        try {
            for (int round = -1; round < rounds; round++) {
                for (int v = 0; v < variants.size(); v++) {
                    Mlp m = models.get(v);
                    Map<Operand<?>, Tensor> f = m.batch(batch, data);
                    batches.add(f);
                    long t0 = System.nanoTime();
                    for (int s = 0; s < (round < 0 ? 5 : steps); s++) {
                        variants.get(v).step(f);
                    }
                    if (round >= 0) {
                        perStep[v][round] = (System.nanoTime() - t0) / 1e6 / steps;
                    }
                }
            }
        } finally {
            batches.forEach(Mlp::close);
            variants.forEach(Variant::close);
            models.forEach(Mlp::close);
        }
        double[] median = new double[names.length];
        for (int v = 0; v < names.length; v++) {
            double[] s = perStep[v].clone();
            Arrays.sort(s);
            median[v] = s[s.length / 2];
            System.out.printf("%-17s %8.2f ms/step  (rounds: %s)%n", names[v], median[v], Arrays.toString(round2(perStep[v])));
        }
        System.out.printf("guardClip / plain          = %.3f%n", median[2] / median[0]);
        System.out.printf("guardClipMonitor / plain   = %.3f%n", median[3] / median[0]);
        System.out.printf("guardClip / handClip       = %.3f%n", median[2] / median[1]);
    }

    private static double[] round2(double[] a) {
        double[] r = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            r[i] = Math.round(a[i] * 100) / 100.0;
        }
        return r;
    }

    private static final List<Mlp> models = new ArrayList<>();

    private static Mlp model(int in, int hidden, int out) {
        Mlp m = new Mlp(in, hidden, out, 42);
        models.add(m);
        return m;
    }

    static Variant plain(int in, int hidden, int out) {
        Mlp m = model(in, hidden, out);
        Op train = new GradientDescent(m.graph, 0.01f).minimize(m.loss);
        return runner(m, train);
    }

    /** Global-norm clipping by hand: Σ g² in float64, coef = c / max(norm, c), g · coef. */
    @SuppressWarnings({"unchecked", "rawtypes"})
    static Variant handClip(int in, int hidden, int out) {
        Mlp m = model(in, hidden, out);
        Ops tf = m.tf;
        Output<?>[] vars = m.variables.stream().map(v -> v.asOutput()).toArray(Output<?>[]::new);
        Output<?>[] grads = m.graph.addGradients(m.loss.asOutput(), vars);
        Operand<TFloat64> sum = null;
        for (Output<?> g : grads) {
            int[] axes = java.util.stream.IntStream.range(0, g.shape().numDimensions()).toArray();
            Operand<TFloat64> part = tf.reduceSum(tf.math.square(tf.dtypes.cast(g, TFloat64.class)), tf.constant(axes));
            sum = sum == null ? part : tf.math.add(sum, part);
        }
        Operand<TFloat64> c = tf.constant(1.0);
        Operand<TFloat32> coef = tf.dtypes.cast(tf.math.div(c, tf.math.maximum(tf.math.sqrt(sum), c)), TFloat32.class);
        List<Optimizer.GradAndVar<? extends TType>> gv = new ArrayList<>();
        for (int i = 0; i < grads.length; i++) {
            gv.add(new Optimizer.GradAndVar(tf.math.mul((Operand<TFloat32>) grads[i], coef).asOutput(), vars[i]));
        }
        Op train = new GradientDescent(m.graph, 0.01f).applyGradients(gv, "handClip");
        return runner(m, train);
    }

    private static Variant runner(Mlp m, Op train) {
        return new Variant() {
            @Override
            public void step(Map<Operand<?>, Tensor> feeds) {
                var r = m.session.runner();
                feeds.forEach(r::feed);
                try (Result ignored = r.addTarget(train).fetch(m.loss).run()) {
                    // loss fetched like the guard does
                }
            }

            @Override
            public void close() {
            }
        };
    }

    static Variant guard(int in, int hidden, int out, boolean monitor) {
        Mlp m = model(in, hidden, out);
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0));
        double[] lastNorm = new double[1];
        if (monitor) {
            p.addListener((g, r) -> lastNorm[0] = r.metric("clipByGlobalNorm.norm").orElse(Double.NaN));
        }
        TfGuard guard = TfGuard.create(m.session, m.loss, m.variables, new GradientDescent(m.graph, 0.01f), p);
        return new Variant() {
            @Override
            public void step(Map<Operand<?>, Tensor> feeds) {
                guard.step(feeds, 64);
            }

            @Override
            public void close() {
                guard.close();
            }
        };
    }
}
