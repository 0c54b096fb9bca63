package io.gradguard.dl4j;

import io.gradguard.core.GradientTransform;
import io.gradguard.core.transform.LossScale;
import java.io.IOException;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.api.layers.IOutputLayer;
import org.deeplearning4j.nn.conf.layers.BaseOutputLayer;
import org.deeplearning4j.nn.conf.layers.CenterLossOutputLayer;
import org.deeplearning4j.nn.conf.layers.LossLayer;
import org.deeplearning4j.nn.conf.ocnn.OCNNOutputLayer;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.activations.IActivation;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.lossfunctions.ILossFunction;
import org.nd4j.shade.jackson.core.JsonGenerator;
import org.nd4j.shade.jackson.databind.SerializerProvider;
import org.nd4j.shade.jackson.databind.annotation.JsonSerialize;
import org.nd4j.shade.jackson.databind.jsontype.TypeSerializer;
import org.nd4j.shade.jackson.databind.ser.std.StdSerializer;

/**
 * An output layer's loss function whose gradient is multiplied by the guard's loss scale
 * ({@link Dl4jGuard#lossScale()}) before backprop goes on, for a pipeline that starts with
 * {@link LossScale} ({@code Transforms.dynamicLossScale()}): backprop is linear in the loss
 * gradient, so every parameter gradient comes out × S, as if the loss had been multiplied by S, and
 * the {@code LossScale} stage divides it back. The score (what DL4J reports and the pipeline sees
 * as the loss) stays unscaled; L1/L2 are added by DL4J's updater, after the pipeline.
 *
 * <p>Saved configurations hold the wrapped loss function itself ({@link AsWrapped}): a network
 * saved with {@code ModelSerializer} loads without GradGuard, and is scaled again once a guard is
 * installed on it.
 */
@JsonSerialize(using = ScaledLoss.AsWrapped.class)
final class ScaledLoss implements ILossFunction {
    private static final long serialVersionUID = 1L;

    private final ILossFunction loss;
    private final transient Dl4jGuard guard;

    private ScaledLoss(ILossFunction loss, Dl4jGuard guard) {
        this.loss = loss;
        this.guard = guard;
    }

    /** Whether {@code transforms} need the loss scaled (a {@link LossScale} stage). */
    static boolean needed(Iterable<GradientTransform> transforms) {
        for (GradientTransform t : transforms) {
            if (t instanceof LossScale) {
                return true;
            }
        }
        return false;
    }

    /**
     * Wraps the loss function of every output layer of {@code model} (once; a wrapper of another
     * guard is replaced).
     *
     * @throws IllegalStateException if an output layer computes part of its gradient outside its
     *     loss function (center loss, one-class) or has none GradGuard knows
     */
    static void wrapOutputs(Model model, Dl4jGuard guard) {
        for (Layer layer : Dl4jGradients.layers(model)) {
            if (!(layer instanceof IOutputLayer)) {
                continue;
            }
            org.deeplearning4j.nn.conf.layers.Layer conf = layer.conf().getLayer();
            if (conf instanceof BaseOutputLayer out && !(conf instanceof CenterLossOutputLayer)
                    && !(conf instanceof OCNNOutputLayer)) {
                out.setLossFn(wrap(out.getLossFn(), guard));
            } else if (conf instanceof LossLayer out) {
                out.setLossFn(wrap(out.getLossFn(), guard));
            } else {
                throw new IllegalStateException("output layer " + conf.getLayerName() + " (" + conf.getClass().getSimpleName()
                        + ") computes its gradient in a way GradGuard cannot multiply by the loss scale: remove the loss-scale "
                        + "stage from the pipeline (float32 training does not need it), or use an OutputLayer or LossLayer");
            }
        }
    }

    private static ScaledLoss wrap(ILossFunction loss, Dl4jGuard guard) {
        return new ScaledLoss(loss instanceof ScaledLoss s ? s.loss : loss, guard);
    }

    @Override
    public double computeScore(INDArray labels, INDArray preOutput, IActivation activationFn, INDArray mask, boolean average) {
        return loss.computeScore(labels, preOutput, activationFn, mask, average);
    }

    @Override
    public INDArray computeScoreArray(INDArray labels, INDArray preOutput, IActivation activationFn, INDArray mask) {
        return loss.computeScoreArray(labels, preOutput, activationFn, mask);
    }

    @Override
    public INDArray computeGradient(INDArray labels, INDArray preOutput, IActivation activationFn, INDArray mask) {
        return scaled(loss.computeGradient(labels, preOutput, activationFn, mask));
    }

    @Override
    public Pair<Double, INDArray> computeGradientAndScore(INDArray labels, INDArray preOutput, IActivation activationFn,
            INDArray mask, boolean average) {
        Pair<Double, INDArray> p = loss.computeGradientAndScore(labels, preOutput, activationFn, mask, average);
        return new Pair<>(p.getFirst(), scaled(p.getSecond()));
    }

    private INDArray scaled(INDArray gradient) {
        double s = guard == null ? 1.0 : guard.lossScale();
        return s == 1.0 ? gradient : gradient.muli(s);
    }

    @Override
    public String name() {
        return loss.name();
    }

    @Override
    public String toString() {
        return "ScaledLoss(" + loss + ")";
    }

    /** Writes the wrapped loss function in place of the wrapper, with its own type id. */
    static final class AsWrapped extends StdSerializer<ScaledLoss> {
        private static final long serialVersionUID = 1L;

        AsWrapped() {
            super(ScaledLoss.class);
        }

        @Override
        public void serialize(ScaledLoss value, JsonGenerator gen, SerializerProvider provider) throws IOException {
            provider.findTypedValueSerializer(value.loss.getClass(), true, null).serialize(value.loss, gen, provider);
        }

        @Override
        public void serializeWithType(ScaledLoss value, JsonGenerator gen, SerializerProvider provider, TypeSerializer typeSer)
                throws IOException {
            serialize(value, gen, provider);
        }
    }
}
