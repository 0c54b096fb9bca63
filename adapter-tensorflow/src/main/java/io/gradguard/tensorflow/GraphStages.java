package io.gradguard.tensorflow;

import static io.gradguard.tensorflow.GraphProgram.HOLD;
import static io.gradguard.tensorflow.GraphProgram.SKIP;
import static io.gradguard.tensorflow.GraphProgram.castTo;
import static io.gradguard.tensorflow.GraphProgram.coefficient;
import static io.gradguard.tensorflow.GraphProgram.identity;
import static io.gradguard.tensorflow.GraphProgram.norm;
import static io.gradguard.tensorflow.GraphProgram.scale;
import static io.gradguard.tensorflow.GraphProgram.zeros;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.transform.Accumulate;
import io.gradguard.core.transform.AutoClip;
import io.gradguard.core.transform.LossScale;
import io.gradguard.core.transform.NonFiniteGuard;
import io.gradguard.core.transform.SkipSpikes;
import io.gradguard.core.transform.ZClip;
import java.util.ArrayList;
import java.util.List;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TBool;
import org.tensorflow.types.TFloat64;
import org.tensorflow.types.TInt64;

/**
 * The pipeline's stages as graph operations, for {@link TfOptimizer}'s one-op step. Stages that
 * decide nothing run core's own transform code on graph nodes ({@link #stateless}); the stages
 * that decide or keep a history on the host get their graph form here, one method each, with the
 * formula of its core class ({@code io.gradguard.core.transform}) and its state in graph variables.
 * {@code TfOptimizerTest} checks each against core's host step ({@link TfGuard#step}) call for call.
 */
final class GraphStages {
    private GraphStages() {
    }

    /**
     * Loss scaling ({@link LossScale}): g ← g / S; an overflow skips and backs S off; growth after the
     * interval.
     *
     * @return the scale this call multiplied the loss by: a copy taken before S is written (an
     *     {@code Identity} of the variable would alias its buffer, and a fetch would show the scale
     *     written for the next call)
     */
    static Operand<TFloat64> lossScale(GraphProgram p, LossScale scale, Variable<TFloat64> s, String stage) {
        Ops tf = p.tf;
        Operand<TFloat64> used = p.computed(tf.deepCopy(s));
        for (int i = 0; i < p.g.length; i++) {
            p.g[i] = tf.math.div((Operand) p.g[i], castTo(tf, s, p.g[i].type())).asOutput();
        }
        GraphProgram.NonFinite test = GraphProgram.nonFinite(p);
        Operand<TBool> finite = test.finite();
        Operand<TFloat64> found = test.count();
        Operand<TBool> overflow = tf.math.logicalNot(finite);
        Variable<TInt64> good = p.counter("loss_scale_good");
        Operand<TInt64> goodNext = tf.math.add(good, tf.constant(1L));
        Operand<TBool> grow = tf.math.logicalAnd(tf.math.logicalNot(overflow),
                tf.math.greaterEqual(goodNext, tf.constant((long) scale.growthInterval())));
        Operand<TFloat64> grown = tf.math.mul(s, tf.constant(scale.growth()));
        Operand<TFloat64> keepGrown = tf.select(tf.math.logicalAnd(tf.math.isFinite(grown),
                tf.math.lessEqual(grown, tf.constant((double) Float.MAX_VALUE))), grown, identity(tf, s));
        Operand<TFloat64> backedOff = tf.math.maximum(tf.math.mul(s, tf.constant(scale.backoff())), tf.constant(Double.MIN_NORMAL));
        p.write(s, tf.select(overflow, backedOff, tf.select(grow, keepGrown, identity(tf, s))));
        p.write(good, tf.select(tf.math.logicalOr(overflow, grow), tf.constant(0L), goodNext));
        p.metric(stage + ".scale", tf.identity(used)); // a node of its own: a runner refuses to fetch one output twice
        p.nonFinite = found;
        p.nonFiniteSeen = p.f64(overflow);
        p.decide(overflow, SKIP, 0);
        return used;
    }

