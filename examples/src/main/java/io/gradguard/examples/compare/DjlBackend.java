package io.gradguard.examples.compare;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Activation;
import ai.djl.nn.Parameter;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.nn.recurrent.LSTM;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import ai.djl.util.Pair;
import ai.djl.util.PairList;
import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepContext;
import io.gradguard.core.StepResult;
import io.gradguard.djl.DjlGuard;
import java.util.ArrayList;
import java.util.List;

/**
 * DJL with the PyTorch engine: a {@link SequentialBlock} of {@link Linear} layers and ReLU (MLP),
 * a small vanilla-RNN block (RNN) or DJL's {@link LSTM} block (LSTM) followed by a {@code Linear},
 * trained by a {@link Trainer} with {@code Loss.l2Loss(1)} (= mean squared error) and SGD. Weights
 * are PyTorch's {@code [out, in]}: the canonical weights are loaded transposed. The LSTM block keeps
 * PyTorch's layout ({@code l_0_i2h_WEIGHT [4·hidden, in]}, {@code l_0_h2h_WEIGHT [4·hidden, hidden]},
 * gate order {@code i, f, g, o}, the canonical one) and two biases whose sum acts; the canonical bias
 * goes into {@code l_0_i2h_BIAS}, and {@code l_0_h2h_BIAS} stays frozen at 0, so that the network,
 * its gradient norm and its SGD steps are those of the other frameworks' single bias. Training goes
 * through GradGuard's DJL adapter, {@link DjlGuard}, called where a hand-written loop calls
 * {@code trainer.step()}.
 */
public final class DjlBackend implements Backend {

    static {
        // no downloads, ever: a missing native fails fast (exec:java runs in Maven's JVM, no -D there)
        System.setProperty("ai.djl.offline", "true");
        // networks this small run fastest on one thread (and do not fight over a shared machine's cores)
        System.setProperty("ai.djl.pytorch.num_threads", "1");
        System.setProperty("ai.djl.pytorch.num_interop_threads", "1");
    }

    @Override
    public String id() {
        return "djl";
    }

    @Override
    public String displayName() {
        return "DJL (PyTorch)";
    }

    @Override
    public Model build(Task task, Weights weights) {
        return new DjlModel(task, weights);
    }

    /**
     * {@code h_t = tanh(x_t·Wxᵀ + h_{t-1}·Whᵀ + b)} over a {@code [batch, time, features]} input;
     * outputs {@code h_T}. PyTorch's {@code nn.RNN} with a single bias.
     */
    static final class VanillaRnn extends AbstractBlock {
        private final int hidden;
        private final Parameter wx;
        private final Parameter wh;
        private final Parameter b;

        VanillaRnn(int inputs, int hidden) {
            this.hidden = hidden;
            wx = addParameter(Parameter.builder().setName("Wx").setType(Parameter.Type.WEIGHT).optShape(new Shape(hidden, inputs)).build());
            wh = addParameter(Parameter.builder().setName("Wh").setType(Parameter.Type.WEIGHT).optShape(new Shape(hidden, hidden)).build());
            b = addParameter(Parameter.builder().setName("b").setType(Parameter.Type.BIAS).optShape(new Shape(hidden)).build());
        }

        @Override
        protected NDList forwardInternal(ParameterStore store, NDList inputs, boolean training, PairList<String, Object> params) {
            NDArray x = inputs.singletonOrThrow();
            Device device = x.getDevice();
            // transposes of the parameters would live in the parameters' manager: keep them in the step's
            NDArray wxT = store.getValue(wx, device, training).transpose();
            wxT.attach(x.getManager());
            NDArray whT = store.getValue(wh, device, training).transpose();
            whT.attach(x.getManager());
            NDArray bias = store.getValue(b, device, training);
            NDArray h = null;
            long steps = x.getShape().get(1);
            for (long t = 0; t < steps; t++) {
                NDArray a = x.get(new NDIndex(":, {}, :", t)).matMul(wxT);
                if (h != null) {
                    a = a.add(h.matMul(whT));
                }
                h = a.add(bias).tanh();
            }
            return new NDList(h);
        }

        @Override
        public Shape[] getOutputShapes(Shape[] inputShapes) {
            return new Shape[] {new Shape(inputShapes[0].get(0), hidden)};
        }
    }

    private static final class DjlModel implements Model {
        private static final NDIndex ALL = new NDIndex("...");
        private static final NDIndex LAST_STEP = new NDIndex(":, -1, :");
        private final Task task;
        private final List<Weights.Param> params;
        private final List<long[]> shapes = new ArrayList<>();
        private final ai.djl.Model model;
        private final Trainer trainer;
        private final List<Parameter> parameters = new ArrayList<>();
        private DjlGuard guard;

