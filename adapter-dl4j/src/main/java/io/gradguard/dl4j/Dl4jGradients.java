package io.gradguard.dl4j;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.layers.BaseLayer;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.Deconvolution2D;
import org.deeplearning4j.nn.conf.layers.DepthwiseConvolution2D;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Builds GradGuard's view of a DL4J network's gradients after backprop: one {@link GradientTensor}
 * per trainable parameter, holding DL4J's own gradient view (a view into the network's single
 * flattened gradient array, changed in place) and the parameter's value view.
 *
 * <ul>
 *   <li>Names are DL4J's gradient keys: {@code "0_W"} (MultiLayerNetwork: layer index) or
 *       {@code "dense1_W"} (ComputationGraph: layer name); the layer is that prefix.</li>
 *   <li>Roles: {@code W}, {@code RW}, {@code pW} → {@link Role#WEIGHT}; {@code b} → {@link Role#BIAS};
 *       anything else (batch-norm gamma/beta...) → {@link Role#OTHER}.</li>
 *   <li>Layouts: rank ≤ 2 (dense, embedding, recurrent: {@code [nIn, nOut]}) and depthwise kernels
 *       {@code [kH, kW, nIn, m]} → {@link Layout#outputLast()}; convolution kernels
 *       {@code [nOut, nIn, kH, kW]} (and other kernels of rank ≥ 3) → {@link Layout#outputFirst()};
 *       2-D deconvolution kernels {@code [nIn, nOut, kH, kW]} → {@code outputAxis(1)}.</li>
 *   <li>Left out: batch-norm running statistics ({@code mean}, {@code var}, {@code log10stdev},
 *       which DL4J updates with its own rule and does not divide by the batch size) and parameters
 *       without a gradient (frozen layers).</li>
 * </ul>
 */
final class Dl4jGradients {
    private Dl4jGradients() {
    }

    /**
     * The network's gradients, in parameter order.
     *
     * @throws IllegalStateException if the network has no gradient yet (no backprop ran)
     */
    static GradientSet<INDArray> of(Model model) {
        Gradient gradient = model.gradient();
        if (gradient == null) {
            throw new IllegalStateException("the network has no gradient yet: call computeGradientAndScore() (or fit) first");
        }
        Map<String, INDArray> grads = gradient.gradientForVariable();
        List<GradientTensor<INDArray>> out = new ArrayList<>();
        for (Layer layer : layers(model)) {
            String layerName = layerName(model, layer);
            org.deeplearning4j.nn.conf.layers.Layer conf = layer.conf().getLayer();
            for (Map.Entry<String, INDArray> p : layer.paramTable().entrySet()) {
                String key = p.getKey();
                INDArray g = grads.get(layerName + "_" + key);
                if (g == null || isRunningStatistic(conf, key)) {
                    continue;
                }
                out.add(new GradientTensor<>(layerName + "_" + key, g.shape(), role(key), layerName,
                        layout(conf, g.rank()), g, p.getValue()));
            }
        }
        return GradientSet.of(out);
    }

    /**
     * Whether the gradients {@link #of} returns are exactly the ones DL4J's updater divides by the
     * batch size (every parameter with {@code updaterDivideByMinibatch}, nothing else): then the
     * {@link Dl4jTrainer} may make that division itself. Not so with a batch normalization the
     * running statistics of which {@link #of} does not recognise (inside a wrapper layer) or a
     * parameter without a gradient entry (a frozen layer): the driver then leaves the division to DL4J.
     */
    static boolean coversMinibatchDivision(Model model) {
        Set<String> divided = new HashSet<>();
        for (Layer layer : layers(model)) {
            for (String key : layer.paramTable(false).keySet()) {
                if (layer.updaterDivideByMinibatch(key)) {
                    divided.add(layerName(model, layer) + "_" + key);
                }
            }
        }
        Set<String> ours = new HashSet<>();
        for (GradientTensor<INDArray> t : of(model)) {
            ours.add(t.name());
        }
        return ours.equals(divided);
    }

    /** Layers that have DL4J's own gradient normalization configured, with the mode (layer name → mode). */
    static Map<String, GradientNormalization> builtInNormalization(Model model) {
        Map<String, GradientNormalization> out = new LinkedHashMap<>();
        for (Layer layer : layers(model)) {
            if (layer.conf().getLayer() instanceof BaseLayer b && b.getGradientNormalization() != null
                    && b.getGradientNormalization() != GradientNormalization.None) {
                out.put(layerName(model, layer), b.getGradientNormalization());
            }
        }
        return out;
    }

    /** Whether the network's updater divides the gradient by the minibatch size (DL4J's default). */
    static boolean dividesByBatch(Model model) {
        return model.conf() == null || model.conf().isMiniBatch();
    }

    static Layer[] layers(Model model) {
        if (model instanceof MultiLayerNetwork n) {
            return n.getLayers();
        }
        if (model instanceof ComputationGraph g) {
            return g.getLayers();
        }
        throw new IllegalArgumentException("model must be a MultiLayerNetwork or a ComputationGraph, got "
                + (model == null ? "null" : model.getClass().getName()));
    }

    private static String layerName(Model model, Layer layer) {
        return model instanceof MultiLayerNetwork ? Integer.toString(layer.getIndex()) : layer.conf().getLayer().getLayerName();
    }

    private static boolean isRunningStatistic(org.deeplearning4j.nn.conf.layers.Layer conf, String key) {
        return conf instanceof BatchNormalization && !key.equals("gamma") && !key.equals("beta");
    }

    static Role role(String key) {
        return switch (key) {
            case "W", "RW", "pW" -> Role.WEIGHT;
            case "b" -> Role.BIAS;
            default -> Role.OTHER;
        };
    }

    static Layout layout(org.deeplearning4j.nn.conf.layers.Layer conf, int rank) {
        if (rank <= 2 || conf instanceof DepthwiseConvolution2D) {
            return Layout.outputLast();
        }
        if (conf instanceof Deconvolution2D) {
            return Layout.outputAxis(1);
        }
        return Layout.outputFirst();
    }
}
