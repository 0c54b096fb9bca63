package io.gradguard.dl4j.bench;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.dl4j.GuardListener;
import io.gradguard.dl4j.GuardedTrainer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Issue 6's speed check (a program, not a timed test): a ~5.2M-parameter MLP (1000-2048-1536-10),
 * batch 64, Adam, CPU. Every variant trains its own copy of the network; variants run interleaved,
 * round after round, and the median step time per variant gives the ratios, so machine noise hits
 * all of them alike.
 *
 * <ul>
 *   <li>per-layer clip: GradGuard {@code clipByLayerNorm(1)} (step driver, and listener under
 *       {@code fit}) vs DL4J's built-in {@code ClipL2PerLayer} (threshold 1) — target ≤ 1.05;</li>
 *   <li>guarded step: step driver with {@code clipByGlobalNorm(1)} and norm monitoring vs plain
 *       {@code fit} — target ≤ 1.03.</li>
 * </ul>
 *
 * <pre>
 * mvn -B -o -q -pl adapter-dl4j -am test-compile
 * mvn -B -o -q -pl adapter-dl4j exec:java -Dexec.skip=false -Dexec.classpathScope=test \
 *     -Dexec.mainClass=io.gradguard.dl4j.bench.Dl4jOverheadBenchmark [-Dexec.args="rounds stepsPerRound"]
 * </pre>
 */
public final class Dl4jOverheadBenchmark {
    private Dl4jOverheadBenchmark() {
    }

    /** A variant: one network and how it takes a step. */
    private interface Variant {
        void step(DataSet d);
    }

    public static void main(String[] args) {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 8;
        int steps = args.length > 1 ? Integer.parseInt(args[1]) : 8;
        DataSet data = new DataSet(Nd4j.rand(DataType.FLOAT, 64, 1000), Nd4j.eye(10).getRows(rowsMod10(64)).castTo(DataType.FLOAT));

        Map<String, Variant> variants = new LinkedHashMap<>();
        MultiLayerNetwork plain = mlp(null);
        variants.put("fit (unguarded)", plain::fit);
        MultiLayerNetwork builtIn = mlp(GradientNormalization.ClipL2PerLayer);
        variants.put("fit + DL4J ClipL2PerLayer", builtIn::fit);
        GuardedTrainer perLayer = GuardedTrainer.of(mlp(null), GradientPipeline.of(Transforms.clipByLayerNorm(1.0)));
        variants.put("GuardedTrainer clipByLayerNorm", perLayer::step);
        MultiLayerNetwork listened = mlp(null);
        listened.addListeners(GuardListener.of(GradientPipeline.of(Transforms.clipByLayerNorm(1.0))));
        variants.put("fit + GuardListener clipByLayerNorm", listened::fit);
        GradientPipeline monitored = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0));
        double[] lastNorm = new double[1];
        monitored.addListener((g, r) -> lastNorm[0] = r.metric("clipByGlobalNorm.norm").orElse(Double.NaN));
        GuardedTrainer global = GuardedTrainer.of(mlp(null), monitored);
        variants.put("GuardedTrainer clipByGlobalNorm + monitor", global::step);

        for (Variant v : variants.values()) { // warm up
            for (int i = 0; i < 3; i++) {
                v.step(data);
            }
        }
        Map<String, List<Double>> times = new LinkedHashMap<>();
        for (int r = 0; r < rounds; r++) {
            for (Map.Entry<String, Variant> e : variants.entrySet()) {
                long t0 = System.nanoTime();
                for (int i = 0; i < steps; i++) {
                    e.getValue().step(data);
                }
                times.computeIfAbsent(e.getKey(), k -> new ArrayList<>()).add((System.nanoTime() - t0) / 1e6 / steps);
            }
        }
        Map<String, Double> median = new LinkedHashMap<>();
        times.forEach((k, v) -> median.put(k, median(v)));
        System.out.printf("params %d, batch 64, %d rounds x %d steps, median ms/step:%n", plain.numParams(), rounds, steps);
        median.forEach((k, v) -> System.out.printf("  %-42s %8.2f%n", k, v));
        double ref = median.get("fit + DL4J ClipL2PerLayer");
        System.out.printf("per-layer clip ratio, GuardedTrainer / DL4J ClipL2PerLayer : %.3f (target <= 1.05)%n",
                median.get("GuardedTrainer clipByLayerNorm") / ref);
        System.out.printf("per-layer clip ratio, GuardListener / DL4J ClipL2PerLayer  : %.3f (target <= 1.05)%n",
                median.get("fit + GuardListener clipByLayerNorm") / ref);
        System.out.printf("guarded step ratio, global clip + monitor / unguarded fit  : %.3f (target <= 1.03); last norm %.4g%n",
                median.get("GuardedTrainer clipByGlobalNorm + monitor") / median.get("fit (unguarded)"), lastNorm[0]);
    }

    private static MultiLayerNetwork mlp(GradientNormalization gn) {
        NeuralNetConfiguration.Builder b = new NeuralNetConfiguration.Builder().seed(7).updater(new Adam(1e-3));
        if (gn != null) {
            b.gradientNormalization(gn).gradientNormalizationThreshold(1.0);
        }
        MultiLayerNetwork net = new MultiLayerNetwork(b.list()
                .layer(new DenseLayer.Builder().nIn(1000).nOut(2048).activation(Activation.RELU).build())
                .layer(new DenseLayer.Builder().nIn(2048).nOut(1536).activation(Activation.RELU).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(1536).nOut(10).activation(Activation.SOFTMAX).build())
                .build());
        net.init();
        return net;
    }

    private static int[] rowsMod10(int n) {
        int[] r = new int[n];
        Arrays.setAll(r, i -> i % 10);
        return r;
    }

    private static double median(List<Double> v) {
        double[] a = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return a.length % 2 == 1 ? a[a.length / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
    }
}
