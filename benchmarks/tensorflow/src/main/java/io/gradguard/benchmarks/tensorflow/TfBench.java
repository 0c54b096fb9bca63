package io.gradguard.benchmarks.tensorflow;

import io.gradguard.benchmarks.Row;
import io.gradguard.benchmarks.Rounds;
import io.gradguard.benchmarks.Section;
import io.gradguard.benchmarks.Table;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.BiFunction;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.Adam;
import org.tensorflow.framework.optimizers.Optimizer.GradAndVar;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Gradients;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.family.TType;

/**
 * Parts 2-4 on TensorFlow Java (graph mode, CPU): training steps of a ~5M-parameter MLP
 * (1000-2000-1500-10, ReLU, softmax cross-entropy, Adam) on batches of 64, each a single
 * {@code session.run} of the optimizer's apply op. Every variant is its own graph and session
 * with the same initial weights; variants are interleaved step by step ({@link Rounds}).
 *
 * <p>Variants: unguarded (twice: the A/A control shows the measurement noise); hand-written
 * TensorFlow clip ops between {@code tf.gradients} and {@code applyGradients} (global-norm clip as
 * {@code g · c / max(‖g‖, c)}, and {@code tf.clipByValue}); GradGuard through the TensorFlow
 * adapter once it is on the classpath.
 */
public final class TfBench {
    static final int[] FULL = {1000, 2000, 1500, 10};
    static final int[] TINY = {32, 64, 48, 10};
    static final int BATCH = 64;

    private final Section section;
    private final int[] widths;
    private final List<AutoCloseable> open = new ArrayList<>();

    private TfBench(Section section) {
        this.section = section;
        this.widths = section.tiny() ? TINY : FULL;
    }

    public static void main(String[] args) throws Exception {
        try (Section s = Section.fromArgs("tensorflow", args)) {
            TfBench b = new TfBench(s);
            try {
                b.run();
            } finally {
                for (int i = b.open.size() - 1; i >= 0; i--) {
                    b.open.get(i).close();
                }
            }
        }
    }

    /** A built training graph: its session and the op one step runs. */
    private record Model(Session session, Op train, long params) {
        void step() {
            session.run(train);
        }
    }

    private void run() {
        section.part(2, "tensorflow training steps", () -> {
            Model plain = model((tf, grads) -> grads);
            Model plain2 = model((tf, grads) -> grads);
            Model global = model(TfBench::clipByGlobalNorm);
            Model value = model((tf, grads) -> {
                List<Operand<TFloat32>> out = new ArrayList<>();
                for (Operand<TFloat32> g : grads) {
                    out.add(tf.clipByValue(g, tf.constant(-1e-3f), tf.constant(1e-3f)));
                }
                return out;
            });
            Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(5, 30);
            r.add("unguarded", plain::step);
            r.add("unguarded again", plain2::step);
            r.add("clip global norm (tf ops)", global::step);
            r.add("clipByValue (tf ops)", value::step);
            Map<String, Double> m = r.run();
            String size = Table.count(plain.params()) + " params, batch " + BATCH;
            double base = m.get("unguarded");
            section.emit(Row.ratio(2, "tensorflow unguarded step, A/A control (noise)", size, m.get("unguarded again"),
                    "unguarded step", base, Double.NaN, "two identical graphs: the spread of this machine"));
            section.emit(Row.ratio(3, "tensorflow hand-written global-norm clip step (context)", size,
                    m.get("clip global norm (tf ops)"), "unguarded step", base, Double.NaN, "the cost of the clip in TF ops"));
            section.emit(Row.ratio(3, "tensorflow hand-written clipByValue step (context)", size,
                    m.get("clipByValue (tf ops)"), "unguarded step", base, Double.NaN, "the cost of the clip in TF ops"));
            section.emit(Row.note(2, "tensorflow guarded vs unguarded step",
                    "skipped: the TensorFlow adapter (adapter-tensorflow) is not merged yet"));
            section.emit(Row.note(3, "tensorflow GradGuard vs hand-written clip ops",
                    "skipped: the TensorFlow adapter (adapter-tensorflow) is not merged yet"));
        });
    }

