package io.gradguard.examples;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.EasyTrain;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.ArrayDataset;
import ai.djl.training.listener.EvaluatorTrainingListener;
import ai.djl.training.listener.TrainingListener;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import ai.djl.translate.TranslateException;
import io.gradguard.core.Transforms;
import io.gradguard.djl.DjlGuard;
import java.io.IOException;
import java.util.Random;

/**
 * Guard DJL's {@code EasyTrain.fit}: create the trainer through a {@link DjlGuard} instead of
 * {@code model.newTrainer(config)}, and pass DJL's listener set through {@code guard.listeners}
 * (so that DJL's divergence check leaves a NaN batch to the guard); everything else stays as it was.
 *
 * <pre>{@code
 * DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
 * config.addTrainingListeners(guard.listeners(TrainingListener.Defaults.logging()));
 * try (DjlTrainer trainer = guard.newTrainer(model, config)) {   // was: model.newTrainer(config)
 *     trainer.initialize(inputShape);
 *     EasyTrain.fit(trainer, epochs, trainingSet, validationSet);
 * }
 * }</pre>
 *
 * <p>The guarded trainer's {@code step()} runs the pipeline on PyTorch's gradients and calls the
 * optimizer only when the step applies (a skipped step leaves the weights and the optimizer state
 * alone). Here a small MLP is trained with a learning rate at which plain SGD diverges. Run it from
 * the repository root:
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.GuardDjlEasyTrain
 * </pre>
 */
public final class GuardDjlEasyTrain {
    private GuardDjlEasyTrain() {
    }

    public static void main(String[] args) throws IOException, TranslateException {
        System.setProperty("ai.djl.offline", "true");                  // no downloads
        System.out.printf("plain SGD:   training loss after 5 epochs %.4f%n", train(false));
        System.out.printf("GradGuard:   training loss after 5 epochs %.4f%n", train(true));
    }

    /** Five epochs of {@code EasyTrain.fit}, guarded or not; returns the last epoch's training loss. */
    public static double train(boolean guarded) throws IOException, TranslateException {
        Engine.getEngine("PyTorch").setRandomSeed(7);
        try (Model model = Model.newInstance("mlp", Device.cpu(), "PyTorch"); NDManager manager = NDManager.newBaseManager(Device.cpu())) {
            model.setBlock(new SequentialBlock()
                    .add(Linear.builder().setUnits(32).build())
                    .add(Activation::relu)
                    .add(Linear.builder().setUnits(1).build()));
            Random rnd = new Random(1);
            float[] xs = new float[1024 * 8];
            float[] ys = new float[1024];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = (float) rnd.nextGaussian();
                ys[i / 8] += 3 * xs[i];                                     // a large-scale linear target
            }
            ArrayDataset data = new ArrayDataset.Builder()
                    .setData(manager.create(xs, new Shape(1024, 8)))
                    .optLabels(manager.create(ys, new Shape(1024, 1)))
                    .setSampling(64, false)
                    .build();
            DjlGuard guard = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0));
            DefaultTrainingConfig config = new DefaultTrainingConfig(Loss.l2Loss())
                    .optOptimizer(Optimizer.sgd().setLearningRateTracker(Tracker.fixed(0.5f)).build())
                    .optDevices(new Device[] {Device.cpu()})
                    // DJL's basic set (epoch, evaluators, divergence check); unguarded, the check would stop the diverging run
                    .addTrainingListeners(guarded ? guard.listeners(TrainingListener.Defaults.basic())
                            : new TrainingListener[] {new EvaluatorTrainingListener()});

            try (Trainer trainer = guarded ? guard.newTrainer(model, config) : model.newTrainer(config)) {
                trainer.initialize(new Shape(64, 8));
                EasyTrain.fit(trainer, 5, data, null);
                return trainer.getTrainingResult().getTrainLoss();
            }
        }
    }
}