    /**
     * {@link NonFiniteGuard} SKIP or THROW: the gate, the count of consecutive non-finite calls, and
     * an in-graph failure past the limit. The failure ({@code Assert}) can only fire on a call with
     * non-finite values, so it is built behind the non-finite pivot and joined back: a finite call
     * runs none of it.
     */
    static void nonFinite(GraphProgram p, NonFiniteGuard n, String stage, int index, Output<?> loss) {
        Ops tf = p.tf;
        GraphProgram.NonFinite pivot = GraphProgram.nonFinite(p);
        Operand<TBool> finite = pivot.finite();
        Operand<TBool> reached = p.reaching();
        Operand<TBool> bad = p.reached(tf.math.logicalNot(finite));
        Variable<TInt64> consecutive = p.counter(stage + "_consecutive");
        Operand<TInt64> unchanged = p.go == null ? tf.constant(0L) : tf.select(reached, tf.constant(0L), identity(tf, consecutive));
        Operand<TInt64> next = tf.select(bad, tf.math.add(consecutive, tf.constant(1L)), unchanged);
        p.write(consecutive, next);
        p.metric(stage + ".nonFinite", pivot.count());
        p.nonFinite = tf.select(reached, pivot.count(), p.nonFinite);
        p.nonFiniteSeen = tf.select(bad, tf.constant(1.0), p.nonFiniteSeen);
        Ops whenNot = pivot.whenNot();
        String message;
        Operand<TBool> ok;
        Operand<TBool> skipWhen;
        long limit = n.maxConsecutive();
        if (n.policy() == NonFiniteGuard.Policy.THROW) {
            ok = whenNot.math.logicalNot(bad);
            skipWhen = tf.constant(false);
            message = "GradGuard: non-finite gradient (non-finite policy THROW).";
        } else {
            // exhausted decides every call only for a guard that lets the call through; else it feeds the failure alone
            Ops ex = n.letsThroughWhenExhausted() ? tf : whenNot;
            Operand<TBool> exhausted = ex.math.logicalAnd(bad, ex.math.greater(next, ex.constant(limit)));
            // on a call no earlier stage decides, a count past the limit is this call's (a finite call resets it to 0)
            ok = n.letsThroughWhenExhausted() ? null
                    : p.go == null ? whenNot.math.lessEqual(next, whenNot.constant(limit)) : whenNot.math.logicalNot(exhausted);
            skipWhen = n.letsThroughWhenExhausted() ? tf.math.logicalAnd(bad, tf.math.logicalNot(exhausted)) : bad;
            message = "GradGuard: non-finite gradients " + (n.maxConsecutive() + 1) + " calls in a row, more than "
                    + "maxConsecutive=" + n.maxConsecutive() + ". If the loss below is finite, it is a sudden failure rather than "
                    + "divergence: look for NaN/Inf in the inputs or an operation whose gradient is not finite (sqrt, log or a "
                    + "division at 0). If it is not finite, either the input data holds NaN or Inf (check the batches) or "
                    + "training is diverging (lower the learning rate, add clipping); or raise maxConsecutive.";
        }
        if (ok != null) { // a guard that lets the call through when exhausted never fails
            List<Operand<?>> data = new ArrayList<>();
            data.add(whenNot.constant(loss == null ? message : message + " loss:"));
            if (loss != null) {
                data.add(loss);
            }
            Op check = pivot.joined(tf, whenNot.withName(stage + "_check").assertThat(ok, data));
            p.asserts.add(check);
            if (n.policy() == NonFiniteGuard.Policy.THROW) {
                p.vetoes.add(check); // SKIP fails only past the limit, on a call it skips
            }
        }
        p.decide(skipWhen, SKIP, index);
    }

