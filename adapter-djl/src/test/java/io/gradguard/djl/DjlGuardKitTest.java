package io.gradguard.djl;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.Parameter;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.EasyTrain;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import ai.djl.training.tracker.Tracker;
import ai.djl.translate.Batchifier;
import ai.djl.util.Pair;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.conformance.GuardKit;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The {@link GuardKit} on DJL (PyTorch engine, CPU): the kit's model as two {@link Linear} blocks,
 * {@link Loss#l2Loss()} (½ mean squared error), DJL's SGD and Adam, trained by
 * {@code EasyTrain.trainBatch} and a {@link DjlTrainer}'s {@code step()} ({@link Hook#TRAINER}; a
 * subclass runs the kit through the other hook, {@link DjlOptimizerKitTest}).
 *
 * <p>Checkpoints: {@code model.save}, {@code guard.saveState}, and Adam's moments and update
 * counts through {@link AdamState}: DJL has no API that saves an optimizer's state.
 */
class DjlGuardKitTest extends GuardKit {

    /** How the guard is attached to DJL's training. */
    enum Hook {
        /** {@code guard.newTrainer(model, config)}: a {@link DjlTrainer}. */
        TRAINER,
        /** {@code model.newTrainer(config)} with {@code config.optOptimizer(guard.wrap(model, optimizer))}: a {@link DjlOptimizer}. */
        OPTIMIZER
    }

    /** The hook this suite runs the kit through. */
    protected Hook hook() {
        return Hook.TRAINER;
    }

    /** The kit's model trained through DJL's {@code EasyTrain.trainBatch} and {@code trainer.step()}, guarded by {@code hook}. */
    static final class DjlTrainee implements Trainee {
        final DjlGuard guard;
        final Model model;
        final ai.djl.training.optimizer.Optimizer optimizer;
        final Trainer trainer;
        /** The optimizer in the trainer's config: {@code optimizer}, or (hook OPTIMIZER) it wrapped by the guard. */
        final ai.djl.training.optimizer.Optimizer stepper;

        /** A trainee with the kit's initial weights, or (dir not null) the weights saved in {@code dir}. */
        DjlTrainee(GradientPipeline pipeline, Optimizer kind, Path dir, Hook hook) throws IOException {
            guard = DjlGuard.of(pipeline);
            model = Model.newInstance("kit", Device.cpu(), "PyTorch");
            model.setBlock(new SequentialBlock().add(Linear.builder().setUnits(8).build()).add(Activation::tanh)
                    .add(Linear.builder().setUnits(2).build()));
            optimizer = kind == Optimizer.SGD ? ai.djl.training.optimizer.Optimizer.sgd().setLearningRateTracker(Tracker.fixed(SGD_LR)).build()
                    : ai.djl.training.optimizer.Optimizer.adam().optLearningRateTracker(Tracker.fixed(ADAM_LR)).build();
            if (dir != null) {
                try {
                    model.load(dir, "kit");
                } catch (ai.djl.MalformedModelException e) {
                    throw new IOException(e);
                }
                model.getBlock().freezeParameters(false);
            }
            DefaultTrainingConfig config = new DefaultTrainingConfig(hook == Hook.TRAINER ? Loss.l2Loss() : guard.loss(Loss.l2Loss()))
                    .optDevices(new Device[] {Device.cpu()});
            stepper = hook == Hook.TRAINER ? optimizer : guard.wrap(model, optimizer);
            trainer = hook == Hook.TRAINER ? guard.newTrainer(model, config.optOptimizer(stepper))
                    : model.newTrainer(config.optOptimizer(stepper));
            if (dir == null) {
                trainer.initialize(new Shape(1, 4));
                KitModel k = KitModel.initial();
                List<float[]> values = List.of(transposed(k.w1()), k.b1(), transposed(k.w2()), k.b2());
                for (int i = 0; i < 4; i++) {
                    parameters(model).get(i).getArray().set(values.get(i));
                }
            }
        }

