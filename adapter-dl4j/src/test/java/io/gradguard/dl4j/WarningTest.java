package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.Transforms;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.learning.config.Sgd;

/** A network that also has DL4J's GradientNormalization gets one clear warning (slf4j-simple writes to System.err). */
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
    void a_network_without_it_gets_no_warning() {
        assertTrue(Dl4jGradients.builtInNormalization(Nets.graph(new Sgd(0.1))).isEmpty());
        assertEquals(3, Dl4jGradients.builtInNormalization(Nets.graph(new Sgd(0.1), GradientNormalization.RenormalizeL2PerLayer, 1)).size());
    }
}
