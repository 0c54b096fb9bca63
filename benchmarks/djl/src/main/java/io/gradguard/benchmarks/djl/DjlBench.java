package io.gradguard.benchmarks.djl;

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
import ai.djl.training.optimizer.Adam;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
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
import io.gradguard.djl.DjlOps;
import io.gradguard.djl.DjlGuard;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Parts 2-4 on DJL with the PyTorch engine (CPU): training steps of a ~5M-parameter MLP
 * (1000-2000-1500-10, ReLU, softmax cross-entropy, Adam) on batches of 64: forward and backward in
 * a {@link GradientCollector}, then {@link Trainer#step()}. Every variant trains the same model (one
 * set of parameter arrays; optClipGrad through a second trainer with its own optimizer on it), so no
 * variant gains or loses from where its arrays happen to lie; variants are interleaved step by step
 * ({@link Rounds}), and each step's temporaries live in a sub-manager closed at the end of the step.
 *
 * <p>Variants: unguarded (timed twice as two cases: the A/A control shows the measurement noise); DJL's built-in
 * {@code optClipGrad} (one-sided on the PyTorch engine); GradGuard's {@link DjlGuard} in place of
 * {@code trainer.step()} with the {@link Pipelines} clips, and with a monitor every step.
 */
public final class DjlBench {
    static final int[] FULL = {1000, 2000, 1500, 10};
    static final int[] TINY = {32, 64, 48, 10};
    static final int BATCH = 64;

    private final Section section;
    private final int[] widths;
    private final List<AutoCloseable> open = new ArrayList<>();

    private DjlBench(Section section) {
        this.section = section;
        this.widths = section.tiny() ? TINY : FULL;
    }

    public static void main(String[] args) throws Exception {
        try (Section s = Section.fromArgs("djl", args)) {
            DjlBench b = new DjlBench(s);
            try {
                b.run();
            } finally {
                b.close();
            }
        }
    }

    private void run() {
        if (!section.quick()) {
            parts();
        }
        section.part(5, "djl small models: the guard's fixed cost per step", this::small);
    }

    /**
     * Part 5 ({@link SmallModels}): per size one model and one trainer, stepped by
     * {@code trainer.step()} or by a {@link DjlGuard} with the clip alone, the README's pipeline, and
     * it with a monitor; interleaved.
     */
    private void small() {
        NDManager data = NDManager.newBaseManager();
        open.add(data);
        for (int[] w : SmallModels.widths(section)) {
            Engine.getInstance().setRandomSeed(7);
            NDArray x = data.randomUniform(0, 1, new Shape(BATCH, w[0]));
            float[] labels = new float[BATCH];
            for (int i = 0; i < BATCH; i++) {
                labels[i] = i % w[w.length - 1];
            }
            NDArray y = data.create(labels);
            // one model: the hook's guards step the plain trainer, each wrapper has a trainer of its own
            Model model = model(w);
            Trainer t = trainer(model, adam(), w);
            DjlGuard clip = DjlGuard.of(Pipelines.globalClip());
            DjlGuard readme = DjlGuard.of(Pipelines.readme());
            DjlGuard monitored = DjlGuard.of(Pipelines.readmeMonitored());
            Trainer wClip = trainer(model, DjlGuard.of(Pipelines.globalClip()).wrap(model, adam()), w);
            Trainer wReadme = trainer(model, DjlGuard.of(Pipelines.readme()).wrap(model, adam()), w);
            Trainer wMonitored = trainer(model, DjlGuard.of(Pipelines.readmeMonitored()).wrap(model, adam()), w);
            for (int i = 0; i < SmallModels.warmUpSteps(section); i++) {
                step(t, x, y, null);
                step(t, x, y, clip);
                step(t, x, y, readme);
                step(t, x, y, monitored);
                step(wClip, x, y, null);
                step(wReadme, x, y, null);
                step(wMonitored, x, y, null);
                step(t, x, y, null, true);
                handClipStep(t, x, y);
            }
            Rounds r = SmallModels.rounds(section);
            r.add("plain", () -> step(t, x, y, null));
            r.add("clip", () -> step(t, x, y, clip));
            r.add("readme", () -> step(t, x, y, readme));
            r.add("monitored", () -> step(t, x, y, monitored));
            r.add("w clip", () -> step(wClip, x, y, null));
            r.add("w readme", () -> step(wReadme, x, y, null));
            r.add("w monitored", () -> step(wMonitored, x, y, null));
            r.add("norm only", () -> step(t, x, y, null, true));
            r.add("hand clip", () -> handClipStep(t, x, y));
            long params = 0;
            for (var p : t.getModel().getBlock().getParameters().values()) {
                params += p.getArray().size();
            }
            Map<String, Double> m = r.run();
            SmallModels.emit(section, "djl", "DjlOptimizer in the trainer", params, Map.of("plain", m.get("plain"), "clip", m.get("w clip"),
                    "readme", m.get("w readme"), "monitored", m.get("w monitored")));
            SmallModels.emit(section, "djl", "DjlGuard", params, m);
            String size = Table.count(params) + " params, batch " + BATCH;
            section.emit(Row.ratio(5, "djl small model, Σg² only, hand-written (context)", size, m.get("norm only"), "unguarded step",
                    m.get("plain"), Double.NaN, "a dot per gradient, read to the host: the least a global norm costs"));
            section.emit(Row.ratio(5, "djl small model, clipByGlobalNorm hand-written: Σg², then each gradient scaled (context)", size,
                    m.get("hand clip"), "unguarded step", m.get("plain"), Double.NaN, "the clip a DJL user writes by hand"));
        }
    }

