package io.gradguard.dl4j;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.NormType;
import io.gradguard.core.Scope;
import io.gradguard.core.StateFormatException;
import io.gradguard.core.StepListener;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.monitor.Monitor;
import io.gradguard.core.transform.ClipByNorm;
import io.gradguard.core.transform.LossScale;
import io.gradguard.core.transform.NonFiniteGuard;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.Serializable;
import java.time.Duration;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Supplier;
import java.util.function.ToLongFunction;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.optimize.api.BaseTrainingListener;
import org.deeplearning4j.parallelism.ParallelWrapper;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.DataSetPreProcessor;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;

/**
 * GradGuard for data-parallel DL4J: a {@code ParallelWrapper}'s workers (modes AVERAGING and
 * SHARED_GRADIENTS) or the workers of DL4J on Spark, one guard per worker.
 *
 * <p>DL4J calls one listener instance from every worker thread, each with the worker's own network
 * (a {@code ParallelWrapper} moves the network's listeners into itself; Spark ships them to the
 * executors by Java serialization). This listener gives each worker its own {@link Dl4jGuard},
 * installed on that worker's network the first time it computes a gradient ({@link Dl4jGuard#install}):
 * the worker's pipeline runs between its backprop and its updater, and a skipped step leaves the
 * worker's update exactly 0, before it is applied, averaged or threshold-encoded and shared. Every
 * worker's pipeline is built from one {@link Recipe} and its state (counters, accumulators,
 * detectors) is its own; a {@link Monitor} of the recipe becomes one monitor per worker
 * ({@link Monitor#forWorker}) writing records named {@code <run>/worker-<i>} to the recipe
 * monitor's sinks.
 *
 * <pre>{@code
 * Dl4jParallelGuard guard = Dl4jParallelGuard.of(() -> GradientPipeline.of(
 *         Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0), Monitor.toJsonl(Path.of("grad.jsonl"))));
 * ParallelWrapper wrapper = new ParallelWrapper.Builder<>(net).workers(2)
 *         .trainingMode(ParallelWrapper.TrainingMode.AVERAGING).build();
 * guard.fit(wrapper, trainData);                  // per epoch; or guard.attach(wrapper) once, then wrapper.fit(trainData)
 * log.info("{} skipped ({} on worker 1)", guard.skippedCount(), guard.worker(1).skippedCount());
 * guard.close();                                  // closes the monitors' files
 * }</pre>
 *
 * <p><b>Per-worker guarding</b> (the default) decides every step on the worker's own gradient: a
 * worker whose gradient is non-finite skips its step, the others apply theirs. Its cost is the
 * pipeline's, per worker; no worker waits for another.
 *
 * <p><b>Synchronized guarding</b> ({@link #synchronize()}, opt-in, {@code ParallelWrapper} only,
 * trained with {@link #fit}): the workers of a round exchange one scalar per step, their Σg², and
 * wait for each other (a barrier per step). A step where any worker's gradient is non-finite is
 * skipped on every worker; {@code clipByGlobalNorm(c)} clips with the norm over all workers,
 * {@code N = √(Σ_workers Σg²)}, the same coefficient {@code c / max(N, c)} on every worker. This is
 * not PyTorch DDP's clip of the averaged gradient: {@code ‖mean_w g_w‖ ≤ N / √n} (equal when the
 * workers' gradients are equal), so at the same {@code c} this clip acts earlier; use
 * {@code c·√n} to bound the averaged gradient's norm by {@code c} for identical gradients. The other
 * stages run per worker. Stages before {@code clipByGlobalNorm} must leave the gradients as they
 * are (a non-finite check, a monitor), and a loss-scale stage is not supported.
 *
 * <p><b>Workers</b> are numbered as the {@code ParallelWrapper} numbers its threads (worker 0
 * trains the user's network), elsewhere in the order they first compute a gradient. The workers
 * a {@code ParallelWrapper} rebuilds on each {@code fit} keep their guard and its state.
 * <b>Checkpoints</b>: {@link #saveState} writes every worker's state, {@link #restoreState} hands it
 * back to the workers of the same numbers (between fits, or before the first).
 *
 * <p><b>On Spark</b> add it with {@code trainingMaster.setListeners(guard)}: it is
 * {@link Serializable}; what travels is the recipe and the settings, each copy starts with fresh
 * state and builds its pipeline from the recipe on the executor, so the guarding is per worker (and
 * monitors write on the executors). Synchronized guarding needs a {@code ParallelWrapper}.
 *
 * @throws IllegalArgumentException (from the factories and methods) for a null recipe, wrapper or
 *     data, a recipe that returns null, a synchronized pipeline it cannot synchronize, a timeout
 *     that is not positive, a worker with no guard yet
 * @throws IllegalStateException (from training) when the guard is closed, a synchronized worker's
 *     peer failed or did not arrive within the timeout, or synchronized training does not run
 *     through {@link #fit}
 */
