package io.gradguard.tensorflow;

import static io.gradguard.core.conformance.Float16Fixture.W1;
import static io.gradguard.core.conformance.Float16Fixture.W2;
import static io.gradguard.core.conformance.Float16Fixture.X;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.conformance.Float16Fixture;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.StdArrays;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat16;
import org.tensorflow.types.TFloat32;

/**
 * Loss scaling in float16 on TensorFlow's CPU kernels ({@link Float16Fixture}): the gradient of W1
 * underflows to 0 without it, and with {@code dynamicLossScale()} the optimizer receives the float32
 * gradient within float16 precision. Two ways to hold a float16 model: float16 variables and loss
 * ("pure"), and Keras's mixed precision (float32 variables cast to float16 for the computation, the
 * loss computed in float32).
 */
class Float16LossScaleTest {
    static final float LR = 1f;

    /** How the model holds its numbers. */
    enum Precision {
        /** float32 throughout: the reference. */
        FLOAT32,
        /** float16 variables, computation and loss. */
        PURE_FLOAT16,
        /** float32 variables, float16 computation, the loss in float32 (Keras's {@code mixed_float16}). */
        MIXED
    }

    /** The fixture's model, trained by SGD through a guard that records the gradient of W1 it passes on. */
    static final class Model implements AutoCloseable {
        final Graph graph = new Graph();
        final Session session = new Session(graph);
        final Placeholder<?> x;
        final Variable<?> w1;
        final Precision precision;
        TfGuard guard;
        float[] received;

        @SuppressWarnings({"unchecked", "rawtypes"})
        Model(Precision precision, GradientPipeline pipeline) {
            this.precision = precision;
            Ops tf = Ops.create(graph);
            Class vars = precision == Precision.PURE_FLOAT16 ? TFloat16.class : TFloat32.class;
            Class compute = precision == Precision.FLOAT32 ? TFloat32.class : TFloat16.class;
            x = tf.withName("x").placeholder(compute, Placeholder.shape(Shape.of(-1, 2)));
            w1 = tf.withName("w1").variable(tf.dtypes.cast(tf.constant(StdArrays.ndCopyOf(W1)), vars));
            Variable<?> w2 = tf.withName("w2").variable(tf.dtypes.cast(tf.constant(StdArrays.ndCopyOf(W2)), vars));
            Operand y = tf.linalg.matMul(tf.linalg.matMul(x, as(tf, w1, compute)), as(tf, w2, compute));
            Operand out = precision == Precision.MIXED ? tf.dtypes.cast(y, TFloat32.class) : y;
            Operand loss = tf.math.mean(tf.math.square(out), tf.constant(new int[] {0, 1}));
            pipeline.addListener((g, r) -> {
                if (r.applies()) {
                    received = guard.ops().toHostArray((TfTensor) g.get(0).gradient());
                }
            });
            guard = TfGuard.of(pipeline).attach(session, loss, List.of(w1, w2), new GradientDescent(graph, LR));
        }

        @SuppressWarnings({"unchecked", "rawtypes"})
        private static Operand as(Ops tf, Operand v, Class type) {
            return v.type() == type ? v : tf.dtypes.cast(v, type);
        }

        StepResult<TfTensor> step() {
            try (Tensor xs = precision == Precision.FLOAT32 ? TFloat32.tensorOf(StdArrays.ndCopyOf(X))
                    : TFloat16.tensorOf(StdArrays.ndCopyOf(X))) {
                return guard.step(Map.of(x, xs), X.length);
            }
        }

        /** W1's value, as float32. */
        float[] w1() {
            Ops tf = Ops.create(graph);
            float[] out = new float[4];
            try (Result r = session.runner().fetch(tf.dtypes.cast(w1, TFloat32.class)).run()) {
                ((TFloat32) r.get(0)).copyTo(DataBuffers.of(out, false, false));
            }
            return out;
        }

        @Override
        public void close() {
            guard.close();
            session.close();
            graph.close();
        }
    }

    /** The float32 gradient of W1 and the global norm, the reference. */
    record Reference(float[] w1, double norm) {
        static Reference measure() {
            try (Model m = new Model(Precision.FLOAT32, GradientPipeline.of(Float16Fixture.clip()))) {
                double norm = Float16Fixture.norm(m.step());
                return new Reference(m.received, norm);
            }
        }
    }

    @Test
    void float16_variables_underflow_without_loss_scaling_and_receive_the_float32_gradient_with_it() {
        Reference reference = Reference.measure();
        try (Model plain = new Model(Precision.PURE_FLOAT16, GradientPipeline.of(Float16Fixture.clip()))) {
            float[] before = plain.w1();
            assertTrue(plain.step().applies());
            Float16Fixture.assertAllZero(plain.received, "the float16 gradient of W1 without loss scaling");
            assertArrayEquals(before, plain.w1(), "W1 does not learn: its gradient vanished by arithmetic");
        }
        try (Model scaled = new Model(Precision.PURE_FLOAT16, GradientPipeline.of(Transforms.dynamicLossScale(), Float16Fixture.clip()))) {
            float[] before = scaled.w1();
            // a float16 loss times 2^16 is inf (float16 ends at 65504): the first step overflows and backs off
            StepResult<TfTensor> first = scaled.step();
            assertTrue(first.skipped(), "2^16 overflows a float16 loss, got " + first);
            assertArrayEquals(before, scaled.w1(), "the overflowing step leaves W1 untouched");
            assertEquals(32768.0, scaled.guard.lossScale());
            StepResult<TfTensor> second = scaled.step();
            assertTrue(second.applies(), second.toString());
            Float16Fixture.assertCloseToFloat32(reference.w1(), scaled.received, "the unscaled float16 gradient of W1");
            Float16Fixture.assertNormClose(reference.norm(), second, "the global norm of the unscaled float16 gradients");
            assertFalse(java.util.Arrays.equals(before, scaled.w1()), "W1 learns");
        }
    }