    private void parts() {
        section.part(2, "djl training steps", () -> {
            section.progress("engine %s", Engine.getInstance().getEngineName() + " " + Engine.getInstance().getVersion());
            NDManager data = NDManager.newBaseManager();
            open.add(data);
            Engine.getInstance().setRandomSeed(7);
            NDArray x = data.randomUniform(0, 1, new Shape(BATCH, widths[0]));
            float[] labels = new float[BATCH];
            for (int i = 0; i < BATCH; i++) {
                labels[i] = i % widths[widths.length - 1];
            }
            NDArray y = data.create(labels);
            // one model for every variant: the same parameter arrays (memory placement included), so
            // the rows compare what happens between backward and the update, not two allocations
            Model model = model(widths);
            Trainer plain = trainer(model, adam(), widths);
            Trainer clipped = trainer(model, Adam.adam().optLearningRateTracker(Tracker.fixed(Pipelines.LEARNING_RATE))
                    .optClipGrad((float) Pipelines.MAX_VALUE).build(), widths);
            // the floor of a clip that acts through the wrapper: Σg² read, and Adam's kernel multiplying its copy of the
            // gradient by a rescale other than 1 (PyTorch engine: grad.mul_(rescale_grad), a pass of its own)
            Trainer rescaled = trainer(model, Adam.adam().optLearningRateTracker(Tracker.fixed(Pipelines.LEARNING_RATE))
                    .setRescaleGrad(0.5f).build(), widths);
            DjlGuard global = DjlGuard.of(Pipelines.guarded());
            DjlGuard idle = DjlGuard.of(Pipelines.guardedIdle());
            DjlGuard value = DjlGuard.of(Pipelines.valueClip());
            DjlGuard monitored = DjlGuard.of(Pipelines.globalClipMonitored());
            // the drop-in optimizer wrappers: trainers on the same model, plain trainer.step(), the guard inside the optimizer
            DjlGuard wrapGlobal = DjlGuard.of(Pipelines.guarded());
            DjlGuard wrapIdle = DjlGuard.of(Pipelines.guardedIdle());
            DjlGuard wrapValue = DjlGuard.of(Pipelines.valueClip());
            DjlGuard wrapMonitored = DjlGuard.of(Pipelines.globalClipMonitored());
            Trainer wrappedGlobal = trainer(model, wrapGlobal.wrap(model, adam()), widths);
            Trainer wrappedIdle = trainer(model, wrapIdle.wrap(model, adam()), widths);
            Trainer wrappedValue = trainer(model, wrapValue.wrap(model, adam()), widths);
            Trainer wrappedMonitored = trainer(model, wrapMonitored.wrap(model, adam()), widths);
            long params = 0;
            for (var p : plain.getModel().getBlock().getParameters().values()) {
                params += p.getArray().size();
            }
            warmUp(plain, x, y, Pipelines.guarded(), Pipelines.guardedIdle(), Pipelines.valueClip(), Pipelines.globalClipMonitored());
            for (Trainer t : List.of(wrappedGlobal, wrappedIdle, wrappedValue, wrappedMonitored)) {
                for (int i = 0; i < (section.tiny() ? 2 : WARM_UP_CALLS); i++) {
                    step(t, x, y, null); // the wrappers' own code JIT-compiled before the rounds, as the guards' above
                }
            }
            Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(5, 80);
            r.add("unguarded", () -> step(plain, x, y, null));
            r.add("unguarded again", () -> step(plain, x, y, null));
            r.add("norm only", () -> step(plain, x, y, null, true));
            r.add("norm only rescaled", () -> step(rescaled, x, y, null, true));
            r.add("optClipGrad", () -> step(clipped, x, y, null));
            r.add("clamp only", () -> clampStep(plain, x, y));
            r.add("guard global", () -> step(plain, x, y, global));
            r.add("guard idle", () -> step(plain, x, y, idle));
            r.add("guard value", () -> step(plain, x, y, value));
            r.add("guard monitored", () -> step(plain, x, y, monitored));
            r.add("wrap global", () -> step(wrappedGlobal, x, y, null));
            r.add("wrap idle", () -> step(wrappedIdle, x, y, null));
            r.add("wrap value", () -> step(wrappedValue, x, y, null));
            r.add("wrap monitored", () -> step(wrappedMonitored, x, y, null));
            Map<String, Double> m = r.run();
            String active = Pipelines.clipActivity(step(plain, x, y, global).metric(Pipelines.COEFFICIENT));
            String size = Table.count(params) + " params, batch " + BATCH;
            double base = m.get("unguarded");
            section.emit(Row.ratio(2, "djl unguarded step, A/A control (noise)", size, m.get("unguarded again"),
                    "unguarded step", base, Double.NaN, "the same step timed twice: the spread of this machine"));
            section.emit(Row.ratio(2, "djl unguarded step + Σg² only, hand-written (context)", size, m.get("norm only"),
                    "unguarded step", base, Double.NaN, "one read pass over the gradients (a dot each, to the host): the least a global norm costs"));
            section.emit(Row.ratio(2, "djl guarded step, clipByGlobalNorm + norm monitor (DjlGuard)", size, m.get("guard global"),
                    "unguarded step", base, 1.03, active));
            String idleNote = Pipelines.clipActivity(step(plain, x, y, idle).metric(Pipelines.COEFFICIENT));
            section.emit(Row.ratio(2, "djl guarded step, clipByGlobalNorm + norm monitor, armed, not acting (DjlGuard)", size, m.get("guard idle"),
                    "unguarded step", base, 1.03, idleNote));
            section.emit(Row.ratio(2, "djl guarded step + monitor every step", size, m.get("guard monitored"),
                    "unguarded step", base, Double.NaN, "per-tensor statistics each step"));
            section.emit(Row.ratio(3, "djl GradGuard clipByValue vs built-in optClipGrad", size, m.get("guard value"),
                    "optClipGrad step", m.get("optClipGrad"), 1.05, "optClipGrad clips one side only on PyTorch"));
            section.emit(Row.ratio(3, "djl built-in optClipGrad step (context)", size, m.get("optClipGrad"),
                    "unguarded step", base, Double.NaN, "DJL's own cost of the clip"));
            double floor = m.get("norm only");
            section.emit(Row.ratio(2, "djl optimizer wrapper, clipByGlobalNorm + norm monitor (DjlOptimizer)", size, m.get("wrap global"),
                    "Σg² only step", floor, 1.01, Pipelines.clipActivity(wrapGlobal.lastResult().orElseThrow().metric(Pipelines.COEFFICIENT))));
            section.emit(Row.ratio(2, "djl unguarded step + Σg² + Adam's gradient rescale, hand-written (context)", size,
                    m.get("norm only rescaled"), "Σg² only step", floor, Double.NaN, "the floor of a clip that acts: DJL's Adam on PyTorch "
                    + "multiplies its copy of the gradient by a rescale other than 1 in a pass of its own"));
            section.emit(Row.ratio(2, "djl optimizer wrapper, clipByGlobalNorm + norm monitor, acting, vs that floor (DjlOptimizer)", size,
                    m.get("wrap global"), "Σg² + rescale step", m.get("norm only rescaled"), 1.01, "the clip's coefficient is the rescale"));
            section.emit(Row.ratio(2, "djl optimizer wrapper, clipByGlobalNorm + norm monitor, armed, not acting (DjlOptimizer)", size,
                    m.get("wrap idle"), "Σg² only step", floor, 1.01,
                    Pipelines.clipActivity(wrapIdle.lastResult().orElseThrow().metric(Pipelines.COEFFICIENT))));
            section.emit(Row.ratio(2, "djl optimizer wrapper + monitor every step (DjlOptimizer)", size, m.get("wrap monitored"),
                    "Σg² only step", floor, 1.15, "per-tensor Σx², max|x|, non-finite count each step"));
            section.emit(Row.ratio(3, "djl GradGuard clipByValue through the optimizer wrapper vs built-in optClipGrad", size,
                    m.get("wrap value"), "optClipGrad step", m.get("optClipGrad"), 1.05, "optClipGrad clips one side only on PyTorch"));
            section.emit(Row.ratio(3, "djl unguarded step + one two-sided clamp of each gradient, hand-written (context)", size,
                    m.get("clamp only"), "optClipGrad step", m.get("optClipGrad"), Double.NaN, "the floor of a two-sided clip on DJL: "
                    + "NDArray.clip writes a new array (DJL has no in-place clamp), optClipGrad is a clamp_max_ inside Adam's kernel"));
            section.emit(Row.ratio(3, "djl GradGuard clipByValue through the optimizer wrapper vs that floor", size, m.get("wrap value"),
                    "clamp-only step", m.get("clamp only"), Double.NaN, "the clamped array is the gradient Adam reads: one pass"));
        });
        section.part(4, "djl guard cost vs model size", this::scaling);
    }

