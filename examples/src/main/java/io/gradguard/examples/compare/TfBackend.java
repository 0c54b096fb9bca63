package io.gradguard.examples.compare;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Layout;
import io.gradguard.core.StepResult;
import io.gradguard.tensorflow.TfGuard;
import io.gradguard.tensorflow.TfTensor;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Gradients;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Unstack;
import org.tensorflow.op.core.Variable;
import org.tensorflow.proto.ConfigProto;
import org.tensorflow.types.TFloat32;

/**
 * TensorFlow Java in graph mode: the network is built by hand from {@code matMul}, {@code relu},
 * {@code tanh} and {@code sigmoid} (the RNN and the LSTM unrolled over time; TensorFlow Java has no
 * LSTM layer), weights are {@code [in, out]} Variables as canonical (named {@code layer/param}; the
 * LSTM's gate blocks in the canonical order {@code i, f, g, o}), each with its layout declared to the
 * guard ({@link TfGuard#layout}: a matrix's unit is a column, a vector is one unit), and training goes through GradGuard's TensorFlow adapter,
 * {@link TfGuard}: the pipeline runs as graph operations on TensorFlow's own gradient tensors
 * between {@code tf.gradients} and tensorflow-framework's {@link GradientDescent}, which is not run
 * on a skipped step.
 */
public final class TfBackend implements Backend {

    @Override
    public String id() {
        return "tf";
    }

    @Override
    public String displayName() {
        return "TensorFlow";
    }

    @Override
    public Model build(Task task, Weights weights) {
        return new TfModel(task, weights);
    }

    private static final class TfModel implements Model {
        private final Task task;
        private final Graph graph = new Graph();
        private final Session session;
        private final Placeholder<TFloat32> x;
        private final Placeholder<TFloat32> y;
        private final Operand<TFloat32> loss;
        private final List<Variable<TFloat32>> vars = new ArrayList<>();
        private final GradientDescent sgd;
        private Gradients probeGradients;
        private TfGuard guard;

        TfModel(Task task, Weights weights) {
            this.task = task;
            Ops tf = Ops.create(graph);
            Map<String, Ops> layers = new HashMap<>();
            for (Weights.Param p : weights.params()) {
                // "dense3/W": the adapter names the layer by the variable's scope (one scope per layer:
                // asking for a sub-scope twice gives "dense3_1")
                vars.add(layers.computeIfAbsent(p.layer(), tf::withSubScope).withName(p.name())
                        .variable(tf.constant(Shape.of(p.shape()), DataBuffers.of(p.data(), true, false))));
            }
            Operand<TFloat32> pred;
            if (task.kind() == Task.Kind.MLP) {
                x = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, task.inputs())));
                Operand<TFloat32> h = x;
                for (int l = 0; l <= task.depth(); l++) {
                    h = tf.math.add(tf.linalg.matMul(h, vars.get(2 * l)), vars.get(2 * l + 1));
                    if (l < task.depth()) {
                        h = tf.nn.relu(h);
                    }
                }
                pred = h;
            } else {
                x = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, task.seqLen(), task.inputs())));
                List<Operand<TFloat32>> steps = new ArrayList<>(tf.unstack(x, (long) task.seqLen(), Unstack.axis(1L)).output());
                Operand<TFloat32> h = null;
                Operand<TFloat32> c = null;
                for (Operand<TFloat32> xt : steps) {
                    Operand<TFloat32> a = tf.linalg.matMul(xt, vars.get(0));
                    if (h != null) {
                        a = tf.math.add(a, tf.linalg.matMul(h, vars.get(1)));
                    }
                    a = tf.math.add(a, vars.get(2));
                    if (task.kind() == Task.Kind.RNN) {
                        h = tf.math.tanh(a);
                        continue;
                    }
                    // z = [i | f | g | o] (canonical gate order); c_t = σ(f)⊙c_{t-1} + σ(i)⊙tanh(g), h_t = σ(o)⊙tanh(c_t)
                    List<Output<TFloat32>> z = tf.split(tf.constant(1), a, 4L).output();
                    Operand<TFloat32> in = tf.math.mul(tf.math.sigmoid(z.get(0)), tf.math.tanh(z.get(2)));
                    c = c == null ? in : tf.math.add(tf.math.mul(tf.math.sigmoid(z.get(1)), c), in);
                    h = tf.math.mul(tf.math.sigmoid(z.get(3)), tf.math.tanh(c));
                }
                pred = tf.math.add(tf.linalg.matMul(h, vars.get(3)), vars.get(4));
            }
            y = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1)));
            Operand<TFloat32> err = tf.math.sub(tf.reshape(pred, tf.constant(new long[] {-1})), y);
            loss = tf.math.mean(tf.math.square(err), tf.constant(0));
            sgd = new GradientDescent(graph, (float) task.learningRate());
            // networks this small run fastest on one thread (and do not fight over a shared machine's cores)
            session = new Session(graph, ConfigProto.newBuilder().setIntraOpParallelismThreads(1).setInterOpParallelismThreads(1).build());
            session.initialize();
        }

        private Map<Operand<?>, Tensor> feeds(Batch batch) {
            return Map.of(x, TFloat32.tensorOf(Shape.of(batch.xShape()), DataBuffers.of(batch.x(), true, false)),
                    y, TFloat32.tensorOf(Shape.of(batch.size()), DataBuffers.of(batch.y(), true, false)));
        }

        @Override
        public Probe probe(Batch batch) {
            if (probeGradients == null) {
                probeGradients = Ops.create(graph).gradients(loss, vars);
            }
            Map<Operand<?>, Tensor> feeds = feeds(batch);
            try {
                Session.Runner run = session.runner().fetch(loss);
                feeds.forEach(run::feed);
                for (int i = 0; i < vars.size(); i++) {
                    run.fetch(probeGradients.dy(i));
                }
                try (Result r = run.run()) {
                    List<float[]> g = new ArrayList<>();
                    for (int i = 0; i < vars.size(); i++) {
                        TFloat32 t = (TFloat32) r.get(i + 1);
                        float[] a = new float[(int) t.shape().size()];
                        t.copyTo(DataBuffers.of(a, false, false));
                        g.add(a);
                    }
                    return new Probe(((TFloat32) r.get(0)).getFloat(), g);
                }
            } finally {
                feeds.values().forEach(Tensor::close);
            }
        }

        /** The adapter: gradients, the pipeline as graph operations, and SGD only when the step applies. */
        @Override
        public Outcome train(Batch batch, GradientPipeline pipeline) {
            if (guard == null) {
                TfGuard g = TfGuard.of(pipeline);
                // canonical [in, out]: a matrix's output unit is a column; a bias is one unit
                vars.forEach(v -> g.layout(v, v.shape().numDimensions() == 2 ? Layout.outputLast() : Layout.whole()));
                guard = g.attach(session, loss, vars, sgd);
            } else if (guard.pipeline() != pipeline) {
                throw new IllegalStateException("a model trains under one pipeline: build a new model for another");
            }
            Map<Operand<?>, Tensor> feeds = feeds(batch);
            try {
                StepResult<TfTensor> r = guard.step(feeds, batch.size());
                return new Outcome(guard.lastLoss(), r);
            } finally {
                feeds.values().forEach(Tensor::close);
            }
        }

        @Override
        public void close() {
            if (guard != null) {
                guard.close();
            }
            session.close();
            graph.close();
        }
    }
}
