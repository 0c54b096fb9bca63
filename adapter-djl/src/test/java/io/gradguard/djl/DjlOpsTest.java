package io.gradguard.djl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** What the conformance kit does not see: memory scoping, host transfer and argument checks. */
class DjlOpsTest {
    private NDManager root;
    private DjlOps ops;

    @BeforeEach
    void open() {
        root = NDManager.newBaseManager("PyTorch");
        ops = DjlOps.on(root);
    }

    @AfterEach
    void close() {
        ops.close();
        root.close();
    }

    /**
     * Scalars known on the host are combined on the host: the same bits as PyTorch's float64
     * kernels on the same values (infinities, signed zeros, subnormals and overflow included; a NaN
     * where PyTorch gives one),
     * and a scalar changed in place is read again, not remembered.
     */
    @Test
    void host_arithmetic_on_known_scalars_gives_pytorchs_float64_bits() {
        double[] values = {0.0, -0.0, 1.0, -2.5, 3e-320, 1e308, 7.0 / 3, Double.NaN, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY};
        for (double a : values) {
            assertSameBits(root.create(a).sqrt(), ops.sqrt(ops.scalar(a)), "sqrt(" + a + ")");
            for (double b : values) {
                String pair = "(" + a + ", " + b + ")";
                NDArray x = root.create(a);
                NDArray y = root.create(b);
                assertSameBits(x.add(y), ops.add(ops.scalar(a), ops.scalar(b)), "add" + pair);
                assertSameBits(x.mul(y), ops.mul(ops.scalar(a), ops.scalar(b)), "mul" + pair);
                assertSameBits(x.div(y), ops.div(ops.scalar(a), ops.scalar(b)), "div" + pair);
                assertSameBits(x.maximum(y), ops.max(ops.scalar(a), ops.scalar(b)), "max" + pair);
                assertSameBits(x.minimum(y), ops.min(ops.scalar(a), ops.scalar(b)), "min" + pair);
            }
            ops.freeTemporaries();
        }
        NDArray s = ops.scalar(2.0);
        assertEquals(2.0, ops.toHost(s));
        ops.scaleInPlace(s, ops.scalar(0.5));
        assertEquals(1.0, ops.toHost(s), "a scalar changed in place is read again");
        ops.fill(s, 5.0);
        assertEquals(5.0, ops.toHost(ops.sqrt(ops.mul(s, s))), "and combined with its new value");
    }

    /** The same bits, but any NaN for a NaN (the sign and payload of a NaN differ between kernels and carry nothing). */
    private static void assertSameBits(NDArray expected, NDArray actual, String what) {
        double e = expected.toDoubleArray()[0];
        double a = actual.toDoubleArray()[0];
        expected.close();
        if (Double.isNaN(e)) {
            assertTrue(Double.isNaN(a), what + ": PyTorch NaN, GradGuard " + a);
            return;
        }
        assertEquals(Double.doubleToRawLongBits(e), Double.doubleToRawLongBits(a), what + ": PyTorch " + e + ", GradGuard " + a);
    }

    /**
     * A scale of a deferrable gradient stays pending: reductions fold it, any other use applies it
     * first (as the scale itself would have), the optimizer can take it, and a step's end applies
     * what nobody took, so nothing is lost.
     */
    @Test
    void a_deferred_scale_is_folded_into_reductions_applied_before_other_uses_and_never_lost() {
        float[] values = {3f, -4f, 1f, 0.5f};
        NDArray g = ops.adoptDeferrable(root.create(values));
        NDArray kept = root.create(values);
        ops.scaleInPlace(g, ops.scalar(0.25));
        assertArrayEquals(values, kept.toFloatArray());
        assertEquals(0.25 * 0.25 * 26.25, ops.toHost(ops.sumOfSquares(g)), 1e-12, "Σx² folds c²");
        assertEquals(0.25 * 4, ops.toHost(ops.maxAbs(g)), 1e-12, "max|x| folds c");
        assertArrayEquals(values, g.duplicate().toFloatArray(), "no pass yet: the array still stores g");
        assertEquals(0.25, ops.takePending(g), "the optimizer takes the factor");
        assertEquals(1.0, ops.takePending(g), "once");

        NDArray h = ops.adoptDeferrable(root.create(values));
        ops.scaleInPlace(h, ops.scalar(0.5));
        ops.clampInPlace(h, -1, 1); // another use applies the scale first: clamp(0.5·g), into a new array
        assertArrayEquals(new float[] {1.5f, -2f, 0.5f, 0.25f}, h.duplicate().toFloatArray(), "h stores 0.5·g, no copy back");
        assertEquals(1 + 1 + 0.25 + 0.0625, ops.toHost(ops.sumOfSquares(h)), 1e-12, "reductions read the clamped values");
        assertEquals(1.0, ops.toHost(ops.maxAbs(h)), 1e-12);
        NDArray clamped = ops.takeReplacement(h);
        assertArrayEquals(new float[] {1f, -1f, 0.5f, 0.25f}, clamped.toFloatArray(), "the optimizer takes the clamped array");
        assertEquals(1.0, ops.takePending(h));

        NDArray k = ops.adoptDeferrable(root.create(values));
        ops.clampInPlace(k, -1, 1);
        ops.scaleInPlace(k, ops.scalar(2.0)); // any other use copies the clamped values back first
        assertArrayEquals(new float[] {2f, -2f, 2f, 1f}, k.duplicate().toFloatArray());
        assertEquals(null, ops.takeReplacement(k));

        NDArray param = root.zeros(new ai.djl.ndarray.types.Shape(4));
        param.setRequiresGradient(true);
        try (ai.djl.training.GradientCollector gc = ai.djl.engine.Engine.getEngine("PyTorch").newGradientCollector();
                NDArray loss = param.mul(root.create(values)).sum()) {
            gc.backward(loss); // ∂loss/∂param = values
        }
        NDArray handle = ops.adoptDeferrable(param.getGradient()); // a handle on the parameter's gradient storage
        ops.scaleInPlace(handle, ops.scalar(0.5));
        ops.freeTemporaries(); // nobody took the factor: the step's end applies it before closing the handle
        try (NDArray after = param.getGradient()) {
            assertArrayEquals(new float[] {1.5f, -2f, 0.5f, 0.25f}, after.toFloatArray());
        }
        NDArray clampedHandle = ops.adoptDeferrable(param.getGradient());
        ops.clampInPlace(clampedHandle, -1, 1);
        ops.freeTemporaries(); // nobody took the clamped array: the step's end copies it back
        try (NDArray after = param.getGradient()) {
            assertArrayEquals(new float[] {1f, -1f, 0.5f, 0.25f}, after.toFloatArray());
        }
    }

