package io.gradguard.djl;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;
import org.junit.jupiter.api.AfterAll;

/**
 * DJL's backend with float64 reductions ({@code DjlOps.on(parent, true)}, what
 * {@code DjlGuard.accumulateInDouble()} selects) runs the whole conformance kit, the 1e30 / 1e-30
 * cases included (the default float32 mode, {@link DjlConformanceTest}, skips them).
 */
class DjlFloat64ConformanceTest extends ConformanceKit<NDArray> {
    private static final NDManager ROOT = NDManager.newBaseManager("PyTorch");

    private final DjlOps ops = DjlOps.on(ROOT, true);

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
