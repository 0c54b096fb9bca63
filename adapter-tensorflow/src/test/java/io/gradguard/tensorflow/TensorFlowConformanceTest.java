package io.gradguard.tensorflow;

import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import org.tensorflow.Graph;
import org.tensorflow.Session;

/** The TensorFlow backend runs the conformance kit: every primitive as graph operations, read back through the session. */
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
}
