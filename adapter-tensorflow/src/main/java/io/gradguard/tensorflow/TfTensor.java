package io.gradguard.tensorflow;

import java.util.Arrays;
import org.tensorflow.Operand;
import org.tensorflow.Output;

/**
 * A GradGuard tensor on the TensorFlow backend: a small mutable handle over a graph
 * {@link Output}. Functional {@link TfOps} primitives return new handles; in-place primitives
 * ({@code scaleInPlace}, {@code clampInPlace}...) add a node to the graph and <em>rebind</em> the
 * handle to it, so a transform chain becomes a chain of graph nodes and nothing is computed until
 * a session run fetches it.
 *
 * <p>Long-lived handles (state buffers made by {@link TfOps#zerosLike} or {@link TfOps#fromHost})
 * are backed by a resource variable: at the start of a step they read the variable; what a step
 * writes into them is assigned back to the variable when the step ends ({@link TfOps#commit()}).
 *
 * <pre>{@code
 * TfTensor g = guard.gradients().get(0).gradient();
 * Operand<?> current = g.operand();     // the node that holds the transformed gradient
 * }</pre>
 */
public final class TfTensor {
    private final long[] shape;
    private Output<?> value;
    /** The resource variable handle of a long-lived buffer; null for step temporaries. */
    final Output<?> variable;
    /** The variable's read node (the buffer's value at the start of a step); null for temporaries. */
    final Output<?> read;

    TfTensor(long[] shape, Output<?> value, Output<?> variable, Output<?> read) {
        this.shape = shape;
        this.value = value;
        this.variable = variable;
        this.read = read;
    }

    /** The shape; {@code long[0]} for a scalar. */
    public long[] shape() {
        return shape.clone();
    }

    long[] shapeRef() {
        return shape;
    }

    /** The graph node that currently holds this tensor's value. */
    public Operand<?> operand() {
        return value;
    }

    Output<?> value() {
        return value;
    }

    void rebind(Output<?> newValue) {
        value = newValue;
    }

    /** Whether this is a long-lived, variable-backed buffer (pipeline state). */
    public boolean isBuffer() {
        return variable != null;
    }

    /** Whether a buffer holds an uncommitted write of the current step. */
    boolean dirty() {
        return variable != null && !value.equals(read);
    }

    @Override
    public String toString() {
        return "TfTensor" + Arrays.toString(shape) + "<" + value.name() + ">";
    }
}
