package io.gradguard.djl;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.nn.Parameter;
import ai.djl.training.optimizer.Adam;
import ai.djl.training.optimizer.Optimizer;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.lang.reflect.Field;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Adam's state in DJL 0.35.1, read and written for the tests' checkpoints. DJL keeps it in private
 * fields ({@code Adam.means}, {@code Adam.variances}, keyed by the parameter's random id, then by
 * device; {@code Optimizer.updateCounts} and {@code numUpdate}, Adam's step t) and has no API that
 * saves or restores it ({@code Model.save} writes parameters only; neither {@code Trainer} nor
 * {@code ParameterStore} saves the optimizer). This helper reaches the fields by reflection and
 * maps the ids to the parameters' order, so a restored model (new ids) gets its moments back.
 */
final class AdamState {
    private AdamState() {
    }

    /** Moments m, then v, of each parameter in order (0 before its first update), then each update count and t; empty for SGD. */
    static float[] read(Optimizer o, List<Parameter> params) {
        if (!(o instanceof Adam)) {
            return new float[0];
        }
        List<float[]> parts = new ArrayList<>();
        for (String field : List.of("means", "variances")) {
            Map<String, Map<Device, NDArray>> moments = field(Adam.class, o, field);
            for (Parameter p : params) {
                Map<Device, NDArray> byDevice = moments.get(p.getId());
                parts.add(byDevice == null ? new float[(int) p.getArray().size()] : byDevice.get(Device.cpu()).toFloatArray());
            }
        }
        Map<String, Integer> counts = field(Optimizer.class, o, "updateCounts");
        float[] tail = new float[params.size() + 1];
        for (int i = 0; i < params.size(); i++) {
            tail[i] = counts.getOrDefault(params.get(i).getId(), 0);
        }
        tail[params.size()] = (Integer) field(Optimizer.class, o, "numUpdate");
        parts.add(tail);
        return concat(parts);
    }

    static void save(Optimizer o, List<Parameter> params, Path file) throws IOException {
        try (DataOutputStream out = new DataOutputStream(Files.newOutputStream(file))) {
            float[] state = read(o, params);
            out.writeInt(state.length);
            for (float f : state) {
                out.writeFloat(f);
            }
        }
    }

    /** Puts the saved state into {@code o} under the ids of {@code params}, on {@code manager}'s device. */
    static void load(Optimizer o, List<Parameter> params, NDManager manager, Path file) throws IOException {
        float[] state;
        try (DataInputStream in = new DataInputStream(Files.newInputStream(file))) {
            state = new float[in.readInt()];
            for (int i = 0; i < state.length; i++) {
                state[i] = in.readFloat();
            }
        }
        if (!(o instanceof Adam)) {
            return;
        }
        int k = 0;
        for (String field : List.of("means", "variances")) {
            Map<String, Map<Device, NDArray>> moments = field(Adam.class, o, field);
            for (Parameter p : params) {
                int n = (int) p.getArray().size();
                float[] values = java.util.Arrays.copyOfRange(state, k, k + n);
                k += n;
                Map<Device, NDArray> byDevice = new ConcurrentHashMap<>();
                byDevice.put(manager.getDevice(), manager.create(values, p.getArray().getShape()));
                moments.put(p.getId(), byDevice);
            }
        }
        Map<String, Integer> counts = field(Optimizer.class, o, "updateCounts");
        for (Parameter p : params) {
            counts.put(p.getId(), (int) state[k++]);
        }
        set(Optimizer.class, o, "numUpdate", (int) state[k]);
    }

    static float[] concat(List<float[]> parts) {
        int n = parts.stream().mapToInt(a -> a.length).sum();
        float[] out = new float[n];
        int k = 0;
        for (float[] a : parts) {
            System.arraycopy(a, 0, out, k, a.length);
            k += a.length;
        }
        return out;
    }

    @SuppressWarnings("unchecked")
    private static <V> V field(Class<?> owner, Object o, String name) {
        try {
            Field f = owner.getDeclaredField(name);
            f.setAccessible(true);
            return (V) f.get(o);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("DJL's " + owner.getSimpleName() + "." + name + " is not where this test expects it", e);
        }
    }

    private static void set(Class<?> owner, Object o, String name, int value) {
        try {
            Field f = owner.getDeclaredField(name);
            f.setAccessible(true);
            f.setInt(o, value);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("DJL's " + owner.getSimpleName() + "." + name + " is not where this test expects it", e);
        }
    }
}
