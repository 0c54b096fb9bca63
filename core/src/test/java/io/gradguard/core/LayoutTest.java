package io.gradguard.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.gradguard.core.conformance.UnitNormLoops;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import org.junit.jupiter.api.Test;

/** The axes each layout reduces over, and a two-axis layout's unit norms against plain loops. */
class LayoutTest {
    @Test
    void reduction_axes_are_every_axis_but_the_output_ones() {
        assertArrayEquals(new int[] {1, 2, 3}, Layout.outputFirst().reductionAxes(4));
        assertArrayEquals(new int[] {0, 1, 2}, Layout.outputLast().reductionAxes(4));
        assertArrayEquals(new int[] {0, 2, 3}, Layout.outputAxis(1).reductionAxes(4));
        assertArrayEquals(new int[] {0, 1}, Layout.outputAxes(2, 3).reductionAxes(4));
        assertArrayEquals(new int[] {0, 1}, Layout.outputAxes(-2, -1).reductionAxes(4));
        assertArrayEquals(new int[] {0, 1, 2, 3}, Layout.whole().reductionAxes(4));
        assertArrayEquals(new int[] {0}, Layout.outputAxes(2, 3).reductionAxes(1), "rank 1 is one unit");
        assertEquals(Layout.outputAxis(2), Layout.outputAxes(2));
        assertEquals(Layout.outputAxes(2, 3), Layout.outputAxes(2, 3));
        assertEquals("outputAxes(2, 3)", Layout.outputAxes(2, 3).toString());
    }

    @Test
    void two_output_axes_give_one_norm_per_index_pair() {
        long[] shape = {3, 2, 2, 3};
        float[] x = new float[36];
        double[] xd = new double[36];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) Math.sin(i + 1.0);
            xd[i] = x[i];
        }
        ReferenceOps ops = ReferenceOps.INSTANCE;
        ReferenceTensor norms = Norms.unitNorms(ops, ReferenceTensor.of(x, shape), Layout.outputAxes(2, 3));
        assertArrayEquals(new long[] {1, 1, 2, 3}, ops.shape(norms));
        double[] loops = UnitNormLoops.unitNorms(xd, shape, 2, 3);
        for (int i = 0; i < loops.length; i++) {
            assertEquals(loops[i], norms.get(i), 1e-6, "unit " + i);
        }
    }
}
