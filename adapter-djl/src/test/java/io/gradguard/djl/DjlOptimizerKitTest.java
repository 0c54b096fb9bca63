package io.gradguard.djl;

import ai.djl.engine.Engine;
import ai.djl.training.Trainer;
import io.gradguard.core.conformance.GuardKit;

/**
 * The {@link GuardKit} through the drop-in hook: a plain DJL trainer ({@code model.newTrainer})
 * whose config's optimizer is {@code guard.wrap(model, optimizer)} (a {@link DjlOptimizer}), stepped
 * by DJL's own {@code trainer.step()} after {@code EasyTrain.trainBatch}. The trainee is
 * {@link DjlGuardKitTest}'s.
 */
class DjlOptimizerKitTest extends DjlGuardKitTest {

    @Override
    protected Hook hook() {
        return Hook.OPTIMIZER;
    }

    /** The trainee's wrapped optimizer in another model's trainer: refused at that trainer's step. */
    @Override
    protected void useWithAnotherModel(Trainee trainee) {
        Engine.getEngine("PyTorch").setRandomSeed(1);
        DjlOptimizer wrapped = (DjlOptimizer) ((DjlTrainee) trainee).stepper;
        try (ai.djl.Model model = Nets.mlp(4, 8, 2); Trainer other = model.newTrainer(Nets.config(wrapped))) {
            other.initialize(new ai.djl.ndarray.types.Shape(1, 4));
            Nets.backward(other, Nets.data(1, 4, 4, 1f), Nets.data(2, 4, 2, 1f));
            other.step();
        }
    }
}
