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
import io.gradguard.benchmarks.Row;
import io.gradguard.benchmarks.Rounds;
import io.gradguard.benchmarks.Section;
import io.gradguard.benchmarks.Table;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Parts 2-4 on DJL with the PyTorch engine (CPU): training steps of a ~5M-parameter MLP
 * (1000-2000-1500-10, ReLU, softmax cross-entropy, Adam) on batches of 64: forward and backward in
 * a {@link GradientCollector}, then {@link Trainer#step()}. Every variant is its own model with the
 * same seed; variants are interleaved step by step ({@link Rounds}), and each step's temporaries
 * live in a sub-manager closed at the end of the step.
 *
 * <p>Variants: unguarded (twice: the A/A control shows the measurement noise); DJL's built-in
 * {@code optClipGrad} (one-sided on the PyTorch engine); GradGuard through the DJL adapter once it
 * is on the classpath.
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
            Trainer plain = trainer(Optimizer.adam().optLearningRateTracker(Tracker.fixed(1e-3f)).build());
            Trainer plain2 = trainer(Optimizer.adam().optLearningRateTracker(Tracker.fixed(1e-3f)).build());
            Trainer clipped = trainer(Adam.adam().optLearningRateTracker(Tracker.fixed(1e-3f)).optClipGrad(1e-3f).build());
            long params = 0;
            for (var p : plain.getModel().getBlock().getParameters().values()) {
                params += p.getArray().size();
            }
            Rounds r = section.tiny() ? new Rounds(1, 2) : new Rounds(5, 30);
            r.add("unguarded", () -> step(plain, x, y));
            r.add("unguarded again", () -> step(plain2, x, y));
            r.add("optClipGrad", () -> step(clipped, x, y));
            Map<String, Double> m = r.run();
            String size = Table.count(params) + " params, batch " + BATCH;
            double base = m.get("unguarded");
            section.emit(Row.ratio(2, "djl unguarded step, A/A control (noise)", size, m.get("unguarded again"),
                    "unguarded step", base, Double.NaN, "two identical models: the spread of this machine"));
            section.emit(Row.ratio(3, "djl built-in optClipGrad step (context)", size, m.get("optClipGrad"),
                    "unguarded step", base, Double.NaN, "DJL's own cost of the clip"));
            section.emit(Row.note(2, "djl guarded vs unguarded step", "skipped: the DJL adapter (adapter-djl) is not merged yet"));
            section.emit(Row.note(3, "djl GradGuard clipByValue vs optClipGrad", "skipped: the DJL adapter (adapter-djl) is not merged yet"));
        });
    }

    private Trainer trainer(Optimizer optimizer) {
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
        Trainer t = model.newTrainer(new DefaultTrainingConfig(Loss.softmaxCrossEntropyLoss()).optOptimizer(optimizer));
        t.initialize(new Shape(BATCH, widths[0]));
        open.add(t);
        return t;
    }

    /** One training step; every array it creates is freed at its end. */
    static void step(Trainer trainer, NDArray x, NDArray y) {
        try (NDManager scope = trainer.getManager().newSubManager()) {
            NDArray xs = x.duplicate();
            NDArray ys = y.duplicate();
            xs.attach(scope);
            ys.attach(scope);
            try (GradientCollector gc = trainer.newGradientCollector()) {
                NDList pred = trainer.forward(new NDList(xs));
                NDArray loss = trainer.getLoss().evaluate(new NDList(ys), pred);
                gc.backward(loss);
            }
            trainer.step();
        }
    }

    private void close() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
    }
}
