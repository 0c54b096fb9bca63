package io.gradguard.tensorflow;

import io.gradguard.core.conformance.MarkedValueTask;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.op.math.Mean;
import org.tensorflow.op.train.BatchMatMul;
import org.tensorflow.types.TFloat32;

/**
 * Real architectures built by hand in a TensorFlow graph (TensorFlow Java has no layers), with flat
 * variable names (tensorflow-framework's slot optimizers need them) and deterministic initial values:
 * <ul>
 *   <li>{@link #cnn}: a 3x3 convolution (NHWC input, HWIO kernel) → batch normalization written with
 *       graph ops → ReLU → dense softmax output (3 classes), on the patch task of the DL4J and DJL CNN
 *       tests;</li>
 *   <li>{@link #attention}: one single-head self-attention block (query, key and value projections
 *       with biases, scaled dot-product softmax, mean over the tokens, linear output) on
 *       {@link MarkedValueTask}.</li>
 * </ul>
 * Every kernel is {@code [in, out]} or HWIO, so the guard's default layout ({@code outputLast}) is
 * right for all of them.
 */
final class TfNets implements AutoCloseable {
    final Graph graph = new Graph();
    final Session session = new Session(graph);
    final Ops tf = Ops.create(graph);
    final List<Variable<TFloat32>> variables = new ArrayList<>();
    Placeholder<TFloat32> x;
    Placeholder<TFloat32> y;
    Operand<TFloat32> loss;
    Operand<TFloat32> output;
    private final Random random;

    private TfNets(long seed) {
        this.random = new Random(seed);
    }

