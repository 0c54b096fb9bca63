package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Norms;
import io.gradguard.core.Role;
import io.gradguard.core.conformance.UnitNormLoops;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.Convolution1DLayer;
import org.deeplearning4j.nn.conf.layers.Deconvolution2D;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.DepthwiseConvolution2D;
import org.deeplearning4j.nn.conf.layers.EmbeddingSequenceLayer;
import org.deeplearning4j.nn.conf.layers.EmbeddingLayer;
import org.deeplearning4j.nn.conf.layers.GlobalPoolingLayer;
import org.deeplearning4j.nn.conf.layers.GravesLSTM;
import org.deeplearning4j.nn.conf.layers.LSTM;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.conf.layers.SelfAttentionLayer;
import org.deeplearning4j.nn.conf.layers.recurrent.SimpleRnn;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Each DL4J layer type's declared role and layout, checked on a real backward pass: the unit norms
 * core computes from the declared layout ({@link Norms#unitNorms}, what adaptive clipping uses) equal
 * norms computed here by plain loops over DL4J's own gradient and parameter arrays, one per output
 * unit as this test defines it (the kept axes), to 1e-5.
 */
class Dl4jLayoutTest {
    private static final double TOL = 1e-5;

    @Test
    void dense_and_output_weights_are_per_column_biases_whole() {
        MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(1).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                .layer(new DenseLayer.Builder().nIn(4).nOut(5).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(5).nOut(3).activation(Activation.IDENTITY).build())
                .build());
        backward(net, gaussian(6, 4), gaussian(6, 3));
        check(net, Map.of("0_W", new Unit(Role.WEIGHT, 1), "0_b", new Unit(Role.BIAS),
                "1_W", new Unit(Role.WEIGHT, 1), "1_b", new Unit(Role.BIAS)));
    }

    @Test
    void convolution_kernels_per_output_channel_batch_norm_gamma_beta_whole_running_stats_left_out() {
        MultiLayerNetwork net = Dl4jCnn.net(new Sgd(0.1), 1);
        backward(net, gaussian(5, 2 * 6 * 6).reshape(5, 2, 6, 6), oneHot(5, 3, 7));
        check(net, Map.of("0_W", new Unit(Role.WEIGHT, 0), "0_b", new Unit(Role.BIAS),
                "1_gamma", new Unit(Role.OTHER), "1_beta", new Unit(Role.OTHER),
                "2_W", new Unit(Role.WEIGHT, 1), "2_b", new Unit(Role.BIAS)));
        assertArrayEquals(new long[] {4, 2, 3, 3}, net.getLayer(0).getParam("W").shape());
        // DL4J's gradient view carries the running statistics too (its rule for updating them); the guard leaves them out
        assertTrue(net.gradient().gradientForVariable().keySet().containsAll(java.util.List.of("1_mean", "1_log10stdev")));
    }

    @Test
    void lstm_input_and_recurrent_weights_per_column_one_gate_of_one_cell() {
        for (boolean graves : new boolean[] {false, true}) {
            MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(2).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                    .layer(graves ? new GravesLSTM.Builder().nIn(3).nOut(4).activation(Activation.TANH).build()
                            : new LSTM.Builder().nIn(3).nOut(4).activation(Activation.TANH).build())
                    .layer(new RnnOutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(4).nOut(2).activation(Activation.IDENTITY).build())
                    .build());
            backward(net, gaussian(3, 3 * 5).reshape(3, 3, 5), gaussian(3, 2 * 5).reshape(3, 2, 5));
            check(net, Map.of("0_W", new Unit(Role.WEIGHT, 1), "0_RW", new Unit(Role.WEIGHT, 1), "0_b", new Unit(Role.BIAS),
                    "1_W", new Unit(Role.WEIGHT, 1), "1_b", new Unit(Role.BIAS)));
            assertArrayEquals(new long[] {3, 16}, net.getLayer(0).getParam("W").shape());
            assertArrayEquals(new long[] {4, graves ? 19 : 16}, net.getLayer(0).getParam("RW").shape());
        }
    }

    @Test
    void embedding_rows_one_token_each() {
        MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(3).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                .layer(new EmbeddingLayer.Builder().nIn(10).nOut(4).activation(Activation.IDENTITY).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(4).nOut(2).activation(Activation.IDENTITY).build())
                .build());
        INDArray tokens = Nd4j.createFromArray(new float[][] {{1}, {3}, {3}, {7}, {0}});
        backward(net, tokens, gaussian(5, 2));
        check(net, Map.of("0_W", new Unit(Role.WEIGHT, 0), // DL4J's embedding has no bias by default
                "1_W", new Unit(Role.WEIGHT, 1), "1_b", new Unit(Role.BIAS)));
        assertArrayEquals(new long[] {10, 4}, net.getLayer(0).getParam("W").shape());
    }

    @Test
    void self_attention_projections_per_row_of_each_head_output_projection_per_column() {
        MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(4).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                .layer(new SelfAttentionLayer.Builder().nIn(3).nOut(4).nHeads(2).headSize(5).projectInput(true).build())
                .layer(new GlobalPoolingLayer.Builder().build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(4).nOut(2).activation(Activation.IDENTITY).build())
                .setInputType(InputType.recurrent(3, 6))
                .build());
        backward(net, gaussian(2, 3 * 6).reshape(2, 3, 6), gaussian(2, 2));
        check(net, Map.of("0_Wq", new Unit(Role.WEIGHT, 0, 1), "0_Wk", new Unit(Role.WEIGHT, 0, 1), "0_Wv", new Unit(Role.WEIGHT, 0, 1),
                "0_Wo", new Unit(Role.WEIGHT, 1), "2_W", new Unit(Role.WEIGHT, 1), "2_b", new Unit(Role.BIAS)));
        assertArrayEquals(new long[] {2, 5, 3}, net.getLayer(0).getParam("Wq").shape());
        assertArrayEquals(new long[] {10, 4}, net.getLayer(0).getParam("Wo").shape());
    }

    @Test
    void convolution_1d_kernels_per_output_channel() {
        MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(5).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                .layer(new Convolution1DLayer.Builder().kernelSize(2).nOut(4).activation(Activation.TANH).build())
                .layer(new RnnOutputLayer.Builder(LossFunctions.LossFunction.MSE).nOut(2).activation(Activation.IDENTITY).build())
                .setInputType(InputType.recurrent(3, 5))
                .build());
        backward(net, gaussian(2, 3 * 5).reshape(2, 3, 5), gaussian(2, 2 * 4).reshape(2, 2, 4));
        check(net, Map.of("0_W", new Unit(Role.WEIGHT, 0), "0_b", new Unit(Role.BIAS),
                "1_W", new Unit(Role.WEIGHT, 1), "1_b", new Unit(Role.BIAS)));
        assertArrayEquals(new long[] {4, 3, 2, 1}, net.getLayer(0).getParam("W").shape());
    }

    @Test
    void deconvolution_kernels_per_output_channel_on_axis_1() {
        MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(6).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                .layer(new Deconvolution2D.Builder().kernelSize(2, 2).nOut(4).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nOut(3).activation(Activation.IDENTITY).build())
                .setInputType(InputType.convolutional(3, 3, 2))
                .build());
        backward(net, gaussian(2, 2 * 3 * 3).reshape(2, 2, 3, 3), gaussian(2, 3));
        check(net, Map.of("0_W", new Unit(Role.WEIGHT, 1), "0_b", new Unit(Role.BIAS),
                "1_W", new Unit(Role.WEIGHT, 1), "1_b", new Unit(Role.BIAS)));
        assertArrayEquals(new long[] {2, 4, 2, 2}, net.getLayer(0).getParam("W").shape());
    }

    @Test
    void depthwise_kernels_per_input_channel_and_multiplier() {
        MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(7).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                .layer(new DepthwiseConvolution2D.Builder().kernelSize(2, 2).depthMultiplier(3).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nOut(3).activation(Activation.IDENTITY).build())
                .setInputType(InputType.convolutional(4, 4, 2))
                .build());
        backward(net, gaussian(2, 2 * 4 * 4).reshape(2, 2, 4, 4), gaussian(2, 3));
        check(net, Map.of("0_W", new Unit(Role.WEIGHT, 2, 3), "0_b", new Unit(Role.BIAS),
                "1_W", new Unit(Role.WEIGHT, 1), "1_b", new Unit(Role.BIAS)));
        assertArrayEquals(new long[] {2, 2, 2, 3}, net.getLayer(0).getParam("W").shape());
    }

    @Test
    void simple_rnn_input_and_recurrent_weights_per_column() {
        MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(8).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                .layer(new SimpleRnn.Builder().nIn(3).nOut(4).activation(Activation.TANH).build())
                .layer(new RnnOutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(4).nOut(2).activation(Activation.IDENTITY).build())
                .build());
        backward(net, gaussian(3, 3 * 5).reshape(3, 3, 5), gaussian(3, 2 * 5).reshape(3, 2, 5));
        check(net, Map.of("0_W", new Unit(Role.WEIGHT, 1), "0_RW", new Unit(Role.WEIGHT, 1), "0_b", new Unit(Role.BIAS),
                "1_W", new Unit(Role.WEIGHT, 1), "1_b", new Unit(Role.BIAS)));
        assertArrayEquals(new long[] {4, 4}, net.getLayer(0).getParam("RW").shape());
    }

    @Test
    void embedding_sequence_rows_one_token_each() {
        MultiLayerNetwork net = net(new NeuralNetConfiguration.Builder().seed(9).dataType(DataType.FLOAT).updater(new Sgd(0.1)).list()
                .layer(new EmbeddingSequenceLayer.Builder().nIn(10).nOut(4).inputLength(3).build())
                .layer(new GlobalPoolingLayer.Builder().build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(4).nOut(2).activation(Activation.IDENTITY).build())
                .build());
        INDArray tokens = Nd4j.createFromArray(new float[][] {{1, 3, 3}, {7, 0, 9}});
        backward(net, tokens, gaussian(2, 2));
        check(net, Map.of("0_W", new Unit(Role.WEIGHT, 0), "2_W", new Unit(Role.WEIGHT, 1), "2_b", new Unit(Role.BIAS)));
        assertArrayEquals(new long[] {10, 4}, net.getLayer(0).getParam("W").shape());
    }

    /** What the test expects of one parameter: its role and the axes that index its output units (none: one unit). */
    record Unit(Role role, int... kept) {
    }

    static MultiLayerNetwork net(org.deeplearning4j.nn.conf.MultiLayerConfiguration conf) {
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    static void backward(MultiLayerNetwork net, INDArray x, INDArray y) {
        net.setInput(x);
        net.setLabels(y);
        net.computeGradientAndScore();
    }

    /** Every trained parameter is described, with the expected role, and its unit norms match the loops. */
    static void check(MultiLayerNetwork net, Map<String, Unit> expected) {
        GradientSet<INDArray> set = Dl4jGradients.of(net);
        Map<String, String> seen = new TreeMap<>();
        Nd4jOps ops = new Nd4jOps();
        for (GradientTensor<INDArray> t : set) {
            Unit u = expected.get(t.name());
            seen.put(t.name(), t.role() + " " + t.layout());
            assertTrue(u != null, "unexpected parameter " + t);
            assertEquals(u.role(), t.role(), t.name());
            INDArray grad = net.gradient().getGradientFor(t.name());
            String[] parts = t.name().split("_", 2);
            INDArray param = net.getLayer(Integer.parseInt(parts[0])).getParam(parts[1]);
            for (INDArray[] pair : new INDArray[][] {{t.gradient(), grad}, {t.param(), param}}) {
                double[] ours = flat(Norms.unitNorms(ops, pair[0], t.layout()));
                double[] loops = UnitNormLoops.unitNorms(flat(pair[1]), pair[1].shape(), u.kept());
                assertEquals(loops.length, ours.length, t + ": number of units");
                for (int i = 0; i < loops.length; i++) {
                    assertEquals(loops[i], ours[i], TOL * Math.max(1, loops[i]), t + " unit " + i);
                }
            }
            assertTrue(Arrays.stream(flat(grad)).anyMatch(v -> v != 0), t + ": a zero gradient checks nothing");
        }
        assertEquals(new TreeMap<>(expected).keySet(), seen.keySet(), "parameters described: " + seen);
        assertTrue(Dl4jGradients.unknownLayers(net).isEmpty(), "every layer type here is known");
    }

    static double[] flat(INDArray x) {
        return x.dup('c').castTo(DataType.DOUBLE).reshape(x.length()).toDoubleVector();
    }

    static INDArray gaussian(int rows, int cols) {
        Random r = new Random(rows * 31L + cols);
        float[] v = new float[rows * cols];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return Nd4j.create(v, new long[] {rows, cols}, 'c');
    }

    static INDArray oneHot(int n, int classes, long seed) {
        Random r = new Random(seed);
        INDArray y = Nd4j.zeros(DataType.FLOAT, n, classes);
        for (int i = 0; i < n; i++) {
            y.putScalar(i, r.nextInt(classes), 1f);
        }
        return y;
    }
}
