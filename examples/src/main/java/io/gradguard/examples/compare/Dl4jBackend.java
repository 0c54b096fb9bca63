package io.gradguard.examples.compare;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.Layout;
import io.gradguard.core.StepResult;
import java.util.ArrayList;
import java.util.List;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.recurrent.LastTimeStep;
import org.deeplearning4j.nn.conf.layers.recurrent.SimpleRnn;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;
import org.nd4j.nativeblas.NativeOpsHolder;

/**
 * Deeplearning4j: a {@link MultiLayerNetwork} of {@code DenseLayer}s (MLP) or a {@code SimpleRnn}
 * under {@code LastTimeStep} (RNN), with an identity {@code OutputLayer} and MSE loss. Weights are
 * {@code [nIn, nOut]}, as canonical. The step is driven by hand (compute gradient and score, then
 * the updater, then {@code params -= update}) so that a skipped step really leaves the network
 * alone. DL4J's gradient view holds the sum over the batch; the pipeline sees the mean.
 */
public final class Dl4jBackend implements Backend {

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
            layers.layer(new LastTimeStep(new SimpleRnn.Builder().nIn(task.inputs()).nOut(task.hidden()).activation(Activation.TANH).build()));
            layers.layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(task.hidden()).nOut(1).activation(Activation.IDENTITY).build());
            keys.addAll(List.of("0_W", "0_RW", "0_b", "1_W", "1_b"));
        }
        MultiLayerNetwork net = new MultiLayerNetwork(layers.build());
        net.init();
        if (keys.size() != weights.params().size()) {
            throw new IllegalArgumentException("weights must hold the " + keys.size() + " parameters of task " + task.id()
                    + ", got " + weights.params().size());
        }
        for (int i = 0; i < keys.size(); i++) {
            Weights.Param p = weights.params().get(i);
            long[] shape = net.getParam(keys.get(i)).shape();
            net.setParam(keys.get(i), Nd4j.create(p.data(), shape, 'c'));
        }
        return new Dl4jModel(task, net, keys, weights.params());
    }

    private static final class Dl4jModel implements Model {
        private final Task task;
        private final MultiLayerNetwork net;
        private final List<String> keys;
        private final List<Weights.Param> params;
        private final List<long[]> shapes = new ArrayList<>();
        private int iteration;

        Dl4jModel(Task task, MultiLayerNetwork net, List<String> keys, List<Weights.Param> params) {
            this.task = task;
            this.net = net;
            this.keys = keys;
            this.params = params;
            for (String k : keys) {
                shapes.add(net.getParam(k).shape());
            }
        }

        private double forwardBackward(Batch batch) {
            INDArray x = task.kind() == Task.Kind.MLP
                    ? Nd4j.create(batch.x(), batch.xShape(), 'c')
                    : Nd4j.create(batch.xBatchFeatureTime(), new long[] {batch.size(), task.inputs(), task.seqLen()}, 'c');
            net.setInput(x);
            net.setLabels(Nd4j.create(batch.y(), new long[] {batch.size(), 1}, 'c'));
            net.computeGradientAndScore();
            return net.score();
        }

        /** The gradient of the mean loss, as host arrays in DL4J's (= canonical) layout. */
        private List<float[]> meanGradients(Gradient g, int batchSize) {
            List<float[]> out = new ArrayList<>();
            for (String k : keys) {
                out.add(g.getGradientFor(k).div(batchSize).castTo(DataType.FLOAT).dup('c').data().asFloat());
            }
            return out;
        }

        @Override
        public Probe probe(Batch batch) {
            double loss = forwardBackward(batch);
            return new Probe(loss, meanGradients(net.gradient(), batch.size()));
        }

        @Override
        public Outcome train(Batch batch, GradientPipeline pipeline) {
            double loss = forwardBackward(batch);
            Gradient g = net.gradient();
            List<float[]> grads = meanGradients(g, batch.size());
            StepResult<?> r = HostBridge.step(pipeline, params, shapes, Layout.outputLast(), grads, batch.size(), loss);
            if (r.applies()) {
                for (int i = 0; i < keys.size(); i++) {
                    g.getGradientFor(keys.get(i)).assign(Nd4j.create(grads.get(i), shapes.get(i), 'c').muli(batch.size()));
                }
                net.getUpdater().update(net, g, iteration, 0, batch.size(), LayerWorkspaceMgr.noWorkspaces());
                net.params().subi(g.gradient());
                iteration++;
                net.setIterationCount(iteration);
            }
            return new Outcome(loss, r);
        }

        @Override
        public void close() {
            net.close();
        }
    }
}
