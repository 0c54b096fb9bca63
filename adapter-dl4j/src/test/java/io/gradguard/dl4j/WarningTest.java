package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.Transforms;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import java.util.List;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.PReLULayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayer;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.lossfunctions.LossFunctions;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.learning.config.Sgd;

/** One clear warning each for DL4J's own GradientNormalization and for layer types without a known layout (slf4j-simple writes to System.err). */
class WarningTest {
    @Test
    void built_in_gradient_normalization_is_warned_about_once() {
        MultiLayerNetwork net = Nets.mlp(new Sgd(0.1), GradientNormalization.ClipL2PerLayer, 1.0);
        Dl4jGuard guard = Dl4jGuard.of(Transforms.clipByGlobalNorm(1.0));
        PrintStream saved = System.err;
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        try {
            for (int s = 0; s < 3; s++) {
                guard.step(net, Nets.batch(8, s));
            }
        } finally {
            System.setErr(saved);
        }
        String log = err.toString(StandardCharsets.UTF_8);
        assertEquals(1, log.split("GradientNormalization configured", -1).length - 1, log);
        assertTrue(log.contains("WARN") && log.contains("0=ClipL2PerLayer") && log.contains("both apply"), log);
    }

    @Test
    void a_layer_type_without_a_known_layout_is_named_once_and_gets_the_default() {
        MultiLayerNetwork net = new MultiLayerNetwork(Nets.base(new Sgd(0.1), null, 0).list()
                .layer(new DenseLayer.Builder().nIn(Nets.IN).nOut(5).activation(Activation.IDENTITY).build())
                .layer(new PReLULayer.Builder().inputShape(5).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(5).nOut(Nets.OUT).activation(Activation.SOFTMAX).build())
                .build());
        net.init();
        Dl4jGuard guard = Dl4jGuard.of(Transforms.adaptiveClip(0.01));
        PrintStream saved = System.err;
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        try {
            for (int s = 0; s < 3; s++) {
                guard.step(net, Nets.batch(8, s));
            }
        } finally {
            System.setErr(saved);
        }
        String log = err.toString(StandardCharsets.UTF_8);
        assertEquals(1, log.split("no known layout", -1).length - 1, log);
        assertTrue(log.contains("WARN") && log.contains("[1 (PReLULayer)]"), log);
        assertEquals(List.of("1 (PReLULayer)"), Dl4jGradients.unknownLayers(net));
        GradientTensor<INDArray> alpha = Dl4jGradients.of(net).tensors().stream().filter(t -> t.name().equals("1_W")).findFirst().orElseThrow();
        assertEquals(Role.WEIGHT, alpha.role());
        assertEquals(Layout.outputLast(), alpha.layout());
    }

    @Test
    void a_frozen_layer_is_not_named() {
        MultiLayerNetwork net = new MultiLayerNetwork(Nets.base(new Sgd(0.1), null, 0).list()
                .layer(new FrozenLayer(new DenseLayer.Builder().nIn(Nets.IN).nOut(5).activation(Activation.TANH).build()))
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(5).nOut(Nets.OUT).activation(Activation.SOFTMAX).build())
                .build());
        net.init();
        assertTrue(Dl4jGradients.unknownLayers(net).isEmpty(), Dl4jGradients.unknownLayers(net).toString());
    }

    @Test
    void a_network_without_it_gets_no_warning() {
        assertTrue(Dl4jGradients.builtInNormalization(Nets.graph(new Sgd(0.1))).isEmpty());
        assertEquals(3, Dl4jGradients.builtInNormalization(Nets.graph(new Sgd(0.1), GradientNormalization.RenormalizeL2PerLayer, 1)).size());
    }
}
