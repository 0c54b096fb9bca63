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
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Guard DL4J's {@code net.fit(...)} unchanged: install a {@link Dl4jGuard} on the network. It wraps
 * DL4J's own updater, so every pipeline runs inside {@code fit}, accumulation and real skips
 * included (a held or skipped step never reaches the updater):
 *
 * <pre>{@code
 * Dl4jGuard guard = Dl4jGuard.of(
 *         Transforms.skipNonFinite(3),           // NaN/Inf step skipped; the 4th in a row throws
 *         Transforms.clipByGlobalNorm(1.0))      // the norm of the mean gradient, as DL4J's GradientNormalization
 *     .install(net);
 * net.fit(trainData, epochs);                    // unchanged
 * }</pre>
 *
 * <p>{@code net.addListeners(guard.listener())} is the lighter hook for stateless pipelines; {@link
 * GuardDl4jAccumulation} drives the step with {@code guard.fit}. Here a small MLP is trained with a
 * learning rate at which plain SGD diverges. Run it from the repository root:
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.GuardDl4jFit
 * </pre>
 */
public final class GuardDl4jFit {
    private GuardDl4jFit() {
    }

    public static void main(String[] args) {
        System.out.printf("plain SGD:   loss after 5 epochs %.4f%n", train(false));
        System.out.printf("GradGuard:   loss after 5 epochs %.4f%n", train(true));
    }

    /** Five epochs of {@code net.fit}, guarded or not; returns the loss on the whole training set. */
    public static double train(boolean guarded) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder()
                .seed(7)
                .updater(new Sgd(0.5))
                .weightInit(WeightInit.RELU)
                .list()
                .layer(new DenseLayer.Builder().nIn(8).nOut(32).activation(Activation.RELU).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(32).nOut(1).activation(Activation.IDENTITY).build())
                .build());
        net.init();
        Dl4jGuard guard = guarded ? Dl4jGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0)).install(net) : null;
        Random rnd = new Random(1);
        float[] xs = new float[1024 * 8];
        float[] ys = new float[1024];
        for (int i = 0; i < xs.length; i++) {
            xs[i] = (float) rnd.nextGaussian();
            ys[i / 8] += 3 * xs[i];                                         // a large-scale linear target
        }
        DataSet all = new DataSet(Nd4j.create(xs, new long[] {1024, 8}, 'c'), Nd4j.create(ys, new long[] {1024, 1}, 'c'));
        net.fit(new ListDataSetIterator<>(all.asList(), 64), 5);
        if (guard != null) {
            guard.close();
        }
        return net.score(all);
    }
}
