package io.gradguard.core.conformance;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Layout;
import io.gradguard.core.NormType;
import io.gradguard.core.Role;
import io.gradguard.core.Scope;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepListener;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.spi.TensorOps;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.DisplayNameGeneration;
import org.junit.jupiter.api.DisplayNameGenerator;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;

/**
 * The stateless half of the GradGuard conformance kit, and the helpers both halves use. Backends
 * extend {@link ConformanceKit}, which adds the stateful transforms and checkpoints.
 *
 * <p>A backend runs the kit by extending {@link ConformanceKit} and returning its {@link TensorOps} (about twenty
 * lines, see {@code ReferenceConformanceTest}). The figures come from ../shared/REFERENCE-VECTORS.md
 * (Optax, TensorFlow, Keras, DL4J and PyTorch tests) plus edge cases. A capability the backend
 * lacks (float64 tensors, float64 accumulation) is reported as skipped by an assumption, never as
 * passed. Tolerance: 1e-6 relative (float32 paths), unless a test says otherwise.
 *
 * @param <T> the backend's tensor type
 */
@DisplayNameGeneration(DisplayNameGenerator.ReplaceUnderscores.class)
public abstract class StatelessConformance<T> {

    /** The backend under test. */
    protected abstract TensorOps<T> ops();

    /** Called after each test; adapters free the test's tensors here (close a manager scope). */
    protected void cleanUp() {
    }

    protected final List<T> created = new ArrayList<>();

    @AfterEach
    void releaseTensors() {
        for (T t : created) {
            ops().release(t);
        }
        created.clear();
        cleanUp();
    }

    // ---- helpers ------------------------------------------------------------------------------

    /** A float32 tensor of the backend. */
    protected T tensor(long[] shape, float... data) {
        T t = ops().fromHost(data, shape);
        created.add(t);
        return t;
    }

    protected T vector(float... data) {
        return tensor(new long[] {data.length}, data);
    }

    protected T matrix(int rows, int cols, float... data) {
        return tensor(new long[] {rows, cols}, data);
    }

    protected GradientTensor<T> grad(String name, T g) {
        return new GradientTensor<>(name, ops().shape(g), Role.OTHER, name, Layout.outputFirst(), g);
    }

    protected GradientTensor<T> grad(String name, String layer, Role role, Layout layout, T g, T param) {
        return new GradientTensor<>(name, ops().shape(g), role, layer, layout, g, param);
    }

    @SafeVarargs
    protected final GradientSet<T> set(GradientTensor<T>... ts) {
        return GradientSet.of(List.of(ts));
    }

    /** Runs a one-stage pipeline once. */
    protected StepResult<T> run(GradientTransform t, GradientSet<T> g) {
        return GradientPipeline.of(t).step(g, ops(), StepContext.ofBatch(1));
    }

    protected float[] values(T t) {
        return ops().toHostArray(t);
    }

    protected static void assertClose(double[] expected, float[] actual, double rel) {
        assertEquals(expected.length, actual.length, "length");
        for (int i = 0; i < expected.length; i++) {
            double tol = rel * Math.max(Math.abs(expected[i]), 1e-30) + 1e-38;
            assertEquals(expected[i], actual[i], tol, "element " + i);
        }
    }

    protected static void assertClose(double[] expected, float[] actual) {
        assertClose(expected, actual, 1e-6);
    }

    protected static void assertClose(double expected, double actual, double rel) {
        assertEquals(expected, actual, rel * Math.abs(expected) + 1e-12);
    }

    protected double metric(StepResult<T> r, String key) {
        return r.metric(key).orElseThrow(() -> new AssertionError("no metric " + key + " in " + r.metricNames()));
    }

    /** Fixture A (Optax clipping test): U = ([500,5],[300,3]). */
    protected GradientSet<T> fixtureA() {
        return set(grad("u0", vector(500, 5)), grad("u1", vector(300, 3)));
    }

    /** Fixture B (TensorFlow clip_ops_test): x0 = [[-2,0,0],[4,0,0]], x1 = [1,-2]; global norm 5. */
    protected GradientSet<T> fixtureB() {
        return set(grad("x0", matrix(2, 3, -2, 0, 0, 4, 0, 0)), grad("x1", vector(1, -2)));
    }