    @Test
    void every_temporary_of_a_step_is_freed_and_state_buffers_survive() {
        NDArray w = root.randomNormal(new ai.djl.ndarray.types.Shape(8, 4));
        NDArray p = root.randomNormal(new ai.djl.ndarray.types.Shape(8, 4));
        GradientSet<NDArray> set = GradientSet.of(new GradientTensor<>("w", new long[] {8, 4}, Role.WEIGHT, "0",
                Layout.outputFirst(), w, p));
        GradientPipeline pipeline = GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.accumulate(2),
                Transforms.adaptiveClip(0.1), Transforms.centralize(), Transforms.clipByValue(0.5), Transforms.zeroNonFinite(),
                Transforms.clipByGlobalNorm(1.0), Transforms.clipByLayerNorm(1.0));
        int baseline = -1;
        for (int i = 0; i < 20; i++) {
            pipeline.step(set, ops, StepContext.ofBatch(4)).hostMetrics();
            assertTrue(ops.stepManager().getManagedArrays().size() > 0, "the step created temporaries");
            ops.freeTemporaries();
            int now = root.getManagedArrays().size();
            if (i == 1) {
                baseline = now;
            }
            if (i > 1) {
                assertEquals(baseline, now, "arrays under the parent after step " + i);
            }
        }
        // w, p and the accumulator buffer
        assertEquals(3, baseline);
    }

    @Test
    void in_place_updates_of_long_lived_buffers_leave_nothing_behind() {
        NDArray buffer = ops.fromHost(new float[] {1, Float.NaN, Float.POSITIVE_INFINITY, -3}, new long[] {4});
        int before = root.getManagedArrays().size();
        for (int i = 0; i < 10; i++) {
            ops.replaceNonFinite(buffer, 0, 5, -5);
            ops.clampInPlace(buffer, -2, 2);
            ops.addInPlace(buffer, buffer, -0.5);
            ops.fill(buffer, Float.NaN);
            ops.fill(buffer, 1);
        }
        ops.freeTemporaries();
        assertEquals(before, root.getManagedArrays().size());
        assertArrayEquals(new float[] {1, 1, 1, 1}, ops.toHostArray(buffer));
    }

    @Test
    void fill_clears_nan_where_multiplying_by_zero_would_not() {
        NDArray g = ops.fromHost(new float[] {Float.NaN, Float.NEGATIVE_INFINITY, 2}, new long[] {3});
        ops.scaleInPlace(g, ops.scalar(0.0));
        assertTrue(Float.isNaN(ops.toHostArray(g)[0]));
        ops.fill(g, 0.0);
        assertArrayEquals(new float[] {0, 0, 0}, ops.toHostArray(g));
    }

    @Test
    void reductions_come_back_as_float64_scalars_on_the_host() {
        NDArray g = ops.fromHost(new float[] {3, -4}, new long[] {2});
        NDArray s = ops.sumOfSquares(g);
        assertEquals(0, s.getShape().dimension());
        assertEquals(ai.djl.ndarray.types.DataType.FLOAT64, s.getDataType());
        assertEquals(25.0, ops.toHost(s));
        assertEquals(7.0, ops.toHost(ops.sumOfAbs(g)));
        assertEquals(4.0, ops.toHost(ops.maxAbs(g)));
    }

    @Test
    void to_host_of_a_non_scalar_names_the_shape() {
        NDArray g = ops.fromHost(new float[] {1, 2}, new long[] {2});
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ops.toHost(g));
        assertTrue(e.getMessage().contains("(2)"), e.getMessage());
    }

    @Test
    void from_host_checks_that_the_data_fills_the_shape() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ops.fromHost(new float[] {1, 2, 3}, new long[] {2, 2}));
        assertTrue(e.getMessage().contains("[2, 2]") && e.getMessage().contains("got 3"), e.getMessage());
    }

    @Test
    void assign_refuses_another_shape() {
        NDArray a = ops.fromHost(new float[] {1, 2}, new long[] {2});
        NDArray b = ops.fromHost(new float[] {1, 2, 3}, new long[] {3});
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ops.assign(a, b));
        assertTrue(e.getMessage().startsWith("src must have dst's shape"), e.getMessage());
    }

    @Test
    void a_missing_or_closed_parent_manager_is_reported() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DjlOps.on(null));
        assertTrue(e.getMessage().startsWith("parent"), e.getMessage());
        NDManager closed = root.newSubManager();
        closed.close();
        IllegalStateException s = assertThrows(IllegalStateException.class, () -> DjlOps.on(closed));
        assertTrue(s.getMessage().contains("open manager"), s.getMessage());
        ops.close();
        s = assertThrows(IllegalStateException.class, () -> ops.scalar(1));
        assertTrue(s.getMessage().contains("closed"), s.getMessage());
    }
}
