package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.conformance.GuardKit;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalDouble;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.Adam;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.StdArrays;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.TString;

/**
 * The {@link GuardKit} against the optimizer wrapper {@link TfOptimizer}, trained by the user's own
 * loop: {@code TfOptimizer.of(session, optimizer, pipeline).minimize(loss)} once, then every train
 * call is exactly one {@code session.runner().feed(x).feed(y).addTarget(train).fetch(...).run()},
 * which fetches the wrapper's per-call nodes ({@link TfOptimizer#metric}, {@link TfOptimizer#decidedBy})
 * to build the call's outcome. Every train call checks that the wrapper made no session run of its
 * own meanwhile ({@link TfOptimizer#ownRuns}), and closing a trainee checks that the graph counted
 * one call per train call: a guarded step is one session run, for every pipeline of the kit. The
 * counters, the loss scale and the window are read outside train ({@link TfOptimizer#counters},
 * {@link TfOptimizer#lossScale}, {@link TfOptimizer#microStep}); checkpoints are
 * {@code session.save} / {@code session.restore}.
 */
class TfOptimizerKitTest extends GuardKit {

    /** The kit's model as a TensorFlow graph (x[?,4] → dense(8, tanh) → dense(2), mean squared error), trained through TfOptimizer. */
    static final class WrappedTrainee implements Trainee {
        final Graph graph = new Graph();
        final Session session = new Session(graph);
        final Placeholder<TFloat32> x;
        final Placeholder<TFloat32> y;
        final List<Variable<TFloat32>> variables = new ArrayList<>();
        final Operand<TFloat32> loss;
        final Adam adam;
        final TfOptimizer guarded;
        final Op train;
        /** The graph's call count when this trainee's loop started (a restored checkpoint's), and the train calls since. */
        long callsAtStart;
        long trainCalls;

