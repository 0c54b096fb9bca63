package io.gradguard.djl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import ai.djl.training.GradientCollector;
import ai.djl.training.LocalParameterServer;
import ai.djl.training.ParameterServer;
import ai.djl.training.ParameterStore;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import ai.djl.util.Pair;
import io.gradguard.core.Transforms;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.junit.jupiter.api.Test;

/**
 * DJL multi-device training as DJL's parameter server drives a {@link DjlOptimizer}, with the
 * devices simulated on the CPU (DJL refuses a device twice, so a CPU-only machine cannot build a
 * two-device trainer): each parameter has two copies, each "device" runs the real block's forward
 * and backward on its half of the batch with its own copy, and DJL's own
 * {@link LocalParameterServer} then sums the copies' gradients and calls the optimizer once per
 * parameter and copy, in the order of a hash map, as {@code ParameterStore.updateAllParameters()}
 * does. The reference is one device on the whole batch with the loss summed over the halves (the
 * gradient DJL applies is the sum of the devices' gradients). {@link DjlMultiGpuTest} runs a real
 * two-GPU trainer where there is one.
 */
class DjlMultiDeviceTest {
    private static final int DEVICES = 2;

    /** The parameter copies of the simulated devices; forward on "device" {@link #current} reads its copies. */
    private static final class Copies extends ParameterStore {
        final Map<String, NDArray[]> byId = new ConcurrentHashMap<>(); // DJL keeps them in a ConcurrentHashMap too
        int current;

        Copies(NDManager manager, Model model) {
            super(manager, false);
            for (Pair<String, Parameter> pair : model.getBlock().getParameters()) {
                NDArray own = pair.getValue().getArray();
                NDArray[] copies = new NDArray[DEVICES];
                copies[0] = own; // the first device is the model's: DJL then uses the model's array itself
                for (int d = 1; d < DEVICES; d++) {
                    copies[d] = own.duplicate();
                    copies[d].attach(manager);
                    copies[d].setRequiresGradient(true);
                }
                byId.put(pair.getValue().getId(), copies);
            }
        }

        @Override
        public NDArray getValue(Parameter parameter, Device device, boolean training) {
            return byId.get(parameter.getId())[current];
        }

        /** Forward and backward of each device's half of the batch on its copies; returns the summed loss. */
        float backward(Model model, float[][] x, float[][] y) {
            NDManager m = getManager();
            float total = 0;
            try (NDManager scope = m.newSubManager(); GradientCollector gc = model.getNDManager().getEngine().newGradientCollector()) {
                int half = x.length / DEVICES;
                for (int d = 0; d < DEVICES; d++) {
                    current = d;
                    NDArray xs = scope.create(Nets.rows(x, d * half, (d + 1) * half));
                    NDArray ys = scope.create(Nets.rows(y, d * half, (d + 1) * half));
                    NDArray out = model.getBlock().forward(this, new NDList(xs), true).singletonOrThrow();
                    NDArray loss = Loss.l2Loss().evaluate(new NDList(ys), new NDList(out));
                    total += loss.getFloat();
                    gc.backward(loss);
                }
            }
            return total;
        }

        /** What {@code trainer.step()} does on several devices: DJL's parameter server, parameter by parameter. */
        void step(ParameterServer server) {
            for (Map.Entry<String, NDArray[]> e : byId.entrySet()) {
                server.update(e.getKey(), e.getValue());
            }
        }

        float[] values(String id, int device) {
            return byId.get(id)[device].toFloatArray();
        }

        float[] gradient(String id, int device) {
            try (NDArray g = byId.get(id)[device].getGradient()) {
                return g.toFloatArray();
            }
        }
    }

