package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Tensor;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.types.TFloat32;

/** Parity with the reference backend, and a 10,000-step soak with injected faults. */
class ParityAndSoakTest {
    private static final Logger LOG = LoggerFactory.getLogger(ParityAndSoakTest.class);

    @Test
    void transformed_gradients_equal_the_reference_backend_within_1e_5() {
        Supplier<GradientPipeline> pipeline = () -> GradientPipeline.of(Transforms.zeroNonFinite(),
                Transforms.centralize(), Transforms.adaptiveClip(0.05), Transforms.clipByGlobalNorm(0.5));
        try (Mlp mlp = new Mlp(6, 16, 3, 11)) {
            Output<?>[] raw = mlp.graph.addGradients(mlp.loss.asOutput(), mlp.variables.stream().map(v -> v.asOutput()).toArray(Output<?>[]::new));
            Random data = new Random(5);
            try (TfGuard guard = TfGuard.create(mlp.session, mlp.loss, mlp.variables, new GradientDescent(mlp.graph, 0.05f), pipeline.get())) {
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

    @Test
    void ten_thousand_steps_with_one_percent_faults_do_not_grow_memory_or_the_graph() throws Exception {
        try (Mlp mlp = new Mlp(4, 8, 2, 1);
                TfGuard guard = TfGuard.create(mlp.session, mlp.loss, mlp.variables, new GradientDescent(mlp.graph, 0.01f),
                        GradientPipeline.of(Transforms.skipNonFinite(3), Transforms.accumulate(2), Transforms.clipByGlobalNorm(1.0)))) {
            Random data = new Random(1);
            Random faults = new Random(2);
            int skipped = 0;
            int injected = 0;
            long[] rss = new long[5];
            long[] pointers = new long[5];
            int opsAt1000 = 0;
            long start = System.nanoTime();
            for (int s = 1; s <= 10_000; s++) {
                Map<Operand<?>, Tensor> f = mlp.batch(4, data);
                if (faults.nextInt(100) == 0) {
                    injected++;
                    Mlp.close(f);
                    float[] xs = new float[16];
                    xs[faults.nextInt(16)] = faults.nextBoolean() ? Float.NaN : Float.POSITIVE_INFINITY;
                    f = mlp.feeds(xs, new float[8], 4);
                }
                StepResult<TfTensor> r = guard.step(f, 4);
                Mlp.close(f);
                if (r.skipped()) {
                    skipped++;
                }
                if (s % 2000 == 0) {
                    System.gc();
                    rss[s / 2000 - 1] = rssKiB();
                    pointers[s / 2000 - 1] = org.bytedeco.javacpp.Pointer.totalCount();
                }
                if (s == 1000) {
                    opsAt1000 = mlp.operationCount();
                }
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            LOG.info("soak: 10000 steps in {} s, {} injected, {} skipped, RSS KiB at steps 2000..10000: {}, live native pointers: {}, graph ops {} -> {}",
                    String.format("%.1f", seconds), injected, skipped, java.util.Arrays.toString(rss), java.util.Arrays.toString(pointers), opsAt1000, mlp.operationCount());
            // malloc arenas make single RSS samples jump by tens of MiB: compare the lowest samples of each half
            long early = Math.min(rss[0], rss[1]);
            long late = Math.min(rss[3], rss[4]);
            assertTrue(injected >= 50 && injected <= 200, "about 1% of the steps poisoned, got " + injected);
            assertEquals(injected, skipped, "every poisoned step is skipped, and only those");
            assertEquals(injected, guard.pipeline().skippedCount());
            assertEquals((10_000 - injected) / 2, guard.pipeline().stepCount(), "the other steps make windows of 2 micro-batches");
            assertEquals(opsAt1000, mlp.operationCount(), "graph operations");
            // every TF tensor is a JavaCPP pointer: one unclosed tensor per step would add 6,000 from step 4000 to 10000
            // (the sample at step 2000 may still count other tests' garbage: the deallocator thread runs after gc)
            assertTrue(pointers[4] - pointers[1] < 100, "live native pointers grew from " + pointers[1] + " to " + pointers[4]);
            assertTrue(late - early < 32 * 1024, "RSS grew by " + (late - early) + " KiB from steps 2000-4000 to 8000-10000");
            for (var v : mlp.variables) {
                for (float x : mlp.value(v)) {
                    assertTrue(Float.isFinite(x), "weights stay finite");
                }
            }
        }
    }

    private static long rssKiB() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("\\D", ""));
            }
        }
        return -1;
    }
}