    /** {@link Accumulate} with a fixed k: the window's sum in variables; the update on its k-th counted call. */
    static void accumulate(GraphProgram p, Accumulate a, String stage, int index, GradientSet<TfTensor> set) {
        Ops tf = p.tf;
        Checks.require(a.fixedK().isPresent(), "pipeline", "accumulate a fixed k inside the graph (a schedule needs the host: "
                + "use TfGuard.attach(...).step(...))", stage);
        Checks.require(a.weighting() == Accumulate.Weighting.UNIFORM, "pipeline", "weight micro-batches uniformly inside the graph "
                + "(the batch size and weight are host facts: use TfGuard.attach(...).step(...))", stage + " " + a.weighting());
        int k = a.fixedK().getAsInt();
        Operand<TBool> counted = p.reaching();
        if (a.dropsNonFinite()) {
            Operand<TBool> finite = GraphProgram.nonFinite(p).finite(); // shared with a non-finite guard on the same gradients
            p.decide(tf.math.logicalNot(finite), SKIP, index);
            counted = p.reaching();
        }
        Variable<TInt64> count = p.counter(stage + "_count");
        if (p.window == null) {
            p.window = count;
        }
        Operand<TInt64> newCount = p.plusIf(count, counted);
        Operand<TBool> complete = tf.math.greaterEqual(newCount, tf.constant((long) k));
        for (int i = 0; i < p.g.length; i++) {
            Output<?> gi = p.g[i];
            long[] shape = gi.shape().hasUnknownDimension() ? set.get(i).shape() : gi.shape().asArray();
            Variable<?> buffer = tf.withName(stage + "_sum_" + i).variable(zeros(tf, shape, gi.type()));
            Operand sum = tf.math.add((Operand) buffer, tf.select(counted, (Operand) gi, tf.zerosLike((Operand) gi)));
            p.write((Variable) buffer, tf.select(complete, tf.zerosLike(sum), sum));
            p.g[i] = (a.averages() ? tf.math.div(sum, castTo(tf, tf.constant((double) k), gi.type())) : sum).asOutput();
        }
        p.write(count, tf.select(complete, tf.constant(0L), newCount));
        p.microBatches = p.f64(newCount);
        p.metric(stage + ".microBatches", p.f64(newCount));
        p.decide(p.and(counted, tf.math.logicalNot(complete)), HOLD, index);
    }

    /**
     * A ring of the last {@code capacity} accepted norms in graph variables, as core's norm history:
     * mean and population standard deviation over the valid entries, percentiles with numpy's linear
     * interpolation.
     */
    static final class Ring {
        final GraphProgram p;
        final Variable<TFloat64> values;
        final Variable<TInt64> count;
        final int capacity;
        final Operand<TInt64> index;

        Ring(GraphProgram p, String name, int capacity) {
            this.p = p;
            this.capacity = capacity;
            Ops tf = p.tf;
            values = tf.withName(name + "_history").variable(tf.fill(tf.constant(new long[] {capacity}), tf.constant(0.0)));
            count = p.counter(name + "_history_count");
            index = tf.range(tf.constant(0L), tf.constant((long) capacity), tf.constant(1L));
        }

        Operand<TFloat64> size(Operand<TInt64> n) {
            return p.f64(p.tf.math.minimum(n, p.tf.constant((long) capacity)));
        }

        Operand<TBool> valid(Operand<TInt64> n) {
            return p.tf.math.less(index, p.tf.math.minimum(n, p.tf.constant((long) capacity)));
        }

        Operand<TFloat64> mean(Operand<TFloat64> h, Operand<TInt64> n) {
            Ops tf = p.tf;
            Operand<TFloat64> sum = tf.reduceSum(tf.select(valid(n), h, tf.zerosLike(h)), tf.constant(0));
            return tf.math.div(sum, size(n));
        }

        Operand<TFloat64> std(Operand<TFloat64> h, Operand<TInt64> n) {
            Ops tf = p.tf;
            Operand<TFloat64> d = tf.math.sub(h, mean(h, n));
            Operand<TFloat64> sum = tf.reduceSum(tf.select(valid(n), tf.math.mul(d, d), tf.zerosLike(h)), tf.constant(0));
            return tf.math.sqrt(tf.math.div(sum, size(n)));
        }