    /** Fixture D (DL4J semantics): one layer, W = [[3,4],[0,0]], b = [12,0]; layer norm 13. */
    protected GradientSet<T> fixtureD() {
        return set(grad("0_W", "0", Role.WEIGHT, Layout.outputLast(), matrix(2, 2, 3, 4, 0, 0), null),
                grad("0_b", "0", Role.BIAS, Layout.outputLast(), vector(12, 0), null));
    }

    // ---- the SPI's contracts ------------------------------------------------------------------

    @Nested
    class Contracts {
        /** A signalling NaN: any arithmetic on it (x · 1 included) returns a quiet NaN with other bits. */
        static final int SIGNALLING_NAN = 0x7f800001;

        @Test
        void scaling_by_exactly_one_changes_no_bit_and_makes_no_pass() {
            float[] data = {Float.intBitsToFloat(SIGNALLING_NAN), -0f, 1.5f, Float.POSITIVE_INFINITY, Float.MIN_VALUE};
            T x = vector(data);
            int[] before = bits(values(x));
            org.junit.jupiter.api.Assumptions.assumeTrue(before[0] == SIGNALLING_NAN,
                    "this backend does not keep a signalling NaN through fromHost/toHostArray, so a pass cannot be seen");
            ops().scaleInPlace(x, ops().scalar(1.0));
            assertArrayEquals(before, bits(values(x)), "scaling by exactly 1 must not touch the tensor (no pass)");
        }

        private int[] bits(float[] v) {
            int[] b = new int[v.length];
            for (int i = 0; i < v.length; i++) {
                b[i] = Float.floatToRawIntBits(v[i]);
            }
            return b;
        }
    }

    // ---- clip by value ------------------------------------------------------------------------

    @Nested
    class ClipByValue {
        @Test
        void a_threshold_of_1e6_leaves_fixture_A_unchanged() {
            GradientSet<T> g = fixtureA();
            run(Transforms.clipByValue(1e6), g);
            assertClose(new double[] {500, 5}, values(g.get(0).gradient()));
            assertClose(new double[] {300, 3}, values(g.get(1).gradient()));
        }

        @Test
        void a_threshold_of_1_turns_fixture_A_into_ones() {
            GradientSet<T> g = fixtureA();
            run(Transforms.clipByValue(1.0), g);
            assertClose(new double[] {1, 1}, values(g.get(0).gradient()));
            assertClose(new double[] {1, 1}, values(g.get(1).gradient()));
        }

        @Test
        void is_symmetric_so_large_negative_values_are_clipped_too() {
            GradientSet<T> g = set(grad("g", vector(-100, -0.5f, 0.5f, 100)));
            run(Transforms.clipByValue(1.0), g);
            assertClose(new double[] {-1, -0.5, 0.5, 1}, values(g.get(0).gradient()));
        }

        @Test
        void keras_value_clip_1_on_100_100_gives_ones() {
            GradientSet<T> g = set(grad("g", vector(100, 100)));
            run(Transforms.clipByValue(1.0), g);
            assertClose(new double[] {1, 1}, values(g.get(0).gradient()));
        }

        @Test
        void asymmetric_bounds_are_honoured() {
            GradientSet<T> g = set(grad("g", matrix(2, 2, -3, -0.25f, 1, 7)));
            run(Transforms.clipByValue(-0.5, 2.0), g);
            assertClose(new double[] {-0.5, -0.25, 1, 2}, values(g.get(0).gradient()));
        }

        @Test
        void nan_stays_nan_and_infinities_are_clipped() {
            GradientSet<T> g = set(grad("g", vector(Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY)));
            run(Transforms.clipByValue(2.0), g);
            float[] v = values(g.get(0).gradient());
            assertTrue(Float.isNaN(v[0]));
            assertEquals(2f, v[1]);
            assertEquals(-2f, v[2]);
        }
    }

    // ---- clip by global norm ------------------------------------------------------------------

    @Nested
    class ClipByGlobalNorm {
        @Test
        void fixture_A_clipped_to_1_matches_the_derived_vector_and_reports_the_norm() {
            GradientSet<T> g = fixtureA();
            StepResult<T> r = run(Transforms.clipByGlobalNorm(1.0), g);
            assertClose(583.1243435151717, metric(r, "clipByGlobalNorm.norm"), 1e-6);
            assertClose(new double[] {0.8574500543, 0.0085745005}, values(g.get(0).gradient()));
            assertClose(new double[] {0.5144700326, 0.0051447003}, values(g.get(1).gradient()));
        }

