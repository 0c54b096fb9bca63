package io.gradguard.djl;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.Parameter;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.GradientCollector;
import ai.djl.training.Trainer;
import ai.djl.training.initializer.NormalInitializer;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import ai.djl.util.Pair;
import java.util.LinkedHashMap;
import java.util.Map;

/** Small real DJL models and training helpers for the integration tests (PyTorch engine, CPU). */
final class Nets {
    private Nets() {
    }

    static Model mlp(int in, int hidden, int out) {
        Engine.getEngine("PyTorch").setRandomSeed(1234);
        SequentialBlock block = new SequentialBlock()
                .add(Linear.builder().setUnits(hidden).build())
                .add(Activation::relu)
                .add(Linear.builder().setUnits(out).build());
        Model model = Model.newInstance("mlp", Device.cpu(), "PyTorch");
        model.setBlock(block);
        return model;
    }

    static DefaultTrainingConfig config(Optimizer optimizer) {
        return config(Loss.l2Loss(), optimizer);
    }

    static DefaultTrainingConfig config(Loss loss, Optimizer optimizer) {
        return new DefaultTrainingConfig(loss)
                .optOptimizer(optimizer)
                .optDevices(new Device[] {Device.cpu()})
                .optInitializer(new NormalInitializer(0.5f), Parameter.Type.WEIGHT);
    }

    static Optimizer sgd(float lr) {
        return Optimizer.sgd().setLearningRateTracker(Tracker.fixed(lr)).build();
    }

    static Optimizer adam(float lr) {
        return Optimizer.adam().optLearningRateTracker(Tracker.fixed(lr)).build();
    }

    /** A trainer for a fresh MLP, initialized for inputs of width {@code in}. */
    static Trainer trainer(int in, int hidden, int out, Optimizer optimizer) {
        Model model = mlp(in, hidden, out);
        Trainer t = model.newTrainer(config(optimizer));
        t.initialize(new Shape(1, in));
        return t;
    }

    /** Forward and backward of one batch; the batch's arrays are closed on return. Returns the loss. */
    static float backward(Trainer trainer, float[][] x, float[][] y) {
        try (NDManager batch = trainer.getManager().newSubManager(); GradientCollector gc = trainer.newGradientCollector()) {
            NDArray xs = batch.create(x);
            NDArray ys = batch.create(y);
            NDList pred = trainer.forward(new NDList(xs));
            NDArray loss = trainer.getLoss().evaluate(new NDList(ys), pred);
            gc.backward(loss);
            return loss.getFloat();
        }
    }

    /** Host copies of every parameter, by key. */
    static Map<String, float[]> params(Trainer trainer) {
        Map<String, float[]> out = new LinkedHashMap<>();
        for (Pair<String, Parameter> p : trainer.getModel().getBlock().getParameters()) {
            out.put(p.getKey(), p.getValue().getArray().toFloatArray());
        }
        return out;
    }

    /** Host copies of every gradient, by key (the handles are closed). */
    static Map<String, float[]> grads(Trainer trainer) {
        Map<String, float[]> out = new LinkedHashMap<>();
        for (Pair<String, Parameter> p : trainer.getModel().getBlock().getParameters()) {
            try (NDArray g = p.getValue().getArray().getGradient()) {
                out.put(p.getKey(), g.toFloatArray());
            }
        }
        return out;
    }

    /** Copies every parameter value of {@code from} into {@code to} (same architecture). */
    static void copyParams(Trainer from, Trainer to) {
        Map<String, float[]> src = params(from);
        for (Pair<String, Parameter> p : to.getModel().getBlock().getParameters()) {
            p.getValue().getArray().set(src.get(p.getKey()));
        }
    }

    /** Multiplies the gradient of the first parameter by {@code value} (NaN or Inf poisons it). */
    static void poison(Trainer trainer, float value) {
        Parameter p = trainer.getModel().getBlock().getParameters().get(0).getValue();
        try (NDArray g = p.getArray().getGradient(); NDArray v = g.getManager().create(value)) {
            g.muli(v);
        }
    }

    /** Deterministic pseudo-random data. */
    static float[][] data(long seed, int rows, int cols, float scale) {
        java.util.Random r = new java.util.Random(seed);
        float[][] out = new float[rows][cols];
        for (float[] row : out) {
            for (int j = 0; j < cols; j++) {
                row[j] = (float) (r.nextGaussian() * scale);
            }
        }
        return out;
    }

    static float[][] rows(float[][] all, int from, int to) {
        return java.util.Arrays.copyOfRange(all, from, to);
    }

    static double maxAbsDiff(Map<String, float[]> a, Map<String, float[]> b) {
        double m = 0;
        for (String k : a.keySet()) {
            float[] x = a.get(k);
            float[] y = b.get(k);
            for (int i = 0; i < x.length; i++) {
                m = Math.max(m, Math.abs((double) x[i] - y[i]));
            }
        }
        return m;
    }
}
