package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Norms;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.conformance.UnitNormLoops;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.LongFunction;
import org.junit.jupiter.api.Test;
import org.tensorflow.Operand;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.Adam;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;

/**
 * Real architectures built by hand in a TensorFlow graph ({@link TfNets}: a CNN with batch
 * normalization, a single-head self-attention block) trained through {@link TfGuard} with global-norm
 * clipping, adaptive clipping and accumulation; and the default layout checked on their kernels.
 */
class TfArchitecturesTest {

    private static GradientPipeline clips() {
        return GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), Transforms.adaptiveClip(0.05));
    }

    private static GradientPipeline accumulated() {
        return GradientPipeline.of(Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0), Transforms.adaptiveClip(0.05));
    }

    /**
     * The unit norms the guard computes with the default layout ({@code outputLast}) are one per output
     * channel of the HWIO convolution kernel and per column of every {@code [in, out]} matrix: equal to
     * loops over the variables' values, to 1e-5.
     */
    @Test
    void default_layout_norms_each_output_channel_and_column() {
        for (TfNets n : List.of(TfNets.cnn(1, true), TfNets.attention(1, 8))) {
            try (n; TfGuard guard = TfGuard.of(Transforms.adaptiveClip(0.05))
                    .attach(n.session, n.loss, n.variables, new GradientDescent(n.graph, 0f))) {
                Map<String, double[]> ours = new TreeMap<>();
                guard.pipeline().addListener((grads, r) -> {
                    for (GradientTensor<TfTensor> t : guard.gradients()) {
                        assertEquals(Layout.outputLast(), t.layout(), t.name());
                        ours.put(t.name(), toDoubles(guard.ops().toHostArray(Norms.unitNorms(guard.ops(), t.param(), t.layout()))));
                    }
                });
                Map<Operand<?>, Tensor> f = n.x.shape().numDimensions() == 4 ? n.patches(4, 1) : n.marked(4, 1);
                try {
                    guard.step(f, 4);
                } finally {
                    Mlp.close(f);
                }
                assertEquals(n.variables.size(), ours.size());
                for (Variable<TFloat32> v : n.variables) {
                    String name = v.op().name();
                    long[] shape = v.shape().asArray();
                    double[] loops = UnitNormLoops.unitNorms(toDoubles(n.eval(v, Map.of())), shape,
                            shape.length >= 2 ? new int[] {shape.length - 1} : new int[0]);
                    double[] norms = ours.get(name);
                    assertEquals(loops.length, norms.length, name + ": number of units");
                    for (int i = 0; i < loops.length; i++) {
                        assertEquals(loops[i], norms[i], 1e-5 * Math.max(1, loops[i]), name + " unit " + i);
                    }
                }
                if (ours.containsKey("conv_kernel")) {
                    assertEquals(4, ours.get("conv_kernel").length, "one norm per output channel of [3, 3, 2, 4]");
                }
            }
        }
    }

    /** Batch norm on batch statistics (training mode): the task is learnt on every seed tried (3). */
    @Test
    void cnn_trains_guarded_with_clipping_adaptive_clipping_and_accumulation() {
        for (long seed = 1; seed <= 3; seed++) {
            try (TfNets n = TfNets.cnn(seed, true);
                    TfGuard guard = TfGuard.of(accumulated()).attach(n.session, n.loss, n.variables, new Adam(n.graph, 0.01f))) {
                Map<Operand<?>, Tensor> eval = n.patches(96, 999);
                try {
                    double before = n.eval(n.loss, eval)[0];
                    train(guard, seed, 120, s -> n.patches(8, s));
                    assertTrue(guard.clippedCount() > 0, "the clips acted on some step (seed " + seed + ")");
                    double after = n.eval(n.loss, eval)[0];
                    double accuracy = accuracy(n.eval(n.output, eval), TfNets.patchArrays(96, 999)[1]);
                    assertTrue(after < 0.5 * before && accuracy > 0.9, "seed " + seed + ": loss " + before + " -> " + after + ", accuracy " + accuracy);
                } finally {
                    Mlp.close(eval);
                }
            }
        }
    }

    /**
     * Accumulating two micro-batches of 4 equals one batch of 8 when the batch norm uses fixed
     * statistics (inference mode); on batch statistics each micro-batch is normalized by its own, and
     * the runs part (checked too): that is batch normalization, not the guard.
     */
    @Test
    void cnn_accumulation_equals_the_full_batch_with_batch_norm_on_fixed_statistics() {
        assertTrue(maxAbsDiff(sgd(clips(), 8, false), sgd(accumulated(), 4, false)) < 1e-5, "fixed statistics: equal");
        assertTrue(maxAbsDiff(sgd(clips(), 8, true), sgd(accumulated(), 4, true)) > 1e-4, "batch statistics part the runs");
    }

    /** A one-block attention model learns the marked-value task on every seed tried (3). */
    @Test
    void attention_trains_guarded_with_clipping_adaptive_clipping_and_accumulation() {
        for (long seed = 1; seed <= 3; seed++) {
            try (TfNets n = TfNets.attention(seed, 16);
                    TfGuard guard = TfGuard.of(accumulated()).attach(n.session, n.loss, n.variables, new Adam(n.graph, 0.01f))) {
                Map<Operand<?>, Tensor> eval = n.marked(256, 999);
                try {
                    double before = n.eval(n.loss, eval)[0];
                    train(guard, seed, 400, s -> n.marked(16, s));
                    assertTrue(guard.clippedCount() > 0, "the clips acted on some step (seed " + seed + ")");
                    double after = n.eval(n.loss, eval)[0];
                    assertTrue(after < before / 3 && after < 0.25, "seed " + seed + ": loss " + before + " -> " + after);
                } finally {
                    Mlp.close(eval);
                }
            }
        }
    }

    /** {@code microBatches} guarded steps on batches drawn from {@code seed}; every second one applies. */
    private static void train(TfGuard guard, long seed, int microBatches, LongFunction<Map<Operand<?>, Tensor>> batch) {
        for (int s = 0; s < microBatches; s++) {
            Map<Operand<?>, Tensor> f = batch.apply(seed * 1000 + s);
            try {
                StepResult<TfTensor> r = guard.step(f, ((TFloat32) f.values().iterator().next()).shape().get(0));
                assertEquals(s % 2 == 1, r.applies(), "micro-batch " + s);
            } finally {
                Mlp.close(f);
            }
        }
        assertEquals(microBatches / 2, guard.stepCount());
    }

    /** The CNN's variables after 5 SGD steps of 8 examples, in micro-batches of {@code micro}. */
    private static List<float[]> sgd(GradientPipeline pipeline, int micro, boolean batchStatistics) {
        try (TfNets n = TfNets.cnn(5, batchStatistics);
                TfGuard guard = TfGuard.of(pipeline).attach(n.session, n.loss, n.variables, new GradientDescent(n.graph, 0.1f))) {
            List<float[]> initial = values(n);
            for (int s = 0; s < 5; s++) {
                float[][] all = TfNets.patchArrays(8, 50 + s);
                float[] xs = all[0];
                float[] ys = all[1];
                for (int from = 0; from < 8; from += micro) {
                    Map<Operand<?>, Tensor> f = n.feeds(Arrays.copyOfRange(xs, from * 72, (from + micro) * 72), new long[] {micro, 6, 6, 2},
                            Arrays.copyOfRange(ys, from * 3, (from + micro) * 3), new long[] {micro, 3});
                    try {
                        guard.step(f, micro);
                    } finally {
                        Mlp.close(f);
                    }
                }
            }
            assertEquals(5, guard.stepCount());
            List<float[]> out = values(n);
            assertTrue(maxAbsDiff(initial, out) > 1e-3, "training moved the variables");
            return out;
        }
    }

    private static List<float[]> values(TfNets n) {
        List<float[]> out = new ArrayList<>();
        for (Variable<TFloat32> v : n.variables) {
            out.add(n.eval(v, Map.of()));
        }
        return out;
    }

    private static double maxAbsDiff(List<float[]> a, List<float[]> b) {
        double max = 0;
        for (int i = 0; i < a.size(); i++) {
            for (int j = 0; j < a.get(i).length; j++) {
                max = Math.max(max, Math.abs(a.get(i)[j] - b.get(i)[j]));
            }
        }
        return max;
    }

    private static double accuracy(float[] scores, float[] oneHot) {
        int n = scores.length / 3;
        int hits = 0;
        for (int i = 0; i < n; i++) {
            int best = 0;
            int label = 0;
            for (int c = 1; c < 3; c++) {
                best = scores[i * 3 + c] > scores[i * 3 + best] ? c : best;
                label = oneHot[i * 3 + c] > oneHot[i * 3 + label] ? c : label;
            }
            hits += best == label ? 1 : 0;
        }
        return (double) hits / n;
    }

    private static double[] toDoubles(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            d[i] = a[i];
        }
        return d;
    }
}
