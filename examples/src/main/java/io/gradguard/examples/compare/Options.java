package io.gradguard.examples.compare;

import io.gradguard.core.GradientTransform;
import io.gradguard.core.Transforms;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The comparison's command-line options, validated. Every problem is an
 * {@link IllegalArgumentException} whose message is the one line the user sees.
 *
 * @param backends which frameworks, in order
 * @param tasks    which tasks, in order
 * @param steps    SGD steps per run
 * @param seed     seed of the initial weights and the data (of the first run, with several seeds)
 * @param seeds    how many seeds each cell runs: {@code seed, seed + 1, ..., seed + seeds - 1}
 * @param pipeline the guard, as written on the command line
 * @param out      the output folder
 */
public record Options(List<Backend> backends, List<Task> tasks, int steps, long seed, int seeds, String pipeline, Path out) {

    /** Every backend, by command-line name. */
    public static Map<String, Backend> allBackends() {
        Map<String, Backend> m = new LinkedHashMap<>();
        for (Backend b : List.of(new TfBackend(), new Dl4jBackend(), new DjlBackend())) {
            m.put(b.id(), b);
        }
        return m;
    }

    /** The seeds each cell runs, in order: {@code seed, seed + 1, ...}. */
    public List<Long> seedList() {
        List<Long> out = new ArrayList<>();
        for (int i = 0; i < seeds; i++) {
            out.add(seed + i);
        }
        return out;
    }

    static final String DEFAULT_PIPELINE = "skip,clip";
    static final int DEFAULT_STEPS = 500;
    /** Three seeds by default: one seed's table cannot tell a robust result from a lucky run. */
    static final int DEFAULT_SEEDS = 3;

    public static final String HELP = """
            GradGuard framework comparison: trains the same networks from the same initial weights on the same
            seeded data with TensorFlow Java, DL4J and DJL, first unguarded, then guarded by a GradGuard
            pipeline, and reports what happened (table on the console, charts in an HTML report).

            Tasks: mlp     a deep ReLU MLP (8 x 64) on a regression task, SGD with an aggressive learning rate
                   adding  a vanilla tanh RNN on the adding problem (Hochreiter & Schmidhuber 1997), T = 32
                   lstm    an LSTM (16 cells) on the adding problem at T = 40, where the vanilla RNN does not learn

            Options:
              --backends LIST   comma-separated, from tf, dl4j, djl                       (default: all)
              --tasks LIST      comma-separated, from mlp, adding, lstm                   (default: all)
              --steps N         SGD steps per run, N >= 1                                 (default: 500)
              --seed S          seed of the initial weights and the data                  (default: 42)
              --seeds N         run every cell with N seeds (S, S+1, ...): median, range,  (default: 3)
                                how many runs learned or diverged; 1: a row per run
              --pipeline SPEC   the guard, comma-separated stages, applied in this order  (default: skip,clip)
                                  skip[=N]       skip NaN/Inf steps, up to N in a row; the next one in a row throws (3)
                                  zero           replace NaN/Inf gradient elements by 0
                                  clip[=C]       clip the global L2 norm to C (default per task: mlp 5, adding 1, lstm 1)
                                  clipLayer=C    clip each layer's L2 norm to C
                                  clipValue=C    clip every element to [-C, C]
              --out DIR         output folder for report.html                             (default: gradguard-out)
              --help            this text

            Run from the repository root:
              mvn -B -q -pl examples -am package exec:java -DskipTests
              mvn -B -q -pl examples -am package exec:java -DskipTests -Dexec.args="--backends djl --steps 200"
            """;