        /** The ring with {@code x} added when {@code when}; writes it and the count at the end of the run. Returns the new values and count. */
        Object[] add(Operand<TFloat64> x, Operand<TBool> when) {
            Ops tf = p.tf;
            Operand<TInt64> at = tf.math.floorMod(identity(tf, count), tf.constant((long) capacity));
            Operand<TBool> slot = tf.math.logicalAnd(tf.math.equal(index, at), when);
            Operand<TFloat64> h = tf.select(slot, tf.fill(tf.constant(new long[] {capacity}), x), identity(tf, values));
            Operand<TInt64> n = p.plusIf(count, when);
            p.write(values, h);
            p.write(count, n);
            return new Object[] {h, n};
        }

        /** The p-th percentile (0..100] of the valid entries, numpy's linear interpolation (as core's NormHistory). */
        Operand<TFloat64> percentile(Operand<TFloat64> h, Operand<TInt64> n, double percent) {
            Ops tf = p.tf;
            Operand<TFloat64> ascending = tf.math.neg(tf.nn.topK(tf.math.neg(tf.select(valid(n), h,
                    tf.fill(tf.constant(new long[] {capacity}), tf.constant(Double.POSITIVE_INFINITY)))), tf.constant(capacity), org.tensorflow.types.TInt32.class).values());
            Operand<TFloat64> rank = tf.math.mul(tf.constant(percent / 100.0), tf.math.sub(size(n), tf.constant(1.0)));
            Operand<TInt64> lo = tf.dtypes.cast(tf.math.floor(rank), TInt64.class);
            Operand<TInt64> hi = tf.math.minimum(tf.math.add(lo, tf.constant(1L)),
                    tf.math.sub(tf.math.minimum(n, tf.constant((long) capacity)), tf.constant(1L)));
            Operand<TFloat64> a = tf.gather(ascending, tf.math.maximum(lo, tf.constant(0L)), tf.constant(0));
            Operand<TFloat64> b = tf.gather(ascending, tf.math.maximum(hi, tf.constant(0L)), tf.constant(0));
            return tf.math.add(a, tf.math.mul(tf.math.sub(b, a), tf.math.sub(rank, p.f64(lo))));
        }
    }

    /** {@link SkipSpikes}: z-score of the norm against the accepted norms' window; a spike skips, up to a limit in a row. */
    static void skipSpikes(GraphProgram p, SkipSpikes k, String stage, int index, GradientSet<TfTensor> set) {
        Ops tf = p.tf;
        Operand<TFloat64> n = norm(p, set);
        Ring ring = new Ring(p, stage, k.windowSize());
        Operand<TInt64> count = identity(tf, ring.count);
        Operand<TFloat64> h = identity(tf, ring.values);
        p.computed(count);
        p.computed(h);
        Operand<TBool> finite = tf.math.isFinite(n);
        Operand<TBool> judged = tf.math.greaterEqual(tf.math.minimum(count, tf.constant((long) k.windowSize())),
                tf.constant((long) k.minHistorySize()));
        Operand<TFloat64> z = tf.math.div(tf.math.sub(n, ring.mean(h, count)), tf.math.add(ring.std(h, count), tf.constant(SkipSpikes.EPS)));
        Operand<TBool> spike = tf.math.logicalAnd(tf.math.logicalAnd(finite, judged), tf.math.greater(z, tf.constant(k.zThreshold())));
        Variable<TInt64> consecutive = p.counter(stage + "_consecutive");
        Operand<TBool> skipIt = tf.math.logicalAnd(spike, tf.math.less(consecutive, tf.constant((long) k.maxConsecutiveSkips())));
        Operand<TBool> skipHere = p.reached(skipIt);
        Operand<TBool> accept = p.reached(tf.math.logicalAnd(finite, tf.math.logicalNot(skipIt)));
        p.write(consecutive, tf.select(skipHere, tf.math.add(consecutive, tf.constant(1L)),
                tf.select(accept, tf.constant(0L), identity(tf, consecutive))));
        ring.add(n, accept);
        p.metric(stage + ".norm", n);
        p.metric(stage + ".z", z);
        p.decide(skipIt, SKIP, index);
    }

