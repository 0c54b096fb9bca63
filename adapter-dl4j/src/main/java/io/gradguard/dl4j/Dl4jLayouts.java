package io.gradguard.dl4j;

import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import org.deeplearning4j.nn.conf.layers.AbstractLSTM;
import org.deeplearning4j.nn.conf.layers.BaseOutputLayer;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.Convolution1DLayer;
import org.deeplearning4j.nn.conf.layers.ConvolutionLayer;
import org.deeplearning4j.nn.conf.layers.Deconvolution2D;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.DepthwiseConvolution2D;
import org.deeplearning4j.nn.conf.layers.EmbeddingLayer;
import org.deeplearning4j.nn.conf.layers.EmbeddingSequenceLayer;
import org.deeplearning4j.nn.conf.layers.GravesBidirectionalLSTM;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.layers.SelfAttentionLayer;

/**
 * The role and output-unit layout of each parameter of the DL4J layer types users train with, and a
 * documented default for the others.
 *
 * <table>
 *   <caption>DL4J parameters (shapes as DL4J stores them)</caption>
 *   <tr><th>layer</th><th>key: shape</th><th>role</th><th>one output unit</th></tr>
 *   <tr><td>DenseLayer, OutputLayer (any BaseOutputLayer)</td><td>W: [nIn, nOut]</td><td>WEIGHT</td><td>a column ({@link Layout#outputLast()})</td></tr>
 *   <tr><td>ConvolutionLayer, Convolution1DLayer</td><td>W: [nOut, nIn, kH, kW] (1D: [nOut, nIn, k, 1])</td><td>WEIGHT</td><td>a kernel {@code W[o]} ({@link Layout#outputFirst()})</td></tr>
 *   <tr><td>Deconvolution2D</td><td>W: [nIn, nOut, kH, kW]</td><td>WEIGHT</td><td>{@code W[:, o]} ({@code outputAxis(1)})</td></tr>
 *   <tr><td>DepthwiseConvolution2D</td><td>W: [kH, kW, nIn, m]</td><td>WEIGHT</td><td>{@code W[:, :, i, j]}: output channel
 *       {@code i·m + j} ({@code outputAxes(2, 3)})</td></tr>
 *   <tr><td>BatchNormalization</td><td>gamma, beta: [nOut]</td><td>OTHER</td><td>the whole vector</td></tr>
 *   <tr><td>SimpleRnn</td><td>W: [nIn, nOut], RW: [nOut, nOut]</td><td>WEIGHT</td><td>a column (as dense)</td></tr>
 *   <tr><td>LSTM, GravesLSTM</td><td>W: [nIn, 4·nOut], RW: [nOut, 4·nOut] (GravesLSTM: 4·nOut+3, the
 *       last three columns its peepholes)</td><td>WEIGHT</td><td>a column: one gate of one cell (gates are
 *       stacked along the output axis; PyTorch's {@code weight_ih[4·hidden, in]} rows, transposed)</td></tr>
 *   <tr><td>EmbeddingLayer, EmbeddingSequenceLayer</td><td>W: [vocab, nOut]</td><td>WEIGHT</td><td>a row:
 *       one token's vector ({@link Layout#outputFirst()})</td></tr>
 *   <tr><td>SelfAttentionLayer</td><td>Wq, Wk, Wv: [nHeads, headSize, nIn]; Wo: [nHeads·headSize, nOut]</td>
 *       <td>WEIGHT</td><td>Wq/Wk/Wv: a row {@code W[h, s]}, one projected dimension of one head
 *       ({@code outputAxes(0, 1)}, as a row of PyTorch's and DJL's {@code [heads·size, in]} projections); Wo: a column</td></tr>
 *   <tr><td>any of these</td><td>b: [n]</td><td>BIAS</td><td>the whole vector</td></tr>
 * </table>
 *
 * <p>Why an embedding's unit is a row: a lookup reads one row, and a step changes only the rows of
 * the tokens in the batch; clipping a token's gradient against the norm of that token's own vector
 * bounds its relative change (as PyTorch AGC implementations do on {@code nn.Embedding}'s
 * {@code [vocab, dim]}). A column over the whole vocabulary would let one rare token's row move far
 * while the column norm stays small. DJL's embedding {@code [vocab, dim]} uses the same rows.
 *
 * <p>A bias (and gamma/beta) is one unit, declared {@link Layout#whole()}: a rank-1 vector is one
 * unit in every framework (as in Optax and the NFNet reference), and a {@code [1, n]} row vector, the
 * shape older DL4J versions use, must not turn each element into its own unit.
 *
 * <p>Any other layer type or key: role from the key ({@code W}, {@code RW}, {@code pW} → WEIGHT,
 * {@code b} → BIAS, else OTHER) and the layout from the rank ({@link Layout#outputLast()} up to rank
 * 2, DL4J's {@code [nIn, nOut]}; {@link Layout#outputFirst()} above, DL4J's {@code [nOut, nIn, ...]}
 * kernels); {@link Dl4jGuard} then warns once, naming the layer.
 */
