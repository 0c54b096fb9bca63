package io.gradguard.benchmarks.dl4j;

import io.gradguard.benchmarks.Pipelines;
import io.gradguard.benchmarks.Row;
import io.gradguard.benchmarks.Rounds;
import io.gradguard.benchmarks.Scaling;
import io.gradguard.benchmarks.Section;
import io.gradguard.benchmarks.SmallModels;
import io.gradguard.benchmarks.Table;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.dl4j.Dl4jGuard;
import io.gradguard.dl4j.Dl4jParallelGuard;
import io.gradguard.dl4j.Nd4jOps;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.datasets.iterator.ExistingDataSetIterator;
import org.deeplearning4j.nn.api.Updater;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.optimize.api.BaseTrainingListener;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.BaseLayer;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.deeplearning4j.parallelism.ParallelWrapper;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Parts 2-4 on Deeplearning4j (ND4J CPU backend): training steps of a ~5M-parameter MLP
 * (1000-2000-1500-10, ReLU, softmax cross-entropy, Adam) on batches of 64, timed with
 * {@link MultiLayerNetwork#fit(DataSet)}; variants are interleaved step by step ({@link Rounds}).
 * Every variant trains one network and differs only in its listener or in the built-in
 * GradientNormalization set on its layers for that step (DL4J's updater reads it on every step).
 *
 * <p>Variants: unguarded (timed twice as two cases: the A/A control shows the measurement noise);
 * unguarded taking Σg² of every gradient (one read pass: the floor of any global norm); DL4J's
 * built-in {@code ClipL2PerLayer} and {@code ClipElementWiseAbsoluteValue}; GradGuard's
 * {@link Dl4jGuard} (its listener and its step driver) with the {@link Pipelines} clips (thresholds on the mean gradient, as
 * DL4J's), the global clip armed far above the gradient norm (not acting), and with a monitor every
 * step.
 */
public final class Dl4jBench {
    static final int[] FULL = {1000, 2000, 1500, 10};
    static final int[] TINY = {32, 64, 48, 10};
    static final int BATCH = 64;

    private final Section section;
    private final int[] widths;

    private Dl4jBench(Section section) {
        this.section = section;
        this.widths = section.tiny() ? TINY : FULL;
    }

    public static void main(String[] args) {
        try (Section s = Section.fromArgs("dl4j", args)) {
            new Dl4jBench(s).run();
        }
    }

    private void run() {
        if (!section.quick()) {
            parts();
        }
        section.part(5, "dl4j small models: the guard's fixed cost per step", this::small);
        section.part(6, "dl4j data parallel: 2-worker ParallelWrapper", this::parallel);
    }

    /** Widths of the data-parallel model (about 0.4M parameters), and batches per timed fit. */
    static final int[] PARALLEL = {256, 512, 256, 10};
    static final int PARALLEL_BATCHES = 40;

    /**
     * Part 6: throughput of a 2-worker {@code ParallelWrapper} (AVERAGING every round, CPU): one
     * sample is one {@code wrapper.fit} over {@value #PARALLEL_BATCHES} batches of {@value #BATCH}
     * (thread start and stop included, as in every fit). Unguarded (twice: the A/A control), guarded
     * per worker and synchronized by {@link Dl4jParallelGuard} with the guarded step's pipeline
     * (clipByGlobalNorm + norm monitor); each variant its own network and wrapper, interleaved.
     */
    private void parallel() {
        int[] w = section.tiny() ? TINY : PARALLEL;
        int batches = section.tiny() ? 8 : PARALLEL_BATCHES;
        DataSet batch = batch(w);
        List<DataSet> data = java.util.Collections.nCopies(batches, batch);
        Map<String, ParallelWrapper> wrappers = new java.util.LinkedHashMap<>();
        for (String v : List.of("unguarded", "unguarded again", "per worker", "synchronized")) {
            wrappers.put(v, new ParallelWrapper.Builder<>(network(w, null, 0)).workers(2).prefetchBuffer(2)
                    .averagingFrequency(1).trainingMode(ParallelWrapper.TrainingMode.AVERAGING).build());
        }
        Dl4jParallelGuard perWorker = Dl4jParallelGuard.of(Pipelines::guarded);
        Dl4jParallelGuard synced = Dl4jParallelGuard.of(Pipelines::guarded).synchronize();
        Map<String, Runnable> fits = Map.of(
                "unguarded", () -> wrappers.get("unguarded").fit(new ExistingDataSetIterator(data)),
                "unguarded again", () -> wrappers.get("unguarded again").fit(new ExistingDataSetIterator(data)),
                "per worker", () -> perWorker.fit(wrappers.get("per worker"), new ExistingDataSetIterator(data)),
                "synchronized", () -> synced.fit(wrappers.get("synchronized"), new ExistingDataSetIterator(data)));
        try {
            Rounds r = section.tiny() ? new Rounds(0, 1) : new Rounds(2, 9);
            fits.forEach(r::add);
            Map<String, Double> m = r.run();
            String size = Table.count(network(w, null, 0).numParams()) + " params, 2 workers x " + batches / 2
                    + " batches of " + BATCH;
            double base = m.get("unguarded");
            section.emit(Row.ratio(6, "dl4j ParallelWrapper fit, A/A control (noise)", size, m.get("unguarded again"),
                    "unguarded ParallelWrapper fit", base, Double.NaN, "the same fit timed twice: the spread of this machine"));
            section.emit(Row.ratio(6, "dl4j ParallelWrapper fit guarded per worker, clipByGlobalNorm + norm monitor "
                    + "(Dl4jParallelGuard)", size, m.get("per worker"), "unguarded ParallelWrapper fit", base, 1.03,
                    "each worker its own pipeline on its own gradient"));
            section.emit(Row.ratio(6, "dl4j ParallelWrapper fit guarded synchronized, clipByGlobalNorm + norm monitor "
                    + "(Dl4jParallelGuard.synchronize())", size, m.get("synchronized"), "unguarded ParallelWrapper fit", base, 1.06,
                    "one Σg² exchange and barrier per step; the clip uses the norm over both workers"));
        } finally {
            wrappers.values().forEach(ParallelWrapper::shutdown);
            perWorker.close();
            synced.close();
        }
    }

    /**
     * Part 5: on small models a step costs a fraction of a millisecond, and the guard's fixed cost
     * per step is what the ratios show. One network per size, trained by {@code fit} (unguarded)
     * and by {@link Dl4jGuard}'s step driver (a listener cannot skip a step) running the clip alone,
     * the README's pipeline, and it with a monitor; interleaved.
     */
    private void small() {
        for (int[] w : SmallModels.widths(section)) {
            MultiLayerNetwork net = network(w, null, 0);
            DataSet batch = batch(w);
            Dl4jGuard clip = Dl4jGuard.of(Pipelines.globalClip());
            Dl4jGuard readme = Dl4jGuard.of(Pipelines.readme());
            Dl4jGuard monitored = Dl4jGuard.of(Pipelines.readmeMonitored());
            for (int i = 0; i < SmallModels.warmUpSteps(section); i++) {
                fit(net, batch);
                step(net, clip, batch);
                step(net, readme, batch);
                step(net, monitored, batch);
            }
            Rounds r = SmallModels.rounds(section);
            r.add("plain", () -> fit(net, batch));
            r.add("clip", () -> step(net, clip, batch));
            r.add("readme", () -> step(net, readme, batch));
            r.add("monitored", () -> step(net, monitored, batch));
            Map<String, Double> m = r.run();
            SmallModels.emit(section, "dl4j", "Dl4jGuard step driver vs fit", net.numParams(), m);
        }
    }

    /** A fixed batch for a network of these widths: uniform inputs, one-hot labels. */
    private static DataSet batch(int[] w) {
        Nd4j.getRandom().setSeed(7);
        INDArray x = Nd4j.rand(BATCH, w[0]);
        INDArray y = Nd4j.zeros(BATCH, w[w.length - 1]);
        for (int i = 0; i < BATCH; i++) {
            y.putScalar(i, i % w[w.length - 1], 1.0);
        }
        return new DataSet(x, y);
    }

    private void parts() {
        section.part(2, "dl4j training steps", () -> {
            // every row trains one network, swapping only its listener or its layers' built-in
            // GradientNormalization (read by DL4J's updater on every step): the same parameter and
            // gradient arrays for every variant, so the rows compare what runs between backprop and update
            MultiLayerNetwork shared = network(widths, null, 0);
            Dl4jGuard globalListener = Dl4jGuard.of(Pipelines.guarded());
            Dl4jGuard idleListener = Dl4jGuard.of(Pipelines.guardedIdle());
            // the step driver on the same network (it takes its listeners, so it is given it with none)
            Dl4jGuard globalTrainer = Dl4jGuard.of(Pipelines.guarded());
            Dl4jGuard idleTrainer = Dl4jGuard.of(Pipelines.guardedIdle());
            Dl4jGuard emptyTrainer = Dl4jGuard.of(GradientPipeline.of());
            Dl4jGuard monitoredListener = Dl4jGuard.of(Pipelines.globalClipMonitored());
            Dl4jGuard layerListener = Dl4jGuard.of(Pipelines.layerClip());
            Dl4jGuard valueListener = Dl4jGuard.of(Pipelines.valueClip());
            long params = shared.numParams();
            DataSet batch = batch(widths);
            fit(shared, batch);
            // the installed updaters (net.fit unchanged): each shares the network's updater state; swapped in per step
            Updater plainUpdater = shared.getUpdater();
            Dl4jGuard installGlobal = Dl4jGuard.of(Pipelines.guarded());
            Dl4jGuard installIdle = Dl4jGuard.of(Pipelines.guardedIdle());
            Dl4jGuard installMonitored = Dl4jGuard.of(Pipelines.globalClipMonitored());
            Updater installedGlobal = installed(shared, installGlobal, plainUpdater);
            Updater installedIdle = installed(shared, installIdle, plainUpdater);
            Updater installedMonitored = installed(shared, installMonitored, plainUpdater);
            for (int i = 0; i < (section.tiny() ? 2 : WARM_UP_INSTALLED); i++) {
                for (Updater u : List.of(installedGlobal, installedIdle, installedMonitored)) {
                    fit(shared, batch, u); // JIT-compiles the installed updaters' code before the rounds
                }
            }
            warmUp(shared, Pipelines.guarded(), Pipelines.guardedIdle(), Pipelines.globalClipMonitored(), Pipelines.layerClip(),
                    Pipelines.valueClip());
            Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(5, 100);
            r.add("unguarded", () -> fit(shared, batch));
            r.add("unguarded again", () -> fit(shared, batch));
            r.add("norm only", () -> fit(shared, batch, new NormOnly()));
            r.add("ClipL2PerLayer", () -> fitBuiltIn(shared, batch, GradientNormalization.ClipL2PerLayer, Pipelines.MAX_NORM));
            r.add("ClipElementWiseAbsoluteValue", () -> fitBuiltIn(shared, batch,
                    GradientNormalization.ClipElementWiseAbsoluteValue, Pipelines.MAX_VALUE));
            r.add("guard global", () -> fit(shared, batch, globalListener.listener()));
            r.add("guard global idle", () -> fit(shared, batch, idleListener.listener()));
            r.add("guard layer", () -> fit(shared, batch, layerListener.listener()));
            r.add("guard value", () -> fit(shared, batch, valueListener.listener()));
            r.add("guard monitored", () -> fit(shared, batch, monitoredListener.listener()));
            r.add("trainer global", () -> step(shared, globalTrainer, batch));
            r.add("trainer global idle", () -> step(shared, idleTrainer, batch));
            r.add("trainer empty", () -> step(shared, emptyTrainer, batch));
            r.add("installed global", () -> fit(shared, batch, installedGlobal));
            r.add("installed idle", () -> fit(shared, batch, installedIdle));
            r.add("installed monitored", () -> fit(shared, batch, installedMonitored));
            Map<String, Double> m = r.run();
            String size = Table.count(params) + " params, batch " + BATCH;
            double base = m.get("unguarded");
            section.emit(Row.ratio(2, "dl4j unguarded step, A/A control (noise)", size, m.get("unguarded again"),
                    "unguarded step", base, Double.NaN, "the same step timed twice: the spread of this machine"));
            section.emit(Row.ratio(2, "dl4j unguarded step + Σg² only, hand-written (context)", size, m.get("norm only"),
                    "unguarded step", base, Double.NaN, "one read pass over the gradients (BLAS sdot each, to the host): the least a global norm costs"));
            section.emit(Row.ratio(3, "dl4j built-in ClipL2PerLayer step (context)", size, m.get("ClipL2PerLayer"),
                    "unguarded step", base, Double.NaN, "DL4J's own cost of the clip"));
            section.emit(Row.ratio(3, "dl4j built-in ClipElementWiseAbsoluteValue step (context)", size,
                    m.get("ClipElementWiseAbsoluteValue"), "unguarded step", base, Double.NaN, "DL4J's own cost of the clip"));
            section.emit(Row.ratio(2, "dl4j guarded step, clipByGlobalNorm + norm monitor (Dl4jGuard listener in fit)", size, m.get("guard global"),
                    "unguarded step", base, 1.03, Pipelines.clipActivity(globalListener.lastResult().orElseThrow().metric(Pipelines.COEFFICIENT))
                    + "; DL4J divides by the batch after its listeners, so scaling costs a pass of its own"));
            section.emit(Row.ratio(2, "dl4j guarded step, clipByGlobalNorm + norm monitor, armed, not acting (Dl4jGuard listener in fit)", size,
                    m.get("guard global idle"), "unguarded step", base, 1.03,
                    Pipelines.clipActivity(idleListener.lastResult().orElseThrow().metric(Pipelines.COEFFICIENT))));
            section.emit(Row.ratio(2, "dl4j guarded step, clipByGlobalNorm + norm monitor (Dl4jGuard step driver)", size, m.get("trainer global"),
                    "unguarded step", base, 1.03, Pipelines.clipActivity(step(shared, globalTrainer, batch).metric(Pipelines.COEFFICIENT))
                    + "; the scaling rides in the division by the batch"));
            section.emit(Row.ratio(2, "dl4j guarded step, clipByGlobalNorm + norm monitor, armed, not acting (Dl4jGuard step driver)", size,
                    m.get("trainer global idle"), "unguarded step", base, 1.03, Pipelines.clipActivity(step(shared, idleTrainer, batch).metric(Pipelines.COEFFICIENT))));
            section.emit(Row.ratio(2, "dl4j Dl4jGuard step driver, empty pipeline (context)", size, m.get("trainer empty"),
                    "unguarded step", base, Double.NaN, "the step driver's own loop against fit's: what the step-driver rows include besides the guard"));
            section.emit(Row.ratio(2, "dl4j guarded step + monitor every step", size, m.get("guard monitored"),
                    "unguarded step", base, Double.NaN, "per-tensor statistics each step"));
            double floor = m.get("norm only");
            section.emit(Row.ratio(2, "dl4j installed guard, clipByGlobalNorm + norm monitor (Dl4jGuard.install, net.fit)", size,
                    m.get("installed global"), "Σg² only step", floor, 1.01,
                    Pipelines.clipActivity(installGlobal.lastResult().orElseThrow().metric(Pipelines.COEFFICIENT))));
            section.emit(Row.ratio(2, "dl4j installed guard, clipByGlobalNorm + norm monitor, armed, not acting (Dl4jGuard.install, net.fit)", size,
                    m.get("installed idle"), "Σg² only step", floor, 1.01,
                    Pipelines.clipActivity(installIdle.lastResult().orElseThrow().metric(Pipelines.COEFFICIENT))));
            section.emit(Row.ratio(2, "dl4j installed guard + monitor every step (Dl4jGuard.install, net.fit)", size,
                    m.get("installed monitored"), "Σg² only step", floor, 1.15, "per-tensor Σx², max|x|, non-finite count each step"));
            section.emit(Row.ratio(3, "dl4j GradGuard clipByLayerNorm vs built-in ClipL2PerLayer", size, m.get("guard layer"),
                    "ClipL2PerLayer step", m.get("ClipL2PerLayer"), 1.05, ""));
            section.emit(Row.ratio(3, "dl4j GradGuard clipByValue vs built-in ClipElementWiseAbsoluteValue", size,
                    m.get("guard value"), "ClipElementWiseAbsoluteValue step", m.get("ClipElementWiseAbsoluteValue"), 1.05, ""));
        });
        section.part(4, "dl4j guard cost vs model size", this::scaling);
    }

    private static final long[] SCALE_SIZES = {1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000};
    private static final long[] TINY_SCALE_SIZES = {100_000, 1_000_000};

    /**
     * Part 4: the guard alone ({@code clipByGlobalNorm} through {@link Nd4jOps}, temporaries
     * released after each call) on one [n/1000, 1000] float32 gradient.
     */
    private void scaling() {
        long[] sizes = section.tiny() ? TINY_SCALE_SIZES : SCALE_SIZES;
        double[] cost = new double[sizes.length];
        Nd4jOps ops = new Nd4jOps();
        for (int k = 0; k < sizes.length; k++) {
            long n = sizes[k];
            long[] shape = {n / 1000, 1000};
            INDArray g = Nd4j.rand(DataType.FLOAT, shape);
            GradientSet<INDArray> set = GradientSet.of(new GradientTensor<>("0_W", shape, Role.WEIGHT, "0",
                    Layout.outputLast(), g));
            GradientPipeline guard = Pipelines.globalClip();
            StepContext ctx = StepContext.ofBatch(BATCH);
            Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(3, n >= 30_000_000 ? 7 : 15);
            // untimed: the previous sample left the norm at exactly 1, so the clip would not act
            r.add("guard", () -> g.muli(2), () -> {
                guard.step(set, ops, ctx);
                ops.releaseTemporaries();
            });
            cost[k] = r.run().get("guard");
            section.progress("%s params: %s", Table.count(n), Table.time(cost[k]));
            g.close();
        }
        section.emit(Scaling.row("dl4j guard cost (clipByGlobalNorm on INDArrays)", sizes, cost));
    }

    /**
     * JIT warm-up: a throwaway listener for each pipeline (the timed ones start with fresh state:
     * a monitor's running medians, say) runs {@value #WARM_UP_CALLS} times on one backprop's
     * gradient, restored before each call so the clips act as in the rounds (doubling it instead
     * overflowed to infinity within 130 calls of a clip that does not act, and compiled the
     * non-finite paths), with no update. The rounds then time GradGuard's code compiled, as it is
     * after the first thousand steps of a real run, while DL4J's own code is hot from every row's
     * {@code fit} (without it the guard's Java would run interpreted for most of the rounds). The step drivers run the same classes.
     */
    private void warmUp(MultiLayerNetwork net, GradientPipeline... pipelines) {
        int calls = section.tiny() ? 2 : WARM_UP_CALLS;
        net.computeGradientAndScore();
        INDArray gradient = net.getFlattenedGradients();
        try (INDArray original = gradient.dup()) {
            for (GradientPipeline p : pipelines) {
                TrainingListener l = Dl4jGuard.of(p).listener();
                for (int i = 0; i < calls; i++) {
                    gradient.assign(original); // the same finite gradient every call (a clip may have scaled it)
                    l.onGradientCalculation(net);
                    l.iterationDone(net, 0, 0);
                }
            }
        }
    }

    private static final int WARM_UP_CALLS = 2000;
    private static final int WARM_UP_INSTALLED = 300;

    /**
     * {@code guard} installed on {@code net} ({@link Dl4jGuard#install}) and the guarded updater it
     * made; {@code net} gets {@code plain} back. The guarded updater shares {@code plain}'s state
     * array, so swapping updaters per step trains one set of parameters and moments.
     */
    private static Updater installed(MultiLayerNetwork net, Dl4jGuard guard, Updater plain) {
        net.setUpdater(plain);
        guard.install(net);
        Updater guarded = net.getUpdater();
        net.setUpdater(plain);
        return guarded;
    }

    /** One {@code fit} of {@code net} with {@code updater} and no listener; then {@code net} has its previous updater again. */
    private static void fit(MultiLayerNetwork net, DataSet batch, Updater updater) {
        Updater before = net.getUpdater();
        net.setUpdater(updater);
        try {
            fit(net, batch);
        } finally {
            net.setUpdater(before);
        }
    }

    /** One step of a {@link Dl4jGuard}'s step driver on {@code net}, which then has no listeners. */
    private static StepResult<INDArray> step(MultiLayerNetwork net, Dl4jGuard guard, DataSet batch) {
        net.setListeners();
        return guard.step(net, batch);
    }

    /** One {@code fit} of {@code net} with exactly the given listeners (none: unguarded) and its current updater. */
    private static void fit(MultiLayerNetwork net, DataSet batch, TrainingListener... listeners) {
        net.setListeners(listeners);
        net.fit(batch);
    }

    private static volatile double sinkNorm;

    /** One {@code fit} with DL4J's own GradientNormalization set on every layer for it, no listener. */
    private static void fitBuiltIn(MultiLayerNetwork net, DataSet batch, GradientNormalization clip, double threshold) {
        setBuiltIn(net, clip, threshold);
        try {
            fit(net, batch);
        } finally {
            setBuiltIn(net, GradientNormalization.None, 1.0);
        }
    }

    private static void setBuiltIn(MultiLayerNetwork net, GradientNormalization clip, double threshold) {
        for (org.deeplearning4j.nn.api.Layer l : net.getLayers()) {
            BaseLayer conf = (BaseLayer) l.conf().getLayer();
            conf.setGradientNormalization(clip);
            conf.setGradientNormalizationThreshold(threshold);
        }
    }

    /**
     * Takes Σg² of every gradient view right after backprop (BLAS sdot, as GradGuard's ND4J
     * backend does) and changes nothing: one read pass, the least a global norm costs.
     */
    private static final class NormOnly extends BaseTrainingListener {
        @Override
        public void onGradientCalculation(Model model) {
            double sum = 0;
            for (INDArray g : model.gradient().gradientForVariable().values()) {
                sum += Nd4j.getBlasWrapper().level1().dot(g.length(), 1.0, g, g);
            }
            sinkNorm = sum;
        }
    }

    private static MultiLayerNetwork network(int[] widths, GradientNormalization clip, double threshold) {
        NeuralNetConfiguration.Builder b = new NeuralNetConfiguration.Builder()
                .seed(42)
                .updater(new Adam(Pipelines.LEARNING_RATE))
                .weightInit(WeightInit.XAVIER);
        if (clip != null) {
            b.gradientNormalization(clip).gradientNormalizationThreshold(threshold);
        }
        NeuralNetConfiguration.ListBuilder list = b.list();
        int last = widths.length - 1;
        for (int i = 0; i < last - 1; i++) {
            list.layer(new DenseLayer.Builder().nIn(widths[i]).nOut(widths[i + 1]).activation(Activation.RELU).build());
        }
        list.layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(widths[last - 1]).nOut(widths[last])
                .activation(Activation.SOFTMAX).build());
        MultiLayerConfiguration conf = list.build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }
}
