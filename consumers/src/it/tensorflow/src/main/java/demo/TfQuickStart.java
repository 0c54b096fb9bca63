package demo;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.core.Transforms;
import io.gradguard.tensorflow.TfGuard;
import io.gradguard.tensorflow.TfTensor;
import java.util.List;
import java.util.Map;
import org.tensorflow.Graph;
import org.tensorflow.Operand;
import org.tensorflow.Session;
import org.tensorflow.framework.optimizers.GradientDescent;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.StdArrays;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.core.Variable;
import org.tensorflow.types.TFloat32;

public final class TfQuickStart {
    public static void main(String[] args) {
        try (Graph graph = new Graph(); Session session = new Session(graph)) {
            Ops tf = Ops.create(graph);
            Placeholder<TFloat32> x = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 4)));
            Placeholder<TFloat32> y = tf.placeholder(TFloat32.class, Placeholder.shape(Shape.of(-1, 1)));
            Variable<TFloat32> w = tf.withName("w").variable(tf.zeros(tf.constant(new long[] {4, 1}), TFloat32.class));
            Operand<TFloat32> loss = tf.math.mean(tf.math.square(tf.math.sub(tf.linalg.matMul(x, w), y)),
                    tf.constant(new int[] {0, 1}));
            GradientPipeline pipeline = GradientPipeline.of(
                    Transforms.skipNonFinite(3),      // a NaN/Inf gradient: skip the step
                    Transforms.clipByGlobalNorm(1.0));
            // in place of new GradientDescent(graph, 0.1f).minimize(loss)
            try (TfGuard guard = TfGuard.of(pipeline).attach(session, loss, List.of(w), new GradientDescent(graph, 0.1f));
                    TFloat32 xs = TFloat32.tensorOf(StdArrays.ndCopyOf(new float[][] {{1, 2, 0, 0}, {0, 0, 1, 2}}));
                    TFloat32 ys = TFloat32.tensorOf(StdArrays.ndCopyOf(new float[][] {{10}, {-10}}))) {
                session.initialize();
                for (int step = 0; step < 5; step++) {
                    StepResult<TfTensor> r = guard.step(Map.of(x, xs, y, ys), 2);
                    System.out.printf("step %d: %s, loss %.4f%n", step, r.action(), guard.lastLoss());
                }
            }
        }
    }
}