public final class Dl4jParallelGuard extends BaseTrainingListener implements Serializable, AutoCloseable {
    private static final long serialVersionUID = 1L;

    /** How long a synchronized worker waits for its peers by default. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(60);

    private static final Pattern WORKER_THREAD = Pattern.compile("ParallelWrapper training thread (\\d+)");
    private static final int STATE_MAGIC = 0x47475057; // "GGPW"
    private static final int STATE_VERSION = 1;

    /**
     * Builds one worker's pipeline configuration. A serializable supplier, so that the guard can
     * travel to Spark executors: write it as a lambda that creates every stage
     * ({@code () -> GradientPipeline.of(...)}), capturing nothing that is not serializable.
     */
    @FunctionalInterface
    public interface Recipe extends Supplier<GradientPipeline>, Serializable {
    }

    private final Recipe recipe;
    private final boolean synchronize;
    private final long timeoutMillis;

    private final transient Map<Integer, Dl4jGuard> guards = new ConcurrentHashMap<>();
    private final transient Map<Model, Integer> firstSeen = new IdentityHashMap<>();
    private final transient Map<Integer, byte[]> restored = new ConcurrentHashMap<>();
    private transient GradientPipeline template;
    private transient volatile Rendezvous rendezvous;
    private transient volatile boolean closed;

    private Dl4jParallelGuard(Recipe recipe, boolean synchronize, long timeoutMillis) {
        this.recipe = recipe;
        this.synchronize = synchronize;
        this.timeoutMillis = timeoutMillis;
    }

    /**
     * A per-worker guard: every worker runs its own {@code recipe.get()} pipeline.
     *
     * @throws IllegalArgumentException if {@code recipe} is null
     */
    public static Dl4jParallelGuard of(Recipe recipe) {
        return new Dl4jParallelGuard(Checks.notNull("recipe", recipe), false, DEFAULT_TIMEOUT.toMillis());
    }

    /**
     * The same guard with synchronized guarding ({@link #DEFAULT_TIMEOUT}): every worker skips a step
     * any worker's gradient is non-finite in, {@code clipByGlobalNorm} uses the norm over all
     * workers. Train with {@link #fit}.
     */
    public Dl4jParallelGuard synchronize() {
        return synchronize(DEFAULT_TIMEOUT);
    }

    /**
     * Synchronized guarding whose workers wait at most {@code timeout} for each other per step.
     *
     * @throws IllegalArgumentException if {@code timeout} is null or not positive
     */
    public Dl4jParallelGuard synchronize(Duration timeout) {
        Checks.notNull("timeout", timeout);
        Checks.require(!timeout.isNegative() && !timeout.isZero(), "timeout", "be positive", timeout);
        return new Dl4jParallelGuard(recipe, true, timeout.toMillis());
    }

    /** Whether the workers agree on skips and clip with the norm over all of them. */
    public boolean isSynchronized() {
        return synchronize;
    }

    /** Serialization (Spark) carries the recipe and settings; the copy starts with fresh state. */
    private Object readResolve() {
        return new Dl4jParallelGuard(recipe, synchronize, timeoutMillis);
    }

    // ---- hooking in ------------------------------------------------------------------------------

    /**
     * Adds this guard to {@code wrapper}'s listeners (once); its workers are guarded from their next
     * gradient on. Per-worker guarding can then train with {@code wrapper.fit(data)}.
     *
     * @return this guard
     * @throws IllegalArgumentException if {@code wrapper} is null, or (synchronized) the recipe's
     *     pipeline cannot be synchronized
     */
    public Dl4jParallelGuard attach(ParallelWrapper wrapper) {
        Checks.notNull("wrapper", wrapper);
        ensureOpen();
        template();
        if (!wrapper.getListeners().contains(this)) {
            wrapper.getListeners().add(this); // not setListeners: it would drop the wrapper's stats router
        }
        return this;
    }

