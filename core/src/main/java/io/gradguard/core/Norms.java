package io.gradguard.core;

import io.gradguard.core.spi.TensorOps;
import java.util.ArrayList;
import java.util.List;

/**
 * Tree-level gradient math, written once on top of the {@link TensorOps} primitives so that every
 * backend computes norms and coefficients the same way. All results are backend scalars (or
 * per-unit tensors); nothing is copied to the host.
 */
public final class Norms {
    private Norms() {
    }

    /** The norm of one tensor. */
    public static <T> T norm(TensorOps<T> ops, T x, NormType type) {
        return switch (type) {
            case L2 -> ops.sqrt(ops.sumOfSquares(x));
            case L1 -> ops.sumOfAbs(x);
            case INF -> ops.maxAbs(x);
            case RMS -> rms(ops, ops.sumOfSquares(x), elementCount(ops.shape(x)));
        };
    }

    /** Σx² over several tensors treated as one flat vector (0 for none): {@link TensorOps#sumOfSquares(List)}. */
    public static <T> T sumOfSquares(TensorOps<T> ops, List<GradientTensor<T>> tensors) {
        List<T> xs = new ArrayList<>(tensors.size());
        for (GradientTensor<T> t : tensors) {
            xs.add(t.gradient());
        }
        return ops.sumOfSquares(xs);
    }

    /** The norm of several tensors treated as one flat vector (0 for none). */
    public static <T> T norm(TensorOps<T> ops, List<GradientTensor<T>> tensors, NormType type) {
        if (tensors.size() == 1) {
            return norm(ops, tensors.get(0).gradient(), type);
        }
        if (tensors.isEmpty()) {
            return ops.scalar(0.0);
        }
        return switch (type) {
            case L2 -> ops.sqrt(sumOfSquares(ops, tensors));
            case RMS -> rms(ops, sumOfSquares(ops, tensors), tensors.stream().mapToLong(GradientTensor::size).sum());
            case L1, INF -> {
                T acc = null;
                for (GradientTensor<T> t : tensors) {
                    T part = type == NormType.L1 ? ops.sumOfAbs(t.gradient()) : ops.maxAbs(t.gradient());
                    acc = acc == null ? part : type == NormType.INF ? ops.max(acc, part) : ops.add(acc, part);
                }
                yield acc;
            }
        };
    }

    /** The norm of every gradient of the set together (PyTorch's "total norm"). */
    public static <T> T globalNorm(TensorOps<T> ops, GradientSet<T> gradients, NormType type) {
        return norm(ops, gradients.tensors(), type);
    }

    /**
     * The L2 norm of each output unit of {@code x}, shaped to broadcast against it (size-1 axes
     * kept); a scalar when the layout makes the whole tensor one unit.
     */
    public static <T> T unitNorms(TensorOps<T> ops, T x, Layout layout) {
        int rank = ops.shape(x).length;
        if (layout.isWhole(rank)) {
            return ops.sqrt(ops.sumOfSquares(x));
        }
        return ops.sqrt(ops.sumOfSquares(x, layout.reductionAxes(rank)));
    }

    /**
     * The clip coefficient {@code c / max(norm, c)} = {@code min(1, c / norm)}: 1 when the norm is at
     * most {@code c} (including a zero norm: no 0/0), {@code c / norm} above it, 0 for an infinite
     * norm, NaN for a NaN norm. No epsilon is needed, so clipping is exact and idempotent.
     */
    public static <T> T clipCoefficient(TensorOps<T> ops, T norm, double maxNorm) {
        T c = ops.scalar(maxNorm);
        return ops.div(c, ops.max(norm, c));
    }

    /** The tensors grouped as the scope says: one group per tensor, per layer, or one for all. */
    public static <T> List<List<GradientTensor<T>>> groups(GradientSet<T> gradients, Scope scope) {
        return switch (scope) {
            case GLOBAL -> List.of(gradients.tensors());
            case LAYER -> new ArrayList<>(gradients.byLayer().values());
            case TENSOR -> {
                List<List<GradientTensor<T>>> out = new ArrayList<>();
                for (GradientTensor<T> t : gradients) {
                    out.add(List.of(t));
                }
                yield out;
            }
        };
    }

    /** The name of a group for metrics: the tensor's name, the layer's name, or "global". */
    public static String groupName(List<? extends GradientTensor<?>> group, Scope scope) {
        return switch (scope) {
            case GLOBAL -> "global";
            case LAYER -> group.get(0).layer();
            case TENSOR -> group.get(0).name();
        };
    }

    static long elementCount(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    private static <T> T rms(TensorOps<T> ops, T sumOfSquares, long n) {
        return n == 0 ? ops.scalar(0.0) : ops.sqrt(ops.div(sumOfSquares, ops.scalar(n)));
    }
}