    private static final long[] SCALE_SIZES = {1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000};
    private static final long[] TINY_SCALE_SIZES = {100_000, 1_000_000};

    /**
     * Part 4: the guard alone ({@code clipByGlobalNorm} through {@link DjlOps}, temporaries freed
     * after each call, as {@link DjlGuard} does) on one [n/1000, 1000] float32 gradient.
     */
    private void scaling() {
        long[] sizes = section.tiny() ? TINY_SCALE_SIZES : SCALE_SIZES;
        double[] cost = new double[sizes.length];
        for (int k = 0; k < sizes.length; k++) {
            long n = sizes[k];
            try (NDManager m = NDManager.newBaseManager(); DjlOps ops = DjlOps.on(m)) {
                long[] shape = {n / 1000, 1000};
                NDArray g = m.randomUniform(-1, 1, new Shape(shape));
                GradientSet<NDArray> set = GradientSet.of(new GradientTensor<>("w", shape, Role.WEIGHT, "dense",
                        Layout.outputFirst(), g));
                GradientPipeline guard = Pipelines.globalClip();
                StepContext ctx = StepContext.ofBatch(BATCH);
                Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(3, n >= 30_000_000 ? 7 : 15);
                // untimed: the previous sample left the norm at exactly 1, so the clip would not act
                r.add("guard", () -> g.muli(2), () -> {
                    guard.step(set, ops, ctx);
                    ops.freeTemporaries();
                });
                cost[k] = r.run().get("guard");
                section.progress("%s params: %s", Table.count(n), Table.time(cost[k]));
            }
        }
        section.emit(Scaling.row("djl guard cost (clipByGlobalNorm on NDArrays)", sizes, cost));
    }

