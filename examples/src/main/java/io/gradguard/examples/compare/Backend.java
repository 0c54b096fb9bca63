package io.gradguard.examples.compare;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import java.util.List;

/**
 * One framework in the comparison: it builds the task's network from the shared initial weights
 * and trains it with plain SGD through the framework's GradGuard adapter, which runs the pipeline
 * on the framework's own gradient tensors between the backward pass and the update
 * ({@code TfGuard}, {@code Dl4jGuard}, {@code DjlGuard}).
 */
public interface Backend {

    /** The command-line name: {@code tf}, {@code dl4j} or {@code djl}. */
    String id();

    /** The name shown in the report. */
    String displayName();

    /**
     * Builds the task's network holding exactly {@code weights} (loaded in this framework's layout).
     *
     * @throws IllegalArgumentException if the weights do not belong to the task
     */
    Model build(Task task, Weights weights);

    /** The network of one run, with the framework's native resources it holds. */
    interface Model extends AutoCloseable {

        /**
         * The loss and the gradient of the mean batch loss at the current weights, copied to the
         * host in the canonical order and layout of {@link Weights}; the weights do not change.
         * For parity checks only.
         */
        Probe probe(Batch batch);

        /**
         * One training step: forward, backward, {@code pipeline} on the framework's gradients (through
         * its adapter), and the SGD update if the pipeline's result applies (a skipped step leaves
         * the weights alone). A model trains under one pipeline.
         *
         * @return the batch loss before the update and what the pipeline decided and measured
         * @throws IllegalStateException if called with another pipeline than on the first step
         */
        Outcome train(Batch batch, GradientPipeline pipeline);

        /** Frees the framework's native resources. */
        @Override
        void close();
    }

    /**
     * @param loss      the batch loss
     * @param gradients one host array per parameter, canonical order and layout
     */
    record Probe(double loss, List<float[]> gradients) {
    }

    /**
     * @param loss   the batch loss before the update
     * @param result the pipeline's decision
     */
    record Outcome(double loss, StepResult<?> result) {
    }
}
