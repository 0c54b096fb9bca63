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
import io.gradguard.djl.DjlGuard;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.Locale;
import java.util.Map;

/**
 * The DJL speed ratios of issue 3, measured in one run: the cost of a training step (forward,
 * backward, optimizer) of an MLP with about 5M parameters, batch 64, on the PyTorch engine's CPU,
 * <ul>
 *   <li>with GradGuard (global-norm clip and a monitor reading the norm every step) against the same
 *       step without it (target: ratio &le; 1.03);</li>
 *   <li>with GradGuard's value clip against DJL's built-in {@code optClipGrad} (target: &le; 1.05).</li>
 * </ul>
 * The variants run interleaved, round after round (a few steps each, order rotated), each on its
 * own trainer with identical parameters; every step is timed alone and the reported figure per
 * variant is the median step time, so a noisy neighbour on a shared machine hits every variant
 * alike and bursts do not move the result.
 *
 * <p>Run from the repository root:
 * <pre>
 * mvn -B -o -q -pl adapter-djl -am test-compile dependency:build-classpath \
 *     -Dmdep.includeScope=test -Dmdep.outputFile=target/test-classpath.txt
 * java -Xmx4g -Dai.djl.offline=true -Dai.djl.pytorch.num_threads=1 -Dai.djl.pytorch.num_interop_threads=1 \
 *     -cp adapter-djl/target/test-classes:adapter-djl/target/classes:$(cat adapter-djl/target/test-classpath.txt) \
 *     io.gradguard.djl.bench.DjlStepBenchmark
 * </pre>
 * One PyTorch thread makes the CPU-time figures robust on a shared machine; drop the two
 * properties to measure PyTorch's default threading (wall clock then matters).
 * Arguments (all optional): rounds, steps per round.
 */
public final class DjlStepBenchmark {

    /** The measured step variants. */
    public enum Variant {
        /** forward, backward, {@code trainer.step()}: the baseline. */
        PLAIN,
        /** the same through {@code DjlGuard} with clipByGlobalNorm(1.0) and a listener reading the norm. */
        GUARDED_GLOBAL_NORM,
        /** DJL's built-in value clip: {@code Optimizer.sgd().optClipGrad(c)} (one-sided on PyTorch). */
        BUILTIN_VALUE_CLIP,
        /** GradGuard's symmetric value clip through {@code DjlGuard}, plain SGD. */
        GUARDED_VALUE_CLIP
    }

    /**
     * The model and measurement sizes.
     *
     * @param inputs  input width
     * @param hidden  hidden layer widths
     * @param outputs output width
     * @param batch   examples per step
     * @param warmUp  untimed steps per variant before the first round
     * @param steps   timed steps per variant and round
     * @param rounds  rounds
     */
    public record Options(int inputs, int[] hidden, int outputs, int batch, int warmUp, int steps, int rounds) {
        /** 1024-2048-1024-512-10: 4.72M parameters, batch 64. */
        public static Options issue3() {
            return new Options(1024, new int[] {2048, 1024, 512}, 10, 64, 10, 4, 60);
        }

        /** The number of parameters of the MLP. */
        public long parameterCount() {
            long n = 0;
            int in = inputs;
            for (int h : hidden) {
                n += (long) in * h + h;
                in = h;
            }
            return n + (long) in * outputs + outputs;
        }
    }

    /**
     * Median milliseconds per step of each variant, and the derived ratios.
     *
     * @param msPerStep    median wall-clock milliseconds per step
     * @param cpuMsPerStep mean process CPU milliseconds per step (all threads; robust to a busy
     *     machine when PyTorch runs one thread: {@code -Dai.djl.pytorch.num_threads=1})
     * @param clippedFraction the fraction of guarded global-norm steps whose coefficient was below 1
     */
    public record Result(Options options, Map<Variant, Double> msPerStep, Map<Variant, Double> cpuMsPerStep, double clippedFraction) {
        /** guarded (global-norm clip + monitor) over plain, wall clock. */
        public double guardOverhead() {
            return msPerStep.get(Variant.GUARDED_GLOBAL_NORM) / msPerStep.get(Variant.PLAIN);
        }

