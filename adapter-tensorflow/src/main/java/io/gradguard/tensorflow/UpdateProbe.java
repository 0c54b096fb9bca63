package io.gradguard.tensorflow;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.spi.GuardedModel.UpdateRecorder;
import java.util.ArrayList;
import java.util.List;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.types.TFloat64;

/**
 * Measures the optimizer's update Δθ of each variable for update-to-parameter ratios: a snapshot of
 * the variables into resource variables before the apply run, then one run that returns
 * ‖θ_after − θ_before‖² and ‖θ_before‖² for every variable. Built on the first monitored step;
 * two small runs on the steps a monitor asks for updates, none otherwise.
 */
final class UpdateProbe {
    private final Session session;
    private final List<Op> snapshot = new ArrayList<>();
    private final Output<TFloat64> norms;

    @SuppressWarnings({"unchecked", "rawtypes"})
    UpdateProbe(TfOps ops, List<Output<?>> values, long[][] shapes) {
        this.session = ops.session();
        Ops tf = Ops.create(ops.graph()).withSubScope("gradguard_update");
        List<Operand<TFloat64>> squares = new ArrayList<>();
        for (int i = 0; i < values.size(); i++) {
            Output<?> value = values.get(i);
            TfTensor before = ops.newBuffer(value.type(), shapes[i], null, false);
            // a deep copy: the identity of a ref variable shares its buffer, which the update then changes in place
            snapshot.add(tf.assignVariableOp(before.variable, tf.deepCopy((Operand) value)));
            Operand<TFloat64> was = tf.dtypes.cast((Operand) before.read, TFloat64.class);
            Operand<TFloat64> now = tf.dtypes.cast((Operand) value, TFloat64.class);
            squares.add(sumOfSquares(tf, tf.math.sub(now, was), shapes[i].length));
            squares.add(sumOfSquares(tf, was, shapes[i].length));
        }
        norms = tf.stack(squares).output();
    }

    private static Operand<TFloat64> sumOfSquares(Ops tf, Operand<TFloat64> x, int rank) {
        int[] all = new int[rank];
        for (int i = 0; i < rank; i++) {
            all[i] = i;
        }
        return tf.reduceSum(tf.math.square(x), tf.constant(all));
    }

    /** Copies every variable's value (θ before the step). */
    void before() {
        Session.Runner r = session.runner();
        snapshot.forEach(r::addTarget);
        r.run().close();
    }

    /** Reports ‖Δθ‖ and ‖θ before‖ of every variable, by its layer. */
    void after(GradientSet<TfTensor> gradients, UpdateRecorder<TfTensor> updates) {
        double[] v = new double[2 * gradients.size()];
        try (Result r = session.runner().fetch(norms).run()) {
            ((TFloat64) r.get(0)).copyTo(DataBuffers.of(v, false, false));
        }
        int i = 0;
        for (GradientTensor<TfTensor> g : gradients) {
            updates.record(g.layer(), Math.sqrt(v[2 * i]), Math.sqrt(v[2 * i + 1]));
            i++;
        }
    }
}
