package io.gradguard.djl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.nn.Activation;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.EasyTrain;
import ai.djl.training.GradientCollector;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.ArrayDataset;
import ai.djl.training.dataset.Batch;
import ai.djl.training.initializer.NormalInitializer;
import ai.djl.training.listener.TrainingListener;
import ai.djl.training.loss.Loss;
import ai.djl.util.Pair;
import io.gradguard.core.Transforms;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Real DJL training on two GPUs ({@code optDevices(gpu(0), gpu(1))}, {@code EasyTrain.fit}, which
 * splits each batch over the devices), guarded through {@link DjlGuard#wrap} with
 * {@link DjlGuard#listeners} and through {@link DjlGuard#newTrainer}; compared with one GPU that
 * backpropagates the sum of the two halves' losses (the gradient DJL applies is the sum of the
 * devices' gradients). Skipped by assumption where fewer than two GPUs are visible to DJL's PyTorch
 * engine, i.e. on every CPU-only machine; the CPU simulation of the same protocol is
 * {@link DjlMultiDeviceTest}.
 *
 * <p>Run it on a machine with two CUDA GPUs and a CUDA libtorch that DJL 0.35.1 can load (the
 * module's test classpath has the CPU native, so point DJL at a CUDA build and let it download or
 * find it):
 *
 * <pre>
 * PYTORCH_FLAVOR=cu124 mvn -B -pl adapter-djl -am verify -Dtest=DjlMultiGpuTest \
 *     -Dsurefire.failIfNoSpecifiedTests=false -Dai.djl.offline=false
 * </pre>
 */
class DjlMultiGpuTest {
    private static final Device[] TWO = {Device.gpu(0), Device.gpu(1)};

    @Test
    void two_gpus_guarded_by_the_wrapped_optimizer_and_the_trainer_match_one_gpu() throws Exception {
        assumeTrue(Engine.getEngine("PyTorch").getGpuCount() >= 2, "needs two GPUs");
        float[][] x = Nets.data(7, 64, 4, 2f);
        float[][] y = Nets.data(8, 64, 3, 2f);
        x[21][2] = Float.NaN; // the second batch's first half: the step is skipped on both GPUs

        DjlGuard wrapping = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.05));
        DjlGuard training = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.05));
        DjlGuard single = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.05));
        try (NDManager data = NDManager.newBaseManager(Device.gpu(0), "PyTorch");
                Model a = mlp(); Model b = mlp(); Model c = mlp()) {
            DjlOptimizer optimizer = wrapping.wrap(a, Nets.adam(0.01f));
            DefaultTrainingConfig wrapConfig = config(wrapping.loss(Loss.l2Loss()), TWO)
                    .optOptimizer(optimizer)
                    .addTrainingListeners(wrapping.listeners(TrainingListener.Defaults.basic()));
            DefaultTrainingConfig trainConfig = config(Loss.l2Loss(), TWO).optOptimizer(Nets.adam(0.01f))
                    .addTrainingListeners(training.listeners(TrainingListener.Defaults.basic()));
            try (Trainer ta = a.newTrainer(wrapConfig); DjlTrainer tb = training.newTrainer(b, trainConfig);
                    Trainer tc = c.newTrainer(config(Loss.l2Loss(), new Device[] {Device.gpu(0)}).optOptimizer(Nets.adam(0.01f)))) {
                for (Trainer t : new Trainer[] {ta, tb, tc}) { // the same seed, so the same initial values on every copy
                    Engine.getEngine("PyTorch").setRandomSeed(1234);
                    t.initialize(new Shape(1, 4));
                }
                assertEquals(0.0, Nets.maxAbsDiff(params(c), params(a)), "initial values");
                assertEquals(0.0, Nets.maxAbsDiff(params(c), params(b)), "initial values");
                ArrayDataset dataset = new ArrayDataset.Builder().setData(data.create(x)).optLabels(data.create(y))
                        .setSampling(16, false).build();
                EasyTrain.fit(ta, 1, dataset, null);
                EasyTrain.fit(tb, 1, dataset, null);
                for (Batch batch : tc.iterateDataset(dataset)) {
                    try (GradientCollector gc = tc.newGradientCollector()) {
                        NDList xs = batch.getData();
                        NDList ys = batch.getLabels();
                        NDArray first = tc.getLoss().evaluate(new NDList(ys.head().get("0:8")), tc.forward(new NDList(xs.head().get("0:8"))));
                        NDArray second = tc.getLoss().evaluate(new NDList(ys.head().get("8:")), tc.forward(new NDList(xs.head().get("8:"))));
                        gc.backward(first.add(second));
                    }
                    single.step(tc);
                    batch.close();
                }
            }
            assertEquals(1, single.skippedCount());
            assertEquals(1, wrapping.skippedCount());
            assertEquals(1, training.skippedCount());
            for (Pair<String, Parameter> p : a.getBlock().getParameters()) {
                java.util.List<NDArray> copies = optimizer.copies(p.getValue());
                assertEquals(2, copies.size(), p.getKey());
                assertEquals(Device.gpu(1), copies.get(1).getDevice());
                assertArrayEquals(copies.get(0).toFloatArray(), copies.get(1).toFloatArray(), "copies of " + p.getKey());
            }
            Map<String, float[]> reference = params(c);
            double wrapped = Nets.maxAbsDiff(reference, params(a));
            double trained = Nets.maxAbsDiff(reference, params(b));
            assertTrue(wrapped < 1e-5, "wrap: max |two GPUs - one GPU| = " + wrapped);
            assertTrue(trained < 1e-5, "newTrainer: max |two GPUs - one GPU| = " + trained);
        }
    }

    private static Model mlp() {
        Model model = Model.newInstance("mlp", Device.gpu(0), "PyTorch");
        model.setBlock(new SequentialBlock().add(Linear.builder().setUnits(8).build()).add(Activation::relu)
                .add(Linear.builder().setUnits(3).build()));
        return model;
    }

    private static DefaultTrainingConfig config(Loss loss, Device[] devices) {
        return new DefaultTrainingConfig(loss).optDevices(devices)
                .optInitializer(new NormalInitializer(0.5f), Parameter.Type.WEIGHT);
    }

    private static Map<String, float[]> params(Model model) {
        Map<String, float[]> out = new java.util.LinkedHashMap<>();
        for (Pair<String, Parameter> p : model.getBlock().getParameters()) {
            out.put(p.getKey(), p.getValue().getArray().toFloatArray());
        }
        return out;
    }
}
