package io.gradguard.dl4j;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.StepContext;
import org.deeplearning4j.nn.api.Model;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A DL4J network's gradient views during one guarded step, shown to the pipeline as the batch MEAN
 * while they hold DL4J's SUM over the minibatch: what both hooks of a {@link Dl4jGuard} share.
 *
 * <p>{@link #open} gives each view a pending factor of 1/batch ({@link PendingFactorOps}): norms,
 * bounds and accumulation weights see the mean, and no pass over the gradient is made for it.
 * {@link #settle} then leaves the views holding either DL4J's sum (no work for a view whose factor
 * is still 1/batch; one pass for one a clip scaled or a stage filled), for DL4J's updater to divide
 * as it always does, or the mean, in one pass that carries the pipeline's scaling with it, for an
 * updater run without its division. {@link #close} settles what is still open to the sum and frees
 * the step's temporaries.
 */
final class BatchMeanView {
    private final PendingFactorOps ops;
    private GradientSet<INDArray> open;
    private double sumFactor = 1.0;

    BatchMeanView(PendingFactorOps ops) {
        this.ops = ops;
    }

    PendingFactorOps ops() {
        return ops;
    }

    /** What the pipeline needs to know of this micro-batch: its size and DL4J's score. */
    static StepContext context(Model model) {
        return StepContext.ofBatch(Math.max(0, model.batchSize())).withLoss(model.score());
    }

    /**
     * The network's gradients (see {@link Dl4jGradients}), each with a pending factor of 1/batch
     * when DL4J's updater divides by the batch size.
     *
     * @throws IllegalStateException if the network has no gradient yet
     */
    GradientSet<INDArray> open(Model model) {
        GradientSet<INDArray> gradients = Dl4jGradients.of(model);
        int batch = model.batchSize();
        sumFactor = Dl4jGradients.dividesByBatch(model) && batch > 1 ? 1.0 / batch : 1.0;
        if (sumFactor != 1.0) {
            for (GradientTensor<INDArray> g : gradients) {
                ops.setFactor(g.gradient(), sumFactor);
            }
        }
        open = gradients;
        return gradients;
    }

    /**
     * Leaves every view of the open step holding the batch mean ({@code toMean}) or DL4J's sum, and
     * closes the step's view: nothing happens on a second call.
     */
    void settle(boolean toMean) {
        if (open == null) {
            return;
        }
        GradientSet<INDArray> gradients = open;
        open = null;
        for (GradientTensor<INDArray> g : gradients) {
            ops.settle(g.gradient(), toMean ? 1.0 : sumFactor);
        }
    }

    /**
     * Fills the network's whole flattened gradient with 0 (every parameter, batch-norm running
     * statistics included; a fill, not a multiply, so NaN goes too) and forgets the open step's
     * pending factors: DL4J then subtracts an update of exactly 0.
     */
    void zero(Model model) {
        if (open != null) {
            for (GradientTensor<INDArray> g : open) {
                ops.setFactor(g.gradient(), 1.0);
            }
            open = null;
        }
        model.gradient().gradient().assign(0);
    }

    /** DL4J's sum in every view still open, then the step's temporaries freed. */
    void close() {
        try {
            settle(false);
        } finally {
            ops.releaseTemporaries();
        }
    }
}
