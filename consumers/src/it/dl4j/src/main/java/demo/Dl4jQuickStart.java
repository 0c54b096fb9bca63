package demo;

import io.gradguard.core.Transforms;
import io.gradguard.dl4j.Dl4jGuard;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

public final class Dl4jQuickStart {
    public static void main(String[] args) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder()
                .seed(1)
                .updater(new Sgd(0.1))
                .list()
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE)
                        .nIn(4).nOut(1).activation(Activation.IDENTITY).build())
                .build());
        net.init();
        Dl4jGuard guard = Dl4jGuard.of(
                Transforms.skipNonFinite(3),          // a NaN/Inf step is skipped: parameters and updater untouched
                Transforms.clipByGlobalNorm(1.0))
            .install(net);                            // wraps DL4J's own updater
        DataSet data = new DataSet(Nd4j.randn(8, 4), Nd4j.randn(8, 1).muli(10));
        for (int step = 0; step < 5; step++) {
            net.fit(data);                            // unchanged: the guard runs inside the update
            System.out.printf("step %d: loss %.4f%n", step, net.score());
        }
        guard.close();
    }
}