        DjlModel(Task task, Weights weights) {
            this.task = task;
            this.params = weights.params();
            SequentialBlock net = new SequentialBlock();
            if (task.kind() == Task.Kind.MLP) {
                for (int l = 0; l < task.depth(); l++) {
                    net.add(Linear.builder().setUnits(task.hidden()).build()).add(Activation::relu);
                }
            } else if (task.kind() == Task.Kind.RNN) {
                net.add(new VanillaRnn(task.inputs(), task.hidden()));
            } else {
                net.add(LSTM.builder().setStateSize(task.hidden()).setNumLayers(1).optBatchFirst(true).build())
                        .add(out -> new NDList(out.head().get(LAST_STEP))); // h_T of [batch, time, hidden]
            }
            net.add(Linear.builder().setUnits(1).build());
            model = ai.djl.Model.newInstance(task.id(), Device.cpu());
            model.setBlock(net);
            trainer = model.newTrainer(new DefaultTrainingConfig(Loss.l2Loss("mse", 1f))
                    .optDevices(new Device[] {Device.cpu()})
                    .optOptimizer(Optimizer.sgd().setLearningRateTracker(Tracker.fixed((float) task.learningRate())).build()));
            Shape input = task.kind().recurrent() ? new Shape(task.batch(), task.seqLen(), task.inputs())
                    : new Shape(task.batch(), task.inputs());
            trainer.initialize(input);
            for (Pair<String, Parameter> p : net.getParameters()) {
                if (p.getKey().endsWith("h2h_BIAS")) {
                    p.getValue().getArray().set(ALL, 0f);
                    p.getValue().freeze(true);
                } else {
                    parameters.add(p.getValue());
                }
            }
            if (parameters.size() != params.size()) {
                throw new IllegalArgumentException("weights must hold the " + parameters.size() + " parameters of task " + task.id()
                        + ", got " + params.size());
            }
            try (NDManager m = trainer.getManager().newSubManager()) {
                for (int i = 0; i < params.size(); i++) {
                    Weights.Param p = params.get(i);
                    NDArray array = parameters.get(i).getArray();
                    copyInto(array, m.create(p.shape().length == 2 ? p.transposed() : p.data(), array.getShape()));
                    shapes.add(array.getShape().getShape());
                }
            }
        }

        private double forwardBackward(NDManager m, Batch batch) {
            NDArray x = m.create(batch.x(), new Shape(batch.xShape()));
            NDArray y = m.create(batch.y(), new Shape(batch.size(), 1));
            try (GradientCollector collector = trainer.newGradientCollector()) {
                NDArray loss = trainer.getLoss().evaluate(new NDList(y), trainer.forward(new NDList(x)));
                collector.backward(loss);
                return loss.getFloat();
            }
        }

        /** The gradients as host arrays in DJL's layout; each handle is closed. */
        private List<float[]> gradients() {
            List<float[]> out = new ArrayList<>();
            for (Parameter p : parameters) {
                try (NDArray g = p.getArray().getGradient()) {
                    out.add(g.toType(DataType.FLOAT32, false).toFloatArray());
                }
            }
            return out;
        }

        /** Fills the gradients with 0 (clears NaN too, unlike multiplying by 0). */
        private void zeroGradients() {
            for (Parameter p : parameters) {
                try (NDArray g = p.getArray().getGradient()) {
                    g.set(ALL, 0f);
                }
            }
        }

        /**
         * dst ← src, copying into dst's own storage. (NDArray.set(float[]) would make a CPU tensor
         * alias a Java buffer, which is freed under it once the handle is gone.)
         */
        private static void copyInto(NDArray dst, NDArray src) {
            dst.set(ALL, src);
        }

        @Override
        public Probe probe(Batch batch) {
            try (NDManager m = trainer.getManager().newSubManager()) {
                double loss = forwardBackward(m, batch);
                List<float[]> g = gradients();
                zeroGradients();
                List<float[]> canonical = new ArrayList<>();
                for (int i = 0; i < g.size(); i++) {
                    long[] s = shapes.get(i);
                    canonical.add(s.length == 2 ? Weights.transpose(g.get(i), (int) s[0], (int) s[1]) : g.get(i));
                }
                return new Probe(loss, canonical);
            }
        }

        /**
         * The adapter: {@link DjlGuard#step} where the loop called {@code trainer.step()}. The
         * pipeline runs on PyTorch's gradient tensors; a skipped step resets them and does not step.
         */
        @Override
        public Outcome train(Batch batch, GradientPipeline pipeline) {
            if (guard == null) {
                guard = DjlGuard.of(pipeline);
            } else if (guard.pipeline() != pipeline) {
                throw new IllegalStateException("a model trains under one pipeline: build a new model for another");
            }
            try (NDManager m = trainer.getManager().newSubManager()) {
                double loss = forwardBackward(m, batch);
                StepResult<NDArray> r = guard.step(trainer, StepContext.ofBatch(batch.size()).withLoss(loss));
                return new Outcome(loss, r);
            }
        }

        @Override
        public void close() {
            trainer.close();
            model.close();
        }
    }
}
