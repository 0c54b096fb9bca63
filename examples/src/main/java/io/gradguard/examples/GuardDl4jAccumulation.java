package io.gradguard.examples;

import io.gradguard.core.Transforms;
import io.gradguard.dl4j.Dl4jGuard;
import java.util.Random;
import org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Gradient accumulation and real skips in DL4J: a {@link Dl4jGuard} drives the training step
 * (backprop, the pipeline, then DL4J's own updater only when the step applies) in place of
 * {@code net.fit}:
 *
 * <pre>{@code
 * Dl4jGuard guard = Dl4jGuard.of(
 *         Transforms.skipNonFinite(3),          // skip NaN/Inf steps; the 4th in a row throws
 *         Transforms.accumulate(4),             // 4 micro-batches per optimizer step
 *         Transforms.clipByGlobalNorm(1.0));
 * for (int epoch = 0; epoch < epochs; epoch++) {
 *     guard.fit(net, trainData);                // was: net.fit(trainData)
 * }
 * }</pre>
 *
 * <p>A held micro-batch or a skipped step leaves the parameters, Adam's moments and the iteration
 * count exactly as they were: of 64 micro-batches of 16, one corrupt, the corrupt one is dropped
 * alone and the other 63 make 15 Adam steps of an effective batch of 64, with 3 micro-batches
 * waiting in the window for the next epoch. Run it from the repository root:
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.GuardDl4jAccumulation
 * </pre>
 */
public final class GuardDl4jAccumulation {
    private GuardDl4jAccumulation() {
    }

    public static void main(String[] args) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder()
                .seed(7)
                .updater(new Adam(0.01))
                .weightInit(WeightInit.RELU)
                .list()
                .layer(new DenseLayer.Builder().nIn(8).nOut(32).activation(Activation.RELU).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(32).nOut(1).activation(Activation.IDENTITY).build())
                .build());
        net.init();
        Dl4jGuard guard = Dl4jGuard.of(
                Transforms.skipNonFinite(3),
                Transforms.accumulate(4),
                Transforms.clipByGlobalNorm(1.0));

        Random rnd = new Random(1);
        float[] xs = new float[1024 * 8];
        float[] ys = new float[1024];
        for (int i = 0; i < xs.length; i++) {
            xs[i] = (float) rnd.nextGaussian();
            ys[i / 8] += xs[i];
        }
        DataSet clean = new DataSet(Nd4j.create(xs, new long[] {1024, 8}, 'c'), Nd4j.create(ys, new long[] {1024, 1}, 'c'));
        DataSet corrupt = clean.copy();
        corrupt.getFeatures().putScalar(100, 0, Double.NaN);                // a corrupt record, in micro-batch 6

        guard.fit(net, new ListDataSetIterator<>(corrupt.asList(), 16));       // one epoch: 64 micro-batches of 16
        System.out.printf("epoch 1: 64 micro-batches, %d skipped, %d Adam steps (iteration count %d), %d waiting in the window%n",
                guard.skippedCount(), guard.stepCount(), net.getIterationCount(), guard.pipeline().microStep());
        for (int epoch = 2; epoch <= 10; epoch++) {
            guard.fit(net, new ListDataSetIterator<>(clean.asList(), 16));
        }
        System.out.printf("loss after 10 epochs %.4f%n", net.score(clean));
    }
}
