package io.gradguard.djl;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.Blocks;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.convolutional.Conv2d;
import ai.djl.nn.core.Linear;
import ai.djl.nn.norm.BatchNorm;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import java.util.Random;

/**
 * A small CNN: 3x3 convolution (→ 4 channels), batch normalization, ReLU, flatten, dense (3 class
 * scores); its data (noise with a bright 3x3 patch whose place is the class, as in the DL4J tests);
 * and one forward and backward pass in training mode (batch statistics) or inference mode (the
 * running statistics).
 */
final class DjlCnn {
    private DjlCnn() {
    }

    static SequentialBlock block() {
        return new SequentialBlock()
                .add(Conv2d.builder().setKernelShape(new Shape(3, 3)).setFilters(4).build())
                .add(BatchNorm.builder().build())
                .add(Activation::relu)
                .add(Blocks.batchFlattenBlock())
                .add(Linear.builder().setUnits(3).build());
    }

    /** A fresh CNN model (PyTorch seed {@code seed} for its initial weights). */
    static Model model(int seed) {
        Engine.getEngine("PyTorch").setRandomSeed(seed);
        Model model = Model.newInstance("cnn", Device.cpu(), "PyTorch");
        model.setBlock(block());
        return model;
    }

    /** A trainer of {@code model}, softmax cross-entropy on class indices. */
    static Trainer trainer(Model model, Optimizer optimizer) {
        Trainer t = model.newTrainer(Nets.config(Loss.softmaxCrossEntropyLoss(), optimizer));
        t.initialize(new Shape(1, 2, 6, 6));
        return t;
    }

    /** {@code n} examples: x [n, 2, 6, 6] (N(0, 1) plus 2 on a patch at (0,0), (0,3) or (3,0) by class), y [n] class indices. */
    static NDList batch(NDManager manager, int n, long seed) {
        Random r = new Random(seed);
        float[] x = new float[n * 2 * 36];
        float[] y = new float[n];
        for (int i = 0; i < n; i++) {
            int c = r.nextInt(3);
            y[i] = c;
            int top = c == 2 ? 3 : 0;
            int left = c == 1 ? 3 : 0;
            for (int j = 0; j < 72; j++) {
                int h = j % 36 / 6;
                int w = j % 6;
                boolean patch = h >= top && h < top + 3 && w >= left && w < left + 3;
                x[i * 72 + j] = (float) r.nextGaussian() + (patch ? 2f : 0f);
            }
        }
        return new NDList(manager.create(x, new Shape(n, 2, 6, 6)), manager.create(y, new Shape(n)));
    }

    /** Forward ({@code training}: batch statistics, else the running ones) and backward of rows [from, to) of {@code batch}. */
    static void backward(Trainer trainer, NDList batch, int from, int to, boolean training) {
        try (NDManager scope = trainer.getManager().newSubManager(); GradientCollector gc = trainer.newGradientCollector()) {
            NDArray x = batch.get(0).get(from + ":" + to);
            NDArray y = batch.get(1).get(from + ":" + to);
            x.attach(scope);
            y.attach(scope);
            NDList out = training ? trainer.forward(new NDList(x))
                    : trainer.getModel().getBlock().forward(new ParameterStore(scope, false), new NDList(x), false);
            gc.backward(trainer.getLoss().evaluate(new NDList(y), out));
        }
    }

    /** The share of {@code batch} classified right, in inference mode. */
    static double accuracy(Trainer trainer, NDList batch) {
        try (NDManager scope = trainer.getManager().newSubManager()) {
            NDArray out = trainer.getModel().getBlock().forward(new ParameterStore(scope, false), new NDList(batch.get(0)), false).head();
            out.attach(scope);
            NDArray hits = out.argMax(1).toType(ai.djl.ndarray.types.DataType.FLOAT32, false).eq(batch.get(1));
            hits.attach(scope);
            return hits.toType(ai.djl.ndarray.types.DataType.FLOAT32, false).mean().getFloat();
        }
    }
}