    /**
     * One {@code wrapper.fit(data)} with this guard attached. Synchronized guarding trains this way:
     * the guard learns the worker count from the wrapper and counts the batches, so the last round
     * of an epoch (fewer batches than workers) waits for the workers it has.
     *
     * @throws IllegalArgumentException if an argument is null, the wrapper has fewer than 2 workers,
     *     or (synchronized) the recipe's pipeline cannot be synchronized
     * @throws IllegalStateException if the guard is closed, or a worker's step failed (the wrapper
     *     rethrows it)
     */
    public void fit(ParallelWrapper wrapper, DataSetIterator data) {
        Checks.notNull("data", data);
        attach(wrapper);
        // DL4J's own fit ends with net.clear(), which drops the user's network's updater; a worker
        // rebuilding its copy then creates it under the network's lock, which worker 0 holds through
        // its whole step, while in SHARED_GRADIENTS worker 0 waits in that step for the copy: a
        // deadlock of DL4J 1.0.0-M2.1 on every fit after the first. The updater made here avoids it.
        if (wrapper.getModel() instanceof MultiLayerNetwork net) {
            net.getUpdater();
        } else if (wrapper.getModel() instanceof ComputationGraph graph) {
            graph.getUpdater();
        }
        if (!synchronize) {
            wrapper.fit(data);
            return;
        }
        int n = wrapper.getWorkers();
        Checks.require(n >= 2, "wrapper", "have at least 2 workers", n);
        Rendezvous r = rendezvous;
        if (r == null || r.parties() != n) {
            r = new Rendezvous(n, timeoutMillis);
            rendezvous = r;
        }
        if (!data.hasNext() && data.resetSupported()) {
            data.reset();
        }
        r.start();
        try {
            wrapper.fit(new Counted(data, r));
        } finally {
            r.stop();
        }
    }

    /** Guards the worker that computed this gradient (DL4J calls it before the worker's updater). */
    @Override
    public void onGradientCalculation(Model model) {
        if (!(model instanceof MultiLayerNetwork) && !(model instanceof ComputationGraph)) {
            throw new IllegalArgumentException("model must be a MultiLayerNetwork or a ComputationGraph, got "
                    + (model == null ? "null" : model.getClass().getName()));
        }
        ensureOpen();
        int worker = workerOf(model);
        guards.computeIfAbsent(worker, this::newGuard).moveTo(model);
    }

    private int workerOf(Model model) {
        Matcher m = WORKER_THREAD.matcher(Thread.currentThread().getName());
        if (m.matches()) {
            return Integer.parseInt(m.group(1));
        }
        synchronized (firstSeen) {
            return firstSeen.computeIfAbsent(model, k -> firstSeen.size());
        }
    }