    @Test
    void mixed_precision_underflows_without_loss_scaling_and_receives_the_float32_gradient_with_it() {
        Reference reference = Reference.measure();
        try (Model plain = new Model(Precision.MIXED, GradientPipeline.of(Float16Fixture.clip()))) {
            assertTrue(plain.step().applies());
            Float16Fixture.assertAllZero(plain.received, "the gradient of W1 computed in float16 without loss scaling");
        }
        try (Model scaled = new Model(Precision.MIXED, GradientPipeline.of(Transforms.dynamicLossScale(), Float16Fixture.clip()))) {
            StepResult<TfTensor> r = scaled.step();
            assertTrue(r.applies(), "a float32 loss takes 2^16: " + r);
            assertEquals(65536.0, r.lossScale().orElseThrow());
            Float16Fixture.assertCloseToFloat32(reference.w1(), scaled.received, "the unscaled gradient of W1");
            Float16Fixture.assertNormClose(reference.norm(), r, "the global norm of the unscaled gradients");
        }
    }

    /**
     * The same through the optimizer wrapper ({@link TfOptimizer}, the step in one training op): pure
     * float16, the loss scale a graph variable. Without scaling W1 does not move; with it the first
     * call overflows (skipped, W1 untouched, the scale backs off to 2^15) and the second moves W1 by
     * LR times the float32 gradient, within float16 precision.
     */
    @Test
    @SuppressWarnings({"unchecked", "rawtypes"})
    void float16_through_the_optimizer_wrapper() {
        Reference reference = Reference.measure();
        for (boolean scaled : new boolean[] {false, true}) {
            try (Graph graph = new Graph(); Session session = new Session(graph)) {
                Ops tf = Ops.create(graph);
                Placeholder x = tf.withName("x").placeholder(TFloat16.class, Placeholder.shape(Shape.of(-1, 2)));
                Variable w1 = tf.withName("w1").variable(tf.dtypes.cast(tf.constant(StdArrays.ndCopyOf(Float16Fixture.W1)), TFloat16.class));
                Variable w2 = tf.withName("w2").variable(tf.dtypes.cast(tf.constant(StdArrays.ndCopyOf(Float16Fixture.W2)), TFloat16.class));
                Operand loss = tf.math.mean(tf.math.square(tf.linalg.matMul(tf.linalg.matMul(x, w1), w2)), tf.constant(new int[] {0, 1}));
                TfOptimizer guard = scaled
                        ? TfOptimizer.of(session, new GradientDescent(graph, LR), Transforms.dynamicLossScale(), Float16Fixture.clip())
                        : TfOptimizer.of(session, new GradientDescent(graph, LR), Float16Fixture.clip());
                org.tensorflow.op.Op train = guard.minimize(loss, List.<Operand<?>>of(w1, w2));
                Operand w1f = tf.dtypes.cast(w1, TFloat32.class);
                java.util.function.Supplier<float[]> value = () -> {
                    float[] out = new float[4];
                    try (Result r = session.runner().fetch(w1f).run()) {
                        ((TFloat32) r.get(0)).copyTo(DataBuffers.of(out, false, false));
                    }
                    return out;
                };
                Runnable step = () -> {
                    try (TFloat16 xs = TFloat16.tensorOf(StdArrays.ndCopyOf(Float16Fixture.X))) {
                        session.runner().feed(x, xs).addTarget(train).run().close();
                    }
                };
                float[] before = value.get();
                step.run();
                if (!scaled) {
                    assertArrayEquals(before, value.get(), "W1 does not learn in float16 without loss scaling");
                    continue;
                }
                assertEquals(new TfOptimizer.Counters(1, 0, 1, 0), guard.counters(), "2^16 overflows a float16 loss: skipped");
                assertArrayEquals(before, value.get(), "the overflowing call leaves W1 untouched");
                assertEquals(32768.0, guard.lossScale());
                step.run();
                assertEquals(new TfOptimizer.Counters(2, 1, 1, 0), guard.counters());
                float[] after = value.get();
                float[] applied = new float[4];
                for (int i = 0; i < 4; i++) {
                    applied[i] = (before[i] - after[i]) / LR;
                }
                for (int i = 0; i < 4; i++) {
                    assertEquals(reference.w1()[i], applied[i], Math.abs(reference.w1()[i]) * 0.02 + Math.abs(before[i]) * 2e-3,
                            "W1[" + i + "] moved by LR times the float32 gradient");
                }
            }
        }
    }
}
