package io.gradguard.dl4j;

import io.gradguard.core.StepResult;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.api.Updater;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.updater.MultiLayerUpdater;
import org.deeplearning4j.nn.updater.graph.ComputationGraphUpdater;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The {@code net.fit(...)} hook of a {@link Dl4jGuard} that holds and skips
 * ({@link Dl4jGuard#install}): the network's own updater class, on the network's own updater
 * state, guarded.
 *
 * <p>DL4J's {@code fit} runs, per call: backprop, listeners' {@code onGradientCalculation}, the
 * network-level updater's {@code update(gradient, iteration, epoch, batchSize, workspaces)}, then
 * {@code params -= gradient} (the step function), listeners' {@code iterationDone}, iteration
 * count + 1. The installed updater runs the guard's step in {@code update}:
 *
 * <ul>
 *   <li>the step applies: DL4J's updater runs ({@link UpdaterStep}: on the batch mean, or on the
 *       accumulated mean on the call that closes an accumulation window) with the iteration number
 *       of the applied step: DL4J's count minus the calls this guard did not apply
 *       ({@code iteration - call + step} of the step's context), so Adam's bias correction and an
 *       iteration schedule advance per applied step; a micro-batch behaves as a part of the next
 *       real step, a skipped one as if it never happened;</li>
 *   <li>the step is held or skipped: the updater does not run (its state does not move) and the
 *       whole flattened gradient is filled with 0, so DL4J subtracts exactly nothing.</li>
 * </ul>
 *
 * <p>The wrapper classes extend DL4J's {@code MultiLayerUpdater} / {@code ComputationGraphUpdater}
 * (what DL4J's own code casts the updater to) and share the replaced updater's state array, so
 * {@code ModelSerializer} saves the same moments.
 */
final class GuardedUpdaters {
    private GuardedUpdaters() {
    }

    /** The guard an installed updater runs, or null if {@code updater} is not one. */
    static Dl4jGuard guardOf(Updater updater) {
        if (updater instanceof OnMultiLayer u) {
            return u.hook.guard;
        }
        if (updater instanceof OnGraph u) {
            return u.hook.guard;
        }
        return null;
    }

    /** {@code net}'s updater replaced by one guarded by {@code guard}, on the same state. */
    static void install(Dl4jGuard guard, MultiLayerNetwork net) {
        Updater current = net.getUpdater();
        net.setUpdater(new OnMultiLayer(net, current.getStateViewArray(), guard));
    }

    /** {@code graph}'s updater replaced by one guarded by {@code guard}, on the same state. */
    static void install(Dl4jGuard guard, ComputationGraph graph) {
        ComputationGraphUpdater current = graph.getUpdater();
        graph.setUpdater(new OnGraph(graph, current.getStateViewArray(), guard));
    }

    /** What DL4J's updater does, unguarded: the superclass's update. */
    private interface Unguarded {
        void update(Gradient gradient, int iteration, int epoch, int batchSize, LayerWorkspaceMgr workspaces);
    }

    /** The guarded step of one installed updater. */
    private static final class Hook extends UpdaterStep {
        private final Unguarded updater;
        /** True while DL4J's updater runs on the mean: its division by the batch size is off. */
        private boolean meanGiven;
        private int iteration;
        private int epoch;
        private int batchSize;
        private LayerWorkspaceMgr workspaces;

        Hook(Dl4jGuard guard, Model model, Unguarded updater) {
            super(guard, model);
            this.updater = updater;
        }

        /** Called by DL4J's optimizer in place of the updater. */
        void update(int iteration, int epoch, int batchSize, LayerWorkspaceMgr workspaces) {
            this.iteration = iteration;
            this.epoch = epoch;
            this.batchSize = batchSize;
            this.workspaces = workspaces;
            // the pipeline's state (accumulators) outlives the step: never in a training workspace
            try (MemoryWorkspace ignored = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
                run();
            } finally {
                this.workspaces = null;
            }
        }

        boolean dividesByBatch() {
            return !meanGiven;
        }

        /** DL4J's updater with the applied step's iteration number: DL4J's count less the calls not applied. */
        @Override
        void runUpdater(Gradient gradient, StepResult<INDArray> result, boolean meanGiven) {
            int applied = Math.toIntExact(iteration - result.context().call() + result.context().step());
            this.meanGiven = meanGiven;
            try {
                updater.update(gradient, applied, epoch, batchSize, workspaces);
            } finally {
                this.meanGiven = false;
            }
        }

        /** Held or skipped: DL4J subtracts the gradient next, so it must be exactly 0. */
        @Override
        public void discard(io.gradguard.core.GradientSet<INDArray> gradients, StepResult<INDArray> result) {
            view.zero(model);
        }
    }

    /** A {@code MultiLayerUpdater} that runs the guard's step. */
    private static final class OnMultiLayer extends MultiLayerUpdater {
        private final transient Hook hook;

        OnMultiLayer(MultiLayerNetwork net, INDArray state, Dl4jGuard guard) {
            super(net, state);
            this.hook = new Hook(guard, net, super::update);
        }

        @Override
        public synchronized void update(Gradient gradient, int iteration, int epoch, int batchSize, LayerWorkspaceMgr workspaces) {
            hook.update(iteration, epoch, batchSize, workspaces);
        }

        @Override
        protected boolean isMiniBatch() {
            return (hook == null || hook.dividesByBatch()) && super.isMiniBatch();
        }
    }

    /** A {@code ComputationGraphUpdater} that runs the guard's step. */
    private static final class OnGraph extends ComputationGraphUpdater {
        private final transient Hook hook;

        OnGraph(ComputationGraph graph, INDArray state, Dl4jGuard guard) {
            super(graph, state);
            this.hook = new Hook(guard, graph, super::update);
        }

        @Override
        public synchronized void update(Gradient gradient, int iteration, int epoch, int batchSize, LayerWorkspaceMgr workspaces) {
            hook.update(iteration, epoch, batchSize, workspaces);
        }

        @Override
        protected boolean isMiniBatch() {
            return (hook == null || hook.dividesByBatch()) && super.isMiniBatch();
        }
    }
}
