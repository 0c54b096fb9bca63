package io.gradguard.dl4j;

import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
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
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayerWithBackprop;
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
 *   <li>Roles and layouts: by layer type and key, as {@link Dl4jLayouts} tabulates (dense and
 *       recurrent weights by column, convolution kernels and embedding rows by axis 0, biases and
 *       batch-norm gamma/beta as one unit); {@link #unknownLayers} names the layers it has no entry for.</li>
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
                Dl4jLayouts.Kind kind = Dl4jLayouts.of(conf, key, g.rank());
                out.add(new GradientTensor<>(layerName + "_" + key, g.shape(), kind.role(), layerName, kind.layout(), g, p.getValue()));
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

    /**
     * Layers with a trained parameter whose role and layout {@link Dl4jLayouts} does not know (its
     * default applies), as "name (Type)", in network order; frozen layers are not trained and not named.
     */
    static List<String> unknownLayers(Model model) {
        List<String> out = new ArrayList<>();
        for (Layer layer : layers(model)) {
            org.deeplearning4j.nn.conf.layers.Layer conf = layer.conf().getLayer();
            if (conf instanceof FrozenLayer || conf instanceof FrozenLayerWithBackprop) {
                continue; // not trained: no gradient reaches the pipeline
            }
            for (Map.Entry<String, INDArray> p : layer.paramTable().entrySet()) {
                if (!isRunningStatistic(conf, p.getKey()) && !Dl4jLayouts.of(conf, p.getKey(), p.getValue().rank()).known()) {
                    out.add(layerName(model, layer) + " (" + conf.getClass().getSimpleName() + ")");
                    break;
                }
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
}
