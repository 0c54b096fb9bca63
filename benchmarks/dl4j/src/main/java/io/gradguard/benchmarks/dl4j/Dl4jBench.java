package io.gradguard.benchmarks.dl4j;

import io.gradguard.benchmarks.Row;
import io.gradguard.benchmarks.Rounds;
import io.gradguard.benchmarks.Section;
import io.gradguard.benchmarks.Table;
import java.util.Map;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Parts 2-4 on Deeplearning4j (ND4J CPU backend): training steps of a ~5M-parameter MLP
 * (1000-2000-1500-10, ReLU, softmax cross-entropy, Adam) on batches of 64, timed with
 * {@link MultiLayerNetwork#fit(DataSet)}; every variant is its own network with the same seed,
 * and variants are interleaved step by step ({@link Rounds}).
 *
 * <p>Variants: unguarded (twice: the A/A control shows the measurement noise); DL4J's built-in {@code ClipL2PerLayer} and
 * {@code ClipElementWiseAbsoluteValue}; GradGuard's equivalents through the DL4J adapter once it
 * is on the classpath.
 */
public final class Dl4jBench {
    static final int[] FULL = {1000, 2000, 1500, 10};
    static final int[] TINY = {32, 64, 48, 10};
    static final int BATCH = 64;

    private final Section section;
    private final int[] widths;

    private Dl4jBench(Section section) {
        this.section = section;
        this.widths = section.tiny() ? TINY : FULL;
    }

    public static void main(String[] args) {
        try (Section s = Section.fromArgs("dl4j", args)) {
            new Dl4jBench(s).run();
        }
    }

    private void run() {
        section.part(2, "dl4j training steps", () -> {
            MultiLayerNetwork plain = network(null, 0);
            MultiLayerNetwork plain2 = network(null, 0);
            MultiLayerNetwork perLayer = network(GradientNormalization.ClipL2PerLayer, 1.0);
            MultiLayerNetwork perValue = network(GradientNormalization.ClipElementWiseAbsoluteValue, 1e-3);
            long params = plain.numParams();
            Nd4j.getRandom().setSeed(7);
            INDArray x = Nd4j.rand(BATCH, widths[0]);
            INDArray y = Nd4j.zeros(BATCH, widths[widths.length - 1]);
            for (int i = 0; i < BATCH; i++) {
                y.putScalar(i, i % widths[widths.length - 1], 1.0);
            }
            DataSet batch = new DataSet(x, y);
            Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(5, 60);
            r.add("unguarded", () -> plain.fit(batch));
            r.add("unguarded again", () -> plain2.fit(batch));
            r.add("ClipL2PerLayer", () -> perLayer.fit(batch));
            r.add("ClipElementWiseAbsoluteValue", () -> perValue.fit(batch));
            Map<String, Double> m = r.run();
            String size = Table.count(params) + " params, batch " + BATCH;
            double base = m.get("unguarded");
            section.emit(Row.ratio(2, "dl4j unguarded step, A/A control (noise)", size, m.get("unguarded again"),
                    "unguarded step", base, Double.NaN, "two identical networks: the spread of this machine"));
            section.emit(Row.ratio(3, "dl4j built-in ClipL2PerLayer step (context)", size, m.get("ClipL2PerLayer"),
                    "unguarded step", base, Double.NaN, "DL4J's own cost of the clip"));
            section.emit(Row.ratio(3, "dl4j built-in ClipElementWiseAbsoluteValue step (context)", size,
                    m.get("ClipElementWiseAbsoluteValue"), "unguarded step", base, Double.NaN, "DL4J's own cost of the clip"));
            section.emit(Row.note(2, "dl4j guarded vs unguarded step", "skipped: the DL4J adapter (adapter-dl4j) is not merged yet"));
            section.emit(Row.note(3, "dl4j GradGuard vs ClipL2PerLayer / ClipElementWiseAbsoluteValue",
                    "skipped: the DL4J adapter (adapter-dl4j) is not merged yet"));
        });
    }

    private MultiLayerNetwork network(GradientNormalization clip, double threshold) {
        NeuralNetConfiguration.Builder b = new NeuralNetConfiguration.Builder()
                .seed(42)
                .updater(new Adam(1e-3))
                .weightInit(WeightInit.XAVIER);
        if (clip != null) {
            b.gradientNormalization(clip).gradientNormalizationThreshold(threshold);
        }
        NeuralNetConfiguration.ListBuilder list = b.list();
        int last = widths.length - 1;
        for (int i = 0; i < last - 1; i++) {
            list.layer(new DenseLayer.Builder().nIn(widths[i]).nOut(widths[i + 1]).activation(Activation.RELU).build());
        }
        list.layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(widths[last - 1]).nOut(widths[last])
                .activation(Activation.SOFTMAX).build());
        MultiLayerConfiguration conf = list.build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }
}
