package io.gradguard.core;

import io.gradguard.core.internal.Checks;
import java.util.Arrays;

/**
 * One parameter's gradient as a transform sees it: the backend tensor (changed in place), and
 * what the transforms need to know about it.
 *
 * @param name   a stable, unique parameter name ("0_W", "dense_1/kernel", "01Linear_weight")
 * @param shape  the gradient's shape
 * @param role   weight, bias or other
 * @param layer  the layer the parameter belongs to (per-layer clipping groups by it)
 * @param layout which axis indexes output units (for AGC and centralization)
 * @param gradient the gradient tensor, updated in place by the transforms
 * @param param  the parameter's current value, or {@code null} where no transform needs it
 * @param <T> the backend's tensor type
 */
public record GradientTensor<T>(String name, long[] shape, Role role, String layer, Layout layout, T gradient, T param) {

    /**
     * @throws IllegalArgumentException if name or layer is empty, a dimension is negative, or
     *     role, layout or gradient is null
     */
    public GradientTensor {
        Checks.require(name != null && !name.isEmpty(), "name", "be a non-empty parameter name", name);
        if (layer == null || layer.isEmpty()) { // the message is built only on failure: a record is made per tensor per step
            Checks.require(false, "layer", "be a non-empty layer name (parameter " + name + ")", layer);
        }
        Checks.notNull("shape", shape);
        for (long d : shape) {
            if (d < 0) {
                Checks.require(false, "shape", "have no negative dimension (parameter " + name + ")", shape);
            }
        }
        Checks.notNull("role", role);
        Checks.notNull("layout", layout);
        Checks.notNull("gradient", gradient);
        shape = shape.clone();
    }

    /** A gradient with no parameter value attached (enough for every transform but AGC). */
    public GradientTensor(String name, long[] shape, Role role, String layer, Layout layout, T gradient) {
        this(name, shape, role, layer, layout, gradient, null);
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** The number of dimensions. */
    public int rank() {
        return shape.length;
    }

    /** The number of elements. */
    public long size() {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof GradientTensor<?> g && g.name.equals(name) && Arrays.equals(g.shape, shape)
                && g.role == role && g.layer.equals(layer) && g.layout.equals(layout)
                && g.gradient == gradient && g.param == param;
    }

    @Override
    public int hashCode() {
        return name.hashCode();
    }

    @Override
    public String toString() {
        return name + Arrays.toString(shape) + " " + role + " layer=" + layer + " " + layout;
    }
}
