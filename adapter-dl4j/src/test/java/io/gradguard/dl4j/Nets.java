package io.gradguard.dl4j;

import java.util.Random;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Small real networks and data for the adapter tests: 4 inputs, two hidden dense layers, 3 classes. */
final class Nets {
    static final int IN = 4;
    static final int OUT = 3;

    private Nets() {
    }

    static NeuralNetConfiguration.Builder base(IUpdater updater, GradientNormalization gn, double threshold) {
        NeuralNetConfiguration.Builder b = new NeuralNetConfiguration.Builder().seed(42).dataType(DataType.FLOAT).updater(updater);
        if (gn != null) {
            b.gradientNormalization(gn).gradientNormalizationThreshold(threshold);
        }
        return b;
    }

    static MultiLayerNetwork mlp(IUpdater updater, GradientNormalization gn, double threshold) {
        MultiLayerNetwork net = new MultiLayerNetwork(base(updater, gn, threshold).list()
                .layer(new DenseLayer.Builder().nIn(IN).nOut(8).activation(Activation.TANH).build())
                .layer(new DenseLayer.Builder().nIn(8).nOut(6).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(6).nOut(OUT).activation(Activation.SOFTMAX).build())
                .build());
        net.init();
        return net;
    }

    static MultiLayerNetwork mlp(IUpdater updater) {
        return mlp(updater, null, 0);
    }

    static ComputationGraph graph(IUpdater updater, GradientNormalization gn, double threshold) {
        ComputationGraphConfiguration conf = base(updater, gn, threshold).graphBuilder()
                .addInputs("in")
                .addLayer("dense1", new DenseLayer.Builder().nIn(IN).nOut(8).activation(Activation.TANH).build(), "in")
                .addLayer("dense2", new DenseLayer.Builder().nIn(8).nOut(6).activation(Activation.TANH).build(), "dense1")
                .addLayer("out", new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(6).nOut(OUT).activation(Activation.SOFTMAX).build(), "dense2")
                .setOutputs("out")
                .build();
        ComputationGraph g = new ComputationGraph(conf);
        g.init();
        return g;
    }

    static ComputationGraph graph(IUpdater updater) {
        return graph(updater, null, 0);
    }

    /** A deterministic batch: features ~ N(0, scale²), one-hot labels. */
    static DataSet batch(int n, long seed, double scale) {
        Random r = new Random(seed);
        float[] x = new float[n * IN];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (r.nextGaussian() * scale);
        }
        float[] y = new float[n * OUT];
        for (int i = 0; i < n; i++) {
            y[i * OUT + r.nextInt(OUT)] = 1f;
        }
        return new DataSet(Nd4j.create(x, new long[] {n, IN}, 'c'), Nd4j.create(y, new long[] {n, OUT}, 'c'));
    }

    static DataSet batch(int n, long seed) {
        return batch(n, seed, 3.0);
    }

    /** Copies parameters to the host. */
    static double[] params(org.deeplearning4j.nn.api.Model m) {
        return m.params().castTo(DataType.DOUBLE).dup().data().asDouble();
    }

    /** Copies an updater's state view to the host. */
    static double[] state(INDArray a) {
        return a.castTo(DataType.DOUBLE).dup().data().asDouble();
    }

    static double maxAbsDiff(double[] a, double[] b) {
        double m = 0;
        for (int i = 0; i < a.length; i++) {
            m = Math.max(m, Math.abs(a[i] - b[i]));
        }
        return m;
    }

    /** Max over elements of |a - e| / max(1, |e|): the relative error of float32 parameters, absolute below 1. */
    static double maxRelDiff(double[] expected, double[] actual) {
        double m = 0;
        for (int i = 0; i < expected.length; i++) {
            m = Math.max(m, Math.abs(actual[i] - expected[i]) / Math.max(1.0, Math.abs(expected[i])));
        }
        return m;
    }

    static INDArray nanCopy(INDArray x) {
        INDArray c = x.dup();
        c.putScalar(0, Double.NaN);
        return c;
    }
}
