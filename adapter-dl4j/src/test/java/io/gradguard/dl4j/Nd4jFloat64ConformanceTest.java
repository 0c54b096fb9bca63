package io.gradguard.dl4j;

import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The ND4J backend with float64 reductions ({@link Nd4jOps#accumulateInDouble()}) runs the whole
 * conformance kit, the 1e30 / 1e-30 cases included (the default float32 mode skips them).
 */
class Nd4jFloat64ConformanceTest extends ConformanceKit<INDArray> {
    private final Nd4jOps ops = new Nd4jOps().accumulateInDouble();

    @Override
    protected TensorOps<INDArray> ops() {
        return ops;
    }

    @Override
    protected void cleanUp() {
        ops.releaseTemporaries();
    }
}