        /** GradGuard value clip over DJL's optClipGrad, wall clock. */
        public double valueClipRatio() {
            return msPerStep.get(Variant.GUARDED_VALUE_CLIP) / msPerStep.get(Variant.BUILTIN_VALUE_CLIP);
        }

        /** guarded (global-norm clip + monitor) over plain, CPU time. */
        public double guardOverheadCpu() {
            return cpuMsPerStep.get(Variant.GUARDED_GLOBAL_NORM) / cpuMsPerStep.get(Variant.PLAIN);
        }

        /** GradGuard value clip over DJL's optClipGrad, CPU time. */
        public double valueClipRatioCpu() {
            return cpuMsPerStep.get(Variant.GUARDED_VALUE_CLIP) / cpuMsPerStep.get(Variant.BUILTIN_VALUE_CLIP);
        }

        @Override
        public String toString() {
            StringBuilder s = new StringBuilder(String.format(Locale.ROOT, "MLP %d-%s-%d, %,d parameters, batch %d, %d rounds x %d steps%n",
                    options.inputs(), Arrays.toString(options.hidden()), options.outputs(), options.parameterCount(),
                    options.batch(), options.rounds(), options.steps()));
            msPerStep.forEach((v, ms) -> s.append(String.format(Locale.ROOT, "  %-20s %8.3f ms/step wall, %8.3f ms/step CPU%n",
                    v, ms, cpuMsPerStep.get(v))));
            s.append(String.format(Locale.ROOT, "  (wall: median of %d single-step timings per variant, CPU: their mean; the global-norm clip bit in %.0f%% of its steps)%n",
                    options.rounds() * options.steps(), 100 * clippedFraction));
            s.append(String.format(Locale.ROOT, "  guarded (global-norm clip + monitor) / plain: wall %.4f, CPU %.4f  (target <= 1.03)%n",
                    guardOverhead(), guardOverheadCpu()));
            s.append(String.format(Locale.ROOT, "  GradGuard value clip / DJL optClipGrad:       wall %.4f, CPU %.4f  (target <= 1.05)%n",
                    valueClipRatio(), valueClipRatioCpu()));
            return s.toString();
        }
    }