        /** [in][out] (the kit's layout) to DJL's [out, in], flattened. */
        private static float[] transposed(float[][] w) {
            float[] out = new float[w.length * w[0].length];
            for (int i = 0; i < w.length; i++) {
                for (int o = 0; o < w[0].length; o++) {
                    out[o * w.length + i] = w[i][o];
                }
            }
            return out;
        }

        static List<Parameter> parameters(Model model) {
            return model.getBlock().getParameters().values();
        }

        @Override
        public GuardView guard() {
            return GuardView.of(guard);
        }

        @Override
        public StepView train(Batch b) {
            try (NDManager m = trainer.getManager().newSubManager();
                    ai.djl.training.dataset.Batch batch = new ai.djl.training.dataset.Batch(m, new NDList(m.create(b.x())), new NDList(m.create(b.y())), b.x().length,
                    Batchifier.STACK, Batchifier.STACK, 0, 0)) {
                EasyTrain.trainBatch(trainer, batch);
                trainer.step();
            }
            return StepView.of(guard.lastResult().orElseThrow());
        }

        @Override
        public float[] parameters() {
            return AdamState.concat(parameters(model).stream().map(p -> p.getArray().toFloatArray()).toList());
        }

        @Override
        public float[] optimizerState() {
            return AdamState.read(optimizer, parameters(model));
        }

        @Override
        public void checkpoint(Path dir) throws IOException {
            model.save(dir, "kit");
            try (OutputStream out = Files.newOutputStream(dir.resolve("guard.bin"))) {
                guard.saveState(out);
            }
            AdamState.save(optimizer, parameters(model), dir.resolve("adam.bin"));
        }

        /**
         * Bytes of every NDArray alive in the process, DJL's own account of the native tensors it
         * holds (its system manager holds every base manager and every detached array): a leaked
         * gradient handle or temporary shows here exactly, without the noise of the process's RSS
         * (heap sizing, malloc arenas, the JIT).
         */
        @Override
        public long nativeBytes() {
            NDManager root = trainer.getManager();
            while (root.getParentManager() != null) {
                root = root.getParentManager();
            }
            long bytes = 0;
            for (ai.djl.ndarray.NDArray a : root.getManagedArrays()) {
                if (!a.isReleased()) { // another test's array may be released while still listed
                    bytes += a.size() * a.getDataType().getNumOfBytes();
                }
            }
            return bytes;
        }

        @Override
        public void close() {
            guard.close();
            trainer.close();
            model.close();
        }
    }

    /**
     * None: {@link DjlTrainee#nativeBytes()} counts DJL's live arrays exactly, and the kit's model
     * is so small that one leaked gradient handle a step (232 bytes) stays under the kit's default.
     */
    @Override
    protected long allowedNativeGrowth() {
        return 1;
    }

    @Override
    protected Trainee newTrainee(GradientPipeline pipeline, Optimizer optimizer) {
        try {
            return new DjlTrainee(pipeline, optimizer, null, hook());
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    @Override
    protected Trainee restore(Path dir, GradientPipeline pipeline, Optimizer optimizer) throws IOException {
        DjlTrainee t = new DjlTrainee(pipeline, optimizer, dir, hook());
        try (InputStream in = Files.newInputStream(dir.resolve("guard.bin"))) {
            t.guard.restoreState(in); // no trainer needed: applied at the guard's first step
        }
        AdamState.load(t.optimizer, DjlTrainee.parameters(t.model), t.trainer.getManager(), dir.resolve("adam.bin"));
        return t;
    }

    @Override
    protected void useWithAnotherModel(Trainee trainee) {
        Engine.getEngine("PyTorch").setRandomSeed(1);
        try (Trainer other = Nets.trainer(4, 8, 2, Nets.sgd(SGD_LR))) {
            Nets.backward(other, Nets.data(1, 4, 4, 1f), Nets.data(2, 4, 2, 1f));
            ((DjlTrainee) trainee).guard.step(other);
        }
    }
}
