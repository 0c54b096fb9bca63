package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.types.TFloat32;

/** Parity with the reference backend: the same gradients through TfGuard and through core's reference backend (the soak is the GuardKit's). */
class ReferenceParityTest {
    @Test
    void transformed_gradients_equal_the_reference_backend_within_1e_5() {
        Supplier<GradientPipeline> pipeline = () -> GradientPipeline.of(Transforms.zeroNonFinite(),
                Transforms.centralize(), Transforms.adaptiveClip(0.05), Transforms.clipByGlobalNorm(0.5));
        try (Mlp mlp = new Mlp(6, 16, 3, 11)) {
            Output<?>[] raw = mlp.graph.addGradients(mlp.loss.asOutput(), mlp.variables.stream().map(v -> v.asOutput()).toArray(Output<?>[]::new));
            Random data = new Random(5);
            try (TfGuard guard = TfGuard.of(pipeline.get()).attach(mlp.session, mlp.loss, mlp.variables, new GradientDescent(mlp.graph, 0.05f))) {
                GradientPipeline ref = pipeline.get();
                List<float[]> tfSeen = new ArrayList<>();
                guard.pipeline().addListener((g, r) -> {
                    tfSeen.clear();
                    for (GradientTensor<TfTensor> t : guard.gradients()) {
                        tfSeen.add(guard.ops().toHostArray(t.gradient()));
                    }
                });
                for (int s = 0; s < 5; s++) {
                    Map<Operand<?>, Tensor> f = mlp.batch(8, data);
                    // the same gradients and weights, taken before the step, go through the reference backend
                    List<GradientTensor<ReferenceTensor>> ts = new ArrayList<>();
                    try (Result r = fetchAll(mlp, f, raw)) {
                        for (int i = 0; i < raw.length; i++) {
                            GradientTensor<TfTensor> tg = guard.gradients().get(i);
                            ts.add(new GradientTensor<>(tg.name(), tg.shape(), tg.role(), tg.layer(), tg.layout(),
                                    ReferenceOps.INSTANCE.fromHost(floats(r.get(i)), tg.shape()),
                                    ReferenceOps.INSTANCE.fromHost(floats(r.get(raw.length + i)), tg.shape())));
                        }
                    }
                    guard.step(f, 8);
                    Mlp.close(f);
                    ref.step(GradientSet.of(ts), ReferenceOps.INSTANCE, StepContext.ofBatch(8));
                    for (int i = 0; i < ts.size(); i++) {
                        float[] expected = ReferenceOps.INSTANCE.toHostArray(ts.get(i).gradient());
                        for (int j = 0; j < expected.length; j++) {
                            assertEquals(expected[j], tfSeen.get(i)[j], 1e-5, ts.get(i).name() + "[" + j + "] at step " + s);
                        }
                    }
                }
            }
        }
    }

    private static Result fetchAll(Mlp mlp, Map<Operand<?>, Tensor> feeds, Output<?>[] grads) {
        var runner = mlp.session.runner();
        feeds.forEach(runner::feed);
        for (Output<?> g : grads) {
            runner.fetch(g);
        }
        mlp.variables.forEach(runner::fetch);
        return runner.run();
    }

    private static float[] floats(Tensor t) {
        TFloat32 f = (TFloat32) t;
        float[] a = new float[(int) f.shape().size()];
        f.copyTo(DataBuffers.of(a, false, false));
        return a;
    }
}
