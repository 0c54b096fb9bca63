package io.gradguard.core.reference;

import io.gradguard.core.conformance.ConformanceKit;
import io.gradguard.core.spi.TensorOps;

/** The reference backend runs the conformance kit, as every adapter does. */
class ReferenceConformanceTest extends ConformanceKit<ReferenceTensor> {
    @Override
    protected TensorOps<ReferenceTensor> ops() {
        return ReferenceOps.INSTANCE;
    }
}
