package io.gradguard.dl4j;

import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import org.nd4j.linalg.api.ndarray.INDArray;

/** {@link FactoredNd4jConformanceTest} with float64 reductions ({@link Nd4jOps#accumulateInDouble()}). */
class FactoredNd4jFloat64ConformanceTest extends ConformanceKit<INDArray> {
    private final PendingFactorOps ops = new PendingFactorOps(new Nd4jOps().accumulateInDouble());
    private final TensorOps<INDArray> factored = new FactoredNd4jConformanceTest.Factored(ops);

    @Override
    protected TensorOps<INDArray> ops() {
        return factored;
    }

    @Override
    protected void cleanUp() {
        ops.releaseTemporaries();
    }
}
