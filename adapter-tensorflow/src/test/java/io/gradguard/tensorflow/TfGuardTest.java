package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.conformance.UnitNormLoops;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.tensorflow.Operand;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;
import org.tensorflow.types.TInt32;

/** TfGuard on a real TensorFlow graph: updates, one-run vs buffered path, graph growth, bad setups (stateful transforms: {@link StatefulTrainingTest}). */
class TfGuardTest {
    private static final float LR = 0.05f;
    private Mlp mlp = new Mlp(6, 16, 3, 42);
    private final Random data = new Random(7);

    @AfterEach
    void close() {
        mlp.close();
    }

    private TfGuard guard(GradientPipeline p) {
        return TfGuard.of(p).attach(mlp.session, mlp.loss, mlp.variables, new GradientDescent(mlp.graph, LR));
    }

    private List<float[]> weights() {
        List<float[]> w = new ArrayList<>();
        for (Variable<TFloat32> v : mlp.variables) {
            w.add(mlp.value(v));
        }
        return w;
    }

    private StepResult<TfTensor> step(TfGuard g, int batch) {
        Map<Operand<?>, Tensor> f = mlp.batch(batch, data);
        try {
            return g.step(f, batch);
        } finally {
            Mlp.close(f);
        }
    }

    /** Captures the transformed gradients on the host from inside the step (a listener may read tensors). */
    private static List<float[]> capture(TfGuard g) {
        List<float[]> seen = new ArrayList<>();
        g.pipeline().addListener((grads, r) -> {
            seen.clear();
            for (GradientTensor<TfTensor> t : g.gradients()) {
                seen.add(g.ops().toHostArray(t.gradient()));
            }
        });
        return seen;
    }

    @Test
    void declared_layouts_reach_the_pipeline_and_the_others_are_output_last() {
        Variable<TFloat32> kernel = mlp.variables.get(0);
        try (TfGuard g = TfGuard.of(Transforms.adaptiveClip(0.01)).layout(kernel, Layout.outputFirst())
                .attach(mlp.session, mlp.loss, mlp.variables, new GradientDescent(mlp.graph, LR))) {
            List<GradientTensor<TfTensor>> ts = g.gradients().tensors();
            assertEquals(Layout.outputFirst(), ts.get(0).layout());
            for (GradientTensor<TfTensor> t : ts.subList(1, ts.size())) {
                assertEquals(Layout.outputLast(), t.layout(), t.name());
            }
            assertTrue(step(g, 8).applies());
            IllegalStateException late = assertThrows(IllegalStateException.class, () -> g.layout(kernel, Layout.whole()));
            assertTrue(late.getMessage().contains("before attach"), late.getMessage());
        }
    }

    /**
     * The declared layout decides the units adaptive clipping acts on, in the real graph: with a tiny
     * λ every unit is clipped to exactly λ·‖W_i‖, so under SGD each unit of Δθ/lr has that norm, the
     * rows of the kernel declared outputFirst and the columns of the one left at the default (to 1%:
     * Δθ is a float32 difference of weights about 10⁴ times larger).
     */
    @Test
    void adaptive_clipping_clips_the_declared_units() {
        double lambda = 1e-3;
        Variable<TFloat32> first = mlp.variables.get(0);
        try (TfGuard g = TfGuard.of(Transforms.adaptiveClip(lambda)).layout(first, Layout.outputFirst())
                .attach(mlp.session, mlp.loss, mlp.variables, new GradientDescent(mlp.graph, LR))) {
            List<float[]> before = weights();
            assertTrue(step(g, 8).applies());
            List<float[]> after = weights();
            for (int v : new int[] {0, 2}) {
                long[] shape = g.gradients().get(v).shape();
                int kept = v == 0 ? 0 : 1;
                double[] w = new double[before.get(v).length];
                double[] update = new double[w.length];
                for (int i = 0; i < w.length; i++) {
                    w[i] = before.get(v)[i];
                    update[i] = (before.get(v)[i] - after.get(v)[i]) / LR;
                }
                double[] wNorms = UnitNormLoops.unitNorms(w, shape, kept);
                double[] uNorms = UnitNormLoops.unitNorms(update, shape, kept);
                for (int i = 0; i < wNorms.length; i++) {
                    assertEquals(lambda * wNorms[i], uNorms[i], 1e-2 * lambda * wNorms[i], mlp.variables.get(v).op().name() + " unit " + i);
                }
            }
        }
    }

