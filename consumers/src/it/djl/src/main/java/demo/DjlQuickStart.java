package demo;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDScope;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.core.Linear;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.GradientCollector;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.djl.DjlGuard;

public final class DjlQuickStart {
    public static void main(String[] args) {
        DjlGuard guard = DjlGuard.of(
                Transforms.skipNonFinite(3),          // a NaN/Inf gradient: skip the step
                Transforms.clipByGlobalNorm(1.0));
        try (Model model = Model.newInstance("linear")) {
            model.setBlock(Linear.builder().setUnits(1).build());
            try (Trainer trainer = model.newTrainer(new DefaultTrainingConfig(Loss.l2Loss()))) {
                trainer.initialize(new Shape(8, 4));
                NDArray x = trainer.getManager().randomNormal(new Shape(8, 4));
                NDArray y = x.sum(new int[] {1}, true).mul(10);
                for (int step = 0; step < 5; step++) {
                    float loss;
                    try (NDScope scope = new NDScope(); GradientCollector gc = trainer.newGradientCollector()) {
                        NDArray l = trainer.getLoss().evaluate(new NDList(y), trainer.forward(new NDList(x)));
                        gc.backward(l);
                        loss = l.getFloat();
                    }                                     // closes this step's arrays
                    StepResult<NDArray> r = guard.step(trainer);   // instead of trainer.step()
                    System.out.printf("step %d: %s, loss %.4f%n", step, r.action(), loss);
                }
            }
        }
    }
}