    private Dl4jGuard newGuard(int worker) {
        Dl4jGuard g = Dl4jGuard.of(pipelineFor(worker));
        byte[] state = restored.remove(worker);
        if (state != null) {
            try {
                g.restoreState(new ByteArrayInputStream(state));
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }
        if (synchronize) {
            g.onFailure(e -> {
                Rendezvous r = rendezvous;
                if (r != null) {
                    r.fail(worker, e);
                }
            });
        }
        return g;
    }

    // ---- the workers' pipelines ------------------------------------------------------------------

    /** The recipe's pipeline, checked once: it is never run itself, its stages are shared by the workers' pipelines. */
    private synchronized GradientPipeline template() {
        if (template == null) {
            GradientPipeline p = recipe.get();
            Checks.require(p != null, "recipe", "return a pipeline", null);
            if (synchronize) {
                checkSynchronizable(p);
            }
            template = p;
        }
        return template;
    }

    private static void checkSynchronizable(GradientPipeline p) {
        List<GradientTransform> stages = p.transforms();
        for (int i = 0; i < stages.size(); i++) {
            GradientTransform t = stages.get(i);
            Checks.require(!(t instanceof LossScale), "recipe", "not have a loss-scale stage in synchronized guarding",
                    p.stageNames());
            if (isGlobalClip(t)) {
                for (int j = 0; j < i; j++) {
                    Checks.require(!stages.get(j).changesGradients(), "recipe", "leave the gradients unchanged before "
                            + "clipByGlobalNorm in synchronized guarding (it clips with the norm the workers exchanged "
                            + "first); stage '" + p.stageNames().get(j) + "' changes them", p.stageNames());
                }
            }
        }
    }

    private static boolean isGlobalClip(GradientTransform t) {
        return t instanceof ClipByNorm c && c.scope() == Scope.GLOBAL && c.normType() == NormType.L2;
    }

    /** The recipe's stages for one worker: its own monitors, and in synchronized guarding the exchange and the global clip. */
    private GradientPipeline pipelineFor(int worker) {
        GradientPipeline t = template();
        List<GradientTransform> stages = new ArrayList<>();
        SyncStages.Exchange exchange = null;
        if (synchronize) {
            boolean skips = t.transforms().stream()
                    .anyMatch(s -> s instanceof NonFiniteGuard g && g.policy() == NonFiniteGuard.Policy.SKIP);
            exchange = new SyncStages.Exchange(worker, () -> rendezvous, skips);
            stages.add(exchange);
        }
        for (GradientTransform s : t.transforms()) {
            if (s instanceof Monitor m) {
                stages.add(m.forWorker(worker));
            } else if (exchange != null && isGlobalClip(s)) {
                stages.add(new SyncStages.GlobalClip(((ClipByNorm) s).maxNorm(), exchange));
            } else {
                stages.add(s);
            }
        }
        GradientPipeline p = GradientPipeline.of(stages);
        for (StepListener l : t.listeners()) {
            if (!t.transforms().contains(l)) {
                p.addListener(l instanceof Monitor m ? m.forWorker(worker) : l);
            }
        }
        return p;
    }

    // ---- counts and workers ----------------------------------------------------------------------

    /** The guard of worker {@code index} (its counts, last result, pipeline). */
    public Dl4jGuard worker(int index) {
        Dl4jGuard g = guards.get(index);
        Checks.require(g != null, "index", "be a worker that has computed a gradient, one of " + new TreeMap<>(guards).keySet(),
                index);
        return g;
    }

    /** How many workers have computed a gradient so far. */
    public int workerCount() {
        return guards.size();
    }

    /** Optimizer steps applied, all workers together. */
    public long stepCount() {
        return total(Dl4jGuard::stepCount);
    }

    /** Steps skipped, all workers together (synchronized: a step skipped on n workers counts n). */
    public long skippedCount() {
        return total(Dl4jGuard::skippedCount);
    }

    /** Applied steps on which a clip acted, all workers together. */
    public long clippedCount() {
        return total(Dl4jGuard::clippedCount);
    }

    /** Pipeline calls (micro-batches), all workers together. */
    public long callCount() {
        return total(Dl4jGuard::callCount);
    }

    private long total(ToLongFunction<Dl4jGuard> count) {
        long n = 0;
        for (Dl4jGuard g : guards.values()) {
            n += count.applyAsLong(g);
        }
        return n;
    }

    /** One line per worker: its number and its guard's summary. */
    public String summary() {
        StringBuilder b = new StringBuilder("GradGuard data-parallel (" + (synchronize ? "synchronized" : "per worker") + "):");
        new TreeMap<>(guards).forEach((w, g) -> b.append("\n  worker ").append(w).append(": ").append(g.summary()));
        return b.toString();
    }

    // ---- checkpoints -----------------------------------------------------------------------------

    /**
     * Writes every worker's pipeline state (int "GGPW", int version 1, int workers, per worker: int
     * number, int length, its {@link Dl4jGuard#saveState} bytes). Call it between fits; save the
     * network ({@code ModelSerializer}) next to it.
     *
     * @throws IllegalArgumentException if {@code out} is null
     * @throws IOException if the stream fails
     */
    public void saveState(OutputStream out) throws IOException {
        Checks.notNull("out", out);
        Map<Integer, byte[]> states = new TreeMap<>(restored);
        for (Map.Entry<Integer, Dl4jGuard> e : guards.entrySet()) {
            ByteArrayOutputStream b = new ByteArrayOutputStream();
            e.getValue().saveState(b);
            states.put(e.getKey(), b.toByteArray());
        }
        DataOutputStream d = new DataOutputStream(out);
        d.writeInt(STATE_MAGIC);
        d.writeInt(STATE_VERSION);
        d.writeInt(states.size());
        for (Map.Entry<Integer, byte[]> e : states.entrySet()) {
            d.writeInt(e.getKey());
            d.writeInt(e.getValue().length);
            d.write(e.getValue());
        }
        d.flush();
    }

    /**
     * Restores what {@link #saveState} wrote: each worker's state goes to the worker of the same
     * number now, or when it computes its first gradient.
     *
     * @throws IllegalArgumentException if {@code in} is null
     * @throws StateFormatException if the data is not a data-parallel GradGuard state, or a worker's
     *     state does not fit its pipeline
     * @throws IOException if the stream fails
     */
    public void restoreState(InputStream in) throws IOException {
        Checks.notNull("in", in);
        ensureOpen();
        DataInputStream d = new DataInputStream(in);
        int magic = d.readInt();
        if (magic != STATE_MAGIC) {
            throw new StateFormatException("not a data-parallel GradGuard state (magic " + Integer.toHexString(magic)
                    + "; Dl4jParallelGuard.saveState writes " + Integer.toHexString(STATE_MAGIC) + ")");
        }
        int version = d.readInt();
        if (version != STATE_VERSION) {
            throw new StateFormatException("data-parallel state version " + version + " is not supported; this GradGuard reads "
                    + STATE_VERSION);
        }
        int n = d.readInt();
        if (n < 0) {
            throw new StateFormatException("data-parallel state: " + n + " workers");
        }
        Map<Integer, byte[]> states = new TreeMap<>();
        for (int i = 0; i < n; i++) {
            int worker = d.readInt();
            int length = d.readInt();
            if (worker < 0 || length < 0 || states.containsKey(worker)) {
                throw new StateFormatException("data-parallel state: worker " + worker + " with " + length + " bytes is not valid");
            }
            states.put(worker, d.readNBytes(length));
        }
        for (Map.Entry<Integer, byte[]> e : states.entrySet()) {
            Dl4jGuard g = guards.get(e.getKey());
            if (g != null) {
                g.restoreState(new ByteArrayInputStream(e.getValue()));
            } else {
                restored.put(e.getKey(), e.getValue());
            }
        }
    }

    /** {@link #saveState(OutputStream)} to a file, crash-safe (a temporary file renamed over the old one). */
    public void saveState(java.nio.file.Path file) throws IOException {
        io.gradguard.core.internal.AtomicFiles.write(file, this::saveState);
    }

    /** {@link #restoreState(InputStream)} from a file. */
    public void restoreState(java.nio.file.Path file) throws IOException {
        Checks.notNull("file", file);
        try (InputStream in = java.nio.file.Files.newInputStream(file)) {
            restoreState(in);
        }
    }

    // ---- closing ---------------------------------------------------------------------------------

    /** Closes every worker's guard, then the recipe's monitors (their files, the HTML report). Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        for (Dl4jGuard g : guards.values()) {
            g.close();
            // the wrapper made this guard a listener of the user's own network (worker 0): leave it
            if (g.model() instanceof MultiLayerNetwork net) {
                net.setListeners(without(net.getListeners()));
            } else if (g.model() instanceof ComputationGraph graph) {
                graph.setListeners(without(graph.getListeners()));
            }
        }
        GradientPipeline t;
        synchronized (this) {
            t = template;
        }
        if (t != null) {
            for (Monitor m : Monitor.in(t)) {
                m.close();
            }
        }
    }

    private List<org.deeplearning4j.optimize.api.TrainingListener> without(
            java.util.Collection<org.deeplearning4j.optimize.api.TrainingListener> listeners) {
        List<org.deeplearning4j.optimize.api.TrainingListener> rest = new ArrayList<>(listeners);
        rest.remove(this);
        return rest;
    }

    private void ensureOpen() {
        if (closed) {
            throw new IllegalStateException("this Dl4jParallelGuard is closed: create a new one");
        }
    }

    @Override
    public String toString() {
        return "Dl4jParallelGuard[" + (synchronize ? "synchronized" : "per worker") + ", " + guards.size() + " workers]";
    }

    /** The user's data, counted: when it runs out, the rendezvous learns the last round's size. */
    private static final class Counted implements DataSetIterator {
        private static final long serialVersionUID = 1L;
        private final DataSetIterator data;
        private final transient Rendezvous rendezvous;
        private long served;

        Counted(DataSetIterator data, Rendezvous rendezvous) {
            this.data = data;
            this.rendezvous = rendezvous;
        }

        @Override
        public boolean hasNext() {
            boolean more = data.hasNext();
            if (!more) {
                rendezvous.batchesKnown(served);
            }
            return more;
        }

        @Override
        public DataSet next() {
            DataSet d = data.next();
            served++;
            return d;
        }

        @Override
        public DataSet next(int num) {
            DataSet d = data.next(num);
            served++;
            return d;
        }

        @Override
        public void reset() {
            data.reset();
            served = 0;
            rendezvous.batchesUnknown();
        }

        @Override
        public int inputColumns() {
            return data.inputColumns();
        }

        @Override
        public int totalOutcomes() {
            return data.totalOutcomes();
        }

        @Override
        public boolean resetSupported() {
            return data.resetSupported();
        }

        @Override
        public boolean asyncSupported() {
            return data.asyncSupported();
        }

        @Override
        public int batch() {
            return data.batch();
        }

        @Override
        public void setPreProcessor(DataSetPreProcessor preProcessor) {
            data.setPreProcessor(preProcessor);
        }

        @Override
        public DataSetPreProcessor getPreProcessor() {
            return data.getPreProcessor();
        }

        @Override
        public List<String> getLabels() {
            return data.getLabels();
        }
    }
}
