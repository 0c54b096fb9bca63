package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.Action;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.Transforms;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * The pending factor that presents DL4J's minibatch sum as the mean without scaling the gradient
 * ({@link PendingFactorOps}), the exact-1 shortcut of {@link Nd4jOps#scaleInPlace}, the coefficients
 * a pending factor absorbs, and the float64 reduction option. Every
 * primitive's correctness on factored arrays is proven by {@link FactoredNd4jConformanceTest}.
 */
class PendingFactorTest {
    private final PendingFactorOps ops = new PendingFactorOps(new Nd4jOps());

    @AfterEach
    void free() {
        ops.releaseTemporaries();
    }

    @Test
    void a_factored_array_keeps_its_stored_values_until_a_write_cannot_keep_the_factor() {
        INDArray g = ops.fromHost(new float[] {8, -4}, new long[] {2});
        ops.setFactor(g, 0.25);
        assertEquals(4 + 1, ops.toHost(ops.sumOfSquares(g)), 0.0);
        ops.clampInPlace(g, -0.5, 0.5); // bounds stored as ±2: the factor stays
        assertArrayEquals(new float[] {2, -2}, g.toFloatVector());
        assertArrayEquals(new float[] {0.5f, -0.5f}, ops.toHostArray(g));
        ops.settle(g, 0.25);
        assertArrayEquals(new float[] {2, -2}, g.toFloatVector(), "kept factor: no pass");
        assertEquals(1.0, ops.factor(g));

        ops.setFactor(g, 0.25);
        ops.fill(g, 3); // every element overwritten: the factor is dropped
        assertEquals(1.0, ops.factor(g));
        ops.setFactor(g, 1.0);
        ops.settle(g, 0.25);
        assertArrayEquals(new float[] {12, 12}, g.toFloatVector(), "true value 3 stored as 3 / 0.25");

        ops.setFactor(g, 0.25);
        ops.replaceNonFinite(g, 0, Float.MAX_VALUE, -Float.MAX_VALUE); // MAX_VALUE / 0.25 overflows: materialised first
        assertEquals(1.0, ops.factor(g));
        assertArrayEquals(new float[] {3, 3}, g.toFloatVector());
        ops.release(g);
    }

    @Test
    void a_factor_outside_0_1_is_refused_naming_it() {
        INDArray g = ops.fromHost(new float[] {1}, new long[] {1});
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ops.setFactor(g, 2));
        assertEquals("factor must be in (0, 1], got 2.0", e.getMessage());
        ops.release(g);
    }

    @Test
    void scaling_by_exactly_one_leaves_every_bit_and_other_factors_multiply_in_the_arrays_type() {
        INDArray g = ops.fromHost(new float[] {-0f, Float.NaN, Float.NEGATIVE_INFINITY, 1e-45f}, new long[] {4});
        ops.scaleInPlace(g, ops.scalar(1.0));
        float[] v = g.toFloatVector();
        assertEquals(Float.floatToRawIntBits(-0f), Float.floatToRawIntBits(v[0]));
        assertTrue(Float.isNaN(v[1]));
        assertEquals(Float.NEGATIVE_INFINITY, v[2]);
        assertEquals(1e-45f, v[3]);
        ops.scaleInPlace(g, ops.scalar(0.5));
        assertArrayEquals(new float[] {-0f, Float.NaN, Float.NEGATIVE_INFINITY, 0f}, g.toFloatVector());
        assertEquals(org.nd4j.linalg.api.buffer.DataType.FLOAT, g.dataType());
        ops.release(g);
    }

    @Test
    void a_coefficient_on_a_factored_array_joins_its_factor_and_settle_applies_both_in_one_pass() {
        INDArray g = ops.fromHost(new float[] {8, -4, Float.NaN}, new long[] {3});
        ops.setFactor(g, 0.25);
        ops.scaleInPlace(g, ops.scalar(0.5));
        assertArrayEquals(new float[] {8, -4}, java.util.Arrays.copyOf(g.toFloatVector(), 2), "no pass: the stored values are untouched");
        assertEquals(0.125, ops.factor(g));
        assertArrayEquals(new float[] {1, -0.5f, Float.NaN}, ops.toHostArray(g), "true values: 0.5 × the mean");
        ops.settle(g, 0.25);
        assertArrayEquals(new float[] {4, -2, Float.NaN}, g.toFloatVector(), "the sum convention: the coefficient applied");
        assertEquals(1.0, ops.factor(g));

        ops.setFactor(g, 0.25);
        ops.scaleInPlace(g, ops.scalar(0.5));
        ops.settle(g, 1.0);
        assertArrayEquals(new float[] {0.5f, -0.25f, Float.NaN}, g.toFloatVector(), "the mean: coefficient and division in one pass");

        ops.setFactor(g, 0.25);
        ops.scaleInPlace(g, ops.scalar(0.0)); // zero (an infinite norm's coefficient) is multiplied in: NaN stays NaN
        assertArrayEquals(new float[] {0, -0f, Float.NaN}, g.toFloatVector());
        assertEquals(0.25, ops.factor(g));
        ops.release(g);

        INDArray plain = ops.fromHost(new float[] {8, -4}, new long[] {2});
        ops.scaleInPlace(plain, ops.scalar(0.5)); // no pending factor: the caller reads the array, so it is scaled now
        assertArrayEquals(new float[] {4, -2}, plain.toFloatVector());
        assertEquals(1.0, ops.factor(plain));
        ops.release(plain);
    }

    @Test
    void settling_divides_by_a_whole_batch_as_dl4j_does_and_multiplies_a_joined_factor_once() {
        float[] v = {8, -3, 0.7f};
        INDArray g = ops.fromHost(v, new long[] {3});
        ops.setFactor(g, 1.0 / 99); // 1/(1/99) is not exactly 99 in double
        ops.settle(g, 1.0);
        assertArrayEquals(new float[] {8f / 99, -3f / 99, 0.7f / 99}, g.toFloatVector(), "DL4J's own divi(99), bit for bit");

        g.assign(ops.fromHost(v, new long[] {3}));
        ops.setFactor(g, 0.1);
        ops.scaleInPlace(g, ops.scalar(0.3));
        ops.settle(g, 1.0);
        float c = (float) (0.1 * 0.3);
        assertArrayEquals(new float[] {8 * c, -3 * c, 0.7f * c}, g.toFloatVector(), "one multiply by the joined factor");

        g.assign(ops.fromHost(v, new long[] {3}));
        ops.setFactor(g, 0.1);
        ops.scaleInPlace(g, ops.scalar(0.3)); // factor 0.03: not 1/n, so a clamp applies it first
        ops.clampInPlace(g, -0.1, 0.1);
        assertEquals(1.0, ops.factor(g));
        float c3 = (float) 0.03;
        assertArrayEquals(new float[] {0.1f, -3 * c3, 0.7f * c3}, g.toFloatVector(), "the bound holds to the last bit");

        g.assign(ops.fromHost(v, new long[] {3}));
        ops.setFactor(g, 0.1);
        ops.scaleInPlace(g, ops.scalar(0.5)); // factor 0.05 = 1/20 exactly: kept, the bound stored as 0.1 × 20
        ops.clampInPlace(g, -0.1, 0.1);
        assertEquals(0.05, ops.factor(g));
        ops.settle(g, 1.0);
        assertArrayEquals(new float[] {0.1f, -0.1f, 0.7f / 20}, g.toFloatVector(), "÷ 20 brings the bound back exactly");

        g.assign(ops.fromHost(v, new long[] {3}));
        ops.setFactor(g, 1e-3);
        ops.scaleInPlace(g, ops.scalar(1e-29)); // the product would be 1e-32: too small to leave pending
        assertEquals(1e-3, ops.factor(g));
        assertArrayEquals(new float[] {8e-29f, -3e-29f, 0.7e-29f}, g.toFloatVector(), 1e-34f);
        ops.release(g);

        INDArray half = org.nd4j.linalg.factory.Nd4j.createFromArray(v).castTo(org.nd4j.linalg.api.buffer.DataType.HALF);
        ops.setFactor(half, 0.25);
        ops.scaleInPlace(half, ops.scalar(0.5)); // float16: the factor is not left pending
        assertEquals(0.25, ops.factor(half));
        assertEquals(4.0, half.getDouble(0));
        ops.release(half);
    }

    /** A stage that fills the first layer's weight gradient: its factor is dropped mid-step. */
    private static final class FillFirst implements GradientTransform {
        @Override
        public String name() {
            return "fillFirst";
        }

        @Override
        public <T> Action update(Step<T> step, TransformState state) {
            step.ops().fill(step.gradients().get(0).gradient(), 0.5);
            return Action.proceed();
        }
    }

    @Test
    void a_gradient_view_that_lost_its_factor_is_handed_back_to_dl4j_as_the_sum() {
        // plain SGD: the change of a parameter is lr × the mean gradient DL4J's updater computes
        MultiLayerNetwork net = Nets.mlp(new Sgd(0.1));
        Dl4jGuard listening = Dl4jGuard.of(new FillFirst());
        net.addListeners(listening.listener());
        double before = net.getParam("0_W").getDouble(0);
        net.fit(Nets.batch(8, 1));
        assertEquals(before - 0.1 * 0.5, net.getParam("0_W").getDouble(0), 1e-6);
        for (GradientTensor<INDArray> t : Dl4jGradients.of(net)) {
            assertEquals(1.0, listening.ops().factor(t.gradient()), t.name());
        }

        MultiLayerNetwork net2 = Nets.mlp(new Sgd(0.1));
        Dl4jGuard driving = Dl4jGuard.of(new FillFirst());
        double before2 = net2.getParam("0_W").getDouble(0);
        driving.step(net2, Nets.batch(8, 1));
        assertEquals(before2 - 0.1 * 0.5, net2.getParam("0_W").getDouble(0), 1e-6);
    }

    @Test
    void reductions_are_float32_by_default_and_float64_on_request() {
        assertFalse(new Nd4jOps().accumulatesInDouble());
        assertTrue(new Nd4jOps().accumulateInDouble().accumulatesInDouble());
        Dl4jGuard plain = Dl4jGuard.of(Transforms.clipByGlobalNorm(1.0));
        plain.step(Nets.mlp(new Sgd(0.1)), Nets.batch(4, 1));
        assertFalse(plain.accumulatesInDouble() || plain.ops().accumulatesInDouble());
        Dl4jGuard wideGuard = Dl4jGuard.of(Transforms.clipByGlobalNorm(1.0));
        wideGuard.listener(); // a hook made before the wither still reduces in float64
        wideGuard.accumulateInDouble().step(Nets.mlp(new Sgd(0.1)), Nets.batch(4, 1));
        assertTrue(wideGuard.ops().accumulatesInDouble());
        assertThrows(IllegalStateException.class, wideGuard::accumulateInDouble, "too late after the first step");

        float[] big = {1e30f, 1e30f};
        INDArray x = ops.fromHost(big, new long[] {2});
        // float32 would overflow (and DL4J's stored sum is batch × the mean): the default mode then
        // reduces that tensor again in float64
        assertEquals(2e60, ops.toHost(ops.sumOfSquares(x)), 1e54, "float32 overflow falls back to float64");
        float[] tiny = {1e-30f, 1e-30f};
        INDArray t = ops.fromHost(tiny, new long[] {2});
        assertEquals(0.0, ops.toHost(ops.sumOfSquares(t)), "float32: squares of 1e-30 underflow (accumulatesInDouble() is false)");
        ops.release(t);
        Nd4jOps wide = new Nd4jOps().accumulateInDouble();
        assertEquals(2e60, wide.toHost(wide.sumOfSquares(x)), 1e54);
        wide.releaseTemporaries();
        ops.release(x);
    }
}
