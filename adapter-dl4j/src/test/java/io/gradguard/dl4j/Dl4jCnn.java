package io.gradguard.dl4j;

import java.util.Random;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.ConvolutionLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * A small CNN: 3x3 convolution (2 → 4 channels) on 6x6 inputs, batch normalization, ReLU, dense
 * softmax output (3 classes); and its data: noise with a bright 3x3 patch whose place is the class.
 */
final class Dl4jCnn {
    private Dl4jCnn() {
    }

    static MultiLayerNetwork net(IUpdater updater, long seed) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(seed).dataType(DataType.FLOAT).updater(updater).list()
                .layer(new ConvolutionLayer.Builder(3, 3).nOut(4).activation(Activation.IDENTITY).build())
                .layer(new BatchNormalization.Builder().activation(Activation.RELU).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nOut(3).activation(Activation.SOFTMAX).build())
                .setInputType(InputType.convolutional(6, 6, 2))
                .build());
        net.init();
        return net;
    }

    /** {@code n} examples [n, 2, 6, 6]: N(0, 1) noise plus 2 on a 3x3 patch at (0,0), (0,3) or (3,0) by class. */
    static DataSet batch(int n, long seed) {
        Random r = new Random(seed);
        float[] x = new float[n * 2 * 36];
        float[] y = new float[n * 3];
        for (int i = 0; i < n; i++) {
            int c = r.nextInt(3);
            y[i * 3 + c] = 1f;
            int top = c == 2 ? 3 : 0;
            int left = c == 1 ? 3 : 0;
            for (int ch = 0; ch < 2; ch++) {
                for (int h = 0; h < 6; h++) {
                    for (int w = 0; w < 6; w++) {
                        boolean patch = h >= top && h < top + 3 && w >= left && w < left + 3;
                        x[((i * 2 + ch) * 6 + h) * 6 + w] = (float) r.nextGaussian() + (patch ? 2f : 0f);
                    }
                }
            }
        }
        return new DataSet(Nd4j.create(x, new long[] {n, 2, 6, 6}, 'c'), Nd4j.create(y, new long[] {n, 3}, 'c'));
    }
}