    /**
     * Parses the command line.
     *
     * @return the options, or {@code null} when {@code --help} was asked for
     * @throws IllegalArgumentException with a one-line message for any bad option
     */
    public static Options parse(String... args) {
        Map<String, Backend> known = allBackends();
        List<Backend> backends = new ArrayList<>(known.values());
        List<Task> tasks = Task.all();
        int steps = DEFAULT_STEPS;
        long seed = 42;
        int seeds = DEFAULT_SEEDS;
        String pipeline = DEFAULT_PIPELINE;
        String out = "gradguard-out";
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--help") || a.equals("-h")) {
                return null;
            }
            if (!a.startsWith("--")) {
                throw new IllegalArgumentException("unexpected argument '" + a + "'");
            }
            String value;
            int eq = a.indexOf('=');
            if (eq > 0) {
                value = a.substring(eq + 1);
                a = a.substring(0, eq);
            } else {
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException("option " + a + " needs a value");
                }
                value = args[++i];
            }
            switch (a) {
                case "--backends" -> {
                    backends = new ArrayList<>();
                    for (String id : list(a, value)) {
                        Backend b = known.get(id);
                        if (b == null) {
                            throw new IllegalArgumentException("unknown backend '" + id + "' (choose from " + String.join(", ", known.keySet()) + ")");
                        }
                        backends.add(b);
                    }
                }
                case "--tasks" -> {
                    tasks = new ArrayList<>();
                    for (String id : list(a, value)) {
                        tasks.add(Task.all().stream().filter(t -> t.id().equals(id)).findFirst().orElseThrow(
                                () -> new IllegalArgumentException("unknown task '" + id + "' (choose from "
                                        + String.join(", ", Task.all().stream().map(Task::id).toList()) + ")")));
                    }
                }
                case "--steps" -> {
                    steps = (int) number(a, value, 1, 10_000_000);
                }
                case "--seed" -> seed = number(a, value, Long.MIN_VALUE, Long.MAX_VALUE);
                case "--seeds" -> seeds = (int) number(a, value, 1, 1000);
                case "--pipeline" -> {
                    pipeline = value;
                    guard(value, Task.deepMlp());
                }
                case "--out" -> out = value;
                default -> throw new IllegalArgumentException("unknown option " + a + " (see --help)");
            }
        }
        return new Options(List.copyOf(backends), List.copyOf(tasks), steps, seed, seeds, pipeline, writableFolder(out));
    }

    /** The guard's transforms for a task, from a pipeline spec. */
    public static List<GradientTransform> guard(String spec, Task task) {
        List<GradientTransform> out = new ArrayList<>();
        for (String stage : list("--pipeline", spec)) {
            int eq = stage.indexOf('=');
            String name = eq < 0 ? stage : stage.substring(0, eq);
            String arg = eq < 0 ? null : stage.substring(eq + 1);
            try {
                out.add(switch (name) {
                    case "skip" -> Transforms.skipNonFinite(arg == null ? 3 : Integer.parseInt(arg));
                    case "zero" -> noArg(stage, arg, Transforms.zeroNonFinite());
                    case "clip" -> Transforms.clipByGlobalNorm(arg == null ? task.clipNorm() : Double.parseDouble(arg));
                    case "clipLayer" -> Transforms.clipByLayerNorm(Double.parseDouble(required(stage, arg)));
                    case "clipValue" -> Transforms.clipByValue(Double.parseDouble(required(stage, arg)));
                    default -> throw new IllegalArgumentException("unknown pipeline stage '" + stage
                            + "' (choose from skip[=N], zero, clip[=C], clipLayer=C, clipValue=C)");
                });
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("pipeline stage '" + stage + "' needs a number after '='");
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(e.getMessage().startsWith("unknown pipeline stage") ? e.getMessage()
                        : "pipeline stage '" + stage + "': " + e.getMessage());
            }
        }
        return out;
    }

    private static GradientTransform noArg(String stage, String arg, GradientTransform t) {
        if (arg != null) {
            throw new IllegalArgumentException("takes no value");
        }
        return t;
    }

    private static String required(String stage, String arg) {
        if (arg == null || arg.isEmpty()) {
            throw new NumberFormatException(stage);
        }
        return arg;
    }

    private static List<String> list(String option, String value) {
        List<String> out = new ArrayList<>();
        for (String s : value.split(",")) {
            if (!s.isBlank()) {
                out.add(s.trim());
            }
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException("option " + option + " needs at least one value, got '" + value + "'");
        }
        return out;
    }

    private static long number(String option, String value, long min, long max) {
        long n;
        try {
            n = Long.parseLong(value.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("option " + option + " needs a whole number, got '" + value + "'");
        }
        if (n < min || n > max) {
            throw new IllegalArgumentException("option " + option + " must be >= " + min + (max < Long.MAX_VALUE ? " and <= " + max : "")
                    + ", got " + n);
        }
        return n;
    }

    /** Creates the folder if needed and proves it writable, before any training starts. */
    private static Path writableFolder(String dir) {
        Path p;
        try {
            p = Path.of(dir).toAbsolutePath().normalize();
        } catch (InvalidPathException e) {
            throw new IllegalArgumentException("output folder '" + dir + "' is not a valid path");
        }
        try {
            Files.createDirectories(p);
            Path probe = Files.createTempFile(p, ".gradguard", ".tmp");
            Files.delete(probe);
        } catch (IOException | SecurityException e) {
            throw new IllegalArgumentException("output folder " + p + " cannot be created or written to");
        }
        return p;
    }
}
