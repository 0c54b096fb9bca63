package io.gradguard.tensorflow;

import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.tensorflow.Graph;
import org.tensorflow.GraphOperation;
import org.tensorflow.Operand;
import org.tensorflow.Output;
import org.tensorflow.Result;
import org.tensorflow.Session;
import org.tensorflow.Tensor;
import org.tensorflow.exceptions.TensorFlowException;
import org.tensorflow.internal.types.registry.TensorTypeRegistry;
import org.tensorflow.ndarray.NdArrays;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.StdArrays;
import org.tensorflow.op.Op;
import org.tensorflow.op.Ops;
import org.tensorflow.op.core.Placeholder;
import org.tensorflow.op.train.Restore;
import org.tensorflow.proto.DataType;
import org.tensorflow.types.TString;
import org.tensorflow.types.family.TType;

/**
 * One TensorFlow checkpoint (the V2 format {@code session.save} writes) holding every
 * {@code VariableV2} of the graph (model and optimizer slots, under their op names) and GradGuard's
 * state (the bytes of {@code pipeline.saveState}) under {@link TfGuard#STATE_KEY}.
 *
 * <p>The optimizer's slots appear in the graph with the first applying step. A checkpoint restored
 * before that holds values for variables the graph does not have yet: they are kept on the host and
 * assigned when the slots appear ({@link #slotsCreated}), and a save in between writes them back
 * unchanged, so save-after-restore round-trips exactly.
 */
final class TfCheckpoint implements AutoCloseable {
    private record Saver(List<String> names, Op op, Output<TString> file, Output<TString> state, List<Output<?>> pendingFeeds) {
    }

    private final Session session;
    private Saver saver;
    /** Values of a restored checkpoint for variables the graph does not have yet (the optimizer's slots), by name. */
    private final Map<String, Tensor> pending = new LinkedHashMap<>();

    TfCheckpoint(Session session) {
        this.session = session;
    }

    /** Writes the graph's variables, the pending values and {@code state} to {@code prefix}. */
    /**
     * Writes the checkpoint crash-safe file by file: TensorFlow writes it under a temporary prefix in
     * the same directory, the files are forced to disk and each is renamed atomically over its old
     * file, the {@code .index} last (see {@link TfGuard#save}).
     */
    void save(String prefix, byte[] state) throws IOException {
        java.nio.file.Path target = java.nio.file.Path.of(prefix).toAbsolutePath();
        java.nio.file.Files.createDirectories(target.getParent());
        java.nio.file.Path marker = io.gradguard.core.internal.AtomicFiles.temporaryFor(target);
        String tmp = marker.toString();
        List<java.nio.file.Path> written = new ArrayList<>();
        try {
            write(tmp, state);
            try (java.util.stream.Stream<java.nio.file.Path> files = java.nio.file.Files.list(target.getParent())) {
                files.filter(f -> f.getFileName().toString().startsWith(marker.getFileName() + "."))
                        .sorted(java.util.Comparator.comparing(f -> f.toString().endsWith(".index")))
                        .forEach(written::add);
            }
            for (java.nio.file.Path f : written) {
                io.gradguard.core.internal.AtomicFiles.force(f);
            }
            for (java.nio.file.Path f : written) {
                io.gradguard.core.internal.AtomicFiles.replace(f,
                        java.nio.file.Path.of(target + f.toString().substring(tmp.length())));
            }
        } finally {
            for (java.nio.file.Path f : written) {
                java.nio.file.Files.deleteIfExists(f);
            }
            java.nio.file.Files.deleteIfExists(marker);
        }
    }

    private void write(String prefix, byte[] state) {
        List<GraphOperation> vars = graphVariables(session.graph());
        List<String> names = new ArrayList<>();
        for (GraphOperation v : vars) {
            names.add(v.name());
        }
        names.addAll(pending.keySet());
        if (saver == null || !saver.names().equals(names)) {
            saver = buildSaver(names, vars);
        }
        try (TString file = TString.scalarOf(prefix);
                TString stateTensor = TString.tensorOfBytes(NdArrays.scalarOfObject(state))) {
            Session.Runner r = session.runner().addTarget(saver.op()).feed(saver.file(), file).feed(saver.state(), stateTensor);
            int i = 0;
            for (Tensor t : pending.values()) {
                r.feed(saver.pendingFeeds().get(i++), t);
            }
            r.run().close();
        }
    }