    private static Optimizer adam() {
        return Optimizer.adam().optLearningRateTracker(Tracker.fixed(Pipelines.LEARNING_RATE)).build();
    }

    /** The MLP, its parameters initialised once (seed 42) by the first trainer made on it. */
    private Model model(int[] widths) {
        SequentialBlock block = new SequentialBlock();
        for (int i = 1; i < widths.length; i++) {
            block.add(Linear.builder().setUnits(widths[i]).build());
            if (i < widths.length - 1) {
                block.add(Activation::relu);
            }
        }
        Model model = Model.newInstance("mlp");
        model.setBlock(block);
        open.add(model);
        Engine.getInstance().setRandomSeed(42);
        return model;
    }

    /** A trainer on {@code model} with its own optimizer (and optimizer state). */
    private Trainer trainer(Model model, Optimizer optimizer, int[] widths) {
        Trainer t = model.newTrainer(new DefaultTrainingConfig(Loss.softmaxCrossEntropyLoss()).optOptimizer(optimizer));
        t.initialize(new Shape(BATCH, widths[0]));
        open.add(t);
        return t;
    }

    /**
     * One training step, through the guard unless it is null; every array it creates is freed at
     * its end.
     *
     * @return the guard's result (metrics on the host), or null without a guard
     */
    static StepResult<NDArray> step(Trainer trainer, NDArray x, NDArray y, DjlGuard guard) {
        return step(trainer, x, y, guard, false);
    }

    /**
     * As {@link #step(Trainer, NDArray, NDArray, DjlGuard)}; {@code normOnly}: an unguarded step that
     * also takes Σg² of every gradient (one fused dot each, summed on the host): one read pass over
     * the gradients, the least any global norm costs.
     */
    static StepResult<NDArray> step(Trainer trainer, NDArray x, NDArray y, DjlGuard guard, boolean normOnly) {
        try (NDManager scope = trainer.getManager().newSubManager()) {
            backward(trainer, x, y, scope);
            if (normOnly) {
                sinkNorm = sumOfSquares(trainer);
            }
            if (guard == null) {
                trainer.step();
                return null;
            }
            return guard.step(trainer, StepContext.ofBatch(BATCH));
        }
    }

