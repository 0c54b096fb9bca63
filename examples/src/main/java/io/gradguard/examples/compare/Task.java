package io.gradguard.examples.compare;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * One of the two training problems of the comparison, with the network that learns it and the
 * hyper-parameters under which plain SGD blows up.
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
 * </ul>
 *
 * <p>Both use the mean squared error over the batch, {@code L = mean((ŷ - y)²)}, and plain SGD.
 *
 * @param id            short name used on the command line and in the report
 * @param kind          which network
 * @param inputs        input features per example (per time step for the RNN)
 * @param hidden        hidden units per layer
 * @param depth         hidden layers (MLP; 1 for the RNN)
 * @param seqLen        time steps (RNN; 1 for the MLP)
 * @param batch         examples per step
 * @param learningRate  the SGD learning rate, the same guarded and unguarded
 * @param recurrentGain the spectral-radius scale of the initial recurrent weights (RNN)
 * @param clipNorm      the guard's default global-norm clip threshold for this task
 */
public record Task(String id, Kind kind, int inputs, int hidden, int depth, int seqLen, int batch,
        double learningRate, double recurrentGain, double clipNorm) {

    /** The network family. */
    public enum Kind { MLP, RNN }

    /** The deep-MLP regression task with its default settings. */
    public static Task deepMlp() {
        return new Task("mlp", Kind.MLP, 16, 64, 8, 1, 32, 0.1, 0, 5.0);
    }

    /** The adding problem for a vanilla RNN with its default settings. */
    public static Task addingProblem() {
        return new Task("adding", Kind.RNN, 2, 32, 1, 32, 32, 0.1, 1.6, 1.0);
    }

    /** Both tasks, in the order the comparison runs them. */
    public static List<Task> all() {
        return List.of(deepMlp(), addingProblem());
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
        return kind == Kind.MLP
                ? String.format("deep MLP, %d ReLU layers x %d units, regression, batch %d, SGD lr %s", depth, hidden, batch, learningRate)
                : String.format("vanilla tanh RNN (%d units) on the adding problem, T = %d, batch %d, SGD lr %s", hidden, seqLen, batch, learningRate);
    }

    /**
     * The initial weights, generated once from the seed in the canonical {@code [in, out]} layout.
     * Every backend loads these same numbers (transposing where its layout differs).
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