    /** {@link ZClip}: EMA mean and variance of the norm after a warm-up; a spike's z-score sets the bound. */
    static void zClip(GraphProgram p, ZClip zc, String stage, GradientSet<TfTensor> set) {
        Ops tf = p.tf;
        Operand<TFloat64> n = norm(p, set);
        Operand<TBool> finite = tf.math.isFinite(n);
        Operand<TBool> on = p.reached(finite);
        int warmup = zc.warmupSteps();
        Variable<TFloat64> mean = tf.withName(stage + "_mean").variable(tf.constant(0.0));
        Variable<TFloat64> var = tf.withName(stage + "_var").variable(tf.constant(0.0));
        Variable<TInt64> collected = p.counter(stage + "_collected");
        Operand<TFloat64> m = p.computed(identity(tf, mean));
        Operand<TFloat64> v = p.computed(identity(tf, var));
        Operand<TInt64> c = p.computed(identity(tf, collected));
        Operand<TBool> warming = tf.math.less(c, tf.constant((long) warmup));
        // warm-up: the norms seed the mean and the variance once `warmup` of them are collected
        Operand<TFloat64> warmMean = m;
        Operand<TFloat64> warmVar = v;
        if (warmup > 0) {
            Variable<TFloat64> buffer = tf.withName(stage + "_warmup").variable(tf.fill(tf.constant(new long[] {warmup}), tf.constant(0.0)));
            Operand<TFloat64> b = p.computed(identity(tf, buffer));
            Operand<TInt64> range = tf.range(tf.constant(0L), tf.constant((long) warmup), tf.constant(1L));
            Operand<TBool> slot = tf.math.logicalAnd(tf.math.equal(range, c), tf.math.logicalAnd(on, warming));
            Operand<TFloat64> filled = tf.select(slot, tf.fill(tf.constant(new long[] {warmup}), n), b);
            p.write(buffer, filled);
            Operand<TFloat64> bm = tf.math.div(tf.reduceSum(filled, tf.constant(0)), tf.constant((double) warmup));
            Operand<TFloat64> d = tf.math.sub(filled, bm);
            Operand<TFloat64> bv = tf.math.div(tf.reduceSum(tf.math.mul(d, d), tf.constant(0)), tf.constant((double) warmup));
            Operand<TBool> seeds = tf.math.logicalAnd(tf.math.logicalAnd(on, warming), tf.math.equal(c, tf.constant((long) warmup - 1)));
            warmMean = tf.select(seeds, bm, m);
            warmVar = tf.select(seeds, bv, v);
        }
        // after it: z-score against the EMA; a spike's bound, and the EMA updated with the bounded norm
        Operand<TFloat64> std = tf.math.sqrt(v);
        Operand<TFloat64> z = tf.math.div(tf.math.sub(n, m), tf.math.add(std, tf.constant(zc.eps())));
        Operand<TBool> spike = tf.math.greater(z, tf.constant(zc.zThreshold()));
        double zt = zc.zThreshold();
        Operand<TFloat64> bound = zc.clipMode() == ZClip.Mode.MEAN ? m
                : tf.math.mul(tf.math.add(m, tf.math.div(tf.math.mul(tf.constant(zt), std), tf.math.div(z, tf.constant(zt)))),
                        tf.constant(zc.clipFactor()));
        Operand<TFloat64> steadyThreshold = tf.select(spike, bound, n);
        Operand<TFloat64> x = steadyThreshold;
        Operand<TFloat64> a = tf.constant(zc.alpha());
        Operand<TFloat64> b1 = tf.constant(1 - zc.alpha());
        Operand<TFloat64> newMean = tf.math.add(tf.math.mul(a, m), tf.math.mul(b1, x));
        Operand<TFloat64> dx = tf.math.sub(x, newMean);
        Operand<TFloat64> newVar = tf.math.add(tf.math.mul(a, v), tf.math.mul(b1, tf.math.mul(dx, dx)));
        Operand<TBool> steady = tf.math.logicalAnd(on, tf.math.logicalNot(warming));
        p.write(mean, tf.select(steady, newMean, warmMean));
        p.write(var, tf.select(steady, newVar, warmVar));
        p.write(collected, p.plusIf(collected, tf.math.logicalAnd(on, warming)));
        Operand<TFloat64> threshold = tf.select(warming, n, steadyThreshold);
        if (!Double.isNaN(zc.capNorm())) {
            threshold = tf.math.minimum(threshold, tf.constant(zc.capNorm()));
        }
        Operand<TFloat64> coef = coefficient(tf, finite, n, threshold);
        p.metric(stage + ".norm", n);
        p.metric(stage + ".z", z);
        p.metric(stage + ".coefficient", coef);
        p.metric(stage + ".threshold", threshold);
        scale(p, set, coef);
    }

