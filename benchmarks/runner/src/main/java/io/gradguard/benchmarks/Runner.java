package io.gradguard.benchmarks;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * Runs every benchmark section, each in its own JVM with its own classpath (TensorFlow Java and
 * ND4J bring different JavaCPP versions), and prints one table of ratios measured in this run,
 * with the machine it ran on. The same report is written as Markdown to
 * {@code benchmarks/target/benchmark-report.md}.
 *
 * <p>From the repository root:
 * <pre>
 * mvn -B -q -pl benchmarks/runner -am -DskipTests -Dbench=full package   # everything: about 2-3 min on 2 cores
 * mvn -B -q -pl benchmarks/runner -am -DskipTests -Dbench=tiny -Dbench.sections=reference,dl4j package
 * </pre>
 *
 * <p>Arguments: {@code --dir BENCHMARKS_DIR} (default {@code benchmarks}), {@code --mode tiny|full}
 * (default full), {@code --sections reference,reference-scalar,dl4j,djl,tensorflow} (default all). A section whose
 * module is not built, whose JVM fails, or that runs out of time is reported by a row saying so;
 * the rows it wrote before are kept.
 */
public final class Runner {
    /** One section: a module, its main class, and the JVM options it needs. */
    record Spec(String name, String module, String mainClass, List<String> fullJvm, List<String> tinyJvm, Duration limit) {
    }

