package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertFalse;

import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import org.junit.jupiter.api.Test;
import org.tensorflow.Graph;
import org.tensorflow.Session;

/**
 * The TensorFlow backend with its default precision (reductions in the tensors' dtype) runs the
 * conformance kit: every primitive as graph operations, read back through the session. The kit
 * skips its 1e30/1e-30 norm cases by assumption, as for every float32-accumulating backend;
 * {@link TensorFlowFloat64ConformanceTest} runs them with float64 accumulation.
 */
class TensorFlowConformanceTest extends ConformanceKit<TfTensor> {
    private final Graph graph = new Graph();
    private final Session session = new Session(graph);
    private final TfOps ops = new TfOps(session);

    @Override
    protected TensorOps<TfTensor> ops() {
        return ops;
    }

    @Override
    protected void cleanUp() {
        ops.close();
        session.close();
        graph.close();
    }

    @Test
    void the_default_reduces_in_the_tensors_dtype() {
        assertFalse(ops.accumulatesInDouble());
    }
}
