package io.gradguard.djl;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import org.junit.jupiter.api.AfterAll;

/** The conformance kit on DJL NDArrays (PyTorch engine, CPU). */
class DjlConformanceTest extends ConformanceKit<NDArray> {
    private static final NDManager ROOT = NDManager.newBaseManager("PyTorch");

    private final DjlOps ops = DjlOps.on(ROOT);

    @Override
    protected TensorOps<NDArray> ops() {
        return ops;
    }

    @Override
    protected void cleanUp() {
        ops.close();
    }

    @AfterAll
    static void closeRoot() {
        ROOT.close();
    }
}
