package io.gradguard.dl4j;

import io.gradguard.core.Action;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.GradientTransform;
import io.gradguard.core.Step;
import io.gradguard.core.TransformState;
import io.gradguard.core.internal.Checks;
import io.gradguard.core.spi.TensorOps;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

/**
 * The stages a worker's pipeline gets in synchronized guarding ({@link Dl4jParallelGuard#synchronize()}):
 * {@link Exchange} first, and {@link GlobalClip} in place of the pipeline's {@code clipByGlobalNorm}.
 */
final class SyncStages {
    private SyncStages() {
    }

    /**
     * The first stage: the worker's Σg² (one host copy of one scalar per tensor) through the
     * {@link Rendezvous}; a step where any worker's gradient is non-finite is skipped on every
     * worker. The worker whose gradient is non-finite goes on to the pipeline's own
     * {@code skipNonFinite} stage when it has one (which counts it and enforces its limit), the
     * others skip here.
     */
    static final class Exchange implements GradientTransform {
        private final int worker;
        private final Supplier<Rendezvous> rendezvous;
        private final boolean pipelineSkips;
        /** Σg² over the workers of the step being run by this worker's thread. */
        private double global = Double.NaN;

        Exchange(int worker, Supplier<Rendezvous> rendezvous, boolean pipelineSkips) {
            this.worker = worker;
            this.rendezvous = rendezvous;
            this.pipelineSkips = pipelineSkips;
        }

        @Override
        public String name() {
            return "synchronize";
        }

        @Override
        public boolean changesGradients() {
            return false;
        }

        @Override
        public boolean mayHoldOrSkip() {
            return true;
        }

        /** Σg² of every worker's gradient in this step (their norm: its square root). */
        double globalSumOfSquares() {
            return global;
        }

        @Override
        public <T> Action update(Step<T> step, TransformState state) {
            Rendezvous r = rendezvous.get();
            if (r == null || !r.active()) {
                throw new IllegalStateException("Dl4jParallelGuard (synchronized) needs the number of workers and the rounds "
                        + "the ParallelWrapper feeds them: train with guard.fit(wrapper, data) instead of wrapper.fit(data), "
                        + "or leave synchronize() out (per-worker guarding)");
            }
            TensorOps<T> ops = step.ops();
            List<T> squares = new ArrayList<>(step.gradients().size());
            for (GradientTensor<T> t : step.gradients()) {
                squares.add(ops.sumOfSquares(t.gradient()));
            }
            double local = 0;
            for (double s : ops.toHost(squares)) {
                local += s;
            }
            Rendezvous.Totals totals = r.exchange(worker, local);
            global = totals.sumOfSquares();
            step.recordValue("globalNorm", Math.sqrt(global));
            if (totals.nonFinite().isEmpty() || (pipelineSkips && totals.nonFinite().contains(worker))) {
                return Action.proceed();
            }
            return Action.skip("non-finite gradient on worker(s) " + totals.nonFinite() + " (synchronized guarding)");
        }

        @Override
        public String toString() {
            return "synchronize(worker " + worker + ")";
        }
    }

    /**
     * {@code clipByGlobalNorm(c)} over every worker's gradient: {@code g ← g · c / max(N, c)} with
     * {@code N = √(Σ_workers Σg²)} from this step's {@link Exchange}.
     */
    static final class GlobalClip implements GradientTransform {
        private final double maxNorm;
        private final Exchange exchange;

        GlobalClip(double maxNorm, Exchange exchange) {
            this.maxNorm = Checks.positive("maxNorm", maxNorm);
            this.exchange = exchange;
        }

        @Override
        public String name() {
            return "clipByGlobalNorm";
        }

        @Override
        public <T> Action update(Step<T> step, TransformState state) {
            TensorOps<T> ops = step.ops();
            double norm = Math.sqrt(exchange.globalSumOfSquares());
            double coefficient = maxNorm / Math.max(norm, maxNorm); // NaN for a NaN norm, as clipByGlobalNorm
            T c = ops.scalar(coefficient);
            for (GradientTensor<T> g : step.gradients()) {
                ops.scaleInPlace(g.gradient(), c);
            }
            // the norm a monitor reads is the worker's own (it measures it): the global one is a metric of its own
            step.reportScaling("", null, coefficient, maxNorm);
            step.recordValue("globalNorm", norm);
            return Action.proceed();
        }

        @Override
        public String toString() {
            return "clipByGlobalNorm(" + maxNorm + ", over all workers)";
        }
    }
}
