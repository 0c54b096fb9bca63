package io.gradguard.djl.bench;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.GradientCollector;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Transforms;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.monitor.RunRecorder;
import io.gradguard.core.monitor.Sinks;
import io.gradguard.djl.DjlGuard;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.Locale;
import java.util.Map;

/**
 * What update-to-parameter ratios cost in DJL, measured in one run: a training step (forward,
 * backward, Adam) of the issue-3 MLP (4.72M parameters, batch 64, PyTorch CPU) through
 * {@code DjlGuard} with a global-norm clip and a {@link Monitor} measuring every step in detail,
 * with update ratios off and on, and the same with the monitor's cadence {@code every(10)}. The variants
 * run interleaved, round after round with the order rotated, so a noisy neighbour hits every variant
 * alike; every-step variants compare median single-step times, the {@code every(10)} variants means
 * (one step in ten is dearer, which a median would hide).
 *
 * <p>Run from the repository root:
 * <pre>
 * mvn -B -o -q -pl adapter-djl -am test-compile dependency:build-classpath \
 *     -Dmdep.includeScope=test -Dmdep.outputFile=target/test-classpath.txt
 * java -Xmx4g -Dai.djl.offline=true -Dai.djl.pytorch.num_threads=1 -Dai.djl.pytorch.num_interop_threads=1 \
 *     -cp adapter-djl/target/test-classes:adapter-djl/target/classes:$(cat adapter-djl/target/test-classpath.txt) \
 *     io.gradguard.djl.bench.DjlUpdateRatioBenchmark [rounds [steps per round]]
 * </pre>
 */
public final class DjlUpdateRatioBenchmark {

    /** The measured step variants. */
    enum Variant {
        /** clip + monitor, every step detailed, update ratios off: the baseline. */
        MONITOR_NO_RATIOS,
        /** clip + monitor, every step detailed, update ratios on: a parameter copy on every step. */
        MONITOR_RATIOS_EVERY_STEP,
        /** clip + monitor measuring every 10th step in detail, update ratios off. */
        MONITOR_NO_RATIOS_EVERY_10,
        /** clip + monitor measuring every 10th step in detail, update ratios on. */
        MONITOR_RATIOS_EVERY_10
    }

    private static boolean ratios(Variant v) {
        return v == Variant.MONITOR_RATIOS_EVERY_STEP || v == Variant.MONITOR_RATIOS_EVERY_10;
    }

    private static final int[] HIDDEN = {2048, 1024, 512};
    private static final int INPUTS = 1024;
    private static final int OUTPUTS = 10;
    private static final int BATCH = 64;
    private static final int WARM_UP = 10;

    private DjlUpdateRatioBenchmark() {
    }