    /**
     * Global-norm clip at 0.05 (active on every step) with skipNonFinite, Adam, 6 steps of 16
     * examples, a NaN in the second device's half at step 3: the two devices' copies stay equal
     * (bit for bit), step 3 is skipped on both (no copy moves, every gradient is 0, one skip counted),
     * and both equal the single-device run on the whole batch within 1e-5. Data seeds 40, 41, 42.
     */
    @Test
    void summed_gradients_are_clipped_and_skipped_once_for_all_devices_and_match_one_device() throws Exception {
        for (long seed = 40; seed < 43; seed++) {
            DjlGuard multi = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.05));
            DjlGuard single = DjlGuard.of(Transforms.skipNonFinite(3), Transforms.clipByGlobalNorm(0.05));
            try (Trainer reference = Nets.trainer(4, 8, 3, Nets.adam(0.01f)); Model model = Nets.mlp(4, 8, 3);
                    Trainer init = model.newTrainer(Nets.config(Nets.sgd(0.1f)))) {
                init.initialize(new Shape(1, 4)); // initializes the model's block
                Nets.copyParams(reference, init);
                DjlOptimizer optimizer = multi.wrap(model, Nets.adam(0.01f));
                optimizer.devices(DEVICES); // what guard.listeners(...) tells it when a trainer is created
                Copies copies = new Copies(init.getManager(), model);
                ParameterServer server = new LocalParameterServer(optimizer);
                for (int step = 0; step < 6; step++) {
                    float[][] x = Nets.data(seed * 10 + step, 16, 4, 2f);
                    float[][] y = Nets.data(seed * 10 + step + 100, 16, 3, 2f);
                    if (step == 3) {
                        x[12][1] = Float.NaN; // in the second device's half
                    }
                    Map<String, float[]> before = snapshot(model, copies, 0);
                    copies.backward(model, x, y);
                    copies.step(server);

                    float[][] xa = Nets.rows(x, 0, 8);
                    float[][] xb = Nets.rows(x, 8, 16);
                    sumBackward(reference, xa, Nets.rows(y, 0, 8), xb, Nets.rows(y, 8, 16));
                    single.step(reference);

                    for (String id : copies.byId.keySet()) {
                        assertArrayEquals(copies.values(id, 0), copies.values(id, 1), "copies of " + id + " at step " + step);
                        assertArrayEquals(new float[copies.gradient(id, 0).length], copies.gradient(id, 0), "gradient 0 of " + id);
                        assertArrayEquals(new float[copies.gradient(id, 1).length], copies.gradient(id, 1), "gradient 1 of " + id);
                    }
                    if (step == 3) {
                        assertEquals(0.0, Nets.maxAbsDiff(before, snapshot(model, copies, 0)), "skipped step moved a copy");
                        assertEquals(1, multi.skippedCount());
                    } else {
                        assertTrue(multi.lastResult().orElseThrow().clipped(), "clip active at step " + step);
                    }
                    double diff = Nets.maxAbsDiff(Nets.params(reference), snapshot(model, copies, 0));
                    assertTrue(diff < 1e-5, "seed " + seed + " step " + step + ": max |multi - single| = " + diff);
                }
                assertEquals(single.skippedCount(), multi.skippedCount());
                assertEquals(single.stepCount(), multi.stepCount());
            }
        }
    }

    /** Without the trainer's device count (no guard.listeners in the config), a second copy is refused. */
    @Test
    void a_copy_on_a_second_device_without_the_device_count_is_refused() throws Exception {
        DjlGuard guard = DjlGuard.of(Transforms.clipByGlobalNorm(1.0));
        try (Model model = Nets.mlp(4, 8, 3); Trainer init = model.newTrainer(Nets.config(Nets.sgd(0.1f)))) {
            init.initialize(new Shape(1, 4));
            DjlOptimizer optimizer = guard.wrap(model, Nets.sgd(0.1f));
            Copies copies = new Copies(init.getManager(), model);
            copies.backward(model, Nets.data(1, 4, 4, 1f), Nets.data(2, 4, 3, 1f));
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> copies.step(new LocalParameterServer(optimizer)));
            assertTrue(e.getMessage().contains("several devices") && e.getMessage().contains("guard.listeners"), e.getMessage());
            optimizer.devices(2);
            IllegalStateException other = assertThrows(IllegalStateException.class, () -> optimizer.devices(3));
            assertTrue(other.getMessage().contains("2 device(s), not 3"), other.getMessage());
        }
    }

    /** A guard on a plain trainer ({@code guard.step(trainer)}) keeps refusing several devices, pointing at the hooks that work. */
    @Test
    void the_step_helper_points_to_new_trainer_and_wrap_for_several_devices() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> DjlBlockModel.of(new TwoDevices(), () -> { }, false));
        assertTrue(e.getMessage().contains("guard.newTrainer") && e.getMessage().contains("guard.wrap"), e.getMessage());
    }

    private static final class TwoDevices extends Trainer {
        TwoDevices() {
            super(Nets.mlp(1, 1, 1), Nets.config(Nets.sgd(0.1f)));
        }

        @Override
        public Device[] getDevices() {
            return new Device[] {Device.gpu(0), Device.gpu(1)};
        }
    }

    /** Backward of the two halves' losses summed, on one trainer (the gradient two devices sum). */
    private static void sumBackward(Trainer trainer, float[][] xa, float[][] ya, float[][] xb, float[][] yb) {
        NDManager m = trainer.getManager();
        try (NDManager scope = m.newSubManager(); GradientCollector gc = trainer.newGradientCollector()) {
            NDArray la = trainer.getLoss().evaluate(new NDList(scope.create(ya)), trainer.forward(new NDList(scope.create(xa))));
            NDArray lb = trainer.getLoss().evaluate(new NDList(scope.create(yb)), trainer.forward(new NDList(scope.create(xb))));
            gc.backward(la.add(lb));
        }
    }

    /** Host copies of one device's parameter copies, by parameter key (as {@link Nets#params}). */
    private static Map<String, float[]> snapshot(Model model, Copies copies, int device) {
        Map<String, float[]> out = new LinkedHashMap<>();
        for (Pair<String, Parameter> p : model.getBlock().getParameters()) {
            out.put(p.getKey(), copies.values(p.getValue().getId(), device));
        }
        return out;
    }
}
