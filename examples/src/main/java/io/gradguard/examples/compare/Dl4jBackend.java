package io.gradguard.examples.compare;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepResult;
import io.gradguard.dl4j.Dl4jGuard;
import java.util.ArrayList;
import java.util.List;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.LSTM;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.recurrent.LastTimeStep;
import org.deeplearning4j.nn.conf.layers.recurrent.SimpleRnn;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;
import org.nd4j.nativeblas.NativeOpsHolder;

/**
 * Deeplearning4j: a {@link MultiLayerNetwork} of {@code DenseLayer}s (MLP), or a {@code SimpleRnn}
 * (RNN) or an {@code LSTM} (LSTM: no peepholes, sigmoid gates, tanh) under {@code LastTimeStep}, with
 * an identity {@code OutputLayer} and MSE loss. Weights are {@code [nIn, nOut]}, as canonical; the
 * LSTM's {@code W [nIn, 4·nOut]}, {@code RW [nOut, 4·nOut]} and {@code b [1, 4·nOut]} stack their
 * gate blocks in DL4J's order (see {@code LSTMHelpers}): the cell candidate (DL4J's "input
 * activation", through the layer's tanh), forget, output, then the input gate (DL4J's "input
 * modulation" gate), i.e. the canonical {@code g, f, o, i}. Training goes through GradGuard's DL4J
 * step driver, {@link Dl4jGuard#step} (backprop, the pipeline on ND4J's gradient, then DL4J's updater only when
 * the step applies), so that a skipped step really leaves the network alone. DL4J's gradient view
 * holds the sum over the batch; the adapter hands the pipeline the mean.
 */
public final class Dl4jBackend implements Backend {

    /** DL4J's LSTM gate block {@code k} is the canonical ({@code i, f, g, o}) block {@code DL4J_GATES[k]}: g, f, o, i. */
    static final int[] DL4J_GATES = {2, 1, 3, 0};

    @Override
    public String id() {
        return "dl4j";
    }

    @Override
    public String displayName() {
        return "DL4J";
    }

    @Override
    public Model build(Task task, Weights weights) {
        // networks this small run fastest on one thread (and do not fight over a shared machine's cores)
        Nd4j.getEnvironment().setMaxThreads(1);
        Nd4j.getEnvironment().setMaxMasterThreads(1);
        NativeOpsHolder.getInstance().getDeviceNativeOps().setOmpNumThreads(1);
        NeuralNetConfiguration.ListBuilder layers = new NeuralNetConfiguration.Builder()
                .dataType(DataType.FLOAT)
                .updater(new Sgd(task.learningRate()))
                .weightInit(WeightInit.ZERO)
                .list();
        List<String> keys = new ArrayList<>();
        if (task.kind() == Task.Kind.MLP) {
            int in = task.inputs();
            for (int l = 0; l < task.depth(); l++) {
                layers.layer(new DenseLayer.Builder().nIn(in).nOut(task.hidden()).activation(Activation.RELU).build());
                keys.add(l + "_W");
                keys.add(l + "_b");
                in = task.hidden();
            }
            layers.layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(in).nOut(1).activation(Activation.IDENTITY).build());
            keys.add(task.depth() + "_W");
            keys.add(task.depth() + "_b");
        } else {
            layers.layer(new LastTimeStep(task.kind() == Task.Kind.RNN
                    ? new SimpleRnn.Builder().nIn(task.inputs()).nOut(task.hidden()).activation(Activation.TANH).build()
                    : new LSTM.Builder().nIn(task.inputs()).nOut(task.hidden()).activation(Activation.TANH)
                            .gateActivationFunction(Activation.SIGMOID).build()));
            layers.layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(task.hidden()).nOut(1).activation(Activation.IDENTITY).build());
            keys.addAll(List.of("0_W", "0_RW", "0_b", "1_W", "1_b"));
        }
        boolean gates = task.kind() == Task.Kind.LSTM;
        MultiLayerNetwork net = new MultiLayerNetwork(layers.build());
        net.init();
        if (keys.size() != weights.params().size()) {
            throw new IllegalArgumentException("weights must hold the " + keys.size() + " parameters of task " + task.id()
                    + ", got " + weights.params().size());
        }
        for (int i = 0; i < keys.size(); i++) {
            Weights.Param p = weights.params().get(i);
            long[] shape = net.getParam(keys.get(i)).shape();
            float[] data = gates && keys.get(i).startsWith("0_") ? Weights.permuteColumnBlocks(p.data(), p.cols(), DL4J_GATES) : p.data();
            net.setParam(keys.get(i), Nd4j.create(data, shape, 'c'));
        }
        return new Dl4jModel(task, net, keys);
    }

    private static final class Dl4jModel implements Model {
        private final Task task;
        private final MultiLayerNetwork net;
        private final List<String> keys;
        private Dl4jGuard guard;

        Dl4jModel(Task task, MultiLayerNetwork net, List<String> keys) {
            this.task = task;
            this.net = net;
            this.keys = keys;
        }

        private DataSet dataSet(Batch batch) {
            INDArray x = task.kind().recurrent()
                    ? Nd4j.create(batch.xBatchFeatureTime(), new long[] {batch.size(), task.inputs(), task.seqLen()}, 'c')
                    : Nd4j.create(batch.x(), batch.xShape(), 'c');
            return new DataSet(x, Nd4j.create(batch.y(), new long[] {batch.size(), 1}, 'c'));
        }

        /** The gradient of the mean loss, as host arrays in DL4J's (= canonical) layout. */
        @Override
        public Probe probe(Batch batch) {
            DataSet data = dataSet(batch);
            net.setInput(data.getFeatures());
            net.setLabels(data.getLabels());
            net.computeGradientAndScore();
            List<float[]> out = new ArrayList<>();
            for (String k : keys) {
                INDArray g = net.gradient().getGradientFor(k);
                float[] mean = g.div(batch.size()).castTo(DataType.FLOAT).dup('c').data().asFloat();
                out.add(task.kind() == Task.Kind.LSTM && k.startsWith("0_")
                        ? Weights.permuteColumnBlocks(mean, (int) g.size(g.rank() - 1), Weights.inverse(DL4J_GATES)) : mean);
            }
            return new Probe(net.score(), out);
        }

        /**
         * The adapter's step driver: backprop, the pipeline on ND4J's gradient (as the batch mean),
         * and DL4J's updater only when the step applies.
         */
        @Override
        public Outcome train(Batch batch, GradientPipeline pipeline) {
            if (guard == null) {
                guard = Dl4jGuard.of(pipeline);
            } else if (guard.pipeline() != pipeline) {
                throw new IllegalStateException("a model trains under one pipeline: build a new model for another");
            }
            DataSet data = dataSet(batch);
            try {
                StepResult<INDArray> r = guard.step(net, data);
                return new Outcome(net.score(), r);
            } finally {
                data.getFeatures().close();
                data.getLabels().close();
            }
        }

        @Override
        public void close() {
            net.close();
        }
    }
}
