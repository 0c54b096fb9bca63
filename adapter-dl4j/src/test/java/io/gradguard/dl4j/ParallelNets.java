package io.gradguard.dl4j;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.Set;
import org.deeplearning4j.datasets.iterator.ExistingDataSetIterator;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.optimize.solvers.accumulation.encoding.threshold.FixedThresholdAlgorithm;
import org.deeplearning4j.parallelism.ParallelWrapper;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** A learnable task, an MLP and 2-worker ParallelWrappers for the data-parallel tests. */
final class ParallelNets {
    static final int WORKERS = 2;
    private static final float[][] TEACHER = {{1.5f, -1f, 0.5f}, {-0.5f, 2f, -1f}, {1f, 0.5f, -2f}, {-1f, -0.5f, 1.5f}};

    private ParallelNets() {
    }

    /** The comparison MLP (4-8-6-3, tanh, softmax) with Adam(0.01), seeded. */
    static MultiLayerNetwork mlp(long seed) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(seed).dataType(DataType.FLOAT)
                .updater(new Adam(0.01)).list()
                .layer(new DenseLayer.Builder().nIn(Nets.IN).nOut(8).activation(Activation.TANH).build())
                .layer(new DenseLayer.Builder().nIn(8).nOut(6).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(6).nOut(Nets.OUT)
                        .activation(Activation.SOFTMAX).build())
                .build());
        net.init();
        return net;
    }

    /**
     * {@code count} batches of {@code size}: x ~ N(0, 1), the class is the argmax of a fixed linear
     * teacher; the batches whose index is in {@code faults} hold a NaN feature (their gradient is NaN).
     */
    static List<DataSet> batches(int count, int size, long seed, Set<Integer> faults) {
        Random r = new Random(seed);
        List<DataSet> out = new ArrayList<>(count);
        for (int b = 0; b < count; b++) {
            float[] x = new float[size * Nets.IN];
            float[] y = new float[size * Nets.OUT];
            for (int i = 0; i < size; i++) {
                float[] logits = new float[Nets.OUT];
                for (int j = 0; j < Nets.IN; j++) {
                    float v = (float) r.nextGaussian();
                    x[i * Nets.IN + j] = v;
                    for (int k = 0; k < Nets.OUT; k++) {
                        logits[k] += v * TEACHER[j][k];
                    }
                }
                int best = 0;
                for (int k = 1; k < Nets.OUT; k++) {
                    best = logits[k] > logits[best] ? k : best;
                }
                y[i * Nets.OUT + best] = 1f;
            }
            if (faults.contains(b)) {
                x[0] = Float.NaN;
            }
            out.add(new DataSet(Nd4j.create(x, new long[] {size, Nets.IN}, 'c'), Nd4j.create(y, new long[] {size, Nets.OUT}, 'c')));
        }
        return out;
    }

    static DataSetIterator iterator(List<DataSet> batches) {
        return new ExistingDataSetIterator(batches);
    }

    /** The mean loss over {@code batches}. */
    static double loss(MultiLayerNetwork net, List<DataSet> batches) {
        double s = 0;
        for (DataSet d : batches) {
            s += net.score(d);
        }
        return s / batches.size();
    }

    /** The fraction of examples classified right. */
    static double accuracy(MultiLayerNetwork net, List<DataSet> batches) {
        long right = 0;
        long all = 0;
        for (DataSet d : batches) {
            int[] predicted = net.predict(d.getFeatures());
            for (int i = 0; i < predicted.length; i++) {
                right += d.getLabels().getDouble(i, predicted[i]) == 1.0 ? 1 : 0;
            }
            all += predicted.length;
        }
        return (double) right / all;
    }

    /** A 2-worker wrapper on CPU: AVERAGING every round, or SHARED_GRADIENTS with FixedThresholdAlgorithm(1e-3). */
    static ParallelWrapper wrapper(MultiLayerNetwork net, ParallelWrapper.TrainingMode mode) {
        ParallelWrapper.Builder<MultiLayerNetwork> b = new ParallelWrapper.Builder<>(net).workers(WORKERS).prefetchBuffer(4)
                .averagingFrequency(1).trainingMode(mode);
        if (mode == ParallelWrapper.TrainingMode.SHARED_GRADIENTS) {
            b.thresholdAlgorithm(new FixedThresholdAlgorithm(1e-3));
        }
        return b.build();
    }

    static boolean finite(MultiLayerNetwork net) {
        for (double v : Nets.params(net)) {
            if (!Double.isFinite(v)) {
                return false;
            }
        }
        return true;
    }
}
