package io.gradguard.tensorflow;

import java.util.ArrayList;
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
import org.tensorflow.types.TFloat32;

/** A small deterministic MLP (in → hidden → out, ReLU, mean squared error) in a TensorFlow graph, for tests and benchmarks. */
public final class Mlp implements AutoCloseable {
    public final Graph graph = new Graph();
    public final Session session = new Session(graph);
    public final Ops tf = Ops.create(graph);
    final int in;
    final int out;
    final Placeholder<TFloat32> x;
    final Placeholder<TFloat32> y;
    public final List<Variable<TFloat32>> variables = new ArrayList<>();
    public final Operand<TFloat32> loss;
    private final Random random;

    private final boolean scoped;
    private final Map<String, Ops> layers = new java.util.HashMap<>();

    public Mlp(int in, int hidden, int out, long seed) {
        this(in, hidden, out, seed, true);
    }

    /** With {@code scoped} false the variables have flat names (tensorflow-framework's slot optimizers need them). */
    Mlp(int in, int hidden, int out, long seed, boolean scoped) {
        this.scoped = scoped;
        this.in = in;
        this.out = out;
        this.random = new Random(seed);
        x = tf.withName("x").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, in)));
        y = tf.withName("y").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, out)));
        Variable<TFloat32> w1 = variable("dense/kernel", in, hidden);
        Variable<TFloat32> b1 = variable("dense/bias", hidden);
        Variable<TFloat32> w2 = variable("dense_1/kernel", hidden, out);
        Variable<TFloat32> b2 = variable("dense_1/bias", out);
        Operand<TFloat32> h = tf.nn.relu(tf.math.add(tf.linalg.matMul(x, w1), b1));
        Operand<TFloat32> p = tf.math.add(tf.linalg.matMul(h, w2), b2);
        loss = tf.withName("loss").math.mean(tf.math.square(tf.math.sub(p, y)), tf.constant(new int[] {0, 1}));
    }

    private Variable<TFloat32> variable(String path, long... shape) {
        int slash = path.indexOf('/');
        // one sub-scope per layer (a second withSubScope("dense") would make "dense_1")
        Ops scope = scoped ? layers.computeIfAbsent(path.substring(0, slash), tf::withSubScope).withName(path.substring(slash + 1))
                : tf.withName(path.replace('/', '_'));
        int n = 1;
        for (long d : shape) {
            n *= (int) d;
        }
        float[] init = new float[n];
        float scale = (float) Math.sqrt(2.0 / shape[0]);
        for (int i = 0; i < n; i++) {
            init[i] = shape.length == 1 ? 0.01f * (i % 3) : (float) random.nextGaussian() * scale;
        }
        Variable<TFloat32> v = scope.variable(tf.constant(Shape.of(shape), DataBuffers.of(init, true, false)));
        variables.add(v);
        return v;
    }

    /** A batch of random inputs and targets; the caller closes the tensors (see {@link #close(Map)}). */
    public Map<Operand<?>, Tensor> batch(int size, Random r) {
        float[] xs = new float[size * in];
        float[] ys = new float[size * out];
        for (int i = 0; i < xs.length; i++) {
            xs[i] = (float) r.nextGaussian();
        }
        for (int i = 0; i < ys.length; i++) {
            ys[i] = (float) r.nextGaussian();
        }
        return feeds(xs, ys, size);
    }

    Map<Operand<?>, Tensor> feeds(float[] xs, float[] ys, int size) {
        Map<Operand<?>, Tensor> f = new LinkedHashMap<>();
        f.put(x, TFloat32.tensorOf(Shape.of(size, in), DataBuffers.of(xs, true, false)));
        f.put(y, TFloat32.tensorOf(Shape.of(size, out), DataBuffers.of(ys, true, false)));
        return f;
    }

    public static void close(Map<Operand<?>, Tensor> feeds) {
        feeds.values().forEach(Tensor::close);
    }

    float[] value(Operand<TFloat32> v) {
        try (Result r = session.runner().fetch(v).run()) {
            TFloat32 t = (TFloat32) r.get(0);
            float[] a = new float[(int) t.shape().size()];
            t.copyTo(DataBuffers.of(a, false, false));
            return a;
        }
    }

    int operationCount() {
        return TfOps.operationCount(graph);
    }

    @Override
    public void close() {
        session.close();
        graph.close();
    }
}