    @Test
    void a_layout_for_a_variable_not_attached_or_an_axis_it_lacks_is_refused() {
        Variable<TFloat32> kernel = mlp.variables.get(0);
        Variable<TFloat32> bias = mlp.variables.get(1);
        TfGuard other = TfGuard.of(Transforms.adaptiveClip(0.01)).layout(kernel, Layout.outputFirst());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> other.attach(mlp.session, mlp.loss, mlp.variables.subList(1, 4), new GradientDescent(mlp.graph, LR)));
        assertTrue(e.getMessage().contains("layout") && e.getMessage().contains(kernel.op().name()), e.getMessage());
        other.close();
        TfGuard axis = TfGuard.of(Transforms.adaptiveClip(0.01)).layout(kernel, Layout.outputAxis(5));
        e = assertThrows(IllegalArgumentException.class,
                () -> axis.attach(mlp.session, mlp.loss, mlp.variables, new GradientDescent(mlp.graph, LR)));
        assertTrue(e.getMessage().contains(kernel.op().name()) && e.getMessage().contains("rank 2"), e.getMessage());
        axis.close();
        assertThrows(IllegalArgumentException.class, () -> TfGuard.of(Transforms.adaptiveClip(0.01)).layout(bias, null));
    }

    @Test
    void sgd_applies_exactly_lr_times_the_clipped_gradient() {
        try (TfGuard g = guard(GradientPipeline.of(Transforms.clipByGlobalNorm(0.1)))) {
            List<float[]> seen = capture(g);
            for (int s = 0; s < 3; s++) {
                List<float[]> before = weights();
                StepResult<TfTensor> r = step(g, 8);
                assertTrue(r.applies());
                assertTrue(r.metric("clipByGlobalNorm.norm").getAsDouble() > 0.1, "the test must really clip");
                List<float[]> after = weights();
                double norm = 0;
                for (int i = 0; i < before.size(); i++) {
                    float[] gr = seen.get(i);
                    float[] expected = new float[gr.length];
                    for (int j = 0; j < gr.length; j++) {
                        expected[j] = before.get(i)[j] - gr[j] * LR;
                        norm += (double) gr[j] * gr[j];
                    }
                    assertArrayEquals(expected, after.get(i), 0f, "bit-level update of " + mlp.variables.get(i).op().name());
                }
                assertEquals(0.1, Math.sqrt(norm), 1e-6, "the applied gradient has the clipped norm");
            }
            assertTrue(g.usesGradientBuffers(), "a listener reading tensors moves gradients into buffers");
        }
    }

    @Test
    void a_stateless_pipeline_is_one_session_run_and_matches_the_buffered_path() {
        List<float[]> fusedWeights;
        try (TfGuard g = guard(GradientPipeline.of(Transforms.clipByGlobalNorm(0.1)))) {
            for (int s = 0; s < 3; s++) {
                step(g, 8);
            }
            assertFalse(g.usesGradientBuffers(), "nothing read a host value: no gradient buffers");
            assertTrue(Double.isFinite(g.lastLoss()));
            fusedWeights = weights();
        }
        try (Mlp other = new Mlp(6, 16, 3, 42)) {
            Random d = new Random(7);
            try (TfGuard g = TfGuard.of(GradientPipeline.of(Transforms.clipByGlobalNorm(0.1))).attach(other.session, other.loss, other.variables, new GradientDescent(other.graph, LR))) {
                capture(g);
                for (int s = 0; s < 3; s++) {
                    Map<Operand<?>, Tensor> f = other.batch(8, d);
                    g.step(f, 8);
                    Mlp.close(f);
                }
                assertTrue(g.usesGradientBuffers());
                for (int i = 0; i < fusedWeights.size(); i++) {
                    assertArrayEquals(fusedWeights.get(i), other.value(other.variables.get(i)), 1e-6f);
                }
            }
        }
    }

    @Test
    void the_metrics_are_readable_after_a_one_run_step_and_equal_the_listeners() {
        double[] seenByListener = new double[3];
        try (Mlp other = new Mlp(6, 16, 3, 42);
                TfGuard g = TfGuard.of(GradientPipeline.of(Transforms.clipByGlobalNorm(0.1))).attach(other.session, other.loss, other.variables, new GradientDescent(other.graph, LR))) {
            Random d = new Random(7);
            int[] s = {0};
            g.pipeline().addListener((grads, r) -> seenByListener[s[0]++] = r.metric("clipByGlobalNorm.norm").getAsDouble());
            for (int i = 0; i < 3; i++) {
                Map<Operand<?>, Tensor> f = other.batch(8, d);
                g.step(f, 8);
                Mlp.close(f);
            }
        }
        try (TfGuard g = guard(GradientPipeline.of(Transforms.zeroNonFinite(), Transforms.clipByGlobalNorm(0.1)))) {
            for (int i = 0; i < 3; i++) {
                StepResult<TfTensor> r = step(g, 8);
                assertEquals(seenByListener[i], r.metric("clipByGlobalNorm.norm").getAsDouble(), 1e-6, "norm of step " + i);
                assertTrue(r.metric("clipByGlobalNorm.coefficient").getAsDouble() < 1.0);
                // every metric the stages recorded came back with the step's one run
                assertEquals(0.0, r.metric("zeroNonFinite.nonFinite").getAsDouble());
            }
            assertFalse(g.usesGradientBuffers(), "reading metrics after the step keeps the step one session run");
        }
    }

    /** The ratios the monitor reports are ‖θ_after − θ_before‖ / ‖θ_before‖ per layer, measured on the host here. */
    @Test
    void update_ratios_are_the_measured_change_of_each_layer() {
        io.gradguard.core.monitor.RunRecorder recorder = io.gradguard.core.monitor.Sinks.memory();
        io.gradguard.core.monitor.Monitor monitor = io.gradguard.core.monitor.Monitor.builder().every(1).updateRatios(true)
                .sink(recorder).build();
        List<float[]> before;
        List<float[]> after;
        try (TfGuard g = guard(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), monitor))) {
            step(g, 8);
            before = weights();
            step(g, 8);
            after = weights();
        }
        var layers = recorder.recording().records().get(1).layers();
        assertEquals(2, layers.size(), layers.toString());
        for (var l : layers) {
            double update = 0;
            double param = 0;
            for (int i = 0; i < mlp.variables.size(); i++) {
                if (TfGraphModel.layerOf(mlp.variables.get(i).op().name()).equals(l.layer())) {
                    for (int j = 0; j < before.get(i).length; j++) {
                        double d = (double) after.get(i)[j] - before.get(i)[j];
                        update += d * d;
                        param += (double) before.get(i)[j] * before.get(i)[j];
                    }
                }
            }
            assertTrue(param > 0, "layer " + l.layer() + " has variables");
            assertEquals(Math.sqrt(update / param), l.updateRatio(), 1e-6 * Math.sqrt(update / param), "layer " + l.layer());
        }
    }

    @Test
    void the_graph_stops_growing_after_the_first_steps() {
        for (GradientPipeline p : List.of(
                GradientPipeline.of(Transforms.zeroNonFinite(), Transforms.clipByGlobalNorm(1.0), Transforms.adaptiveClip(0.1)),
                GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0)))) {
            try (TfGuard g = guard(p)) {
                capture(g);
                for (int s = 0; s < 4; s++) {
                    step(g, 4);
                }
                int ops = mlp.operationCount();
                for (int s = 0; s < 20; s++) {
                    step(g, 4);
                }
                assertEquals(ops, mlp.operationCount(), "graph operations after 4 and after 24 steps of " + p);
            }
        }
    }

    @Test
    void no_variables_is_a_clear_error() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> guard(List.of()));
        assertEquals("variables must name at least one trainable variable, got []", e.getMessage());
        IllegalStateException notAttached = assertThrows(IllegalStateException.class,
                () -> TfGuard.of(GradientPipeline.of()).step(Map.of(), 1));
        assertTrue(notAttached.getMessage().startsWith("step() needs a graph: attach the guard first"), notAttached.getMessage());
    }

    private TfGuard guard(List<? extends Operand<?>> vars) {
        return TfGuard.of(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0))).attach(mlp.session, mlp.loss, vars, new GradientDescent(mlp.graph, LR));
    }

    @Test
    void a_variable_the_loss_does_not_reach_is_named() {
        Variable<TFloat32> unused = mlp.tf.withName("unused").variable(mlp.tf.constant(new float[] {1, 2}));
        List<Operand<?>> vars = new ArrayList<>(mlp.variables);
        vars.add(unused);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> guard(vars));
        assertTrue(e.getMessage().startsWith("variables[4] must influence the loss loss") && e.getMessage().endsWith("got \"unused\""),
                e.getMessage());
    }

    @Test
    void an_integer_variable_is_named() {
        Variable<TInt32> counter = mlp.tf.withName("counter").variable(mlp.tf.constant(0));
        // make the loss depend on it so only the dtype is wrong
        Operand<TFloat32> loss = mlp.tf.math.add(mlp.loss, mlp.tf.dtypes.cast(counter, TFloat32.class));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TfGuard.of(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0))).attach(mlp.session, loss, List.of(counter), new GradientDescent(mlp.graph, LR)));
        assertEquals("variables[0] must be float16, float32 or float64 (only those have gradients to guard), got \"counter of dtype DT_INT32\"",
                e.getMessage());
    }

    @Test
    void an_operand_that_is_not_a_variable_is_named() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> guard(List.of(mlp.x)));
        assertEquals("variables[0] must be a trainable variable (tf.variable), got \"x of op type Placeholder\"", e.getMessage());
    }

    @Test
    void scoped_variable_names_under_a_slot_optimizer_are_explained() {
        try (TfGuard g = TfGuard.of(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0))).attach(mlp.session, mlp.loss, mlp.variables, new org.tensorflow.framework.optimizers.Momentum(mlp.graph, LR, 0.9f))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> step(g, 4));
            assertTrue(e.getMessage().startsWith("optimizer Momentum could not build its update: it names its slot variables after "
                    + "the trainable variables, and TensorFlow rejects the '/' in [dense/kernel, dense/bias, dense_1/kernel, dense_1/bias]; "
                    + "give the trainable variables flat names"), e.getMessage());
        }
    }

    @Test
    void a_non_scalar_loss_is_rejected() {
        Operand<TFloat32> perExample = mlp.tf.math.square(mlp.x);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TfGuard.of(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0))).attach(mlp.session, perExample, mlp.variables, new GradientDescent(mlp.graph, LR)));
        assertTrue(e.getMessage().startsWith("loss must be a scalar"), e.getMessage());
    }

    /** A scalar factor gates the multiply (Switch/Merge on factor != 1): x passes through at 1, is scaled otherwise, NaN propagates. */
    @Test
    void scaling_by_a_scalar_skips_the_multiply_at_exactly_one_and_is_exact_otherwise() {
        try (org.tensorflow.Graph graph = new org.tensorflow.Graph(); org.tensorflow.Session session = new org.tensorflow.Session(graph);
                TfOps ops = new TfOps(session)) {
            float[] x = {3f, -4f, 0.1f, Float.MIN_VALUE};
            double[][] cases = {{1.0}, {0.5}, {1.0 + 1e-12}, {Double.NaN}};
            for (double[] c : cases) {
                TfTensor t = ops.fromHost(x, new long[] {4});
                ops.scaleInPlace(t, ops.scalar(c[0]));
                float[] got = ops.toHostArray(t);
                for (int i = 0; i < x.length; i++) {
                    assertEquals(Float.floatToIntBits(x[i] * (float) c[0]), Float.floatToIntBits(got[i]), "x[" + i + "] * " + c[0]);
                }
            }
            boolean merged = false;
            for (var it = graph.operations(); it.hasNext(); ) {
                merged |= it.next().type().equals("Merge");
            }
            assertTrue(merged, "the scalar multiply is gated by Switch/Merge");
        }
    }
}