    /** {@link AutoClip}: the bound is a percentile of the norms seen so far (the last historySize). */
    static void autoClip(GraphProgram p, AutoClip ac, String stage, GradientSet<TfTensor> set) {
        Ops tf = p.tf;
        Operand<TFloat64> n = norm(p, set);
        Operand<TBool> finite = tf.math.isFinite(n);
        Ring ring = new Ring(p, stage, ac.historySize());
        p.computed(identity(tf, ring.count));
        Object[] added = ring.add(n, p.reached(finite));
        @SuppressWarnings("unchecked")
        Operand<TFloat64> h = (Operand<TFloat64>) added[0];
        @SuppressWarnings("unchecked")
        Operand<TInt64> count = (Operand<TInt64>) added[1];
        Operand<TFloat64> threshold = ring.percentile(h, count, ac.percentile());
        Operand<TFloat64> coef = coefficient(tf, finite, n, threshold);
        p.metric(stage + ".norm", n);
        p.metric(stage + ".coefficient", coef);
        p.metric(stage + ".threshold", threshold);
        scale(p, set, coef);
    }

    /** A stage that decides nothing: core's own transform code, run once on graph nodes. */
    static void stateless(GraphProgram p, GradientTransform t, String stage, GradientSet<TfTensor> set) {
        for (int i = 0; i < set.size(); i++) {
            set.get(i).gradient().rebind(p.g[i]);
        }
        GradientPipeline one = GradientPipeline.of(new Named(t, stage));
        StepResult<TfTensor> r;
        try {
            r = one.step(set, p.ops, StepContext.ofBatch(1));
        } catch (TfOps.HostReadException e) {
            throw new IllegalArgumentException("pipeline stage " + stage + " (" + t + ") " + e.getMessage() + " on every step, which a "
                    + "training op that runs inside one session run cannot do: run this pipeline with TfGuard.attach(...).step(...)", e);
        }
        Checks.require(r.applies(), "pipeline", "hold only through accumulate and skip only through skipNonFinite or loss scaling "
                + "inside the graph", stage);
        for (int i = 0; i < set.size(); i++) {
            p.g[i] = set.get(i).gradient().value();
        }
        for (String key : r.metricNames()) {
            var tensor = r.metricTensor(key);
            if (tensor.isPresent()) {
                p.metric(key, p.f64(tensor.get().value()));
            } else {
                p.metric(key, p.tf.constant(r.metric(key).getAsDouble()));
            }
        }
    }

    /** A transform under the pipeline's name for it (so metric keys match the full pipeline's). */
    private record Named(GradientTransform inner, String name) implements GradientTransform {
        @Override
        public <T> io.gradguard.core.TransformState init(GradientSet<T> gradients, io.gradguard.core.spi.TensorOps<T> ops) {
            return inner.init(gradients, ops);
        }

        @Override
        public <T> io.gradguard.core.Action update(io.gradguard.core.Step<T> step, io.gradguard.core.TransformState state) {
            return inner.update(step, state);
        }

        @Override
        public boolean changesGradients() {
            return inner.changesGradients();
        }

        @Override
        public boolean mayHoldOrSkip() {
            return inner.mayHoldOrSkip();
        }
    }
}
