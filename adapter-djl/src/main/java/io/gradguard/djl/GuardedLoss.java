package io.gradguard.djl;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.training.loss.Loss;
import java.util.function.DoubleSupplier;

/**
 * A DJL {@link Loss} as the guard sees it: {@link #evaluate} returns the wrapped loss multiplied
 * by the guard's current loss scale (the value {@code EasyTrain.trainBatch} backpropagates; the
 * loss itself when the scale is 1) and keeps the unscaled value, with the batch size (the labels'
 * first dimension), for the guard's next step. DJL's accumulators (the epoch and progress losses
 * the listeners show) are delegated to the wrapped loss, so they stay unscaled.
 */
final class GuardedLoss extends Loss {
    private final Loss loss;
    private final DoubleSupplier scale;
    private NDArray last;
    private long examples;

    GuardedLoss(Loss loss, DoubleSupplier scale) {
        super(loss.getName());
        this.loss = loss;
        this.scale = scale;
    }

    /** The loss this one wraps. */
    Loss wrapped() {
        return loss;
    }

    @Override
    public NDArray evaluate(NDList labels, NDList predictions) {
        last = loss.evaluate(labels, predictions);
        if (!labels.isEmpty() && labels.head().getShape().dimension() > 0) {
            examples += labels.head().getShape().get(0);
        }
        double s = scale.getAsDouble();
        return s == 1.0 ? last : last.mul(s);
    }

    /** The last unscaled loss on the host (NaN if none, released, or not one value); forgets it. */
    double takeLoss() {
        NDArray value = last;
        last = null;
        if (value == null || value.isReleased() || value.getShape().size() != 1) {
            return Double.NaN;
        }
        try (NDArray d = value.toType(DataType.FLOAT64, true)) {
            return d.toDoubleArray()[0];
        }
    }

    /** The examples of the labels evaluated since the last call (0 if none); resets the count. */
    long takeExamples() {
        long n = examples;
        examples = 0;
        return n;
    }

    @Override
    public void addAccumulator(String key) {
        loss.addAccumulator(key);
    }

    @Override
    public void updateAccumulator(String key, NDList labels, NDList predictions) {
        loss.updateAccumulator(key, labels, predictions);
    }

    @Override
    public void updateAccumulators(String[] keys, NDList labels, NDList predictions) {
        loss.updateAccumulators(keys, labels, predictions);
    }

    @Override
    public void resetAccumulator(String key) {
        loss.resetAccumulator(key);
    }

    @Override
    public float getAccumulator(String key) {
        return loss.getAccumulator(key);
    }
}
