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
 * <p>An MLP 1024-{@code hidden}-1024 (about 5M parameters with the default hidden width 2400),
 * batch 64, SGD, CPU. Variants, each on its own graph with the same initial weights:
 * <ul>
 *   <li>{@code plain}: {@code GradientDescent.minimize}, no clipping;</li>
 *   <li>{@code handClip}: global-norm clip written by hand as TF ops with GradGuard's default
 *       precision, which is also {@code tf.clip_by_global_norm}'s: per-tensor {@code L2Loss} in
 *       float32, the sum across tensors, the norm and the coefficient in float64;</li>
 *   <li>{@code guardClip}: {@link TfGuard} with {@code clipByGlobalNorm} (one session run per step);</li>
 *   <li>{@code guardClipNorm}: the same, reading the norm on the host after every step
 *       ({@code r.metric("clipByGlobalNorm.norm")}: it comes back with the step's one run);</li>
 *   <li>{@code guardClipListener}: the same, reading the norm in a {@code StepListener} every
 *       step (gradient buffers: three runs per step);</li>
 *   <li>{@code handClip64} and {@code guardClip64}: the same two with float64 reductions
 *       ({@link TfGuard#accumulateInDouble()}; by hand: cast to float64, then {@code L2Loss}).</li>
 * </ul>
 * Each round runs every variant for {@code steps} steps, in turn, after one warm-up round; short
 * rounds interleave the variants finely, so they share the machine's load. Printed per variant:
 * the median and the minimum wall time per step over the rounds, and the process CPU time per step
 * averaged over all rounds (the work done, which a shared machine's load disturbs least; the OS
 * counts it in 10 ms ticks, so only the total is precise); then ratios of each, all from the same run.
 *
 * <p>Run it (from the repository root; arguments optional: hidden width, steps per round, rounds):
 * <pre>
 * TF_CPP_MIN_LOG_LEVEL=2 mvn -B -o -q -pl adapter-tensorflow -am test-compile exec:java \
 *     -Dexec.mainClass=io.gradguard.tensorflow.bench.TfGuardBenchmark -Dexec.args="2400 20 31"
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

    private record Named(String name, Mlp model, Variant variant) {
    }

    public static void main(String[] args) {
        int hidden = args.length > 0 ? Integer.parseInt(args[0]) : 2400;
        int steps = args.length > 1 ? Integer.parseInt(args[1]) : 20;
        int rounds = args.length > 2 ? Integer.parseInt(args[2]) : 31;
        int in = 1024;
        int out = 1024;
        int batch = 64;
        List<Named> variants = new ArrayList<>();
        Random data = new Random(1);
        List<Map<Operand<?>, Tensor>> batches = new ArrayList<>();
        try {
            variants.add(plain(in, hidden, out));
            variants.add(handClip(in, hidden, out, false));
            variants.add(guard(in, hidden, out, Read.NONE, false));
            variants.add(guard(in, hidden, out, Read.AFTER_STEP, false));
            variants.add(guard(in, hidden, out, Read.LISTENER, false));
            variants.add(handClip(in, hidden, out, true));
            variants.add(guard(in, hidden, out, Read.NONE, true));
            long params = (long) in * hidden + hidden + (long) hidden * out + out;
            System.out.printf("MLP %d-%d-%d (%,d parameters), batch %d, %d steps x %d rounds, %d cores%n", in, hidden, out, params,
                    batch, steps, rounds, Runtime.getRuntime().availableProcessors());
            double[][] perStep = new double[variants.size()][rounds];
            double[][] cpuPerStep = new double[variants.size()][rounds];
            var os = (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean();
            for (int round = -1; round < rounds; round++) {
                for (int v = 0; v < variants.size(); v++) {
                    Map<Operand<?>, Tensor> f = variants.get(v).model().batch(batch, data);
                    batches.add(f);
                    long c0 = os.getProcessCpuTime();
                    long t0 = System.nanoTime();
                    for (int s = 0; s < (round < 0 ? 5 : steps); s++) {
                        variants.get(v).variant().step(f);
                    }
                    if (round >= 0) {
                        perStep[v][round] = (System.nanoTime() - t0) / 1e6 / steps;
                        cpuPerStep[v][round] = (os.getProcessCpuTime() - c0) / 1e6 / steps;
                    }
                }
            }
            Map<String, Double> median = new java.util.LinkedHashMap<>();
            Map<String, Double> min = new java.util.LinkedHashMap<>();
            Map<String, Double> cpu = new java.util.LinkedHashMap<>();
            System.out.println("variant            wall median    min     cpu mean  (ms/step)");
            for (int v = 0; v < variants.size(); v++) {
                String name = variants.get(v).name();
                median.put(name, median(perStep[v]));
                min.put(name, Arrays.stream(perStep[v]).min().orElseThrow());
                cpu.put(name, Arrays.stream(cpuPerStep[v]).average().orElseThrow());
                System.out.printf("%-18s %11.2f %6.2f %12.2f%n", name, median.get(name), min.get(name), cpu.get(name));
            }
            System.out.println("ratio                         wall median   wall min     cpu mean");
            ratio(median, min, cpu, "guardClip", "plain");
            ratio(median, min, cpu, "guardClipNorm", "plain");
            ratio(median, min, cpu, "guardClipListener", "plain");
            ratio(median, min, cpu, "handClip", "plain");
            ratio(median, min, cpu, "guardClip", "handClip");
            ratio(median, min, cpu, "guardClip64", "plain");
            ratio(median, min, cpu, "guardClip64", "handClip64");
        } finally {
            batches.forEach(Mlp::close);
            for (Named n : variants) {
                n.variant().close();
                n.model().close();
            }
        }
    }

    private static void ratio(Map<String, Double> median, Map<String, Double> min, Map<String, Double> cpu, String a, String b) {
        System.out.printf("%-30s %11.3f %10.3f %12.3f%n", a + " / " + b, median.get(a) / median.get(b), min.get(a) / min.get(b),
                cpu.get(a) / cpu.get(b));
    }

    private static double median(double[] values) {
        double[] s = values.clone();
        Arrays.sort(s);
        return s[s.length / 2];
    }

    /** How the guarded variant reads the clip norm on the host. */
    enum Read { NONE, AFTER_STEP, LISTENER }

    static Named plain(int in, int hidden, int out) {
        Mlp m = new Mlp(in, hidden, out, 42);
        Op train = new GradientDescent(m.graph, 0.01f).minimize(m.loss);
        return new Named("plain", m, runner(m, train));
    }

    /**
     * Global-norm clipping by hand, as {@code tf.clip_by_global_norm}: per tensor L2Loss (Σg²/2, in
     * float32, or in float64 after a cast), summed and scaled in float64, coef = c / max(norm, c), g · coef.
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    static Named handClip(int in, int hidden, int out, boolean float64) {
        Mlp m = new Mlp(in, hidden, out, 42);
        Ops tf = m.tf;
        Output<?>[] vars = m.variables.stream().map(v -> v.asOutput()).toArray(Output<?>[]::new);
        Output<?>[] grads = m.graph.addGradients(m.loss.asOutput(), vars);
        Operand<TFloat64> sum = null;
        for (Output<?> g : grads) {
            Operand<TFloat64> part = float64
                    ? tf.nn.l2Loss(tf.dtypes.cast(g, TFloat64.class))
                    : tf.dtypes.cast(tf.nn.l2Loss((Operand<TFloat32>) g), TFloat64.class);
            sum = sum == null ? part : tf.math.add(sum, part);
        }
        Operand<TFloat64> c = tf.constant(1.0);
        Operand<TFloat64> norm = tf.math.sqrt(tf.math.mul(sum, tf.constant(2.0)));
        Operand<TFloat32> coef = tf.dtypes.cast(tf.math.div(c, tf.math.maximum(norm, c)), TFloat32.class);
        List<Optimizer.GradAndVar<? extends TType>> gv = new ArrayList<>();
        for (int i = 0; i < grads.length; i++) {
            gv.add(new Optimizer.GradAndVar(tf.math.mul((Operand<TFloat32>) grads[i], coef).asOutput(), vars[i]));
        }
        Op train = new GradientDescent(m.graph, 0.01f).applyGradients(gv, "handClip");
        return new Named(float64 ? "handClip64" : "handClip", m, runner(m, train));
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

    static Named guard(int in, int hidden, int out, Read read, boolean float64) {
        Mlp m = new Mlp(in, hidden, out, 42);
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0));
        double[] lastNorm = new double[1];
        if (read == Read.LISTENER) {
            p.addListener((g, r) -> lastNorm[0] = r.metric("clipByGlobalNorm.norm").orElse(Double.NaN));
        }
        TfGuard guard = TfGuard.of(p);
        if (float64) {
            guard.accumulateInDouble();
        }
        guard.attach(m.session, m.loss, m.variables, new GradientDescent(m.graph, 0.01f));
        Variant v = new Variant() {
            @Override
            public void step(Map<Operand<?>, Tensor> feeds) {
                var r = guard.step(feeds, 64);
                if (read == Read.AFTER_STEP) {
                    lastNorm[0] = r.metric("clipByGlobalNorm.norm").orElse(Double.NaN);
                }
            }

            @Override
            public void close() {
                guard.close();
            }
        };
        String name = switch (read) {
            case NONE -> "guardClip";
            case AFTER_STEP -> "guardClipNorm";
            case LISTENER -> "guardClipListener";
        };
        return new Named(name + (float64 ? "64" : ""), m, v);
    }
}