    /**
     * The CNN. Batch normalization normalizes by the batch's mean and variance per channel when
     * {@code batchStatistics} (training mode), else by fixed statistics (inference mode: a per-example
     * affine map whose gamma and beta still learn).
     */
    static TfNets cnn(long seed, boolean batchStatistics) {
        TfNets n = new TfNets(seed);
        Ops tf = n.tf;
        n.x = tf.withName("x").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 6, 6, 2)));
        n.y = tf.withName("y").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 3)));
        Variable<TFloat32> kernel = n.variable("conv_kernel", 3 * 3 * 2, 3, 3, 2, 4);
        Variable<TFloat32> gamma = n.constantVariable("bn_gamma", 1f, 4);
        Variable<TFloat32> beta = n.constantVariable("bn_beta", 0f, 4);
        Variable<TFloat32> dense = n.variable("dense_kernel", 64, 64, 3);
        Variable<TFloat32> bias = n.constantVariable("dense_bias", 0f, 3);
        Operand<TFloat32> h = tf.nn.conv2d(n.x, kernel, List.of(1L, 1L, 1L, 1L), "VALID"); // [b, 4, 4, 4]
        Operand<TFloat32> mean;
        Operand<TFloat32> variance;
        if (batchStatistics) {
            Operand<org.tensorflow.types.TInt32> axes = tf.constant(new int[] {0, 1, 2});
            mean = tf.math.mean(h, axes, Mean.keepDims(true));
            variance = tf.math.mean(tf.math.square(tf.math.sub(h, mean)), axes, Mean.keepDims(true));
        } else {
            mean = tf.constant(new float[] {0.1f, -0.2f, 0.05f, 0f});
            variance = tf.constant(new float[] {1.5f, 0.8f, 1.2f, 1f});
        }
        Operand<TFloat32> normed = tf.math.add(tf.math.mul(gamma,
                tf.math.mul(tf.math.sub(h, mean), tf.math.rsqrt(tf.math.add(variance, tf.constant(1e-5f))))), beta);
        Operand<TFloat32> flat = tf.reshape(tf.nn.relu(normed), tf.constant(new int[] {-1, 64}));
        n.output = tf.math.add(tf.linalg.matMul(flat, dense), bias);
        n.loss = tf.withName("loss").math.neg(tf.math.mean(tf.reduceSum(tf.math.mul(n.y, tf.nn.logSoftmax(n.output)), tf.constant(1)),
                tf.constant(0)));
        return n;
    }

    /** The attention model, {@code width} wide. */
    static TfNets attention(long seed, int width) {
        TfNets n = new TfNets(seed);
        Ops tf = n.tf;
        int steps = MarkedValueTask.STEPS;
        int features = MarkedValueTask.FEATURES;
        n.x = tf.withName("x").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, steps, features)));
        n.y = tf.withName("y").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 1)));
        Operand<TFloat32> tokens = tf.reshape(n.x, tf.constant(new int[] {-1, features}));
        Operand<TFloat32> q = n.projection(tokens, "att_wq", "att_bq", features, width, steps);
        Operand<TFloat32> k = n.projection(tokens, "att_wk", "att_bk", features, width, steps);
        Operand<TFloat32> v = n.projection(tokens, "att_wv", "att_bv", features, width, steps);
        Operand<TFloat32> scores = tf.math.mul(tf.train.batchMatMul(q, k, TFloat32.class, BatchMatMul.adjY(true)),
                tf.constant((float) (1 / Math.sqrt(width))));   // [b, steps, steps]
        Operand<TFloat32> mixed = tf.train.batchMatMul(tf.nn.softmax(scores), v, TFloat32.class);   // [b, steps, width]
        Operand<TFloat32> pooled = tf.math.mean(mixed, tf.constant(1));   // [b, width]
        Variable<TFloat32> wo = n.variable("out_kernel", width, width, 1);
        Variable<TFloat32> bo = n.constantVariable("out_bias", 0f, 1);
        n.output = tf.math.add(tf.linalg.matMul(pooled, wo), bo);
        n.loss = tf.withName("loss").math.mean(tf.math.square(tf.math.sub(n.output, n.y)), tf.constant(new int[] {0, 1}));
        return n;
    }

    /** tokens [b·steps, in] · w [in, out] + b, as [b, steps, out]. */
    private Operand<TFloat32> projection(Operand<TFloat32> tokens, String weight, String bias, int in, int out, int steps) {
        Operand<TFloat32> p = tf.math.add(tf.linalg.matMul(tokens, variable(weight, in, in, out)), constantVariable(bias, 0f, out));
        return tf.reshape(p, tf.constant(new int[] {-1, steps, out}));
    }

    /** A variable of N(0, 2 / fanIn) values (He initialization). */
    private Variable<TFloat32> variable(String name, int fanIn, long... shape) {
        float[] init = new float[(int) Shape.of(shape).size()];
        for (int i = 0; i < init.length; i++) {
            init[i] = (float) (random.nextGaussian() * Math.sqrt(2.0 / fanIn));
        }
        return add(name, init, shape);
    }

    private Variable<TFloat32> constantVariable(String name, float value, long... shape) {
        float[] init = new float[(int) Shape.of(shape).size()];
        Arrays.fill(init, value);
        return add(name, init, shape);
    }

    private Variable<TFloat32> add(String name, float[] init, long... shape) {
        Variable<TFloat32> v = tf.withName(name).variable(tf.constant(Shape.of(shape), DataBuffers.of(init, true, false)));
        variables.add(v);
        return v;
    }

    /** Feeds for {@code x} and {@code y}; the caller closes them ({@link Mlp#close(Map)}). */
    Map<Operand<?>, Tensor> feeds(float[] xs, long[] xShape, float[] ys, long[] yShape) {
        Map<Operand<?>, Tensor> f = new LinkedHashMap<>();
        f.put(x, TFloat32.tensorOf(Shape.of(xShape), DataBuffers.of(xs, true, false)));
        f.put(y, TFloat32.tensorOf(Shape.of(yShape), DataBuffers.of(ys, true, false)));
        return f;
    }

    /** The CNN task's batch (as the DL4J and DJL CNN tests draw it, in NHWC): n examples, one-hot labels. */
    Map<Operand<?>, Tensor> patches(int n, long seed) {
        float[][] b = patchArrays(n, seed);
        return feeds(b[0], new long[] {n, 6, 6, 2}, b[1], new long[] {n, 3});
    }

    /** {@link #patches}'s values: x [n, 6, 6, 2] and y [n, 3], row-major. */
    static float[][] patchArrays(int n, long seed) {
        Random r = new Random(seed);
        float[] xs = new float[n * 6 * 6 * 2];
        float[] ys = new float[n * 3];
        for (int i = 0; i < n; i++) {
            int c = r.nextInt(3);
            ys[i * 3 + c] = 1f;
            int top = c == 2 ? 3 : 0;
            int left = c == 1 ? 3 : 0;
            for (int ch = 0; ch < 2; ch++) {
                for (int h = 0; h < 6; h++) {
                    for (int w = 0; w < 6; w++) {
                        boolean patch = h >= top && h < top + 3 && w >= left && w < left + 3;
                        xs[((i * 6 + h) * 6 + w) * 2 + ch] = (float) r.nextGaussian() + (patch ? 2f : 0f);
                    }
                }
            }
        }
        return new float[][] {xs, ys};
    }

    /** {@link MarkedValueTask}'s batch. */
    Map<Operand<?>, Tensor> marked(int n, long seed) {
        MarkedValueTask.Batch b = MarkedValueTask.batch(n, seed);
        return feeds(b.x(), new long[] {n, MarkedValueTask.STEPS, MarkedValueTask.FEATURES}, b.y(), new long[] {n, 1});
    }

    /** The value of {@code op} for {@code feeds}, flattened. */
    float[] eval(Operand<TFloat32> op, Map<Operand<?>, Tensor> feeds) {
        Session.Runner runner = session.runner().fetch(op);
        feeds.forEach(runner::feed);
        try (Result r = runner.run()) {
            TFloat32 t = (TFloat32) r.get(0);
            float[] a = new float[(int) t.shape().size()];
            t.copyTo(DataBuffers.of(a, false, false));
            return a;
        }
    }

    @Override
    public void close() {
        session.close();
        graph.close();
    }
}
