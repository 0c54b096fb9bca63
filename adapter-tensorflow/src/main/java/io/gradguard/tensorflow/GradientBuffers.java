package io.gradguard.tensorflow;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;

/**
 * Gradients kept in resource variables between session runs, for steps on which the host decides
 * (a skip policy, a monitor): one run computes forward and backward into the buffers and returns
 * the loss; the host reads and the final transform-and-apply run then read the buffers instead of
 * recomputing the backward pass.
 */
final class GradientBuffers {
    private final TfTensor[] buffers;
    private final List<Op> fills = new ArrayList<>();

    /** One buffer per gradient, each of its gradient's dtype and shape. */
    GradientBuffers(TfOps ops, Output<?>[] gradients, long[][] shapes) {
        buffers = new TfTensor[gradients.length];
        Ops tf = Ops.create(ops.graph()).withSubScope("gradguard");
        for (int i = 0; i < gradients.length; i++) {
            buffers[i] = ops.newBuffer(gradients[i].type(), shapes[i], null, false);
            fills.add(tf.assignVariableOp(buffers[i].variable, gradients[i]));
        }
    }

    /** Runs forward and backward on the step's feeds into the buffers; returns the loss. */
    double fill(TfOps ops, Output<?> loss) {
        try (Result r = ops.run(runner -> {
            fills.forEach(runner::addTarget);
            runner.fetch(loss);
        })) {
            return TfOps.hostScalar(r.get(0));
        }
    }

    /** The node that reads gradient {@code i} from its buffer. */
    Output<?> read(int i) {
        return buffers[i].read;
    }

    /** Each gradient node mapped to its buffer's read (what a rebase replaces). */
    Map<Output<?>, Output<?>> leaves(Output<?>[] gradients) {
        Map<Output<?>, Output<?>> leaves = new HashMap<>();
        for (int i = 0; i < gradients.length; i++) {
            leaves.put(gradients[i], buffers[i].read);
        }
        return leaves;
    }
}