    private static final com.sun.management.OperatingSystemMXBean CPU =
            (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean();
    private static final float LR = 0.01f;
    private static final float CLIP = 0.01f;

    private DjlStepBenchmark() {
    }

    public static void main(String[] args) {
        Options o = Options.issue3();
        if (args.length > 0) {
            o = new Options(o.inputs(), o.hidden(), o.outputs(), o.batch(), o.warmUp(), o.steps(), Integer.parseInt(args[0]));
        }
        if (args.length > 1) {
            o = new Options(o.inputs(), o.hidden(), o.outputs(), o.batch(), o.warmUp(), Integer.parseInt(args[1]), o.rounds());
        }
        System.out.print(measure(o));
    }

    /** Runs every variant, interleaved, and returns the medians. */
    public static Result measure(Options o) {
        Engine.getEngine("PyTorch").setRandomSeed(42);
        Map<Variant, Bench> benches = new EnumMap<>(Variant.class);
        try (NDManager data = NDManager.newBaseManager("PyTorch")) {
            NDArray x = data.randomNormal(new Shape(o.batch(), o.inputs()));
            NDArray y = data.randomNormal(new Shape(o.batch(), o.outputs()));
            try {
                for (Variant v : Variant.values()) {
                    benches.put(v, new Bench(v, o));
                }
                for (Bench b : benches.values()) {
                    b.run(x, y, o.warmUp());
                }
                Map<Variant, double[]> samples = new EnumMap<>(Variant.class);
                Map<Variant, double[]> cpuSamples = new EnumMap<>(Variant.class);
                for (Variant v : Variant.values()) {
                    samples.put(v, new double[o.rounds() * o.steps()]);
                    cpuSamples.put(v, new double[o.rounds() * o.steps()]);
                }
                for (int r = 0; r < o.rounds(); r++) {
                    // rotate the order each round so no variant always runs right after another
                    for (int i = 0; i < Variant.values().length; i++) {
                        Variant v = Variant.values()[(i + r) % Variant.values().length];
                        for (int s = 0; s < o.steps(); s++) {
                            long c0 = CPU.getProcessCpuTime();
                            long t0 = System.nanoTime();
                            benches.get(v).run(x, y, 1);
                            samples.get(v)[r * o.steps() + s] = (System.nanoTime() - t0) / 1e6;
                            cpuSamples.get(v)[r * o.steps() + s] = (CPU.getProcessCpuTime() - c0) / 1e6;
                        }
                    }
                }
                Map<Variant, Double> medians = new EnumMap<>(Variant.class);
                samples.forEach((v, s) -> medians.put(v, median(s)));
                // process CPU time ticks coarsely (10 ms): its figure is the mean over all timed steps
                Map<Variant, Double> cpuMedians = new EnumMap<>(Variant.class);
                cpuSamples.forEach((v, s) -> cpuMedians.put(v, Arrays.stream(s).average().orElse(Double.NaN)));
                Bench g = benches.get(Variant.GUARDED_GLOBAL_NORM);
                return new Result(o, medians, cpuMedians, (double) g.clipped / g.monitored);
            } finally {
                for (Bench b : benches.values()) {
                    b.close();
                }
            }
        }
    }

    private static double median(double[] s) {
        double[] c = s.clone();
        Arrays.sort(c);
        return c.length % 2 == 1 ? c[c.length / 2] : (c[c.length / 2 - 1] + c[c.length / 2]) / 2;
    }

    /** One variant: its own model, trainer and (where guarded) guard. */
    private static final class Bench implements AutoCloseable {
        private final Variant variant;
        private final Model model;
        private final Trainer trainer;
        private final DjlGuard guard;
        private double lastNorm;
        private long monitored;
        private long clipped;

        Bench(Variant variant, Options o) {
            this.variant = variant;
            Engine.getEngine("PyTorch").setRandomSeed(42);
            SequentialBlock block = new SequentialBlock();
            for (int h : o.hidden()) {
                block.add(Linear.builder().setUnits(h).build()).add(Activation::relu);
            }
            block.add(Linear.builder().setUnits(o.outputs()).build());
            model = Model.newInstance("bench-" + variant, Device.cpu(), "PyTorch");
            model.setBlock(block);
            Optimizer sgd = variant == Variant.BUILTIN_VALUE_CLIP
                    ? Optimizer.sgd().setLearningRateTracker(Tracker.fixed(LR)).optClipGrad(CLIP).build()
                    : Optimizer.sgd().setLearningRateTracker(Tracker.fixed(LR)).build();
            trainer = model.newTrainer(new DefaultTrainingConfig(Loss.l2Loss())
                    .optOptimizer(sgd)
                    .optDevices(new Device[] {Device.cpu()}));
            trainer.initialize(new Shape(o.batch(), o.inputs()));
            guard = switch (variant) {
                case GUARDED_GLOBAL_NORM -> {
                    GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0));
                    p.addListener((g, r) -> {
                        lastNorm = r.metric("clipByGlobalNorm.norm").orElse(Double.NaN);
                        monitored++;
                        clipped += lastNorm > 1.0 ? 1 : 0;
                    });
                    yield DjlGuard.of(p);
                }
                case GUARDED_VALUE_CLIP -> DjlGuard.of(Transforms.clipByValue(CLIP));
                default -> null;
            };
        }

        void run(NDArray x, NDArray y, int steps) {
            for (int i = 0; i < steps; i++) {
                try (NDManager batch = trainer.getManager().newSubManager(); GradientCollector gc = trainer.newGradientCollector()) {
                    // the step's arrays follow their inputs into this manager; x and y go back to theirs after
                    x.tempAttach(batch);
                    y.tempAttach(batch);
                    NDList pred = trainer.forward(new NDList(x));
                    gc.backward(trainer.getLoss().evaluate(new NDList(y), pred));
                }
                if (guard == null) {
                    trainer.step();
                } else {
                    guard.step(trainer);
                }
            }
            if (variant == Variant.GUARDED_GLOBAL_NORM && !(lastNorm > 0)) {
                throw new IllegalStateException(variant + ": the monitor read no norm");
            }
        }

        @Override
        public void close() {
            trainer.close();
            model.close();
        }
    }
}