    private static volatile double sinkNorm;

    /** The forward and backward pass on copies of the batch attached to {@code scope}: the gradients are set. */
    private static void backward(Trainer trainer, NDArray x, NDArray y, NDManager scope) {
        NDArray xs = x.duplicate();
        NDArray ys = y.duplicate();
        xs.attach(scope);
        ys.attach(scope);
        try (GradientCollector gc = trainer.newGradientCollector()) {
            NDList pred = trainer.forward(new NDList(xs));
            NDArray loss = trainer.getLoss().evaluate(new NDList(ys), pred);
            gc.backward(loss);
        }
    }

    /** Σg² over every gradient: one fused dot each, summed on the host. */
    private static double sumOfSquares(Trainer trainer) {
        double sum = 0;
        for (var p : trainer.getModel().getBlock().getParameters().values()) {
            try (NDArray g = p.getArray().getGradient(); NDArray flat = g.reshape(-1); NDArray ss = flat.dot(flat)) {
                sum += ss.getFloat();
            }
        }
        return sum;
    }

    /**
     * An unguarded step with the global-norm clip written by hand in DJL: Σg² as a dot per gradient
     * summed on the host, then each gradient multiplied in place by {@code min(1, maxNorm / norm)}
     * when that is below 1.
     */
    static void handClipStep(Trainer trainer, NDArray x, NDArray y) {
        try (NDManager scope = trainer.getManager().newSubManager()) {
            backward(trainer, x, y, scope);
            double sum = sumOfSquares(trainer);
            double c = Pipelines.MAX_NORM / Math.sqrt(sum);
            if (c < 1) {
                for (var p : trainer.getModel().getBlock().getParameters().values()) {
                    try (NDArray g = p.getArray().getGradient()) {
                        g.muli((float) c);
                    }
                }
            }
            sinkNorm = sum;
            trainer.step();
        }
    }

    /**
     * An unguarded step that also clamps every gradient to ±{@link Pipelines#MAX_VALUE} into a new
     * array and drops it: one clamp pass over the gradients, the least a two-sided clip costs on DJL.
     */
    static void clampStep(Trainer trainer, NDArray x, NDArray y) {
        try (NDManager scope = trainer.getManager().newSubManager()) {
            backward(trainer, x, y, scope);
            float v = (float) Pipelines.MAX_VALUE;
            for (var p : trainer.getModel().getBlock().getParameters().values()) {
                NDArray g = p.getArray().getGradient();
                g.attach(scope); // the handle, its clamp and the clamp's bound scalars are freed with the step
                sinkNorm = g.clip(-v, v).getShape().size();
            }
            trainer.step();
        }
    }

    private static final int WARM_UP_CALLS = 300;

    /**
     * JIT warm-up: a throwaway guard for each pipeline (the timed ones start with fresh state) runs
     * {@value #WARM_UP_CALLS} times on one backward pass's gradients (restored before each call, so
     * the clips act as in the rounds), each call with the optimizer step, so the rounds time GradGuard's code compiled, as after the first thousand steps of a
     * real run; DJL's own code is hot from every row.
     */
    private void warmUp(Trainer trainer, NDArray x, NDArray y, GradientPipeline... pipelines) {
        step(trainer, x, y, null); // its gradients stay on the parameters until the next backward pass
        try (NDManager keep = trainer.getManager().newSubManager()) {
            List<NDArray> gradients = new ArrayList<>();
            List<NDArray> saved = new ArrayList<>();
            for (var p : trainer.getModel().getBlock().getParameters().values()) {
                NDArray g = p.getArray().getGradient();
                g.attach(keep);
                gradients.add(g);
                NDArray copy = g.duplicate();
                copy.attach(keep);
                saved.add(copy);
            }
            for (GradientPipeline p : pipelines) {
                long t0 = System.nanoTime();
                DjlGuard guard = DjlGuard.of(p);
                for (int i = 0; i < (section.tiny() ? 2 : WARM_UP_CALLS); i++) {
                    for (int k = 0; k < saved.size(); k++) {
                        saved.get(k).copyTo(gradients.get(k)); // the same gradient every call: the clips act as in the rounds
                    }
                    guard.step(trainer, StepContext.ofBatch(BATCH));
                }
                section.progress("JIT warm-up of %s: %.1f s", p.stageNames(), (System.nanoTime() - t0) / 1e9);
            }
        }
    }

    private void close() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
    }
}
