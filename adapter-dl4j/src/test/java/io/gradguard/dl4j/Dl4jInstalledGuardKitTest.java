package io.gradguard.dl4j;

import io.gradguard.core.StepResult;
import io.gradguard.core.conformance.GuardKit;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.dataset.DataSet;

/**
 * The {@link GuardKit} on DL4J with {@code net.fit(dataSet)} unchanged: the guard installed on the
 * network's updater ({@link Dl4jGuard#install(MultiLayerNetwork)}). The trainee is
 * {@link Dl4jGuardKitTest}'s.
 */
class Dl4jInstalledGuardKitTest extends Dl4jGuardKitTest {

    @Override
    void hook(Dl4jGuard guard, MultiLayerNetwork net) {
        guard.install(net);
    }

    @Override
    StepResult<?> fit(Dl4jGuard guard, MultiLayerNetwork net, DataSet batch) {
        StepResult<?> before = guard.lastResult().orElse(null);
        net.fit(batch);
        StepResult<?> result = guard.lastResult().orElseThrow();
        if (result == before) {
            throw new AssertionError("net.fit did not run the guard");
        }
        return result;
    }

    @Override
    protected void useWithAnotherModel(Trainee trainee) {
        ((Dl4jTrainee) trainee).guard.install(network(Optimizer.SGD));
    }
}
