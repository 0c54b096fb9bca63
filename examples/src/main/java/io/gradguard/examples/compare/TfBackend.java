package io.gradguard.examples.compare;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Layout;
import io.gradguard.core.StepResult;
import java.util.ArrayList;
import java.util.List;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Gradients;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.proto.ConfigProto;
import org.tensorflow.types.TFloat32;

/**
 * TensorFlow Java in graph mode: the network is built by hand from {@code matMul}, {@code relu} and
 * {@code tanh} (the RNN unrolled over time), weights are {@code [in, out]} Variables as canonical,
 * gradients come from {@code tf.gradients(loss, variables)}, and SGD is
 * {@code ApplyGradientDescent} fed with the (guarded) gradients.
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
        private final List<Weights.Param> params;
        private final List<long[]> shapes = new ArrayList<>();
        private final Graph graph = new Graph();
        private final Session session;
        private final Placeholder<TFloat32> x;
        private final Placeholder<TFloat32> y;
        private final Operand<TFloat32> loss;
        private final Gradients grads;
        private final List<Placeholder<TFloat32>> gradIn = new ArrayList<>();
        private final Op apply;

        TfModel(Task task, Weights weights) {
            this.task = task;
            this.params = weights.params();
            Ops tf = Ops.create(graph);
            List<Variable<TFloat32>> vars = new ArrayList<>();
            for (Weights.Param p : params) {
                shapes.add(p.shape());
                vars.add(tf.withName(p.layer() + "_" + p.name()).variable(tf.constant(Shape.of(p.shape()), DataBuffers.of(p.data(), true, false))));
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
                List<Operand<TFloat32>> steps = new ArrayList<>(tf.unstack(x, (long) task.seqLen(), org.tensorflow.op.core.Unstack.axis(1L)).output());
                Operand<TFloat32> h = null;
                for (Operand<TFloat32> xt : steps) {
                    Operand<TFloat32> a = tf.linalg.matMul(xt, vars.get(0));
                    if (h != null) {
                        a = tf.math.add(a, tf.linalg.matMul(h, vars.get(1)));
                    }
                    h = tf.math.tanh(tf.math.add(a, vars.get(2)));
                }
                pred = tf.math.add(tf.linalg.matMul(h, vars.get(3)), vars.get(4));
            }
            y = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1)));
            Operand<TFloat32> err = tf.math.sub(tf.reshape(pred, tf.constant(new long[] {-1})), y);
            loss = tf.math.mean(tf.math.square(err), tf.constant(0));
            grads = tf.gradients(loss, vars);
            List<Op> updates = new ArrayList<>();
            Operand<TFloat32> lr = tf.constant((float) task.learningRate());
            for (int i = 0; i < vars.size(); i++) {
                Placeholder<TFloat32> g = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(params.get(i).shape())));
                gradIn.add(g);
                updates.add(tf.train.applyGradientDescent(vars.get(i), lr, g));
            }
            apply = tf.withControlDependencies(updates).noOp();
            // networks this small run fastest on one thread (and do not fight over a shared machine's cores)
            session = new Session(graph, ConfigProto.newBuilder().setIntraOpParallelismThreads(1).setInterOpParallelismThreads(1).build());
            session.initialize();
        }

        /** Run 1: the loss and the gradients, to the host. */
        private double lossAndGradients(Batch batch, List<float[]> out) {
            try (TFloat32 xt = TFloat32.tensorOf(Shape.of(batch.xShape()), DataBuffers.of(batch.x(), true, false));
                    TFloat32 yt = TFloat32.tensorOf(Shape.of(batch.size()), DataBuffers.of(batch.y(), true, false))) {
                Session.Runner run = session.runner().feed(x, xt).feed(y, yt).fetch(loss);
                for (int i = 0; i < params.size(); i++) {
                    run.fetch(grads.dy(i));
                }
                try (Result r = run.run()) {
                    for (int i = 0; i < params.size(); i++) {
                        float[] g = new float[params.get(i).data().length];
                        ((TFloat32) r.get(i + 1)).copyTo(DataBuffers.of(g, false, false));
                        out.add(g);
                    }
                    return ((TFloat32) r.get(0)).getFloat();
                }
            }
        }

        @Override
        public Probe probe(Batch batch) {
            List<float[]> g = new ArrayList<>();
            double l = lossAndGradients(batch, g);
            return new Probe(l, g);
        }

        @Override
        public Outcome train(Batch batch, GradientPipeline pipeline) {
            List<float[]> g = new ArrayList<>();
            double l = lossAndGradients(batch, g);
            StepResult<?> r = HostBridge.step(pipeline, params, shapes, Layout.outputLast(), g, batch.size(), l);
            if (r.applies()) {
                List<TFloat32> feeds = new ArrayList<>();
                try {
                    Session.Runner run = session.runner().addTarget(apply);
                    for (int i = 0; i < params.size(); i++) {
                        TFloat32 t = TFloat32.tensorOf(Shape.of(shapes.get(i)), DataBuffers.of(g.get(i), true, false));
                        feeds.add(t);
                        run.feed(gradIn.get(i), t);
                    }
                    run.run().close();
                } finally {
                    feeds.forEach(TFloat32::close);
                }
            }
            return new Outcome(l, r);
        }

        @Override
        public void close() {
            session.close();
            graph.close();
        }
    }
}