        @Test
        void fixture_A_clipped_to_half_matches_the_derived_vector() {
            GradientSet<T> g = fixtureA();
            run(Transforms.clipByGlobalNorm(0.5), g);
            assertClose(new double[] {0.4287250271, 0.0042872503}, values(g.get(0).gradient()));
            assertClose(new double[] {0.2572350163, 0.0025723502}, values(g.get(1).gradient()));
        }

        @Test
        void output_norm_is_c_to_6_places_and_clipping_is_idempotent_for_c_1_over_i() {
            for (int i = 1; i <= 50; i++) {
                double c = 1.0 / i;
                GradientSet<T> g = fixtureA();
                run(Transforms.clipByGlobalNorm(c), g);
                float[] a = values(g.get(0).gradient());
                float[] b = values(g.get(1).gradient());
                double n = Math.sqrt(a[0] * (double) a[0] + a[1] * (double) a[1] + b[0] * (double) b[0] + b[1] * (double) b[1]);
                assertEquals(c, n, 1e-6, "norm after clip to " + c);
                run(Transforms.clipByGlobalNorm(c), g);
                assertArrayEquals(a, values(g.get(0).gradient()), (float) (1e-6 * c), "idempotent at c=" + c);
                assertArrayEquals(b, values(g.get(1).gradient()), (float) (1e-6 * c), "idempotent at c=" + c);
            }
        }

