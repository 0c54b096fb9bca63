package io.gradguard.tensorflow;

import io.gradguard.core.internal.Checks;
import java.util.Map;
import java.util.TreeMap;
import org.tensorflow.DeviceSpec;
import org.tensorflow.Operand;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.proto.ConfigProto;
import org.tensorflow.proto.DeviceStepStats;
import org.tensorflow.proto.NodeExecStats;
import org.tensorflow.proto.RunMetadata;
import org.tensorflow.proto.RunOptions;

/**
 * Helpers for data-parallel "towers" in one TensorFlow Java graph. TensorFlow Java has no
 * distribution strategy: the way to train one model on several devices of one machine is to build
 * one copy of the forward pass (a tower) per device with {@code tf.withDevice(...)}, all reading the
 * same variables, feed each tower its share of the batch, and train on the mean of the towers'
 * losses; its gradient is the mean of the towers' gradients. A {@link TfGuard} attached to that
 * mean loss guards the averaged gradient: one skip decision and one global norm for all towers.
 *
 * <pre>{@code
 * try (Graph graph = new Graph(); Session session = new Session(graph, TfTowers.cpus(2))) {
 *     Ops tf = Ops.create(graph);
 *     // variables w, b on the default device; tower i on TfTowers.cpu(i), fed its half of the batch
 *     Operand<TFloat32> loss0 = tower(tf.withDevice(TfTowers.cpu(0)).withSubScope("tower_0"), x0, y0, w, b);
 *     Operand<TFloat32> loss1 = tower(tf.withDevice(TfTowers.cpu(1)).withSubScope("tower_1"), x1, y1, w, b);
 *     Operand<TFloat32> loss = tf.math.div(tf.math.add(loss0, loss1), tf.constant(2f));
 *     TfGuard guard = TfGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(1.0))
 *             .attach(session, loss, List.of(w, b), new GradientDescent(graph, 0.1f));
 *     Map<String, String> devices = TfTowers.placement(session, feeds, loss0, loss1);  // op name -> device
 * }
 * }</pre>
 *
 * <p>With towers of equal size the mean of the towers' mean losses is the full batch's mean loss,
 * so the towers train exactly as one device on the whole batch (up to float rounding). The
 * gradient ops TensorFlow builds for the mean loss carry no device request, so TensorFlow's placer
 * puts them (usually on the first device); only the forward passes are pinned to their towers.
 * For GPUs, use {@code DeviceSpec.DeviceType.GPU} and a session config that lists them.
 */
public final class TfTowers {
    private TfTowers() {
    }

    /**
     * A session config with {@code count} CPU devices ({@code device_count {"CPU": count}}):
     * {@code /device:CPU:0} .. {@code /device:CPU:(count-1)}, all on this machine's cores.
     *
     * @throws IllegalArgumentException if {@code count} is below 1
     */
    public static ConfigProto cpus(int count) {
        Checks.atLeast("count", count, 1);
        return ConfigProto.newBuilder().putDeviceCount("CPU", count).build();
    }

    /**
     * The device spec of CPU {@code index}, for {@code tf.withDevice(TfTowers.cpu(i))}.
     *
     * @throws IllegalArgumentException if {@code index} is negative
     */
    public static DeviceSpec cpu(int index) {
        Checks.require(index >= 0, "index", "not be negative", index);
        return DeviceSpec.newBuilder().deviceType(DeviceSpec.DeviceType.CPU).deviceIndex(index).build();
    }

    /**
     * Where TensorFlow ran each operation: one traced run ({@code RunOptions} with
     * {@code FULL_TRACE}) of {@code fetches} with {@code feeds}, read from its {@code RunMetadata}
     * step statistics. Use it to check that each tower's operations run on the tower's device.
     *
     * @param feeds the run's inputs; the caller owns and closes the tensors
     * @return operation name → full device name (e.g. {@code /job:localhost/replica:0/task:0/device:CPU:1}), sorted by name
     * @throws IllegalArgumentException if an argument is null or there is no fetch
     */
    public static Map<String, String> placement(Session session, Map<? extends Operand<?>, ? extends Tensor> feeds,
            Operand<?>... fetches) {
        Checks.notNull("session", session);
        Checks.notNull("feeds", feeds);
        Checks.notNull("fetches", fetches);
        Checks.require(fetches.length > 0, "fetches", "name at least one operand", fetches.length);
        Session.Runner runner = session.runner()
                .setOptions(RunOptions.newBuilder().setTraceLevel(RunOptions.TraceLevel.FULL_TRACE).build());
        feeds.forEach((operand, tensor) -> runner.feed(operand, tensor));
        for (Operand<?> f : fetches) {
            runner.fetch(Checks.notNull("fetches[]", f));
        }
        Map<String, String> out = new TreeMap<>();
        try (Result result = runner.runAndFetchMetadata()) {
            RunMetadata metadata = result.getMetadata().orElseThrow();
            for (DeviceStepStats device : metadata.getStepStats().getDevStatsList()) {
                for (NodeExecStats node : device.getNodeStatsList()) {
                    out.putIfAbsent(node.getNodeName(), device.getDevice());
                }
            }
        }
        return out;
    }
}
