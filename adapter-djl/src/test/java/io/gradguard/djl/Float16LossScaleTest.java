package io.gradguard.djl;

import static io.gradguard.core.conformance.Float16Fixture.W1;
import static io.gradguard.core.conformance.Float16Fixture.W2;
import static io.gradguard.core.conformance.Float16Fixture.X;
import static io.gradguard.core.conformance.Float16Fixture.Y;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.EasyTrain;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.Batch;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import ai.djl.translate.Batchifier;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.conformance.Float16Fixture;
import io.gradguard.core.spi.TensorOps;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Loss scaling in float16 on DJL's PyTorch engine on CPU ({@code model.setDataType(FLOAT16)}) with
 * {@link Float16Fixture}: the gradient of W1 underflows to 0 without it, and with
 * {@code dynamicLossScale()} DJL's SGD receives the float32 gradient within float16 precision,
 * through a {@link DjlTrainer} and {@code EasyTrain.trainBatch}.
 */
class Float16LossScaleTest {

    /** The fixture's model in {@code dataType}: linear(2, no bias) → linear(1, no bias), DJL's L2 loss, SGD lr 1. */
    static final class Net implements AutoCloseable {
        final Model model;
        final Trainer trainer;
        final DjlGuard guard;
        final DataType dataType;
        float[] received;

        @SuppressWarnings({"unchecked", "rawtypes"})
        Net(DataType dataType, GradientPipeline pipeline) {
            this.dataType = dataType;
            pipeline.addListener((g, r) -> {
                if (r.applies()) {
                    received = ((TensorOps) r.ops()).toHostArray(g.get(0).gradient());
                }
            });
            guard = DjlGuard.of(pipeline);
            model = Model.newInstance("fp16", Device.cpu(), "PyTorch");
            model.setDataType(dataType);
            model.setBlock(new SequentialBlock().add(Linear.builder().setUnits(2).optBias(false).build())
                    .add(Linear.builder().setUnits(1).optBias(false).build()));
            Optimizer sgd = Optimizer.sgd().setLearningRateTracker(Tracker.fixed(1f)).build();
            trainer = guard.newTrainer(model, new DefaultTrainingConfig(Loss.l2Loss()).optOptimizer(sgd)
                    .optDevices(new Device[] {Device.cpu()}));
            trainer.initialize(new Shape(1, 2));
            List<float[]> values = List.of(Float16Fixture.transposed(W1), Float16Fixture.transposed(W2));
            List<Parameter> params = model.getBlock().getParameters().values();
            for (int i = 0; i < 2; i++) {
                try (NDManager m = trainer.getManager().newSubManager()) {
                    params.get(i).getArray().set(new NDIndex(":"),
                            m.create(values.get(i), params.get(i).getArray().getShape()).toType(dataType, false));
                }
            }
        }

        StepResult<?> step() {
            try (NDManager m = trainer.getManager().newSubManager();
                    Batch batch = new Batch(m, new NDList(m.create(X).toType(dataType, false)),
                            new NDList(m.create(Y).toType(dataType, false)), X.length, Batchifier.STACK, Batchifier.STACK, 0, 0)) {
                EasyTrain.trainBatch(trainer, batch);
                trainer.step();
            }
            return guard.lastResult().orElseThrow();
        }

        float[] w1() {
            return model.getBlock().getParameters().values().get(0).getArray().toType(DataType.FLOAT32, true).toFloatArray();
        }

        @Override
        public void close() {
            guard.close();
            trainer.close();
            model.close();
        }
    }

    @Test
    void a_float16_model_underflows_without_loss_scaling_and_receives_the_float32_gradient_with_it() {
        float[] reference;
        double norm;
        try (Net net = new Net(DataType.FLOAT32, GradientPipeline.of(Float16Fixture.clip()))) {
            norm = Float16Fixture.norm(net.step());
            reference = net.received;
        }
        try (Net plain = new Net(DataType.FLOAT16, GradientPipeline.of(Float16Fixture.clip()))) {
            float[] before = plain.w1();
            assertTrue(plain.step().applies());
            Float16Fixture.assertAllZero(plain.received, "the float16 gradient of W1 without loss scaling");
            assertArrayEquals(before, plain.w1(), "W1 does not learn: its gradient vanished by arithmetic");
        }
        try (Net scaled = new Net(DataType.FLOAT16, GradientPipeline.of(Transforms.dynamicLossScale(), Float16Fixture.clip()))) {
            float[] before = scaled.w1();
            // a float16 loss times 2^16 is inf (float16 ends at 65504): the first step overflows and backs off
            StepResult<?> first = scaled.step();
            assertTrue(first.skipped(), "2^16 overflows a float16 loss, got " + first);
            assertArrayEquals(before, scaled.w1(), "the overflowing step leaves W1 untouched");
            assertEquals(32768.0, scaled.guard.lossScale());
            StepResult<?> second = scaled.step();
            assertTrue(second.applies(), second.toString());
            Float16Fixture.assertCloseToFloat32(reference, scaled.received, "the unscaled float16 gradient of W1");
            Float16Fixture.assertNormClose(norm, second, "the global norm of the unscaled float16 gradients");
            assertFalse(java.util.Arrays.equals(before, scaled.w1()), "W1 learns");
        }
    }
}