    static final List<Spec> SECTIONS = List.of(
            new Spec("reference", "harness", "io.gradguard.benchmarks.ReferenceBench",
                    List.of("-Xmx5g", "--add-modules", "jdk.incubator.vector"),
                    List.of("-Xmx1g", "--add-modules", "jdk.incubator.vector"), Duration.ofMinutes(4)),
            new Spec("reference-scalar", "harness", "io.gradguard.benchmarks.ReferenceBench",
                    List.of("-Xmx5g", "-Dgradguard.simd=false"), List.of("-Xmx1g", "-Dgradguard.simd=false"), Duration.ofMinutes(4)),
            new Spec("dl4j", "dl4j", "io.gradguard.benchmarks.dl4j.Dl4jBench",
                    List.of("-Xmx2g", "-Dorg.bytedeco.javacpp.maxbytes=4g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"),
                    List.of("-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"), Duration.ofMinutes(5)),
            new Spec("djl", "djl", "io.gradguard.benchmarks.djl.DjlBench",
                    List.of("-Xmx1g", "-Dai.djl.offline=true", "-Dorg.slf4j.simpleLogger.defaultLogLevel=error"),
                    List.of("-Xmx1g", "-Dai.djl.offline=true", "-Dorg.slf4j.simpleLogger.defaultLogLevel=error"),
                    Duration.ofMinutes(5)),
            new Spec("tensorflow", "tensorflow", "io.gradguard.benchmarks.tensorflow.TfBench",
                    List.of("-Xmx1g", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=8g"), List.of("-Xmx1g"), Duration.ofMinutes(5)));

    /**
     * OpenMP threads of ND4J and PyTorch sleep rather than spin while they wait (unless the caller
     * set OMP_WAIT_POLICY): on a shared machine a spinning thread that loses its core stalls every
     * parallel region (a DJL step measured 918 ms with spinning threads and 138 ms with passive ones,
     * minutes apart, at load averages of 7-12 on 2 cores). It applies to guarded and unguarded steps
     * alike.
     */
    static final String OMP_WAIT_POLICY = "PASSIVE";

    /** The one command that runs everything, from the repository root. */
    static final String COMMAND = "mvn -B -q -pl benchmarks/runner -am -DskipTests -Dbench=full package";

    private final Path dir;
    private final boolean tiny;
    private final PrintWriter console;
    private final String machine;

    Runner(Path dir, boolean tiny, PrintWriter console) {
        this.dir = dir;
        this.tiny = tiny;
        this.console = console;
        this.machine = Machine.describe();
    }

    public static void main(String[] args) {
        Path dir = Path.of("benchmarks");
        boolean tiny = false;
        List<String> sections = SECTIONS.stream().map(Spec::name).toList();
        for (int i = 0; i < args.length; i++) {
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (args[i]) {
                case "--dir" -> dir = Path.of(require(v, "--dir"));
                case "--mode" -> {
                    String m = require(v, "--mode");
                    if (!m.equals("tiny") && !m.equals("full")) {
                        throw new IllegalArgumentException("--mode must be tiny or full, got " + m);
                    }
                    tiny = m.equals("tiny");
                }
                case "--sections" -> sections = Arrays.asList(require(v, "--sections").split(","));
                default -> throw new IllegalArgumentException("unknown argument " + args[i]
                        + ": expected --dir DIR, --mode tiny|full, --sections a,b");
            }
            i++;
        }
        PrintWriter console = new PrintWriter(System.out, true, StandardCharsets.UTF_8);
        Runner r = new Runner(dir, tiny, console);
        String report = r.report(r.run(sections));
        console.println();
        console.println(report);
        r.write(report);
    }

    private static String require(String v, String flag) {
        if (v == null) {
            throw new IllegalArgumentException(flag + " needs a value");
        }
        return v;
    }

    /**
     * Runs the named sections in order and returns every row they produced.
     *
     * @throws IllegalArgumentException for an unknown section name
     */
    List<Row> run(List<String> names) {
        List<Row> rows = new ArrayList<>();
        for (String name : names) {
            Spec spec = SECTIONS.stream().filter(s -> s.name().equals(name)).findFirst()
                    .orElseThrow(() -> new IllegalArgumentException("sections must be among "
                            + SECTIONS.stream().map(Spec::name).toList() + ", got " + name));
            rows.addAll(runSection(spec));
        }
        return rows;
    }

    private List<Row> runSection(Spec spec) {
        Path module = dir.resolve(spec.module()).resolve("target");
        Path cpFile = module.resolve("section.classpath");
        if (!Files.isRegularFile(cpFile)) {
            return List.of(Row.note(0, spec.name(), "skipped: " + cpFile + " is missing; build with "
                    + "mvn -pl benchmarks/runner -am package"));
        }
        try {
            Path out = Files.createDirectories(dir.resolve("target").resolve("bench"));
            Path rowsFile = out.resolve(spec.name() + ".rows");
            Path log = out.resolve(spec.name() + ".log");
            Files.deleteIfExists(rowsFile);
            String cp = module.resolve("classes") + java.io.File.pathSeparator + Files.readString(cpFile).trim();
            List<String> cmd = new ArrayList<>();
            cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
            cmd.addAll(tiny ? spec.tinyJvm() : spec.fullJvm());
            cmd.addAll(List.of("-cp", cp, spec.mainClass(), "--mode", tiny ? "tiny" : "full", "--out", rowsFile.toString()));
            ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
            pb.environment().put("TF_CPP_MIN_LOG_LEVEL", "2");
            pb.environment().putIfAbsent("OMP_WAIT_POLICY", OMP_WAIT_POLICY);
            console.printf("== %s: %s%n", spec.name(), spec.mainClass());
            Instant start = Instant.now();
            Process p = pb.start();
            Thread pump = new Thread(() -> pump(p, log, spec.name()), "pump-" + spec.name());
            pump.start();
            Duration limit = tiny ? Duration.ofMinutes(2) : spec.limit();
            boolean done = p.waitFor(limit.toSeconds(), TimeUnit.SECONDS);
            if (!done) {
                p.destroyForcibly().waitFor();
            }
            pump.join();
            List<Row> rows = new ArrayList<>();
            if (Files.isRegularFile(rowsFile)) {
                for (String line : Files.readAllLines(rowsFile, StandardCharsets.UTF_8)) {
                    if (!line.isBlank()) {
                        rows.add(Row.parse(line));
                    }
                }
            }
            if (!done) {
                rows.add(Row.note(0, spec.name(), "TIMED OUT after " + limit.toSeconds() + " s; rows above were measured before; log: " + log));
            } else if (p.exitValue() != 0) {
                rows.add(Row.note(0, spec.name(), "FAILED: exit code " + p.exitValue() + "; log: " + log));
            }
            console.printf("== %s: %d rows in %d s%n", spec.name(), rows.size(), Duration.between(start, Instant.now()).toSeconds());
            return rows;
        } catch (IOException e) {
            return List.of(Row.note(0, spec.name(), "FAILED: " + e));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return List.of(Row.note(0, spec.name(), "FAILED: interrupted"));
        }
    }

    /** Copies the child's output to its log and shows its own progress lines (not the frameworks' logs). */
    private void pump(Process p, Path log, String name) {
        try (BufferedReader in = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
             PrintWriter w = new PrintWriter(Files.newBufferedWriter(log, StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                w.println(line);
                if (line.startsWith("[" + name + "]")) {
                    console.println(line);
                }
            }
        } catch (IOException e) {
            console.println("[" + name + "] cannot read the section's output: " + e);
        }
    }

    /** The Markdown report: machine, command, table, how the baselines are defined. */
    String report(List<Row> rows) {
        StringBuilder sb = new StringBuilder();
        sb.append("Machine: ").append(machine).append("; ").append(Machine.load()).append(" at the end\n");
        sb.append("Mode: ").append(tiny ? "tiny (smoke test sizes: not a measurement)" : "full").append('\n');
        sb.append("Command: ").append(COMMAND).append('\n');
        sb.append('\n').append(Table.format(rows)).append('\n');
        sb.append("""
                Ratios are medians of interleaved rounds (every case once per round, shuffled order),
                measured in this run. Part 1 floors: the plainest Java loops over the same arrays, on one
                thread and in the reference backend's chunks on all cores, whichever is faster:
                read = Σx in float with 8 accumulators; rw = x *= 1; axpy = x += y.
                clipByGlobalNorm: read + rw; clipByValue: rw; adaptiveClip: 2 reads (weights, gradient) + rw;
                accumulate(4), one window of four micro-batches: 4 axpy + rw.
                "A/A control" rows time the same unguarded step twice, as two cases: their ratio is the
                noise of this machine during the run. "Σg² only" rows: the unguarded step plus one read
                of every gradient, the least any global-norm clip costs.
                """);
        return sb.toString();
    }

    private void write(String report) {
        try {
            Path out = Files.createDirectories(dir.resolve("target"));
            Files.writeString(out.resolve("benchmark-report.md"), report, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the report under " + dir.resolve("target"), e);
        }
    }

    /** The machine the benchmark ran on, from /proc where available. */
    static final class Machine {
        private Machine() {
        }

        static String describe() {
            String cpu = firstValue(Path.of("/proc/cpuinfo"), "model name").orElse(System.getProperty("os.arch"));
            String mem = firstValue(Path.of("/proc/meminfo"), "MemTotal")
                    .map(s -> String.format(Locale.ROOT, "%.1f GiB RAM", Long.parseLong(s.replaceAll("[^0-9]", "")) / 1048576.0))
                    .orElse("RAM unknown");
            return String.format(Locale.ROOT, "%s, %d cores, %s, %s %s, Java %s (%s), %s at start", cpu,
                    Runtime.getRuntime().availableProcessors(), mem, System.getProperty("os.name"),
                    System.getProperty("os.version"), System.getProperty("java.version"), System.getProperty("java.vm.name"), load()) + threads();
        }

        /** The OpenMP settings the sections' native code runs with. */
        static String threads() {
            String threads = System.getenv("OMP_NUM_THREADS");
            String wait = System.getenv("OMP_WAIT_POLICY");
            return (threads == null ? "" : ", OMP_NUM_THREADS=" + threads) + ", OMP_WAIT_POLICY="
                    + (wait == null ? OMP_WAIT_POLICY + " (the runner's default)" : wait);
        }

        /** The 1, 5 and 15 minute load averages (other work on the machine makes timings noisy). */
        static String load() {
            return read(Path.of("/proc/loadavg")).map(s -> "load average " + String.join(" ", Arrays.copyOf(s.trim().split(" "), 3)))
                    .orElse("load unknown");
        }

        private static java.util.Optional<String> read(Path p) {
            try {
                return java.util.Optional.of(Files.readString(p));
            } catch (IOException | RuntimeException e) {
                return java.util.Optional.empty();
            }
        }

        private static java.util.Optional<String> firstValue(Path p, String key) {
            return read(p).flatMap(text -> text.lines().filter(l -> l.startsWith(key)).findFirst())
                    .map(l -> l.substring(l.indexOf(':') + 1).trim());
        }
    }
}
