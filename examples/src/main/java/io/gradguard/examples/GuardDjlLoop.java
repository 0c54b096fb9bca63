package io.gradguard.examples;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.GradientCollector;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.djl.DjlGuard;
import java.util.Random;

/**
 * Guard a hand-written DJL training loop: call {@code guard.step(trainer, context)} where the loop
 * called {@code trainer.step()}.
 *
 * <pre>{@code
 * try (GradientCollector gc = trainer.newGradientCollector()) {
 *     NDArray loss = trainer.getLoss().evaluate(labels, trainer.forward(data));
 *     gc.backward(loss);
 * }
 * StepResult<NDArray> r = guard.step(trainer, StepContext.ofBatch(64));   // was: trainer.step()
 * }</pre>
 *
 * <p>The pipeline here drops a batch whose gradient holds NaN/Inf (a corrupt record) without
 * touching the weights or the optimizer, accumulates 4 batches per optimizer step, and clips the
 * global gradient norm of their mean. Run it from the repository root:
 * <pre>
 * mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.mainClass=io.gradguard.examples.GuardDjlLoop
 * </pre>
 */
public final class GuardDjlLoop {
    private GuardDjlLoop() {
    }

    public static void main(String[] args) {
        System.setProperty("ai.djl.offline", "true");                  // no downloads
        Engine.getEngine("PyTorch").setRandomSeed(7);
        DjlGuard guard = DjlGuard.of(
                Transforms.skipNonFinite(3),                              // skip NaN/Inf steps; the 4th in a row throws
                Transforms.accumulate(4),                                 // 4 batches of 16 per optimizer step
                Transforms.clipByGlobalNorm(1.0));
        try (Model model = Model.newInstance("mlp", Device.cpu(), "PyTorch")) {
            model.setBlock(new SequentialBlock()
                    .add(Linear.builder().setUnits(32).build())
                    .add(Activation::relu)
                    .add(Linear.builder().setUnits(1).build()));
            DefaultTrainingConfig config = new DefaultTrainingConfig(Loss.l2Loss())
                    .optOptimizer(Optimizer.sgd().setLearningRateTracker(Tracker.fixed(0.1f)).build())
                    .optDevices(new Device[] {Device.cpu()});
            try (Trainer trainer = model.newTrainer(config)) {
                trainer.initialize(new Shape(16, 8));
                Random rnd = new Random(1);
                for (int batch = 0; batch < 400; batch++) {
                    float[] xs = new float[16 * 8];
                    float[] ys = new float[16];
                    for (int i = 0; i < xs.length; i++) {
                        xs[i] = (float) rnd.nextGaussian();
                        ys[i / 8] += 3 * xs[i];
                    }
                    if (batch == 201) {
                        xs[5] = Float.NaN;                                  // a corrupt record
                    }
                    float loss;
                    try (NDManager m = trainer.getManager().newSubManager(); GradientCollector gc = trainer.newGradientCollector()) {
                        NDArray pred = trainer.forward(new NDList(m.create(xs, new Shape(16, 8)))).singletonOrThrow();
                        NDArray l = trainer.getLoss().evaluate(new NDList(m.create(ys, new Shape(16, 1))), new NDList(pred));
                        gc.backward(l);
                        loss = l.getFloat();
                    }
                    StepResult<NDArray> r = guard.step(trainer, StepContext.ofBatch(16).withLoss(loss));
                    if (r.skipped()) {
                        System.out.printf("batch %d skipped: %s%n", batch, r.action().reason());
                    } else if (r.applies() && guard.stepCount() % 25 == 0) {
                        System.out.printf("optimizer step %3d  loss %.4f%n", guard.stepCount(), loss);
                    }
                }
                System.out.printf("%d optimizer steps from 400 batches, %d skipped%n",
                        guard.stepCount(), guard.skippedCount());
            }
        }
    }
}
