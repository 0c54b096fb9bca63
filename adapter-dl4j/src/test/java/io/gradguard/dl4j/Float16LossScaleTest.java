package io.gradguard.dl4j;

import static io.gradguard.core.conformance.Float16Fixture.W1;
import static io.gradguard.core.conformance.Float16Fixture.W2;
import static io.gradguard.core.conformance.Float16Fixture.X;
import static io.gradguard.core.conformance.Float16Fixture.Y;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.conformance.Float16Fixture;
import io.gradguard.core.spi.TensorOps;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Loss scaling in float16 on DL4J (ND4J's CPU backend, {@code DataType.HALF} networks) with
 * {@link Float16Fixture}: the gradient of W1 underflows to 0 without it, and with
 * {@code dynamicLossScale()} the updater receives the float32 gradient within float16 precision,
 * through both hooks ({@code install} with {@code net.fit}, and the step driver).
 */
class Float16LossScaleTest {

    /** The fixture's model, {@code dataType} throughout: dense(2, identity, no bias) → output(1, MSE, no bias). */
    static MultiLayerNetwork network(DataType dataType, IUpdater updater) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(1).dataType(dataType).updater(updater)
                .list()
                .layer(new DenseLayer.Builder().nIn(2).nOut(2).activation(Activation.IDENTITY).hasBias(false).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(2).nOut(1).activation(Activation.IDENTITY)
                        .hasBias(false).build())
                .build());
        net.init();
        net.getParam("0_W").assign(Nd4j.create(W1));
        net.getParam("1_W").assign(Nd4j.create(W2));
        return net;
    }

    static DataSet batch(DataType dataType) {
        return new DataSet(Nd4j.create(X).castTo(dataType), Nd4j.create(Y).castTo(dataType));
    }

    /** Records the gradient of W1 ("0_W") the pipeline passes on to the updater. */
    static final class Received {
        float[] w1;
        double norm;

        @SuppressWarnings({"unchecked", "rawtypes"})
        GradientPipeline on(GradientPipeline p) {
            p.addListener((g, r) -> {
                if (r.applies()) {
                    w1 = ((TensorOps) r.ops()).toHostArray(g.get(0).gradient());
                }
            });
            return p;
        }
    }

    /** The float32 run: the gradient of W1 and the global norm. */
    static Received float32Gradient() {
        Received received = new Received();
        MultiLayerNetwork net = network(DataType.FLOAT, new Sgd(1));
        Dl4jGuard guard = Dl4jGuard.of(received.on(GradientPipeline.of(Float16Fixture.clip()))).install(net);
        net.fit(batch(DataType.FLOAT));
        received.norm = Float16Fixture.norm(guard.lastResult().orElseThrow());
        return received;
    }

    static float[] w1(MultiLayerNetwork net) {
        return net.getParam("0_W").castTo(DataType.FLOAT).dup().reshape(4).toFloatVector();
    }

    @Test
    void a_float16_network_underflows_without_loss_scaling_and_receives_the_float32_gradient_with_it() {
        Received reference = float32Gradient();
        Received plainGradient = new Received();
        MultiLayerNetwork plain = network(DataType.HALF, new Sgd(1));
        Dl4jGuard.of(plainGradient.on(GradientPipeline.of(Float16Fixture.clip()))).install(plain);
        float[] before = w1(plain);
        plain.fit(batch(DataType.HALF));
        Float16Fixture.assertAllZero(plainGradient.w1, "the float16 gradient of W1 without loss scaling");
        assertArrayEquals(before, w1(plain), "W1 does not learn: its gradient vanished by arithmetic");

        for (boolean installed : new boolean[] {true, false}) {
            Received received = new Received();
            MultiLayerNetwork net = network(DataType.HALF, new Sgd(1));
            Dl4jGuard guard = Dl4jGuard.of(received.on(GradientPipeline.of(Transforms.dynamicLossScale(), Float16Fixture.clip())));
            if (installed) {
                guard.install(net);
            }
            String hook = installed ? "install + fit" : "step driver";
            // the loss gradient × 2^16 is inf in float16 (it ends at 65504): the first step overflows and backs off
            StepResult<?> first = fit(guard, net, installed);
            assertTrue(first.skipped(), hook + ": 2^16 overflows float16, got " + first);
            assertArrayEquals(before, w1(net), hook + ": the overflowing step leaves W1 untouched");
            assertEquals(32768.0, guard.lossScale(), hook);
            StepResult<?> second = fit(guard, net, installed);
            assertTrue(second.applies(), hook + ": " + second);
            Float16Fixture.assertCloseToFloat32(reference.w1, received.w1, hook + ": the unscaled float16 gradient of W1");
            Float16Fixture.assertNormClose(reference.norm, second, hook + ": the global norm of the unscaled float16 gradients");
            assertFalse(java.util.Arrays.equals(before, w1(net)), hook + ": W1 learns");
        }
    }

    private static StepResult<?> fit(Dl4jGuard guard, MultiLayerNetwork net, boolean installed) {
        if (installed) {
            net.fit(batch(DataType.HALF));
            return guard.lastResult().orElseThrow();
        }
        return guard.step(net, batch(DataType.HALF));
    }

    /**
     * Adam's default epsilon, 1e-8, is 0 in float16, and the squared gradients (about 1e-8) underflow
     * too: DL4J's float16 Adam then divides 0 by 0 and every parameter becomes NaN on the first
     * step, with or without GradGuard. An epsilon of 1e-4 (a normal float16) keeps it finite.
     */
    @Test
    void a_float16_overflow_leaves_parameters_and_adam_state_untouched() {
        MultiLayerNetwork net = network(DataType.HALF, new Adam(1e-3, 0.9, 0.999, 1e-4));
        Dl4jGuard guard = Dl4jGuard.of(Transforms.dynamicLossScale(1024, 2, 0.5, 2000)).install(net);
        net.fit(batch(DataType.HALF));
        assertTrue(guard.lastResult().orElseThrow().applies());
        INDArray params = net.params().dup();
        for (float v : params.castTo(DataType.FLOAT).toFloatVector()) {
            assertTrue(Float.isFinite(v), "finite parameters: " + params);
        }
        INDArray state = net.getUpdater().getStateViewArray().dup();
        // targets of 100: the loss gradient, about 200, times 1024 overflows float16
        net.fit(new DataSet(Nd4j.create(X).castTo(DataType.HALF), Nd4j.create(Y).addi(100).castTo(DataType.HALF)));
        assertTrue(guard.lastResult().orElseThrow().skipped(), guard.lastResult().orElseThrow().toString());
        assertEquals(params, net.params(), "parameters untouched");
        assertEquals(state, net.getUpdater().getStateViewArray(), "Adam's moments untouched");
        assertEquals(512.0, guard.lossScale());
    }
}
