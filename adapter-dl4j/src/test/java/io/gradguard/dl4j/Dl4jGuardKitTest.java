package io.gradguard.dl4j;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.core.conformance.GuardKit;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * The {@link GuardKit} on DL4J: the kit's model as a {@code MultiLayerNetwork} (dense 4→8 tanh,
 * output 8→2 identity, MSE; DL4J's dense weights are {@code [nIn, nOut]}, the kit's {@code [in][out]}),
 * trained through {@link Dl4jGuard#step(MultiLayerNetwork, org.nd4j.linalg.dataset.api.DataSet)} with
 * DL4J's own {@code Sgd} and {@code Adam} (the listener hook cannot hold or skip, which the kit needs).
 * {@link Dl4jInstalledGuardKitTest} runs the same trainee through {@code net.fit} with the guard
 * installed on the updater ({@link #hook}, {@link #fit}).
 */
class Dl4jGuardKitTest extends GuardKit {

    /** Hooks {@code guard} on {@code net} before training; the step driver needs nothing. */
    void hook(Dl4jGuard guard, MultiLayerNetwork net) {
    }

    /** One micro-batch through the guard: here the step driver. */
    StepResult<?> fit(Dl4jGuard guard, MultiLayerNetwork net, DataSet batch) {
        return guard.step(net, batch);
    }

    static MultiLayerNetwork network(Optimizer optimizer) {
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(1)
                .updater(optimizer == Optimizer.SGD ? new Sgd(SGD_LR) : new Adam(ADAM_LR)).list()
                .layer(new DenseLayer.Builder().nIn(4).nOut(8).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(8).nOut(2)
                        .activation(Activation.IDENTITY).build())
                .build());
        net.init();
        KitModel k = KitModel.initial();
        net.getParam("0_W").assign(Nd4j.create(k.w1()));
        net.getParam("0_b").assign(Nd4j.create(k.b1()).reshape(1, 8));
        net.getParam("1_W").assign(Nd4j.create(k.w2()));
        net.getParam("1_b").assign(Nd4j.create(k.b2()).reshape(1, 2));
        return net;
    }

    static DataSet dataSet(Batch b) {
        return new DataSet(Nd4j.create(b.x()), Nd4j.create(b.y()));
    }

    final class Dl4jTrainee implements Trainee {
        final MultiLayerNetwork net;
        final Dl4jGuard guard;

        Dl4jTrainee(MultiLayerNetwork net, Dl4jGuard guard) {
            this.net = net;
            this.guard = guard;
            hook(guard, net);
        }

        @Override
        public GuardView guard() {
            return GuardView.of(guard);
        }

        @Override
        public StepView train(Batch batch) {
            return StepView.of(fit(guard, net, dataSet(batch)));
        }

        @Override
        public float[] parameters() {
            return net.params().dup().toFloatVector();
        }

        @Override
        public float[] optimizerState() {
            INDArray state = net.getUpdater().getStateViewArray();
            return state == null ? new float[0] : state.dup().toFloatVector();
        }

        @Override
        public void checkpoint(Path dir) throws IOException {
            ModelSerializer.writeModel(net, dir.resolve("net.zip").toFile(), true);
            try (OutputStream out = Files.newOutputStream(dir.resolve("guard.bin"))) {
                guard.saveState(out);
            }
        }

        @Override
        public long nativeBytes() {
            return org.bytedeco.javacpp.Pointer.totalBytes();
        }

        @Override
        public void close() {
            guard.close();
        }
    }

    /**
     * JavaCPP's {@code totalBytes} moves by 1-3 MB over 20,000 steps of plain {@code net.fit} alone
     * (ND4J's workspaces and caches), so the bound is twice the kit's default; GradGuard's own
     * temporaries are checked exactly ({@code temporaryCount() == 0}, {@code UpdateRatioTest}).
     */
    @Override
    protected long allowedNativeGrowth() {
        return 8L << 20;
    }

    @Override
    protected Trainee newTrainee(GradientPipeline pipeline, Optimizer optimizer) {
        Dl4jGuard guard = Dl4jGuard.of(pipeline);
        return new Dl4jTrainee(network(optimizer), guard);
    }

    @Override
    protected Trainee restore(Path dir, GradientPipeline pipeline, Optimizer optimizer) throws IOException {
        Dl4jGuard guard = Dl4jGuard.of(pipeline);
        try (InputStream in = Files.newInputStream(dir.resolve("guard.bin"))) {
            guard.restoreState(in);
        }
        return new Dl4jTrainee(ModelSerializer.restoreMultiLayerNetwork(dir.resolve("net.zip").toFile(), true), guard);
    }

    @Override
    protected void useWithAnotherModel(Trainee trainee) {
        ((Dl4jTrainee) trainee).guard.step(network(Optimizer.SGD), dataSet(Batch.of(1, 4)));
    }
}
