package io.gradguard.core;

import io.gradguard.core.internal.AtomicFiles;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.zip.CRC32;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An ordered chain of gradient transforms and the state they carry from step to step. One pipeline
 * guards one model: the adapter calls {@link #step} once per micro-batch, between the backward pass
 * and the optimizer, and steps the optimizer only when the result {@link StepResult#applies() applies}.
 *
 * <pre>{@code
 * GradientPipeline guard = GradientPipeline.of(
 *     Transforms.zeroNonFinite(),
 *     Transforms.clipByGlobalNorm(1.0));
 * StepResult<?> r = guard.step(gradients, ops, StepContext.ofBatch(64));
 * if (r.applies()) optimizer.step();
 * }</pre>
 *
 * <p>Recommended order (docs/transforms.md): unscale → non-finite policy → accumulate → clip /
 * normalize → monitor. Stages run in the order given; each has a stable, unique name (its
 * transform's name, with {@code #2}, {@code #3}... for repeats) that addresses its state and
 * prefixes its metrics.
 *
 * <p>State is created on the first step from the gradients' shapes; later steps must present the
 * same parameters (names and shapes) in the same order. A pipeline is not thread-safe: one training
 * loop drives it.
 */
public final class GradientPipeline {
    private static final Logger LOG = LoggerFactory.getLogger(GradientPipeline.class);

    private final List<String> names;
    private final List<GradientTransform> transforms;
    private final List<StepListener> listeners = new CopyOnWriteArrayList<>();
    private final Map<StepListener, Boolean> brokenListeners = Collections.synchronizedMap(new HashMap<>());

    private TensorOps<?> boundOps;
    private String[] signatureNames;
    private long[][] signatureShapes;
    private TransformState[] states;
    private long step;
    private int microStep;
    private long skippedSteps;
    private long heldCalls;
    private long clippedSteps;
    private Object guard;
    private long calls;
    private int firstHoldingStage = Integer.MAX_VALUE;

    private GradientPipeline(List<String> names, List<GradientTransform> transforms) {
        this.names = List.copyOf(names);
        this.transforms = List.copyOf(transforms);
    }

    /**
     * A pipeline of the given transforms, in order.
     *
     * @throws IllegalArgumentException if a transform is null
     */
    public static GradientPipeline of(GradientTransform... transforms) {
        Checks.notNull("transforms", transforms);
        return of(Arrays.asList(transforms));
    }

    /** @see #of(GradientTransform...) */
    public static GradientPipeline of(List<? extends GradientTransform> transforms) {
        Checks.notNull("transforms", transforms);
        List<String> names = new ArrayList<>();
        Map<String, Integer> seen = new HashMap<>();
        for (int i = 0; i < transforms.size(); i++) {
            GradientTransform t = transforms.get(i);
            Checks.require(t != null, "transforms[" + i + "]", "not be null", null);
            Checks.require(!(t instanceof io.gradguard.core.transform.LossScale) || i == 0, "transforms[" + i + "]",
                    "not be a loss scale: a loss scale must be the first stage (every other stage must see unscaled"
                    + " gradients)", t);
            int n = seen.merge(t.name(), 1, Integer::sum);
            names.add(n == 1 ? t.name() : t.name() + "#" + n);
        }
        GradientPipeline p = new GradientPipeline(names, new ArrayList<>(transforms));
        for (GradientTransform t : transforms) {
            if (t instanceof StepListener l) {
                p.addListener(l);
            }
        }
        return p;
    }

    /** Registers a listener called after every step (transforms that are listeners are registered by {@link #of}). */
    public GradientPipeline addListener(StepListener listener) {
        Checks.notNull("listener", listener);
        if (!listeners.contains(listener)) {
            listeners.add(listener);
        }
        return this;
    }

    /** The registered listeners (monitors among them), in registration order. */
    public List<StepListener> listeners() {
        return Collections.unmodifiableList(listeners);
    }

    /** The stage names, in order. */
    public List<String> stageNames() {
        return names;
    }

    /** The transforms, in order. */
    public List<GradientTransform> transforms() {
        return transforms;
    }

    /**
     * Runs every stage on one micro-batch's gradients, in place.
     *
     * @return what the optimizer must do, and what the stages measured
     * @throws IllegalStateException if the gradients differ in names or shapes from the first step's,
     *     or a different backend is used than on the first step
     */
    public <T> StepResult<T> step(GradientSet<T> gradients, TensorOps<T> ops, StepContext context) {
        Checks.notNull("gradients", gradients);
        Checks.notNull("ops", ops);
        Checks.notNull("context", context);
        ensureState(gradients, ops);
        StepContext ctx = context.at(step, microStep, calls);
        StepRecords records = new StepRecords();
        Action action = Action.proceed();
        String decidedBy = "";
        int decidedIndex = -1;
        String lastChanging = "";
        for (int i = 0; i < transforms.size(); i++) {
            Action a = transforms.get(i).update(new Step<>(gradients, ops, ctx, names.get(i), records, false), states[i]);
            if (transforms.get(i).changesGradients()) {
                lastChanging = names.get(i);
            }
            if (a.kind() != Action.Kind.PROCEED) {
                action = a;
                decidedBy = names.get(i);
                decidedIndex = i;
                if (a.kind() == Action.Kind.HOLD) {
                    firstHoldingStage = Math.min(firstHoldingStage, i);
                }
                break;
            }
        }
        calls++;
        StepResult<T> result = new StepResult<>(action, decidedBy, ctx, records, ops, lastChanging);
        switch (action.kind()) {
            case PROCEED -> {
                result.closesWindow(true);
                step++;
                microStep = 0;
                result.onClipped(() -> clippedSteps++);
            }
            case HOLD -> {
                microStep++;
                heldCalls++;
            }
            case SKIP -> {
                skippedSteps++;
                // a skip decided after a stage that had been holding consumed the window it closed
                if (decidedIndex > firstHoldingStage) {
                    result.closesWindow(true);
                    microStep = 0;
                }
            }
        }
        for (StepListener l : listeners) {
            notify(l, gradients, result);
        }
        return result;
    }

    private void notify(StepListener l, GradientSet<?> gradients, StepResult<?> result) {
        try {
            l.onStep(gradients, result);
        } catch (RuntimeException e) {
            if (brokenListeners.put(l, Boolean.TRUE) == null) {
                LOG.warn("GradGuard listener {} failed; training continues, further failures of it are not logged", l, e);
            }
        }
    }

    private <T> void ensureState(GradientSet<T> gradients, TensorOps<T> ops) {
        if (states == null) {
            boundOps = ops;
            signatureNames = new String[gradients.size()];
            signatureShapes = new long[gradients.size()][];
            for (int i = 0; i < gradients.size(); i++) {
                signatureNames[i] = gradients.get(i).name();
                signatureShapes[i] = gradients.get(i).shape();
            }
            TransformState[] s = new TransformState[transforms.size()];
            for (int i = 0; i < s.length; i++) {
                s[i] = Checks.notNull("state of " + names.get(i), transforms.get(i).init(gradients, ops));
            }
            states = s;
            return;
        }
        if (ops != boundOps) {
            throw new IllegalStateException("this pipeline's state lives on " + boundOps
                    + "; it was called with another backend " + ops + ": use one pipeline per model and backend");
        }
        if (gradients.size() != signatureNames.length) {
            throw new IllegalStateException("the pipeline was initialised with " + signatureNames.length
                    + " gradients, this step has " + gradients.size() + ": use one pipeline per model, or reset() it");
        }
        for (int i = 0; i < signatureNames.length; i++) {
            GradientTensor<T> g = gradients.get(i);
            if (!g.name().equals(signatureNames[i]) || !Arrays.equals(g.shape(), signatureShapes[i])) {
                throw new IllegalStateException("gradient " + i + " is " + g.name() + Arrays.toString(g.shape())
                        + " but the pipeline was initialised with " + signatureNames[i] + Arrays.toString(signatureShapes[i])
                        + ": use one pipeline per model, or reset() it");
            }
        }
    }

    /** Real optimizer steps applied so far (advances only when a step proceeds). */
    public long stepCount() {
        return step;
    }

    /** Micro-batches absorbed into the current, unfinished step. */
    public int microStep() {
        return microStep;
    }

    /** Steps skipped on purpose since the start (non-finite, spikes...). */
    public long skippedCount() {
        return skippedSteps;
    }

    /**
     * Applied steps on which a scaling stage made some gradients smaller ({@link
     * StepResult#clipped()}): a clip that acted. A step is counted when its metrics reach the host
     * ({@link StepResult#hostMetrics()}, which every adapter calls), so counting never adds a
     * device sync of its own.
     */
    public long clippedCount() {
        return clippedSteps;
    }

    /**
     * Marks this pipeline as run by {@code owner}: its state belongs to that owner's model. A
     * {@link Guard} claims its pipeline when it is built; an adapter that runs the pipeline without
     * a guard (TensorFlow's {@code TfOptimizer} compiles it into a graph) claims it the same way, so
     * that one pipeline never guards two models. Claiming again by the same owner does nothing.
     *
     * @throws IllegalArgumentException if owner is null
     * @throws IllegalStateException if another owner already runs it
     */
    public synchronized void claim(Object owner) {
        Checks.notNull("owner", owner);
        if (guard != null && guard != owner) {
            throw new IllegalStateException("this pipeline is already run by " + guard + " (its state belongs to that"
                    + " model): use one pipeline per model, e.g. build a new GradientPipeline.of(...) for each guard");
        }
        guard = owner;
    }

    /**
     * The loss scale the adapter multiplies the next loss by: the current scale of the pipeline's
     * {@link io.gradguard.core.transform.LossScale} stage (its first), 1 without one.
     */
    public double lossScale() {
        if (transforms.isEmpty() || !(transforms.get(0) instanceof io.gradguard.core.transform.LossScale ls)) {
            return 1.0;
        }
        return ls.currentScale(states == null ? null : states[0]);
    }

    /** Every call of {@link #step} since the start: the micro-batches the user fed, held and skipped ones included. */
    public long callCount() {
        return calls;
    }

    /** Calls absorbed by accumulation since the start. */
    public long heldCount() {
        return heldCalls;
    }

    /** The state of the named stage, or {@code null} before the first step. */
    public TransformState state(String stage) {
        int i = names.indexOf(stage);
        Checks.require(i >= 0, "stage", "be one of " + names, stage);
        return states == null ? null : states[i];
    }

    // ---- checkpoints ----------------------------------------------------------------------------

    /** The first four bytes of a GradGuard state file: "GGST". */
    public static final int STATE_MAGIC = 0x47475354;
    /** The version of the state format this class writes and reads. */
    public static final int STATE_VERSION = 3;

    /**
     * Writes the whole pipeline state — counters, the model signature, every stage's state
     * (accumulators, histories, EMAs) — so that {@link #restoreState} continues bit-identically,
     * also in the middle of an accumulation window.
     *
     * <p>Format (version 3, big-endian, {@link DataOutputStream}; version 2 files, without the clipped
 * and call counters, are read too):
     * <pre>
     * int    magic "GGST", int version
     * int    stage count; per stage: UTF name, UTF transform class
     * bool   initialised
     * long   step, int microStep, long skipped, long held, long clipped, long calls
     * if initialised: int tensor count; per tensor: UTF name, int rank, long[rank] dims
     *                 per stage: int byte length, the stage's bytes ({@link TransformState#write})
     * long   CRC-32 of every byte before it
     * </pre>
     *
     * @throws IOException if the stream fails
     */
    public void saveState(OutputStream out) throws IOException {
        Checks.notNull("out", out);
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        DataOutputStream d = new DataOutputStream(bytes);
        d.writeInt(STATE_MAGIC);
        d.writeInt(STATE_VERSION);
        d.writeInt(names.size());
        for (int i = 0; i < names.size(); i++) {
            d.writeUTF(names.get(i));
            d.writeUTF(transforms.get(i).getClass().getName());
        }
        d.writeBoolean(states != null);
        d.writeLong(step);
        d.writeInt(microStep);
        d.writeLong(skippedSteps);
        d.writeLong(heldCalls);
        d.writeLong(clippedSteps);
        d.writeLong(calls);
        if (states != null) {
            d.writeInt(signatureNames.length);
            for (int i = 0; i < signatureNames.length; i++) {
                d.writeUTF(signatureNames[i]);
                d.writeInt(signatureShapes[i].length);
                for (long x : signatureShapes[i]) {
                    d.writeLong(x);
                }
            }
            for (TransformState s : states) {
                ByteArrayOutputStream stage = new ByteArrayOutputStream();
                s.write(new StateOutput<>(new DataOutputStream(stage), boundOps));
                d.writeInt(stage.size());
                stage.writeTo(d);
            }
        }
        d.flush();
        CRC32 crc = new CRC32();
        crc.update(bytes.toByteArray());
        d.writeLong(crc.getValue());
        d.flush();
        bytes.writeTo(out);
        out.flush();
    }

    /**
     * Writes the state as {@link #saveState(OutputStream)} does into a file, crash-safely: the bytes
     * go to a temporary file in the same directory, are forced to disk, and the temporary file is
     * then renamed over {@code file} atomically. A process killed during the save leaves the previous
     * checkpoint at {@code file} intact (and at worst a stray {@code .<name>.*.tmp} file beside it).
     *
     * <pre>{@code
     * guard.saveState(Path.of("ckpt/guard.state"));          // every N steps, next to the model
     * resumed.restoreState(Path.of("ckpt/guard.state"), ops); // in a new process
     * }</pre>
     *
     * @throws IllegalArgumentException if file is null or a directory
     * @throws IOException if the file cannot be written; the previous file is then unchanged
     */
    public void saveState(Path file) throws IOException {
        AtomicFiles.write(file, this::saveState);
    }

    /**
     * Restores a state file written by {@link #saveState(Path)}, as {@link #restoreState(InputStream,
     * TensorOps)} does.
     *
     * @throws IllegalArgumentException if file or ops is null
     * @throws StateFormatException if the file is not a complete state of this pipeline
     * @throws IOException if the file cannot be read
     */
    public <T> void restoreState(Path file, TensorOps<T> ops) throws IOException {
        Checks.notNull("file", file);
        try (InputStream in = Files.newInputStream(file)) {
            restoreState(in, ops);
        }
    }

    /**
     * Replaces this pipeline's state with one written by {@link #saveState}, creating its tensors on
     * {@code ops}. Everything is read and checked before anything changes: on any error the pipeline
     * is left exactly as it was.
     *
     * @throws StateFormatException if the data is truncated, corrupt (checksum), of another version,
     *     or was saved from a pipeline with other stages
     * @throws IOException if the stream fails
     */
    public <T> void restoreState(InputStream in, TensorOps<T> ops) throws IOException {
        Checks.notNull("in", in);
        Checks.notNull("ops", ops);
        Decoded r = decode(in.readAllBytes(), ops, transforms.size());
        // commit
        if (states != null) {
            release(boundOps);
        }
        states = r.states();
        boundOps = r.states() != null ? ops : null;
        signatureNames = r.sigNames();
        signatureShapes = r.sigShapes();
        step = r.step();
        microStep = r.micro();
        skippedSteps = r.skipped();
        heldCalls = r.held();
        clippedSteps = r.clipped();
        calls = r.calls();
        created.clear();
    }

    /**
     * The loss scale a state written by {@link #saveState} holds ({@link #lossScale()} once it is
     * restored), read without restoring anything: for a guard whose restore waits for its model.
     *
     * @return 1 without a loss-scale stage
     * @throws StateFormatException if the data is not a valid state of this pipeline
     * @throws IOException if the data cannot be read
     */
    double lossScaleIn(byte[] state) throws IOException {
        Checks.notNull("state", state);
        if (transforms.isEmpty() || !(transforms.get(0) instanceof io.gradguard.core.transform.LossScale ls)) {
            return 1.0;
        }
        Decoded r = decode(state, null, 1); // a loss scale's state holds no tensor: no backend needed
        created.clear();
        return ls.currentScale(r.states() == null ? null : r.states()[0]);
    }

    /** What {@link #decode} read: the states of the stages asked for (null if the saved pipeline never ran), counters, signature. */
    private record Decoded(TransformState[] states, String[] sigNames, long[][] sigShapes, long step, int micro, long skipped,
            long held, long clipped, long calls) {
    }

    /** Reads and checks a saved state, the states of its first {@code stages} stages created on {@code ops}; changes nothing. */
    private <T> Decoded decode(byte[] all, TensorOps<T> ops, int stages) throws IOException {
        if (all.length < 16) {
            throw new StateFormatException("not a GradGuard state: " + all.length + " bytes is too short");
        }
        DataInputStream d = new DataInputStream(new ByteArrayInputStream(all));
        if (d.readInt() != STATE_MAGIC) {
            throw new StateFormatException("not a GradGuard state: the magic number \"GGST\" is missing");
        }
        int version = d.readInt();
        if (version != STATE_VERSION && version != 2) {
            throw new StateFormatException("state format version " + version + " is not supported; this GradGuard reads versions 2 and " + STATE_VERSION);
        }
        CRC32 crc = new CRC32();
        crc.update(all, 0, all.length - 8);
        long stored = new DataInputStream(new ByteArrayInputStream(all, all.length - 8, 8)).readLong();
        if (crc.getValue() != stored) {
            throw new StateFormatException("the state is corrupt or truncated (checksum mismatch)");
        }
        try {
            int n = d.readInt();
            List<String> savedStages = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                savedStages.add(d.readUTF() + " (" + d.readUTF() + ")");
            }
            List<String> ourStages = new ArrayList<>();
            for (int i = 0; i < names.size(); i++) {
                ourStages.add(names.get(i) + " (" + transforms.get(i).getClass().getName() + ")");
            }
            if (!savedStages.equals(ourStages)) {
                throw new StateFormatException("the state was saved from a pipeline with stages " + savedStages
                        + ", this pipeline has " + ourStages);
            }
            boolean initialised = d.readBoolean();
            long newStep = d.readLong();
            int newMicro = d.readInt();
            long newSkipped = d.readLong();
            long newHeld = d.readLong();
            long newClipped = version >= 3 ? d.readLong() : 0;
            long newCalls = version >= 3 ? d.readLong() : newStep + newSkipped + newHeld;
            if (newStep < 0 || newMicro < 0 || newSkipped < 0 || newHeld < 0 || newClipped < 0 || newCalls < 0) {
                throw new StateFormatException("the state holds negative counters");
            }
            String[] sigNames = null;
            long[][] sigShapes = null;
            TransformState[] newStates = null;
            if (initialised) {
                int count = d.readInt();
                if (count < 0 || count > 10_000_000) {
                    throw new StateFormatException("the state holds an invalid tensor count " + count);
                }
                sigNames = new String[count];
                sigShapes = new long[count][];
                for (int i = 0; i < count; i++) {
                    sigNames[i] = d.readUTF();
                    int rank = d.readInt();
                    if (rank < 0 || rank > 64) {
                        throw new StateFormatException("tensor " + sigNames[i] + " has an invalid rank " + rank);
                    }
                    sigShapes[i] = new long[rank];
                    for (int r = 0; r < rank; r++) {
                        sigShapes[i][r] = d.readLong();
                    }
                }
                newStates = new TransformState[stages];
                for (int i = 0; i < newStates.length; i++) {
                    int len = d.readInt();
                    if (len < 0 || len > d.available()) {
                        throw new StateFormatException("stage " + names.get(i) + " claims " + len + " bytes of state");
                    }
                    byte[] stage = d.readNBytes(len);
                    ByteArrayInputStream stageIn = new ByteArrayInputStream(stage);
                    StateInput<T> si = new StateInput<>(new DataInputStream(stageIn), ops);
                    try {
                        newStates[i] = transforms.get(i).readState(si);
                    } catch (EOFException e) {
                        si.releaseCreated();
                        throw new StateFormatException("the state of stage " + names.get(i) + " is truncated");
                    } catch (IOException | RuntimeException e) {
                        si.releaseCreated();
                        throw e;
                    }
                    if (stageIn.available() != 0) {
                        si.releaseCreated();
                        throw new StateFormatException("the state of stage " + names.get(i) + " has " + stageIn.available()
                                + " unread bytes: it was written by another version of this transform");
                    }
                    created.add(newStates[i]);
                }
            }
            if (stages == transforms.size() && d.available() != 8) {
                throw new StateFormatException("the state has " + (d.available() - 8) + " unexpected trailing bytes");
            }
            return new Decoded(newStates, sigNames, sigShapes, newStep, newMicro, newSkipped, newHeld, newClipped, newCalls);
        } catch (EOFException e) {
            releaseCreated(ops);
            throw new StateFormatException("the state is truncated");
        } catch (IOException | RuntimeException e) {
            releaseCreated(ops);
            throw e;
        }
    }

    private final List<TransformState> created = new ArrayList<>();

    private <T> void releaseCreated(TensorOps<T> ops) {
        for (TransformState s : created) {
            s.release(ops);
        }
        created.clear();
    }

    /** Frees all state buffers and forgets all counters; the next step starts fresh. */
    public void reset() {
        if (states != null) {
            release(boundOps);
        }
        states = null;
        boundOps = null;
        step = 0;
        microStep = 0;
        skippedSteps = 0;
        heldCalls = 0;
        clippedSteps = 0;
        calls = 0;
        firstHoldingStage = Integer.MAX_VALUE;
    }

    @SuppressWarnings("unchecked")
    private <T> void release(TensorOps<T> ops) {
        for (TransformState s : states) {
            s.release(ops);
        }
    }

    @Override
    public String toString() {
        return "GradientPipeline" + names;
    }
}