        @Test
        void fixture_B_clipped_to_4_scales_by_4_over_5_across_mixed_shapes() {
            GradientSet<T> g = fixtureB();
            StepResult<T> r = run(Transforms.clipByGlobalNorm(4.0), g);
            assertClose(new double[] {-1.6, 0, 0, 3.2, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {0.8, -1.6}, values(g.get(1).gradient()));
            assertClose(5.0, metric(r, "clipByGlobalNorm.norm"), 1e-6);
            assertClose(0.8, metric(r, "clipByGlobalNorm.coefficient"), 1e-6);
        }

        @Test
        void fixture_B_clipped_to_6_is_unchanged() {
            GradientSet<T> g = fixtureB();
            StepResult<T> r = run(Transforms.clipByGlobalNorm(6.0), g);
            assertClose(new double[] {-2, 0, 0, 4, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {1, -2}, values(g.get(1).gradient()));
            assertEquals(1.0, metric(r, "clipByGlobalNorm.coefficient"), 1e-7);
        }

        @Test
        void all_zero_gradients_stay_zero_with_norm_0_and_no_nan() {
            GradientSet<T> g = set(grad("a", matrix(2, 3, 0, 0, 0, 0, 0, 0)), grad("b", vector(0, 0)));
            StepResult<T> r = run(Transforms.clipByGlobalNorm(4.0), g);
            assertClose(new double[] {0, 0, 0, 0, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {0, 0}, values(g.get(1).gradient()));
            assertEquals(0.0, metric(r, "clipByGlobalNorm.norm"));
            assertEquals(1.0, metric(r, "clipByGlobalNorm.coefficient"));
        }

        @Test
        void keras_global_clip_1_on_50_100() {
            GradientSet<T> g = set(grad("g", vector(50, 100)));
            run(Transforms.clipByGlobalNorm(1.0), g);
            assertClose(new double[] {0.4472136, 0.8944272}, values(g.get(0).gradient()));
        }

        @Test
        void l1_norm_of_fixture_B_is_9_and_clipping_to_4_5_halves_it() {
            GradientSet<T> g = fixtureB();
            StepResult<T> r = run(Transforms.clipByGlobalNorm(4.5, NormType.L1), g);
            assertClose(9.0, metric(r, "clipByGlobalNorm.norm"), 1e-6);
            assertClose(new double[] {-1, 0, 0, 2, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {0.5, -1}, values(g.get(1).gradient()));
        }

        @Test
        void infinity_norm_of_fixture_B_is_4_and_clipping_to_2_halves_it() {
            GradientSet<T> g = fixtureB();
            StepResult<T> r = run(Transforms.clipByGlobalNorm(2.0, NormType.INF), g);
            assertClose(4.0, metric(r, "clipByGlobalNorm.norm"), 1e-6);
            assertClose(new double[] {-1, 0, 0, 2, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {0.5, -1}, values(g.get(1).gradient()));
        }

        @Test
        void a_single_element_is_clipped_to_c() {
            GradientSet<T> g = set(grad("g", vector(-3)));
            run(Transforms.clipByGlobalNorm(1.0), g);
            assertClose(new double[] {-1}, values(g.get(0).gradient()));
        }

        @Test
        void an_empty_gradient_set_is_a_no_op_with_norm_0() {
            GradientSet<T> g = set();
            StepResult<T> r = run(Transforms.clipByGlobalNorm(1.0), g);
            assertEquals(0.0, metric(r, "clipByGlobalNorm.norm"));
            assertTrue(r.applies());
        }

        @Test
        void an_empty_tensor_beside_a_full_one_is_harmless() {
            GradientSet<T> g = set(grad("empty", tensor(new long[] {0, 3})), grad("g", vector(3, 4)));
            StepResult<T> r = run(Transforms.clipByGlobalNorm(1.0), g);
            assertClose(5.0, metric(r, "clipByGlobalNorm.norm"), 1e-6);
            assertClose(new double[] {0.6, 0.8}, values(g.get(1).gradient()));
        }

        @Test
        void huge_1e30_values_are_clipped_without_overflow() {
            assumeTrue(ops().accumulatesInDouble(), "backend accumulates norms in float32: Σx² of 1e30 overflows");
            GradientSet<T> g = set(grad("g", vector(1e30f, -1e30f)));
            StepResult<T> r = run(Transforms.clipByGlobalNorm(1.0), g);
            assertClose(Math.sqrt(2) * 1e30, metric(r, "clipByGlobalNorm.norm"), 1e-6);
            assertClose(new double[] {Math.sqrt(0.5), -Math.sqrt(0.5)}, values(g.get(0).gradient()));
        }

        @Test
        void tiny_1e_30_values_are_left_alone_and_their_norm_does_not_underflow() {
            GradientSet<T> g = set(grad("g", vector(1e-30f, 1e-30f)));
            StepResult<T> r = run(Transforms.clipByGlobalNorm(1.0), g);
            assertClose(new double[] {1e-30, 1e-30}, values(g.get(0).gradient()));
            assumeTrue(ops().accumulatesInDouble(), "backend accumulates norms in float32: Σx² of 1e-30 underflows");
            assertClose(Math.sqrt(2) * 1e-30, metric(r, "clipByGlobalNorm.norm"), 1e-6);
        }

        @Test
        void a_nan_gradient_makes_the_norm_nan() {
            GradientSet<T> g = set(grad("g", vector(Float.NaN, 1)));
            StepResult<T> r = run(Transforms.clipByGlobalNorm(1.0), g);
            assertTrue(Double.isNaN(metric(r, "clipByGlobalNorm.norm")));
        }

        @Test
        void float64_inputs_are_clipped_in_float64() {
            assumeTrue(ops().supportsFloat64(), "backend has no float64 tensors");
            T x = ops().fromHost(new double[] {500, 5, 300, 3}, new long[] {4});
            created.add(x);
            GradientSet<T> g = set(grad("g", x));
            run(Transforms.clipByGlobalNorm(1.0), g);
            double[] v = ops().toHostDoubles(x);
            assertEquals(0.8574500543, v[0], 1e-10);
            assertEquals(0.0051447003, v[3], 1e-10);
        }
    }

    // ---- per-tensor and per-layer norm clipping ---------------------------------------------

    @Nested
    class ClipByTensorAndLayerNorm {
        @Test
        void keras_per_tensor_clip_1_on_100_100() {
            GradientSet<T> g = set(grad("g", vector(100, 100)));
            run(Transforms.clipByNorm(1.0), g);
            assertClose(new double[] {0.70711, 0.70711}, values(g.get(0).gradient()), 1e-5);
        }

        @Test
        void per_tensor_clip_5_on_fixture_D_leaves_W_at_exactly_5_and_clips_b() {
            GradientSet<T> g = fixtureD();
            StepResult<T> r = run(Transforms.clipByNorm(5.0), g);
            assertClose(new double[] {3, 4, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {5, 0}, values(g.get(1).gradient()));
            assertClose(12.0, metric(r, "clipByNorm.norm.0_b"), 1e-6);
        }

        @Test
        void per_layer_clip_5_on_fixture_D_scales_both_by_5_over_13() {
            GradientSet<T> g = fixtureD();
            StepResult<T> r = run(Transforms.clipByLayerNorm(5.0), g);
            double k = 5.0 / 13.0;
            assertClose(new double[] {3 * k, 4 * k, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {12 * k, 0}, values(g.get(1).gradient()));
            assertClose(13.0, metric(r, "clipByLayerNorm.norm.0"), 1e-6);
        }

        @Test
        void layers_are_clipped_independently() {
            GradientSet<T> g = set(grad("0_W", "0", Role.WEIGHT, Layout.outputLast(), vector(3, 4), null),
                    grad("1_W", "1", Role.WEIGHT, Layout.outputLast(), vector(0.3f, 0.4f), null));
            run(Transforms.clipByLayerNorm(1.0), g);
            assertClose(new double[] {0.6, 0.8}, values(g.get(0).gradient()));
            assertClose(new double[] {0.3, 0.4}, values(g.get(1).gradient()));
        }

        @Test
        void block_rms_clip_1_on_fixture_A_gives_the_derived_vector() {
            GradientSet<T> g = fixtureA();
            run(Transforms.clipByBlockRms(1.0), g);
            assertClose(new double[] {1.414142857, 0.0141414286}, values(g.get(0).gradient()));
            assertClose(new double[] {1.414142857, 0.0141414286}, values(g.get(1).gradient()));
        }
    }

    // ---- adaptive gradient clipping -----------------------------------------------------------

    @Nested
    class AdaptiveClip {
        private GradientSet<T> fixtureAWithParams() {
            return set(grad("u0", "0", Role.OTHER, Layout.outputLast(), vector(500, 5), vector(1, 2)),
                    grad("u1", "1", Role.OTHER, Layout.outputLast(), vector(300, 3), vector(3, 4)));
        }

        @Test
        void fixture_A_vectors_with_lambda_1_match_the_derived_values() {
            GradientSet<T> g = fixtureAWithParams();
            run(Transforms.adaptiveClip(1.0), g);
            assertClose(new double[] {2.2359561825, 0.0223595618}, values(g.get(0).gradient()));
            assertClose(new double[] {4.9997500187, 0.0499975002}, values(g.get(1).gradient()));
        }

        @Test
        void fixture_A_vectors_with_lambda_0_1_match_the_derived_values() {
            GradientSet<T> g = fixtureAWithParams();
            run(Transforms.adaptiveClip(0.1), g);
            assertClose(new double[] {0.2235956, 0.0022360}, values(g.get(0).gradient()), 2e-5);
            assertClose(new double[] {0.4999750, 0.0049998}, values(g.get(1).gradient()), 2e-5);
        }

        @Test
        void a_matrix_with_column_units_is_clipped_per_column() {
            GradientSet<T> g = set(grad("w", "0", Role.WEIGHT, Layout.outputLast(), matrix(2, 2, 1, 2, 3, 4), matrix(2, 2, 1, 1, 1, 1)));
            run(Transforms.adaptiveClip(1.0), g);
            assertClose(new double[] {0.4472135955, 0.632455532, 1.3416407865, 1.2649110641}, values(g.get(0).gradient()));
        }

        @Test
        void the_same_matrix_in_output_first_layout_is_clipped_per_row() {
            // the transpose of the previous test, as PyTorch/DJL lay it out
            GradientSet<T> g = set(grad("w", "0", Role.WEIGHT, Layout.outputFirst(), matrix(2, 2, 1, 3, 2, 4), matrix(2, 2, 1, 1, 1, 1)));
            run(Transforms.adaptiveClip(1.0), g);
            assertClose(new double[] {0.4472135955, 1.3416407865, 0.632455532, 1.2649110641}, values(g.get(0).gradient()));
        }

        @Test
        void a_5d_conv_like_kernel_of_twos_with_lambda_half_becomes_all_halves() {
            long[] shape = {2, 2, 2, 3, 4};
            float[] twos = new float[96];
            float[] ones = new float[96];
            java.util.Arrays.fill(twos, 2f);
            java.util.Arrays.fill(ones, 1f);
            GradientSet<T> g = set(grad("k", "conv", Role.WEIGHT, Layout.outputLast(), tensor(shape, twos), tensor(shape, ones)));
            run(Transforms.adaptiveClip(0.5), g);
            float[] v = values(g.get(0).gradient());
            for (float x : v) {
                assertEquals(0.5f, x, 1e-6f);
            }
        }

        @Test
        void small_gradients_are_left_alone() {
            GradientSet<T> g = set(grad("w", "0", Role.WEIGHT, Layout.outputLast(), vector(0.001f, 0.002f), vector(1, 1)));
            run(Transforms.adaptiveClip(0.1), g);
            assertClose(new double[] {0.001, 0.002}, values(g.get(0).gradient()));
        }

        @Test
        void a_gradient_without_its_parameter_is_a_clear_error() {
            GradientSet<T> g = set(grad("w", vector(1, 2)));
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> run(Transforms.adaptiveClip(0.1), g));
            assertTrue(e.getMessage().contains("w"), e.getMessage());
        }

        @Test
        void a_parameter_of_another_shape_is_rejected_naming_it() {
            GradientSet<T> g = set(grad("w", "0", Role.WEIGHT, Layout.outputLast(), vector(1, 2), vector(1, 2, 3)));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> run(Transforms.adaptiveClip(0.1), g));
            assertTrue(e.getMessage().contains("param of w"), e.getMessage());
        }
    }

    // ---- normalization ------------------------------------------------------------------------

    @Nested
    class Normalize {
        @Test
        void per_layer_divides_fixture_D_by_13() {
            GradientSet<T> g = fixtureD();
            run(Transforms.normalize(Scope.LAYER), g);
            assertClose(new double[] {3 / 13.0, 4 / 13.0, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {12 / 13.0, 0}, values(g.get(1).gradient()));
        }

        @Test
        void the_norm_and_coefficient_are_recorded_so_monitors_see_the_norm_before() {
            GradientSet<T> g = set(grad("g", vector(30, 40)));
            StepResult<T> r = run(Transforms.normalize(Scope.GLOBAL), g);
            assertClose(50.0, metric(r, "normalizeGlobal.norm"), 1e-6);
            assertClose(0.02, metric(r, "normalizeGlobal.coefficient"), 1e-6);
        }

        @Test
        void per_tensor_gives_each_tensor_unit_norm() {
            GradientSet<T> g = fixtureD();
            run(Transforms.normalize(Scope.TENSOR), g);
            assertClose(new double[] {0.6, 0.8, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {1, 0}, values(g.get(1).gradient()));
        }

        @Test
        void global_gives_the_whole_set_unit_norm() {
            GradientSet<T> g = fixtureB();
            run(Transforms.normalize(Scope.GLOBAL), g);
            assertClose(new double[] {-0.4, 0, 0, 0.8, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {0.2, -0.4}, values(g.get(1).gradient()));
        }

        @Test
        void zero_gradients_stay_zero_instead_of_nan() {
            GradientSet<T> g = set(grad("g", vector(0, 0, 0)));
            run(Transforms.normalize(Scope.TENSOR), g);
            assertClose(new double[] {0, 0, 0}, values(g.get(0).gradient()));
        }

        @Test
        void tiny_gradients_are_scaled_up_to_unit_norm() {
            assumeTrue(ops().accumulatesInDouble(), "backend accumulates norms in float32: Σx² of 1e-30 underflows");
            GradientSet<T> g = set(grad("g", vector(3e-30f, 4e-30f)));
            run(Transforms.normalize(Scope.TENSOR), g);
            assertClose(new double[] {0.6, 0.8}, values(g.get(0).gradient()), 1e-5);
        }
    }

    // ---- centralization -----------------------------------------------------------------------

    @Nested
    class Centralize {
        @Test
        void a_vector_is_unchanged() {
            GradientSet<T> g = set(grad("b", vector(1, 2)));
            run(Transforms.centralize(), g);
            assertClose(new double[] {1, 2}, values(g.get(0).gradient()));
        }

        @Test
        void each_output_row_loses_its_mean() {
            GradientSet<T> g = set(grad("w", "0", Role.WEIGHT, Layout.outputFirst(), matrix(2, 2, 1, 2, 3, 4), null));
            run(Transforms.centralize(), g);
            assertClose(new double[] {-0.5, 0.5, -0.5, 0.5}, values(g.get(0).gradient()));
        }

        @Test
        void a_2_by_3_matrix_centres_each_row() {
            GradientSet<T> g = set(grad("w", "0", Role.WEIGHT, Layout.outputFirst(), matrix(2, 3, 1, 2, 3, 4, 5, 6), null));
            run(Transforms.centralize(), g);
            assertClose(new double[] {-1, 0, 1, -1, 0, 1}, values(g.get(0).gradient()));
        }

        @Test
        void the_output_last_layout_centres_each_column() {
            GradientSet<T> g = set(grad("w", "0", Role.WEIGHT, Layout.outputLast(), matrix(3, 2, 1, 4, 2, 5, 3, 6), null));
            run(Transforms.centralize(), g);
            assertClose(new double[] {-1, -1, 0, 0, 1, 1}, values(g.get(0).gradient()));
        }
    }

    // ---- non-finite values --------------------------------------------------------------------

    @Nested
    class ZeroNonFinite {
        @Test
        void zero_nan_matches_the_optax_vectors_and_flags_the_tensors() {
            GradientSet<T> g = set(grad("a", vector(1, 1, 1)), grad("b", vector(1, Float.NaN, Float.NaN)),
                    grad("c", vector(Float.NaN, 1, 1)));
            StepResult<T> r = run(Transforms.zeroNaN(), g);
            assertClose(new double[] {1, 1, 1}, values(g.get(0).gradient()));
            assertClose(new double[] {1, 0, 0}, values(g.get(1).gradient()));
            assertClose(new double[] {0, 1, 1}, values(g.get(2).gradient()));
            assertEquals(0.0, metric(r, "zeroNaN.nonFinite.a"));
            assertEquals(2.0, metric(r, "zeroNaN.nonFinite.b"));
            assertEquals(1.0, metric(r, "zeroNaN.nonFinite.c"));
            assertEquals(3.0, metric(r, "zeroNaN.nonFinite"));
        }

        @Test
        void zero_nan_keeps_infinities() {
            GradientSet<T> g = set(grad("a", vector(Float.POSITIVE_INFINITY, Float.NaN, Float.NEGATIVE_INFINITY)));
            run(Transforms.zeroNaN(), g);
            float[] v = values(g.get(0).gradient());
            assertEquals(Float.POSITIVE_INFINITY, v[0]);
            assertEquals(0f, v[1]);
            assertEquals(Float.NEGATIVE_INFINITY, v[2]);
        }

        @Test
        void zero_non_finite_clears_nan_and_both_infinities() {
            GradientSet<T> g = set(grad("a", vector(Float.POSITIVE_INFINITY, Float.NaN, Float.NEGATIVE_INFINITY, 2)));
            StepResult<T> r = run(Transforms.zeroNonFinite(), g);
            assertClose(new double[] {0, 0, 0, 2}, values(g.get(0).gradient()));
            assertEquals(3.0, metric(r, "zeroNonFinite.nonFinite"));
        }

        @Test
        void huge_finite_values_are_not_touched() {
            GradientSet<T> g = set(grad("a", vector(3e38f, -3e38f)));
            StepResult<T> r = run(Transforms.zeroNonFinite(), g);
            assertClose(new double[] {3e38, -3e38}, values(g.get(0).gradient()));
            assertEquals(0.0, metric(r, "zeroNonFinite.nonFinite"));
        }
    }

    // ---- masking ------------------------------------------------------------------------------

    @Nested
    class Masking {
        @Test
        void a_name_pattern_leaves_other_tensors_untouched() {
            GradientSet<T> g = fixtureD();
            run(Transforms.matching("_W$", Transforms.clipByValue(1.0)), g);
            assertClose(new double[] {1, 1, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {12, 0}, values(g.get(1).gradient()));
        }

        @Test
        void weights_only_skips_biases() {
            GradientSet<T> g = fixtureD();
            run(Transforms.masked(Transforms.weightsOnly(), Transforms.clipByGlobalNorm(1.0)), g);
            assertClose(new double[] {0.6, 0.8, 0, 0}, values(g.get(0).gradient()));
            assertClose(new double[] {12, 0}, values(g.get(1).gradient()));
        }

        @Test
        void a_mask_that_matches_nothing_is_a_no_op() {
            GradientSet<T> g = fixtureD();
            run(Transforms.matching("^nothing$", Transforms.clipByGlobalNorm(1.0)), g);
            assertClose(new double[] {3, 4, 0, 0}, values(g.get(0).gradient()));
        }
    }

    // ---- pipelines ----------------------------------------------------------------------------

    @Nested
    class Pipelines {
        @Test
        void stages_run_in_order() {
            // zero the NaN first, then clip: the clip sees a finite norm
            GradientSet<T> g = set(grad("g", vector(Float.NaN, 3, 4)));
            StepResult<T> r = GradientPipeline.of(Transforms.zeroNonFinite(), Transforms.clipByGlobalNorm(1.0))
                    .step(g, ops(), StepContext.ofBatch(1));
            assertClose(new double[] {0, 0.6, 0.8}, values(g.get(0).gradient()));
            assertClose(5.0, metric(r, "clipByGlobalNorm.norm"), 1e-6);
            assertTrue(r.applies());
        }

        @Test
        void many_scalars_come_to_the_host_in_one_batch_with_the_same_values() {
            T v = vector(3, 4);
            T w = matrix(2, 2, 1, -2, Float.NaN, 4);
            List<T> scalars = List.of(ops().scalar(1.5), ops().sumOfSquares(v), ops().maxAbs(v), ops().countNonFinite(w),
                    ops().sqrt(ops().sumOfSquares(v)));
            double[] batch = ops().toHost(scalars);
            assertEquals(5, batch.length);
            for (int i = 0; i < batch.length; i++) {
                assertEquals(ops().toHost(scalars.get(i)), batch[i], 0.0, "scalar " + i);
            }
            assertArrayEquals(new double[] {1.5, 25, 4, 1, 5}, batch, 1e-6);
            assertEquals(0, ops().toHost(List.<T>of()).length);
        }

        @Test
        void host_metrics_equal_the_metrics_read_one_by_one() {
            GradientPipeline p1 = GradientPipeline.of(Transforms.zeroNonFinite(), Transforms.clipByGlobalNorm(1.0));
            GradientPipeline p2 = GradientPipeline.of(Transforms.zeroNonFinite(), Transforms.clipByGlobalNorm(1.0));
            StepResult<T> one = p1.step(set(grad("a", vector(Float.NaN, 3)), grad("b", vector(4))), ops(), StepContext.empty());
            StepResult<T> all = p2.step(set(grad("a", vector(Float.NaN, 3)), grad("b", vector(4))), ops(), StepContext.empty());
            java.util.Map<String, Double> host = all.hostMetrics();
            assertEquals(one.metricNames(), host.keySet());
            for (String k : host.keySet()) {
                assertEquals(metric(one, k), host.get(k), 0.0, k);
            }
            assertClose(5.0, host.get("clipByGlobalNorm.norm"), 1e-6);
            assertEquals(1.0, host.get("zeroNonFinite.nonFinite.a"));
        }

        @Test
        void a_listener_added_twice_is_called_once() {
            int[] calls = {0};
            StepListener l = (grads, result) -> calls[0]++;
            GradientPipeline p = GradientPipeline.of(Transforms.clipByValue(1.0)).addListener(l).addListener(l);
            p.step(set(grad("g", vector(5))), ops(), StepContext.ofBatch(1));
            assertEquals(1, calls[0]);
        }

        @Test
        void a_pipeline_counts_its_steps() {
            GradientPipeline p = GradientPipeline.of(Transforms.clipByValue(1.0));
            for (int i = 0; i < 3; i++) {
                p.step(set(grad("g", vector(5))), ops(), StepContext.ofBatch(1));
            }
            assertEquals(3, p.stepCount());
        }

        @Test
        void the_same_pipeline_refuses_a_different_model() {
            GradientPipeline p = GradientPipeline.of(Transforms.clipByValue(1.0));
            p.step(set(grad("g", vector(5))), ops(), StepContext.ofBatch(1));
            IllegalStateException e = assertThrows(IllegalStateException.class,
                    () -> p.step(set(grad("h", vector(5, 6))), ops(), StepContext.ofBatch(1)));
            assertTrue(e.getMessage().contains("h[2]"), e.getMessage());
        }
    }
}