    /** Σ over tensors of Σ g², then g · c / max(√Σ, c), c = 1, all as graph ops. */
    static List<Operand<TFloat32>> clipByGlobalNorm(Ops tf, List<Operand<TFloat32>> grads) {
        Operand<TFloat32> sum = null;
        for (Operand<TFloat32> g : grads) {
            Operand<TFloat32> s = tf.sum(tf.math.square(g), tf.constant(allAxes(g.shape().numDimensions())));
            sum = sum == null ? s : tf.math.add(sum, s);
        }
        Operand<TFloat32> c = tf.constant(1f);
        Operand<TFloat32> coef = tf.math.div(c, tf.math.maximum(tf.math.sqrt(sum), c));
        List<Operand<TFloat32>> out = new ArrayList<>();
        for (Operand<TFloat32> g : grads) {
            out.add(tf.math.mul(g, coef));
        }
        return out;
    }

    private static int[] allAxes(int rank) {
        int[] a = new int[rank];
        for (int i = 0; i < rank; i++) {
            a[i] = i;
        }
        return a;
    }

    private Model model(BiFunction<Ops, List<Operand<TFloat32>>, List<Operand<TFloat32>>> transform) {
        Graph graph = new Graph();
        open.add(graph);
        Ops tf = Ops.create(graph);
        SplittableRandom rnd = new SplittableRandom(42);
        float[][] xs = new float[BATCH][widths[0]];
        float[][] ys = new float[BATCH][widths[widths.length - 1]];
        for (int i = 0; i < BATCH; i++) {
            for (int j = 0; j < widths[0]; j++) {
                xs[i][j] = (float) rnd.nextDouble();
            }
            ys[i][i % ys[i].length] = 1f;
        }
        Operand<TFloat32> h = tf.constant(xs);
        List<Variable<TFloat32>> vars = new ArrayList<>();
        long params = 0;
        for (int l = 1; l < widths.length; l++) {
            int in = widths[l - 1];
            int out = widths[l];
            float limit = (float) Math.sqrt(6.0 / (in + out));
            float[][] w = new float[in][out];
            for (float[] row : w) {
                for (int j = 0; j < out; j++) {
                    row[j] = (float) ((rnd.nextDouble() * 2 - 1) * limit);
                }
            }
            Variable<TFloat32> wv = tf.variable(tf.constant(w));
            Variable<TFloat32> bv = tf.variable(tf.constant(new float[out]));
            vars.add(wv);
            vars.add(bv);
            params += (long) in * out + out;
            Operand<TFloat32> z = tf.math.add(tf.linalg.matMul(h, wv), bv);
            h = l < widths.length - 1 ? tf.nn.relu(z) : z;
        }
        Operand<TFloat32> loss = tf.math.mean(tf.nn.softmaxCrossEntropyWithLogits(h, tf.constant(ys)).loss(), tf.constant(0));
        Gradients gradients = tf.gradients(loss, vars);
        List<Operand<TFloat32>> grads = new ArrayList<>();
        for (int i = 0; i < vars.size(); i++) {
            grads.add(gradients.<TFloat32>dy(i));
        }
        List<Operand<TFloat32>> transformed = transform.apply(tf, grads);
        List<GradAndVar<? extends TType>> pairs = new ArrayList<>();
        for (int i = 0; i < vars.size(); i++) {
            pairs.add(new GradAndVar<>(transformed.get(i).asOutput(), vars.get(i).asOutput()));
        }
        Op train = new Adam(graph, 1e-3f).applyGradients(pairs, "train");
        Session session = new Session(graph);
        open.add(session);
        session.initialize();
        return new Model(session, train, params);
    }
}
