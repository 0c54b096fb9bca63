package io.gradguard.examples.compare;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * One of the training problems of the comparison, with the network that learns it and the
 * hyper-parameters under which plain SGD blows up (or, for the LSTM, the structural remedy).
 *
 * <ul>
 *   <li>{@link Kind#MLP}: regression of a smooth function of {@code inputs} Gaussian features by a deep
 *       ReLU perceptron ({@code depth} hidden layers of {@code hidden} units, He-initialised, one linear
 *       output), trained with an aggressive learning rate.</li>
 *   <li>{@link Kind#RNN}: the adding problem (Hochreiter &amp; Schmidhuber 1997): a sequence of
 *       {@code seqLen} (value, marker) pairs, values uniform in [0, 1], exactly two markers set; the
 *       target is the sum of the two marked values. A vanilla tanh RNN
 *       {@code h_t = tanh(x_t·Wx + h_{t-1}·Wh + b)} reads it, a linear layer maps {@code h_T} to the
 *       prediction. {@code Wh} starts with spectral radius about {@code recurrentGain} (&gt; 1), the
 *       textbook setting for exploding gradients through time (Pascanu et al. 2013).</li>
 *   <li>{@link Kind#LSTM}: the adding problem at a length where the vanilla RNN does not learn, read
 *       by an LSTM (Hochreiter &amp; Schmidhuber 1997, with a forget gate, no peepholes), the
 *       structural remedy for the vanishing long-range gradient that clipping cannot fix. With
 *       {@code z_t = x_t·Wx + h_{t-1}·Wh + b} split into four {@code hidden}-wide blocks in the
 *       canonical gate order {@code i, f, g, o} (PyTorch's): {@code c_t = σ(f)⊙c_{t-1} + σ(i)⊙tanh(g)},
 *       {@code h_t = σ(o)⊙tanh(c_t)}; a linear layer maps {@code h_T} to the prediction. The gate
 *       biases start with the chrono initialisation (Tallec &amp; Ollivier 2018): each cell's forget-gate
 *       bias is {@code log(u)}, {@code u ~ U(1, T - 1)}, its input-gate bias {@code -log(u)}, so that
 *       cells start remembering over 1 to T steps and let little in; the other biases start at 0.
 *       With the common forget bias of 1 instead ({@code σ(1) ≈ 0.73} per step), the LSTM is as
 *       forgetful over 32 steps as the vanilla RNN and did not leave the plateau in 500 steps.</li>
 * </ul>
 *
 * <p>All use the mean squared error over the batch, {@code L = mean((ŷ - y)²)}, and plain SGD.
 *
 * @param id            short name used on the command line and in the report
 * @param kind          which network
 * @param inputs        input features per example (per time step for the RNN and LSTM)
 * @param hidden        hidden units per layer (LSTM: cells)
 * @param depth         hidden layers (MLP; 1 for the RNN and LSTM)
 * @param seqLen        time steps (RNN and LSTM; 1 for the MLP)
 * @param batch         examples per step
 * @param learningRate  the SGD learning rate, the same guarded and unguarded
 * @param recurrentGain the spectral-radius scale of the initial recurrent weights (RNN and LSTM)
 * @param clipNorm      the guard's default global-norm clip threshold for this task
 */
public record Task(String id, Kind kind, int inputs, int hidden, int depth, int seqLen, int batch,
        double learningRate, double recurrentGain, double clipNorm) {

    /** The network family. */
    public enum Kind {
        /** A deep ReLU perceptron. */
        MLP,
        /** A vanilla tanh RNN. */
        RNN,
        /** An LSTM (four gates, no peepholes). */
        LSTM;

        /** Whether the input is a sequence {@code [batch, time, features]}. */
        public boolean recurrent() {
            return this != MLP;
        }
    }

    /** The deep-MLP regression task with its default settings. */
    public static Task deepMlp() {
        return new Task("mlp", Kind.MLP, 16, 64, 8, 1, 32, 0.1, 0, 5.0);
    }

    /** The adding problem for a vanilla RNN with its default settings. */
    public static Task addingProblem() {
        return new Task("adding", Kind.RNN, 2, 32, 1, 32, 32, 0.1, 1.6, 1.0);
    }

    /** The adding problem at a length where the vanilla RNN does not learn, for an LSTM, with its default settings. */
    public static Task addingLstm() {
        return new Task("lstm", Kind.LSTM, 2, 16, 1, 40, 32, 0.5, 1.0, 1.0);
    }

    /** Every task, in the order the comparison runs them. */
    public static List<Task> all() {
        return List.of(deepMlp(), addingProblem(), addingLstm());
    }

    /** Batches of a seed's data over which {@link #baseline} is measured (3,200 examples at batch 32). */
    static final int BASELINE_BATCHES = 100;

    /**
     * The loss of the best constant prediction, the mean target: the variance of the targets,
     * {@code mean((y - ȳ)²)}, over the first {@value #BASELINE_BATCHES} batches of the seed's data.
     * A model that does not get clearly below it has not learned the task (adding problem: about
     * {@code 1/6}, the variance of the sum of two uniform values).
     */
    public double baseline(long seed) {
        double sum = 0;
        double sumSq = 0;
        long n = 0;
        for (int s = 0; s < BASELINE_BATCHES; s++) {
            for (float y : batch(seed, s).y()) {
                sum += y;
                sumSq += (double) y * y;
                n++;
            }
        }
        double mean = sum / n;
        return sumSq / n - mean * mean;
    }

    /** A one-line description for the report. */
    public String describe() {
        return switch (kind) {
            case MLP -> String.format("deep MLP, %d ReLU layers x %d units, regression, batch %d, SGD lr %s", depth, hidden, batch, learningRate);
            case RNN -> String.format("vanilla tanh RNN (%d units) on the adding problem, T = %d, batch %d, SGD lr %s", hidden, seqLen, batch, learningRate);
            case LSTM -> String.format("LSTM (%d cells) on the adding problem, T = %d, batch %d, SGD lr %s", hidden, seqLen, batch, learningRate);
        };
    }

    /**
     * The initial weights, generated once from the seed in the canonical {@code [in, out]} layout.
     * Every backend loads these same numbers (transposing, and for the LSTM reordering the gate
     * blocks, where its layout differs). The LSTM's are {@code lstm/Wx [inputs, 4·hidden]},
     * {@code lstm/Wh [hidden, 4·hidden]} and {@code lstm/b [4·hidden]}, column blocks in the gate order
     * {@link #LSTM_GATES}.
     */
    public Weights initialWeights(long seed) {
        SplittableRandom rnd = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + 17);
        List<Weights.Param> params = new ArrayList<>();
        if (kind == Kind.MLP) {
            int in = inputs;
            for (int l = 0; l <= depth; l++) {
                int out = l == depth ? 1 : hidden;
                String layer = "dense" + l;
                // He-normal for the ReLU layers; the linear output starts small, so the first predictions are near 0
                double std = l == depth ? 0.1 / Math.sqrt(in) : Math.sqrt(2.0 / in);
                params.add(Weights.Param.weight(layer, in, out, gaussian(rnd, in * out, std)));
                params.add(Weights.Param.bias(layer, out, new float[out]));
                in = out;
            }
        } else if (kind == Kind.LSTM) {
            int gates = 4 * hidden;
            params.add(Weights.Param.of("lstm", "Wx", io.gradguard.core.Role.WEIGHT, new long[] {inputs, gates},
                    gaussian(rnd, inputs * gates, 1.0 / Math.sqrt(inputs))));
            params.add(Weights.Param.of("lstm", "Wh", io.gradguard.core.Role.WEIGHT, new long[] {hidden, gates},
                    gaussian(rnd, hidden * gates, recurrentGain / Math.sqrt(hidden))));
            // chrono initialisation (Tallec & Ollivier 2018): forget-gate bias log(U(1, T - 1)), input-gate bias its negative
            float[] b = new float[gates];
            for (int j = 0; j < hidden; j++) {
                double forget = Math.log(1 + rnd.nextDouble() * (seqLen - 2));
                b[hidden + j] = (float) forget;
                b[j] = (float) -forget;
            }
            params.add(Weights.Param.bias("lstm", gates, b));
            params.add(Weights.Param.weight("out", hidden, 1, gaussian(rnd, hidden, 1.0 / Math.sqrt(hidden))));
            params.add(Weights.Param.bias("out", 1, new float[1]));
        } else {
            params.add(Weights.Param.of("rnn", "Wx", io.gradguard.core.Role.WEIGHT, new long[] {inputs, hidden},
                    gaussian(rnd, inputs * hidden, 1.0 / Math.sqrt(inputs))));
            // entries N(0, g²/H): spectral radius ≈ g (circular law)
            params.add(Weights.Param.of("rnn", "Wh", io.gradguard.core.Role.WEIGHT, new long[] {hidden, hidden},
                    gaussian(rnd, hidden * hidden, recurrentGain / Math.sqrt(hidden))));
            params.add(Weights.Param.bias("rnn", hidden, new float[hidden]));
            params.add(Weights.Param.weight("out", hidden, 1, gaussian(rnd, hidden, 1.0 / Math.sqrt(hidden))));
            params.add(Weights.Param.bias("out", 1, new float[1]));
        }
        return new Weights(params);
    }

    /**
     * The canonical order of the LSTM's four gate blocks along the output axis of {@code Wx},
     * {@code Wh} and {@code b}: input gate, forget gate, cell candidate, output gate (PyTorch's and
     * DJL's order).
     */
    public static final List<String> LSTM_GATES = List.of("i", "f", "g", "o");

    /**
     * The batch for one training step, the same for every backend: a pure function of the seed and
     * the step index.
     */
    public Batch batch(long seed, long step) {
        SplittableRandom rnd = new SplittableRandom(seed * 0xBF58476D1CE4E5B9L + step * 0x94D049BB133111EBL + 3);
        return kind == Kind.MLP ? mlpBatch(rnd, teacher(seed)) : addingBatch(rnd);
    }

    /** Two random unit vectors: every seed's targets have the same scale (variance about 1). */
    private float[][] teacher(long seed) {
        SplittableRandom rnd = new SplittableRandom(seed + 0x5DEECE66DL);
        return new float[][] {unit(gaussian(rnd, inputs, 1.0)), unit(gaussian(rnd, inputs, 1.0))};
    }

    private static float[] unit(float[] v) {
        double norm = 0;
        for (float x : v) {
            norm += (double) x * x;
        }
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (v[i] / Math.sqrt(norm));
        }
        return v;
    }

    /** y = sin(2·a·x) + 0.5·(b·x)²  with x ~ N(0, I) and unit a, b: smooth, non-linear, variance about 1. */
    private Batch mlpBatch(SplittableRandom rnd, float[][] teacher) {
        float[] x = gaussian(rnd, batch * inputs, 1.0);
        float[] y = new float[batch];
        for (int i = 0; i < batch; i++) {
            double a = 0;
            double b = 0;
            for (int j = 0; j < inputs; j++) {
                a += teacher[0][j] * x[i * inputs + j];
                b += teacher[1][j] * x[i * inputs + j];
            }
            y[i] = (float) (Math.sin(2 * a) + 0.5 * b * b);
        }
        return new Batch(x, new long[] {batch, inputs}, y);
    }

    /** x[i, t] = (value, marker): one marked position in each half of the sequence. */
    private Batch addingBatch(SplittableRandom rnd) {
        float[] x = new float[batch * seqLen * 2];
        float[] y = new float[batch];
        for (int i = 0; i < batch; i++) {
            int first = rnd.nextInt(seqLen / 2);
            int second = seqLen / 2 + rnd.nextInt(seqLen - seqLen / 2);
            for (int t = 0; t < seqLen; t++) {
                float v = (float) rnd.nextDouble();
                int at = (i * seqLen + t) * 2;
                x[at] = v;
                if (t == first || t == second) {
                    x[at + 1] = 1f;
                    y[i] += v;
                }
            }
        }
        return new Batch(x, new long[] {batch, seqLen, 2}, y);
    }

    private static float[] gaussian(SplittableRandom rnd, int n, double std) {
        float[] out = new float[n];
        for (int i = 0; i < n; i += 2) {
            // Box-Muller: two normals per pair of uniforms
            double u = 1.0 - rnd.nextDouble();
            double v = rnd.nextDouble();
            double r = Math.sqrt(-2 * Math.log(u));
            out[i] = (float) (std * r * Math.cos(2 * Math.PI * v));
            if (i + 1 < n) {
                out[i + 1] = (float) (std * r * Math.sin(2 * Math.PI * v));
            }
        }
        return out;
    }

}