final class Dl4jLayouts {
    private Dl4jLayouts() {
    }

    /** What one parameter is: its role, its layout, and whether its layer type is one the table above knows. */
    record Kind(Role role, Layout layout, boolean known) {
    }

    static Kind of(Layer conf, String key, int rank) {
        Kind known = known(conf, key);
        return known != null ? known : new Kind(defaultRole(key), rank <= 2 ? Layout.outputLast() : Layout.outputFirst(), false);
    }

    private static Kind known(Layer conf, String key) {
        if (key.equals("b") && (isDenseLike(conf) || isConvolution(conf) || conf instanceof AbstractLSTM || isSimpleRnn(conf)
                || isEmbedding(conf) || conf instanceof SelfAttentionLayer)) {
            return kind(Role.BIAS, Layout.whole());
        }
        if (conf instanceof BatchNormalization) {
            return key.equals("gamma") || key.equals("beta") ? kind(Role.OTHER, Layout.whole()) : null;
        }
        if (isDenseLike(conf)) {
            return key.equals("W") ? kind(Role.WEIGHT, Layout.outputLast()) : null;
        }
        if (conf instanceof DepthwiseConvolution2D) { // output channel i·m + j reads W[:, :, i, j] alone
            return key.equals("W") ? kind(Role.WEIGHT, Layout.outputAxes(2, 3)) : null;
        }
        if (conf instanceof Deconvolution2D) {
            return key.equals("W") ? kind(Role.WEIGHT, Layout.outputAxis(1)) : null;
        }
        if (isConvolution(conf) || isEmbedding(conf)) {
            return key.equals("W") ? kind(Role.WEIGHT, Layout.outputFirst()) : null;
        }
        if (isSimpleRnn(conf)) { // W: [nIn, nOut], RW: [nOut, nOut]; one unit is a column, as for dense
            return key.equals("W") || key.equals("RW") ? kind(Role.WEIGHT, Layout.outputLast()) : null;
        }
        if (conf instanceof AbstractLSTM && !(conf instanceof GravesBidirectionalLSTM)) {
            return key.equals("W") || key.equals("RW") ? kind(Role.WEIGHT, Layout.outputLast()) : null;
        }
        if (conf instanceof SelfAttentionLayer) {
            return switch (key) {
                case "Wq", "Wk", "Wv" -> kind(Role.WEIGHT, Layout.outputAxes(0, 1)); // a row W[h, s]: one projected dimension
                case "Wo" -> kind(Role.WEIGHT, Layout.outputLast());
                default -> null;
            };
        }
        return null;
    }

    private static boolean isSimpleRnn(Layer conf) {
        return conf instanceof org.deeplearning4j.nn.conf.layers.recurrent.SimpleRnn;
    }

    private static boolean isDenseLike(Layer conf) {
        return conf instanceof DenseLayer || conf instanceof BaseOutputLayer;
    }

    /** The convolutions whose kernel is [nOut, nIn, kH, kW] (plus deconvolution and depthwise, laid out otherwise). */
    private static boolean isConvolution(Layer conf) {
        Class<?> c = conf.getClass();
        return c == ConvolutionLayer.class || c == org.deeplearning4j.nn.conf.layers.Convolution2D.class
                || conf instanceof Convolution1DLayer || c == Deconvolution2D.class || c == DepthwiseConvolution2D.class;
    }

    private static boolean isEmbedding(Layer conf) {
        return conf instanceof EmbeddingLayer || conf instanceof EmbeddingSequenceLayer;
    }

    private static Kind kind(Role role, Layout layout) {
        return new Kind(role, layout, true);
    }

    private static Role defaultRole(String key) {
        return switch (key) {
            case "W", "RW", "pW" -> Role.WEIGHT;
            case "b" -> Role.BIAS;
            default -> Role.OTHER;
        };
    }
}