    private Saver buildSaver(List<String> names, List<GraphOperation> vars) {
        Ops tf = Ops.create(session.graph()).withSubScope("gradguard_save");
        Placeholder<TString> file = tf.placeholder(TString.class);
        Placeholder<TString> state = tf.placeholder(TString.class, Placeholder.shape(Shape.scalar()));
        List<Operand<?>> tensors = new ArrayList<>();
        List<String> described = new ArrayList<>();
        for (GraphOperation v : vars) {
            tensors.add(v.output(0));
            described.add(v.name() + "\t" + v.output(0).dataType().name());
        }
        List<Output<?>> feeds = new ArrayList<>();
        for (Map.Entry<String, Tensor> e : pending.entrySet()) {
            Output<?> fed = placeholder(tf, TensorTypeRegistry.find(e.getValue().dataType()).type());
            feeds.add(fed);
            tensors.add(fed);
            described.add(e.getKey() + "\t" + e.getValue().dataType().name());
        }
        tensors.add(state);
        tensors.add(tf.constant(String.join("\n", described)));
        List<String> keys = new ArrayList<>(names);
        keys.add(TfGuard.STATE_KEY);
        keys.add(TfGuard.VARIABLES_KEY);
        Operand<TString> k = strings(tf, keys.toArray(new String[0]));
        Op save = tf.train.save(file, k, tf.zerosLike(k), tensors);
        return new Saver(List.copyOf(names), save, file.output(), state.output(), feeds);
    }

    /** Applies GradGuard's state of a checkpoint, before any variable is touched; throws to leave everything unchanged. */
    interface StateRestorer {
        void restore(byte[] state) throws IOException;
    }