        WrappedTrainee(GradientPipeline pipeline, Optimizer optimizer) {
            try {
                Ops tf = Ops.create(graph);
                KitModel k = KitModel.initial();
                x = tf.withName("x").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 4)));
                y = tf.withName("y").placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 2)));
                // flat names: tensorflow-framework's Adam names its slots after them and rejects '/'
                Variable<TFloat32> w1 = variable(tf, "dense1_kernel", StdArrays.ndCopyOf(k.w1()));
                Variable<TFloat32> b1 = variable(tf, "dense1_bias", StdArrays.ndCopyOf(k.b1()));
                Variable<TFloat32> w2 = variable(tf, "dense2_kernel", StdArrays.ndCopyOf(k.w2()));
                Variable<TFloat32> b2 = variable(tf, "dense2_bias", StdArrays.ndCopyOf(k.b2()));
                Operand<TFloat32> h = tf.math.tanh(tf.math.add(tf.linalg.matMul(x, w1), b1));
                Operand<TFloat32> out = tf.math.add(tf.linalg.matMul(h, w2), b2);
                loss = tf.math.mean(tf.math.square(tf.math.sub(out, y)), tf.constant(new int[] {0, 1}));
                adam = optimizer == Optimizer.ADAM ? new Adam(graph, ADAM_LR) : null;
                guarded = TfOptimizer.of(session, adam != null ? adam : new GradientDescent(graph, SGD_LR), pipeline);
                train = guarded.minimize(loss);
            } catch (RuntimeException | Error e) {
                session.close();
                graph.close();
                throw e;
            }
        }

        private Variable<TFloat32> variable(Ops tf, String name, org.tensorflow.ndarray.FloatNdArray init) {
            Variable<TFloat32> v = tf.withName(name).variable(tf.constant(init));
            variables.add(v);
            return v;
        }

        /** The wrapper's counters and window, each read with a session run of its own, outside train. */
        @Override
        public GuardView guard() {
            return new GuardView() {
                @Override
                public long callCount() {
                    return guarded.counters().calls();
                }

                @Override
                public long stepCount() {
                    return guarded.counters().steps();
                }

                @Override
                public long heldCount() {
                    return guarded.counters().held();
                }

                @Override
                public long skippedCount() {
                    return guarded.counters().skipped();
                }

                @Override
                public double lossScale() {
                    return guarded.lossScale();
                }

                @Override
                public int microStep() {
                    return guarded.microStep();
                }

                @Override
                public void close() {
                    guarded.close();
                }

                @Override
                public String toString() {
                    return guarded.toString();
                }
            };
        }

        /** One session run: the feeds, the training op, and the wrapper's per-call nodes fetched with it. */
        @Override
        public StepView train(Batch batch) {
            long ownRuns = guarded.ownRuns();
            List<String> keys = guarded.metricNames(); // a closed wrapper refuses here
            Session.Runner runner = session.runner();
            try (TFloat32 xs = TFloat32.tensorOf(StdArrays.ndCopyOf(batch.x()));
                    TFloat32 ys = TFloat32.tensorOf(StdArrays.ndCopyOf(batch.y()))) {
                runner.feed(x, xs).feed(y, ys).addTarget(train);
                keys.forEach(key -> runner.fetch(guarded.metric(key)));
                runner.fetch(guarded.decidedBy());
                try (Result r = runner.run()) {
                    trainCalls++;
                    Map<String, Double> metrics = new LinkedHashMap<>();
                    for (int i = 0; i < keys.size(); i++) {
                        metrics.put(keys.get(i), ((TFloat64) r.get(i)).getDouble());
                    }
                    String decidedBy = ((TString) r.get(keys.size())).getObject();
                    assertEquals(ownRuns, guarded.ownRuns(), "the wrapper made no session run of its own during train");
                    return new Fetched(metrics, decidedBy);
                }
            }
        }

        @Override
        public float[] parameters() {
            return fetch(variables);
        }

        /** Adam's first and second moments of every variable; null for SGD (it has none). */
        @Override
        public float[] optimizerState() {
            if (adam == null) {
                return null;
            }
            List<Operand<TFloat32>> slots = new ArrayList<>();
            for (String slot : List.of(Adam.FIRST_MOMENT, Adam.SECOND_MOMENT)) {
                for (Variable<TFloat32> v : variables) {
                    slots.add(adam.getSlot(v.asOutput(), slot).orElseThrow());
                }
            }
            return fetch(slots);
        }

        private float[] fetch(List<? extends Operand<TFloat32>> operands) {
            return TfGuardKitTest.fetchFlat(session, operands);
        }

        /** The model, the optimizer's slots and the wrapper's state: every variable of the graph. */
        @Override
        public void checkpoint(Path dir) {
            session.save(dir.resolve("ckpt").toString());
        }

        /** Checks that the graph counted one call per train call (unless the wrapper was closed), then frees the graph. */
        @Override
        public void close() {
            try {
                if (!closedWrapper()) {
                    assertEquals(callsAtStart + trainCalls, guarded.counters().calls(), "one training-op run per train call");
                }
            } finally {
                guarded.close();
                session.close();
                graph.close();
            }
        }

        private boolean closedWrapper() {
            try {
                guarded.metricNames();
                return false;
            } catch (IllegalStateException e) {
                return true;
            }
        }
    }

    /** A train call's outcome, from the values fetched with it. */
    private record Fetched(Map<String, Double> metrics, String decidedBy) implements StepView {
        @Override
        public boolean applies() {
            return metrics.get("action") == GraphProgram.PROCEED;
        }

        @Override
        public boolean skipped() {
            return metrics.get("action") == GraphProgram.SKIP;
        }

        /** The fetched value; empty for an unknown key and for NaN (the call did not reach the stage). */
        @Override
        public OptionalDouble metric(String key) {
            Double v = metrics.get(key);
            return v == null || Double.isNaN(v) ? OptionalDouble.empty() : OptionalDouble.of(v);
        }

        @Override
        public OptionalDouble lossScale() {
            return metric("lossScale");
        }

        @Override
        public String toString() {
            return "TfOptimizer call: decidedBy=\"" + decidedBy + "\" " + metrics;
        }
    }

    @Override
    protected Trainee newTrainee(GradientPipeline pipeline, Optimizer optimizer) {
        return new WrappedTrainee(pipeline, optimizer);
    }

    /** A new graph built the same way (the same variable names), then {@code session.restore}. */
    @Override
    protected Trainee restore(Path dir, GradientPipeline pipeline, Optimizer optimizer) {
        WrappedTrainee t = new WrappedTrainee(pipeline, optimizer);
        try {
            t.session.restore(dir.resolve("ckpt").toString());
            t.callsAtStart = t.guarded.counters().calls();
            return t;
        } catch (RuntimeException | Error e) {
            t.close();
            throw e;
        }
    }

    /** As {@link TfGuardKitTest#allowedNativeGrowth()}: resident memory outside the heap, which only catches a gross leak. */
    @Override
    protected long allowedNativeGrowth() {
        return 256L << 20;
    }

    /** The trainee's wrapper asked for the training op of another graph's loss: refused, one wrapper per model. */
    @Override
    protected void useWithAnotherModel(Trainee trainee) {
        try (WrappedTrainee other = new WrappedTrainee(GradientPipeline.of(), Optimizer.SGD)) {
            ((WrappedTrainee) trainee).guarded.minimize(other.loss);
        }
    }
}
