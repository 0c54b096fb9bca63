package io.gradguard.core;

import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
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
 * <p>Recommended order, as in DESIGN.md: unscale → non-finite policy → accumulate → clip /
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
        listeners.add(Checks.notNull("listener", listener));
        return this;
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
        StepContext ctx = context.at(step, microStep);
        Map<String, Object> metrics = new LinkedHashMap<>();
        Action action = Action.proceed();
        String decidedBy = "";
        for (int i = 0; i < transforms.size(); i++) {
            Action a = transforms.get(i).update(new Step<>(gradients, ops, ctx, names.get(i), metrics), states[i]);
            if (a.kind() != Action.Kind.PROCEED) {
                action = a;
                decidedBy = names.get(i);
                break;
            }
        }
        switch (action.kind()) {
            case PROCEED -> {
                step++;
                microStep = 0;
            }
            case HOLD -> {
                microStep++;
                heldCalls++;
            }
            case SKIP -> skippedSteps++;
        }
        StepResult<T> result = new StepResult<>(action, decidedBy, ctx, metrics, ops);
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