    /**
     * Restores GradGuard's state (through {@code restorer}, first: if it throws, nothing changes),
     * the graph's variables, and keeps the values of variables the graph does not have yet.
     */
    void restore(String prefix, StateRestorer restorer) throws IOException {
        Ops tf = Ops.create(session.graph()).withSubScope("gradguard_restore");
        Placeholder<TString> file = tf.placeholder(TString.class);
        Restore header = read(tf, file, List.of(TfGuard.STATE_KEY, TfGuard.VARIABLES_KEY), List.of(TString.class, TString.class));
        byte[] state;
        Map<String, Class<? extends TType>> saved = new LinkedHashMap<>();
        try (TString f = TString.scalarOf(prefix);
                Result r = session.runner().feed(file, f).fetch(header.tensors().get(0)).fetch(header.tensors().get(1)).run()) {
            state = ((TString) r.get(0)).asBytes().getObject();
            for (String line : ((TString) r.get(1)).getObject().split("\n")) {
                String[] nameAndType = line.split("\t");
                saved.put(nameAndType[0], TensorTypeRegistry.find(DataType.valueOf(nameAndType[1])).type());
            }
        } catch (TensorFlowException e) {
            throw new IllegalArgumentException("prefix " + prefix + " names no checkpoint with GradGuard's state (key " + TfGuard.STATE_KEY
                    + "): restore a checkpoint written by TfGuard.save; one written by session.save holds the model alone "
                    + "(restore it with session.restore). TensorFlow says: " + e.getMessage(), e);
        }
        List<GraphOperation> vars = graphVariables(session.graph());
        List<String> missing = new ArrayList<>();
        Map<String, Class<? extends TType>> notInGraph = new LinkedHashMap<>(saved);
        for (GraphOperation v : vars) {
            if (notInGraph.remove(v.name()) == null) {
                missing.add(v.name());
            }
        }
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("the checkpoint " + prefix + " lacks variables of this graph " + missing
                    + " (it holds " + new TreeSet<>(saved.keySet()) + "): build the graph as the saved one was, and restore "
                    + "before the first step");
        }
        restorer.restore(state);
        assignFromFile(tf, file, prefix, vars);
        closePending();
        if (!notInGraph.isEmpty()) {
            List<String> names = new ArrayList<>(notInGraph.keySet());
            Restore values = read(tf, file, names, new ArrayList<>(notInGraph.values()));
            try (TString f = TString.scalarOf(prefix)) {
                Session.Runner runner = session.runner().feed(file, f);
                values.tensors().forEach(runner::fetch);
                // not closed as a whole: its tensors now belong to pending (closed with it)
                Result r = runner.run();
                for (int i = 0; i < names.size(); i++) {
                    pending.put(names.get(i), r.get(i));
                }
            }
        }
    }

    /** Reads these keys of the checkpoint whose prefix is fed to {@code file}. */
    private static Restore read(Ops tf, Placeholder<TString> file, List<String> names, List<Class<? extends TType>> types) {
        Operand<TString> keys = strings(tf, names.toArray(new String[0]));
        return tf.train.restore(file, keys, tf.zerosLike(keys), types);
    }

    /**
     * The optimizer created these variables (its slots): assign the restored checkpoint's values to
     * those it holds (one saved before the first update holds none: they keep their initial values,
     * the state of an optimizer that never updated). Values for variables that did not appear are
     * dropped: the first branch's slots carry the optimizer's state.
     */
    @SuppressWarnings({"unchecked", "rawtypes"})
    void slotsCreated(List<GraphOperation> created) {
        if (pending.isEmpty()) {
            return;
        }
        session.initialize();
        Ops tf = Ops.create(session.graph()).withSubScope("gradguard_restore");
        Session.Runner runner = session.runner();
        boolean any = false;
        for (GraphOperation v : created) {
            Tensor value = pending.get(v.name());
            if (value != null) {
                Output<?> fed = placeholder(tf, v.output(0).type());
                runner.addTarget(tf.assign((Operand) v.output(0), (Operand) fed)).feed(fed, value);
                any = true;
            }
        }
        if (any) {
            runner.run().close();
        }
        closePending();
    }

    /** Assigns the checkpoint's values to these variables (running the graph's pending initializers first, so they do not run later). */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private void assignFromFile(Ops tf, Placeholder<TString> file, String prefix, List<GraphOperation> vars) {
        if (vars.isEmpty()) {
            return;
        }
        session.initialize();
        List<String> names = new ArrayList<>();
        List<Class<? extends TType>> types = new ArrayList<>();
        for (GraphOperation v : vars) {
            names.add(v.name());
            types.add((Class<? extends TType>) v.output(0).type());
        }
        Restore values = read(tf, file, names, types);
        try (TString f = TString.scalarOf(prefix)) {
            Session.Runner runner = session.runner().feed(file, f);
            for (int i = 0; i < vars.size(); i++) {
                runner.addTarget(tf.assign((Operand) vars.get(i).output(0), (Operand) values.tensors().get(i)));
            }
            runner.run().close();
        } catch (TensorFlowException e) {
            throw new IllegalArgumentException("the checkpoint " + prefix + " does not fit this graph (variables " + names
                    + "): build the graph as the saved one was. TensorFlow says: " + e.getMessage(), e);
        }
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Output<?> placeholder(Ops tf, Class<?> type) {
        return tf.placeholder((Class) type).output();
    }

    private static Operand<TString> strings(Ops tf, String... values) {
        return tf.constant(StdArrays.ndCopyOf(values));
    }

    /** The graph's {@code VariableV2} ops, as {@code session.save} collects them. */
    static List<GraphOperation> graphVariables(Graph graph) {
        List<GraphOperation> vars = new ArrayList<>();
        for (var it = graph.operations(); it.hasNext(); ) {
            GraphOperation op = it.next();
            if (op.type().equals("VariableV2")) {
                vars.add(op);
            }
        }
        return vars;
    }

    private void closePending() {
        pending.values().forEach(Tensor::close);
        pending.clear();
    }

    @Override
    public void close() {
        closePending();
    }
}
