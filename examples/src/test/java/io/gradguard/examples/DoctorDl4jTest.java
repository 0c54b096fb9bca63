package io.gradguard.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.doctor.Diagnosis;
import io.gradguard.core.doctor.Doctor;
import io.gradguard.core.doctor.Finding;
import io.gradguard.core.doctor.Remedy;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.dl4j.Dl4jGuard;
import java.util.SplittableRandom;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * The doctor on real DL4J training, watching a live {@link Monitor}: a deep sigmoid MLP whose lower
 * layers stop learning is diagnosed as vanishing with those layers named; a shallow ReLU MLP at a
 * sane learning rate is diagnosed healthy with nothing to change. Three seeds each.
 */
class DoctorDl4jTest {
    static final int STEPS = 30;
    static final int DEPTH = 8;

    @Test
    void deepSigmoidMlpIsVanishingWithTheLowerLayersNamed() {
        for (long seed : new long[] {1, 2, 3}) {
            MultiLayerNetwork net = mlp(seed, DEPTH, Activation.SIGMOID, WeightInit.XAVIER, 0.05);
            INDArray firstBefore = net.getParam("0_W").dup();
            INDArray outBefore = net.getParam(DEPTH + "_W").dup();
            Diagnosis d = train(net, seed, "sigmoid seed " + seed);
            String text = d.text();
            assertEquals(Diagnosis.Status.PROBLEMS, d.status(), text);
            Finding v = d.first(Finding.Kind.VANISHING);
            assertNotNull(v, text);
            assertTrue(v.layers().contains("0") && v.layers().contains("1"), "the lowest layers are named: " + v);
            assertFalse(v.layers().contains(String.valueOf(DEPTH)), "not the output layer: " + v);
            assertNotNull(d.profile(), text);
            assertTrue(d.profile().meanFactor() < 0.5, "shrinks on its way down: " + d.profile().describe());
            assertTrue(text.contains("gradients shrink x0."), text);
            assertNotNull(d.remedy(Remedy.Kind.NORMALIZATION), text);
            assertNotNull(d.remedy(Remedy.Kind.RESIDUAL), text);
            assertNotNull(d.remedy(Remedy.Kind.INITIALIZATION), text);
            assertNull(d.remedy(Remedy.Kind.CLIP_THRESHOLD), "nothing diverged, nothing to clip: " + text);
            // and the lowest layer really stopped learning: its weights moved far less than the output's
            double first = net.getParam("0_W").sub(firstBefore).norm2Number().doubleValue() / firstBefore.norm2Number().doubleValue();
            double out = net.getParam(DEPTH + "_W").sub(outBefore).norm2Number().doubleValue() / outBefore.norm2Number().doubleValue();
            assertTrue(first < 1e-3 * out, "relative change of layer 0 " + first + " vs output " + out);
            net.close();
        }
    }

    @Test
    void healthyRunSaysSoAndSuggestsNothing() {
        for (long seed : new long[] {1, 2, 3}) {
            MultiLayerNetwork net = mlp(seed, 2, Activation.RELU, WeightInit.RELU, 0.01);
            Diagnosis d = train(net, seed, "healthy seed " + seed);
            assertEquals(Diagnosis.Status.HEALTHY, d.status(), d.text());
            assertTrue(d.findings().isEmpty() && d.remedies().isEmpty() && d.prescription().isEmpty(), d.text());
            assertTrue(d.summary().contains("healthy, nothing to change"), d.summary());
            net.close();
        }
    }

    @Test
    void tooFewStepsCannotBeJudged() {
        MultiLayerNetwork net = mlp(1, 2, Activation.RELU, WeightInit.RELU, 0.01);
        Monitor monitor = Monitor.builder().name("short").build();
        Doctor doctor = Doctor.watch(monitor);
        Dl4jGuard guard = Dl4jGuard.of(GradientPipeline.of(monitor));
        for (int s = 0; s < 5; s++) {
            guard.step(net, batch(1, s));
        }
        monitor.close();
        Diagnosis d = doctor.diagnosis();
        assertEquals(Diagnosis.Status.CANNOT_JUDGE, d.status(), d.text());
        assertTrue(d.reason().contains("5 applied steps") && d.remedies().isEmpty(), d.reason());
        net.close();
    }

    private static Diagnosis train(MultiLayerNetwork net, long seed, String name) {
        Monitor monitor = Monitor.builder().name(name).build();
        Doctor doctor = Doctor.watch(monitor);
        Dl4jGuard guard = Dl4jGuard.of(GradientPipeline.of(monitor));
        for (int s = 0; s < STEPS; s++) {
            guard.step(net, batch(seed, s));
        }
        monitor.close();
        return doctor.diagnosis();
    }

    static MultiLayerNetwork mlp(long seed, int depth, Activation act, WeightInit init, double lr) {
        NeuralNetConfiguration.ListBuilder b = new NeuralNetConfiguration.Builder().seed(seed).dataType(DataType.FLOAT)
                .updater(new Sgd(lr)).weightInit(init).list();
        int in = 16;
        for (int l = 0; l < depth; l++) {
            b.layer(new DenseLayer.Builder().nIn(in).nOut(32).activation(act).build());
            in = 32;
        }
        b.layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(in).nOut(1).activation(Activation.IDENTITY).build());
        MultiLayerNetwork net = new MultiLayerNetwork(b.build());
        net.init();
        return net;
    }

    /** y = sin(sum of the first 4 features) + 0.5 * feature 5, x ~ N(0, I): a smooth regression target. */
    static DataSet batch(long seed, int step) {
        SplittableRandom rnd = new SplittableRandom(seed * 1_000_003 + step);
        float[] x = new float[32 * 16];
        float[] y = new float[32];
        for (int i = 0; i < 32; i++) {
            double s = 0;
            for (int j = 0; j < 16; j++) {
                double g = rnd.nextGaussian();
                x[i * 16 + j] = (float) g;
                s += j < 4 ? g : 0;
            }
            y[i] = (float) (Math.sin(s) + 0.5 * x[i * 16 + 4]);
        }
        return new DataSet(Nd4j.create(x, new long[] {32, 16}, 'c'), Nd4j.create(y, new long[] {32, 1}, 'c'));
    }
}
