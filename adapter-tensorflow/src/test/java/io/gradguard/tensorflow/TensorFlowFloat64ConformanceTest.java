package io.gradguard.tensorflow;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import org.junit.jupiter.api.Test;
import org.tensorflow.Graph;
import org.tensorflow.Session;

/**
 * The TensorFlow backend with {@link TfOps#accumulateInDouble()} runs the whole conformance kit,
 * including the norm cases of float32 values near 1e30 and 1e-30 that float32 accumulation skips.
 */
class TensorFlowFloat64ConformanceTest extends ConformanceKit<TfTensor> {
    private final Graph graph = new Graph();
    private final Session session = new Session(graph);
    private final TfOps ops = new TfOps(session).accumulateInDouble();

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
    void float64_accumulation_is_declared_and_cannot_change_once_nodes_exist() {
        assertTrue(ops.accumulatesInDouble());
        try (Graph g = new Graph(); Session s = new Session(g); TfOps other = new TfOps(s)) {
            other.sumOfSquares(other.fromHost(new float[] {3, 4}, new long[] {2}));
            IllegalStateException e = assertThrows(IllegalStateException.class, other::accumulateInDouble);
            assertEquals("accumulateInDouble() must be called before the first step: "
                    + "this TfOps already built graph nodes with dtype reductions",
                    e.getMessage());
        }
    }
}