    public static void main(String[] args) {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 40;
        int steps = args.length > 1 ? Integer.parseInt(args[1]) : 5;
        Engine.getEngine("PyTorch").setRandomSeed(42);
        Map<Variant, Bench> benches = new EnumMap<>(Variant.class);
        Map<Variant, double[]> samples = new EnumMap<>(Variant.class);
        try (NDManager data = NDManager.newBaseManager("PyTorch")) {
            NDArray x = data.randomNormal(new Shape(BATCH, INPUTS));
            NDArray y = data.randomNormal(new Shape(BATCH, OUTPUTS));
            try {
                for (Variant v : Variant.values()) {
                    benches.put(v, new Bench(v));
                    samples.put(v, new double[rounds * steps]);
                    benches.get(v).run(x, y, WARM_UP);
                }
                for (int r = 0; r < rounds; r++) {
                    for (int i = 0; i < Variant.values().length; i++) {
                        Variant v = Variant.values()[(i + r) % Variant.values().length];
                        for (int s = 0; s < steps; s++) {
                            long t0 = System.nanoTime();
                            benches.get(v).run(x, y, 1);
                            samples.get(v)[r * steps + s] = (System.nanoTime() - t0) / 1e6;
                        }
                    }
                }
                for (Bench b : benches.values()) {
                    b.monitor.close();
                    if (b.recorder.recording().records().stream().noneMatch(rec -> rec.layers().stream()
                            .anyMatch(l -> Double.isFinite(l.updateRatio()))) == ratios(b.variant)) {
                        throw new IllegalStateException(b.variant + ": update ratios not as configured");
                    }
                }
            } finally {
                for (Bench b : benches.values()) {
                    b.close();
                }
            }
        }
        // every(10) makes one step in ten dearer: a median would hide it, so the cadence ratio uses the mean
        Map<Variant, Double> ms = new EnumMap<>(Variant.class);
        Map<Variant, Double> mean = new EnumMap<>(Variant.class);
        samples.forEach((v, s) -> {
            ms.put(v, median(s));
            mean.put(v, Arrays.stream(s).average().orElse(Double.NaN));
        });
        StringBuilder out = new StringBuilder(String.format(Locale.ROOT,
                "MLP %d-%s-%d, batch %d, Adam, clipByGlobalNorm + Monitor; %d rounds x %d steps, interleaved%n",
                INPUTS, Arrays.toString(HIDDEN), OUTPUTS, BATCH, rounds, steps));
        ms.forEach((v, m) -> out.append(String.format(Locale.ROOT, "  %-26s %8.3f ms/step median, %8.3f mean%n", v, m, mean.get(v))));
        out.append(String.format(Locale.ROOT, "  every step: ratios / no ratios (median): %.4f%n",
                ms.get(Variant.MONITOR_RATIOS_EVERY_STEP) / ms.get(Variant.MONITOR_NO_RATIOS)));
        out.append(String.format(Locale.ROOT, "  every(10):  ratios / no ratios (mean):   %.4f%n",
                mean.get(Variant.MONITOR_RATIOS_EVERY_10) / mean.get(Variant.MONITOR_NO_RATIOS_EVERY_10)));
        System.out.print(out);
    }

    private static double median(double[] s) {
        double[] c = s.clone();
        Arrays.sort(c);
        return c.length % 2 == 1 ? c[c.length / 2] : (c[c.length / 2 - 1] + c[c.length / 2]) / 2;
    }

    /** One variant: its own model, trainer, monitor and guard. */
    private static final class Bench implements AutoCloseable {
        final Variant variant;
        final Model model;
        final Trainer trainer;
        final Monitor monitor;
        final RunRecorder recorder = Sinks.memory();
        final DjlGuard guard;

        Bench(Variant variant) {
            this.variant = variant;
            Engine.getEngine("PyTorch").setRandomSeed(42);
            SequentialBlock block = new SequentialBlock();
            for (int h : HIDDEN) {
                block.add(Linear.builder().setUnits(h).build()).add(Activation::relu);
            }
            block.add(Linear.builder().setUnits(OUTPUTS).build());
            model = Model.newInstance("bench-" + variant, Device.cpu(), "PyTorch");
            model.setBlock(block);
            trainer = model.newTrainer(new DefaultTrainingConfig(Loss.l2Loss())
                    .optOptimizer(Optimizer.adam().optLearningRateTracker(Tracker.fixed(1e-4f)).build())
                    .optDevices(new Device[] {Device.cpu()}));
            trainer.initialize(new Shape(BATCH, INPUTS));
            monitor = Monitor.builder()
                    .every(variant == Variant.MONITOR_RATIOS_EVERY_10 || variant == Variant.MONITOR_NO_RATIOS_EVERY_10 ? 10 : 1)
                    .updateRatios(ratios(variant))
                    .sink(recorder)
                    .build();
            guard = DjlGuard.of(GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), monitor));
        }

        void run(NDArray x, NDArray y, int steps) {
            for (int i = 0; i < steps; i++) {
                try (NDManager batch = trainer.getManager().newSubManager(); GradientCollector gc = trainer.newGradientCollector()) {
                    x.tempAttach(batch);
                    y.tempAttach(batch);
                    NDList pred = trainer.forward(new NDList(x));
                    gc.backward(trainer.getLoss().evaluate(new NDList(y), pred));
                }
                guard.step(trainer);
            }
        }

        @Override
        public void close() {
            trainer.close();
            model.close();
        }
    }
}
