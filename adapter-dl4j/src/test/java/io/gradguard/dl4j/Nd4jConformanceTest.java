package io.gradguard.dl4j;

import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import org.nd4j.linalg.api.ndarray.INDArray;

/** The ND4J backend (native CPU, linux-x86_64) runs the whole conformance kit. */
class Nd4jConformanceTest extends ConformanceKit<INDArray> {
    private final Nd4jOps ops = new Nd4jOps();

    @Override
    protected TensorOps<INDArray> ops() {
        return ops;
    }

    @Override
    protected void cleanUp() {
        ops.releaseTemporaries();
    }
}
