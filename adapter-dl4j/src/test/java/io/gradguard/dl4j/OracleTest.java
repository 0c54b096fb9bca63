package io.gradguard.dl4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Scope;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * Differential test against DL4J's own implementation: GradGuard's transforms, run by the listener
 * and by the step driver, give the same parameters after several steps as DL4J's built-in
 * GradientNormalization modes (on the mean gradient), on a MultiLayerNetwork and a ComputationGraph.
 */
class OracleTest {
    private static final int STEPS = 6;
    private static final int BATCH = 10;

    static List<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        Object[][] modes = {
            {GradientNormalization.ClipL2PerLayer, 0.3, (Supplier<GradientTransform>) () -> Transforms.clipByLayerNorm(0.3)},
            {GradientNormalization.ClipL2PerParamType, 0.2, (Supplier<GradientTransform>) () -> Transforms.clipByNorm(0.2)},
            {GradientNormalization.ClipElementWiseAbsoluteValue, 0.05, (Supplier<GradientTransform>) () -> Transforms.clipByValue(0.05)},
            {GradientNormalization.RenormalizeL2PerLayer, 1.0, (Supplier<GradientTransform>) () -> Transforms.normalize(Scope.LAYER)},
        };
        for (String network : new String[] {"MultiLayerNetwork", "ComputationGraph"}) {
            for (String driver : new String[] {"listener", "step driver"}) {
                for (Object[] m : modes) {
                    out.add(Arguments.of(network, driver, m[0], m[1], m[2]));
                }
            }
        }
        return out;
    }

    @ParameterizedTest(name = "{0} {1}: {2}")
    @MethodSource("cases")
    void matches_dl4j_gradient_normalization(String network, String driver, GradientNormalization mode, double threshold,
            Supplier<GradientTransform> transform) {
        boolean graph = network.equals("ComputationGraph");
        Model oracle = graph ? Nets.graph(new Sgd(0.1), mode, threshold) : Nets.mlp(new Sgd(0.1), mode, threshold);
        Model plain = graph ? Nets.graph(new Sgd(0.1)) : Nets.mlp(new Sgd(0.1));
        Model guarded = graph ? Nets.graph(new Sgd(0.1)) : Nets.mlp(new Sgd(0.1));
        GradientPipeline pipeline = GradientPipeline.of(transform.get());
        Dl4jGuard guard = Dl4jGuard.of(pipeline);
        boolean drives = driver.equals("step driver");
        if (!drives) {
            guarded.addListeners(guard.listener());
        }
        for (int s = 0; s < STEPS; s++) {
            DataSet d = Nets.batch(BATCH, 100 + s);
            fit(oracle, d);
            fit(plain, d);
            if (drives) {
                assertTrue(step(guard, guarded, d).applies());
            } else {
                fit(guarded, d);
            }
        }
        double[] expected = Nets.params(oracle);
        double[] actual = Nets.params(guarded);
        assertTrue(Nets.maxAbsDiff(expected, Nets.params(plain)) > 1e-3, "the normalization must be active in this test");
        // 1e-6 relative (absolute below 1), the float32 tolerance of REFERENCE-VECTORS.md
        assertEquals(0.0, Nets.maxRelDiff(expected, actual), 1e-6, "parameters after " + STEPS + " steps");
        assertEquals(STEPS, pipeline.stepCount());
        assertEquals(STEPS, iterations(guarded));
    }

    /** One micro-batch through the guard's step driver, for either kind of network. */
    static StepResult<INDArray> step(Dl4jGuard guard, Model m, DataSet d) {
        return m instanceof ComputationGraph g ? guard.step(g, d) : guard.step((MultiLayerNetwork) m, d);
    }

    static void fit(Model m, DataSet d) {
        if (m instanceof ComputationGraph g) {
            g.fit(d);
        } else {
            ((MultiLayerNetwork) m).fit(d);
        }
    }

    static int iterations(Model m) {
        return m instanceof ComputationGraph g ? g.getIterationCount() : ((MultiLayerNetwork) m).getIterationCount();
    }
}
