package io.gradguard.benchmarks;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

/**
 * Runs every benchmark section, each in its own JVM with its own classpath (TensorFlow Java and
 * ND4J bring different JavaCPP versions), and writes the performance page: the machine it ran on
 * (read at run time), the command, the goals met and missed (computed from the ratios) and the table
 * of ratios measured in this run, followed by how they are measured. A full run of every section
 * writes the page to {@code docs/performance.md} (next to the benchmarks folder) and every run to
 * {@code benchmarks/target/benchmark-report.md}; the console gets the page without the method text.
 *
 * <p>From the repository root:
 * <pre>
 * mvn -B -q -pl benchmarks/runner -am -DskipTests -Dbench=full package   # everything, writes docs/performance.md
 * mvn -B -q -pl benchmarks/runner -am -DskipTests -Dbench=tiny -Dbench.sections=reference,dl4j package
 * mvn -B -q -pl benchmarks/runner -am -DskipTests -Dbench=quick -Dbench.sections=dl4j,djl,tensorflow package   # small models only
 * </pre>
 *
 * <p>Arguments: {@code --dir BENCHMARKS_DIR} (default {@code benchmarks}), {@code --mode tiny|quick|full}
 * (default full; quick runs only the small-model part of each framework, at its real sizes, and
 * writes the page to the target folder only; in both, a framework's quick parts run in
 * {@value #QUICK_PART_RUNS} JVMs and each of their rows reports the median, see {@link #combineRuns}), {@code --sections reference,reference-scalar,dl4j,djl,tensorflow} (default all). The
 * system property {@code gradguard.bench.note} (Maven: {@code -Dbench.note="..."}) adds a line about
 * the machine's conditions to the page, e.g. other work sharing its cores. A section whose module is not built, whose JVM fails, or that
 * runs out of time is reported by a row saying so; the rows it wrote before are kept.
 *
 * @throws IllegalArgumentException (from {@code main}) for an unknown argument, mode or section
 */
public final class Runner {
    /**
     * One section: a module, its main class, the JVM options it needs, its time limit, and whether
     * its quick mode runs only some of its parts (measured again in {@value #QUICK_PART_RUNS} JVMs).
     */
    record Spec(String name, String module, String mainClass, List<String> fullJvm, List<String> tinyJvm, Duration limit,
            boolean quickParts) {
    }

    static final List<Spec> SECTIONS = List.of(
            new Spec("reference", "harness", "io.gradguard.benchmarks.ReferenceBench",
                    List.of("-Xmx5g", "--add-modules", "jdk.incubator.vector"),
                    List.of("-Xmx1g", "--add-modules", "jdk.incubator.vector"), Duration.ofMinutes(4), false),
            new Spec("reference-scalar", "harness", "io.gradguard.benchmarks.ReferenceBench",
                    List.of("-Xmx5g", "-Dgradguard.simd=false"), List.of("-Xmx1g", "-Dgradguard.simd=false"), Duration.ofMinutes(4), false),
            new Spec("dl4j", "dl4j", "io.gradguard.benchmarks.dl4j.Dl4jBench",
                    List.of("-Xmx2g", "-Dorg.bytedeco.javacpp.maxbytes=4g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"),
                    List.of("-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"), Duration.ofMinutes(8), true),
            new Spec("djl", "djl", "io.gradguard.benchmarks.djl.DjlBench",
                    List.of("-Xmx1g", "-Dai.djl.offline=true", "-Dorg.slf4j.simpleLogger.defaultLogLevel=error"),
                    List.of("-Xmx1g", "-Dai.djl.offline=true", "-Dorg.slf4j.simpleLogger.defaultLogLevel=error"),
                    Duration.ofMinutes(7), true),
            new Spec("tensorflow", "tensorflow", "io.gradguard.benchmarks.tensorflow.TfBench",
                    List.of("-Xmx1g", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=8g"), List.of("-Xmx1g"), Duration.ofMinutes(7), true));

    /**
     * OpenMP threads of ND4J and PyTorch sleep rather than spin while they wait (unless the caller
     * set OMP_WAIT_POLICY): on a shared machine a spinning thread that loses its core stalls every
     * parallel region (docs/performance.md has the measurement). It applies to guarded and unguarded
     * steps alike.
     */
    static final String OMP_WAIT_POLICY = "PASSIVE";

    /**
     * glibc's allocator with one arena and fixed thresholds (unless the caller set them): blocks up to
     * 32 MiB come from the heap, and the heap's top is not handed back to the kernel after each free
     * (a JVM's threads otherwise get per-thread arenas, whose heaps are mapped and dropped). With its
     * default, adaptive thresholds, a step's multi-megabyte temporaries (PyTorch's Adam allocates
     * several per parameter) were mapped and unmapped on each step, and every page of them
     * faulted in again: which variant paid for that depended on the order of earlier allocations,
     * not on its own work (docs/performance.md has the measurement). Set for the DJL section, whose
     * PyTorch optimizer makes those allocations, for every case alike; TensorFlow and ND4J manage
     * their buffers themselves, and one arena would make TensorFlow's op threads share a lock.
     */
    static final Map<String, String> MALLOC = Map.of("MALLOC_ARENA_MAX", "1", "MALLOC_MMAP_THRESHOLD_", "33554432",
            "MALLOC_TRIM_THRESHOLD_", "4294967296");

    /** The one command that runs everything, from the repository root. */
    static final String COMMAND = "mvn -B -q -pl benchmarks/runner -am -DskipTests -Dbench=full package";

    /** What each part's goal is, for the summary of goals met and missed. */
    static final Map<Integer, String> GOALS = Map.of(
            1, "Reference backend within 1.5× of the bandwidth floor",
            2, "Guarded training step (global-norm clip + norm monitoring) within 3% of the unguarded step",
            3, "GradGuard within 5% of the framework's built-in for the same clip",
            5, "Small models (~5k parameters): a clip-only guard within 1.15× and the README pipeline with a Monitor within 1.3× of the unguarded step",
            6, "Data parallel (2-worker DL4J ParallelWrapper): guarded (clip + norm monitor) within 1.03× per worker and 1.06× synchronized of the unguarded fit");

    private final Path dir;
    private final boolean tiny;
    private final boolean quick;
    private final PrintWriter console;
    private final Machine machine;
    private List<String> sections = SECTIONS.stream().map(Spec::name).toList();
    private final String note = System.getProperty("gradguard.bench.note", "").trim();

    Runner(Path dir, boolean tiny, PrintWriter console) {
        this(dir, tiny ? "tiny" : "full", console);
    }

    /** A runner in mode tiny, quick or full. */
    Runner(Path dir, String mode, PrintWriter console) {
        this.dir = dir.toAbsolutePath().normalize();
        this.tiny = mode.equals("tiny");
        this.quick = mode.equals("quick");
        this.console = console;
        this.machine = Machine.now();
    }

    public static void main(String[] args) {
        Path dir = Path.of("benchmarks");
        String mode = "full";
        List<String> sections = SECTIONS.stream().map(Spec::name).toList();
        for (int i = 0; i < args.length; i++) {
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (args[i]) {
                case "--dir" -> dir = Path.of(require(v, "--dir"));
                case "--mode" -> {
                    String m = require(v, "--mode");
                    if (!m.equals("tiny") && !m.equals("quick") && !m.equals("full")) {
                        throw new IllegalArgumentException("--mode must be tiny, quick or full, got " + m);
                    }
                    mode = m;
                }
                case "--sections" -> sections = Arrays.asList(require(v, "--sections").split(","));
                default -> throw new IllegalArgumentException("unknown argument " + args[i]
                        + ": expected --dir DIR, --mode tiny|quick|full, --sections a,b");
            }
            i++;
        }
        PrintWriter console = new PrintWriter(System.out, true, StandardCharsets.UTF_8);
        Runner r = new Runner(dir, mode, console);
        List<Row> rows = r.run(sections);
        console.println();
        console.println(r.page(rows, false));
        r.write(r.page(rows, true));
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
        sections = List.copyOf(names);
        List<Row> rows = new ArrayList<>();
        for (String name : names) {
            Spec spec = SECTIONS.stream().filter(s -> s.name().equals(name)).findFirst()
                    .orElseThrow(() -> new IllegalArgumentException("sections must be among "
                            + SECTIONS.stream().map(Spec::name).toList() + ", got " + name));
            rows.addAll(runSection(spec));
        }
        return rows;
    }

    /**
     * A section's rows: one JVM in this run's mode; for a section with quick parts (not in tiny
     * mode), {@value #QUICK_PART_RUNS} - 1 more JVMs in quick mode, and the rows of the quick parts
     * combined over all of them ({@link #combineRuns}).
     */
    private List<Row> runSection(Spec spec) {
        List<Row> rows = runProcess(spec, mode(), "");
        if (tiny || !spec.quickParts() || rows.stream().anyMatch(r -> r.note().startsWith("skipped: "))) {
            return rows;
        }
        List<List<Row>> runs = new ArrayList<>(List.of(rows));
        for (int k = 2; k <= QUICK_PART_RUNS; k++) {
            runs.add(runProcess(spec, "quick", "." + k));
        }
        return combineRuns(runs);
    }

    /**
     * Runs in which the quick parts (the small models, part 5, and DL4J's data parallel, part 6)
     * are measured, each in a JVM of its own. A ratio of a step that takes a fraction of a millisecond
     * moves from one run to the next by more than a goal's margin, so such a row reports the run with
     * the median ratio, and the ratios of all runs beside it (docs/performance.md has the spread).
     */
    static final int QUICK_PART_RUNS = 3;

    /**
     * The rows of several runs of one section: the first run's rows, where each measured row of a
     * part that the other runs measured too is replaced by the run with the median ratio (the
     * upper of the two middle ones for an even count) and its note says the sorted ratios of every
     * run that measured it. Rows that only later runs measured follow; so do their notes of runs
     * that failed or ran out of time.
     */
    static List<Row> combineRuns(List<List<Row>> runs) {
        Set<Integer> parts = new TreeSet<>();
        for (List<Row> run : runs.subList(1, runs.size())) {
            run.stream().filter(r -> !r.verdict().isEmpty()).forEach(r -> parts.add(r.part()));
        }
        Map<String, List<Row>> measured = new LinkedHashMap<>();
        for (List<Row> run : runs) {
            for (Row r : run) {
                if (parts.contains(r.part()) && !r.verdict().isEmpty()) {
                    measured.computeIfAbsent(key(r), k -> new ArrayList<>()).add(r);
                }
            }
        }
        List<Row> out = new ArrayList<>();
        Set<String> done = new HashSet<>();
        for (Row r : runs.get(0)) {
            String key = key(r);
            if (!measured.containsKey(key)) {
                out.add(r);
            } else if (done.add(key)) {
                out.add(median(measured.get(key)));
            }
        }
        measured.forEach((key, rows) -> {
            if (done.add(key)) {
                out.add(median(rows));
            }
        });
        for (int k = 1; k < runs.size(); k++) {
            for (Row r : runs.get(k)) {
                if (r.verdict().isEmpty() && (r.note().startsWith("TIMED OUT") || r.note().startsWith("FAILED"))) {
                    out.add(Row.note(r.part(), r.name(), "run " + (k + 1) + " of " + runs.size() + ": " + r.note()));
                }
            }
        }
        return out;
    }

    /** What identifies a row across runs of one section: its part, name and size. */
    private static String key(Row r) {
        return r.part() + "\t" + r.name() + "\t" + r.size();
    }

    private static Row median(List<Row> rows) {
        List<Row> sorted = new ArrayList<>(rows);
        sorted.sort(Comparator.comparingDouble(Row::ratio));
        Row m = sorted.get(sorted.size() / 2);
        StringBuilder ratios = new StringBuilder();
        for (Row r : sorted) {
            ratios.append(ratios.length() == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%.3f", r.ratio()));
        }
        String runs = "median of " + sorted.size() + (sorted.size() == 1 ? " run" : " runs") + ": " + ratios;
        return new Row(m.part(), m.name(), m.size(), m.millis(), m.baseline(), m.baselineMillis(), m.goal(),
                m.note().isEmpty() ? runs : m.note() + " (" + runs + ")");
    }

    /** One JVM of the section in {@code mode}; its rows file and log carry {@code suffix}. */
    private List<Row> runProcess(Spec spec, String mode, String suffix) {
        Path module = dir.resolve(spec.module()).resolve("target");
        Path cpFile = module.resolve("section.classpath");
        if (!Files.isRegularFile(cpFile)) {
            return List.of(Row.note(0, spec.name(), "skipped: " + shown(cpFile) + " is missing; build with "
                    + "mvn -pl benchmarks/runner -am package"));
        }
        try {
            Path out = Files.createDirectories(dir.resolve("target").resolve("bench"));
            Path rowsFile = out.resolve(spec.name() + suffix + ".rows");
            Path log = out.resolve(spec.name() + suffix + ".log");
            Files.deleteIfExists(rowsFile);
            String cp = module.resolve("classes") + java.io.File.pathSeparator + Files.readString(cpFile).trim();
            List<String> cmd = new ArrayList<>();
            cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
            cmd.addAll(tiny ? spec.tinyJvm() : spec.fullJvm());
            cmd.addAll(List.of("-cp", cp, spec.mainClass(), "--mode", mode, "--out", rowsFile.toString()));
            ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
            pb.environment().put("TF_CPP_MIN_LOG_LEVEL", "2");
            pb.environment().putIfAbsent("OMP_WAIT_POLICY", OMP_WAIT_POLICY);
            if (spec.name().equals("djl")) {
                MALLOC.forEach(pb.environment()::putIfAbsent);
            }
            console.printf("== %s: %s (%s)%n", spec.name(), spec.mainClass(), mode);
            Instant start = Instant.now();
            Process p = pb.start();
            Thread pump = new Thread(() -> pump(p, log, spec.name()), "pump-" + spec.name());
            pump.start();
            Duration limit = tiny ? Duration.ofMinutes(2) : mode.equals("quick") ? Duration.ofMinutes(5) : spec.limit();
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
                rows.add(Row.note(0, spec.name(), "TIMED OUT after " + limit.toSeconds() + " s; rows above were measured before; log: " + shown(log)));
            } else if (p.exitValue() != 0) {
                rows.add(Row.note(0, spec.name(), "FAILED: exit code " + p.exitValue() + "; log: " + shown(log)));
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

    /** A path as the page shows it: relative to the repository root (the benchmarks folder's parent). */
    private String shown(Path p) {
        Path root = dir.getParent();
        Path abs = p.toAbsolutePath().normalize();
        return root != null && abs.startsWith(root) ? root.relativize(abs).toString() : abs.toString();
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

    /**
     * The performance page in Markdown: mode, command, machine, goals met and missed, the table and,
     * with {@code method}, how everything is measured.
     */
    String page(List<Row> rows, boolean method) {
        StringBuilder sb = new StringBuilder();
        sb.append("# Performance\n\n");
        sb.append("<!-- Generated by the benchmark runner (benchmarks/runner, io.gradguard.benchmarks.Runner). "
                + "Do not edit: run the command below again. -->\n\n");
        sb.append("Every number on this page comes from one run of the benchmark runner, ")
                .append(machine.date()).append(", in **").append(tiny ? "tiny mode (smoke-test sizes: not a measurement)"
                        : quick ? "quick mode (the small-model part only)" : "full mode").append("**");
        if (!allSections()) {
            sb.append(", sections ").append(String.join(", ", sections));
        }
        sb.append(". Ratios compare cases measured in the same run, on the same machine.\n\n");
        sb.append("## Command\n\nFrom the repository root (builds what it needs first):\n\n```bash\n")
                .append(command()).append("\n```\n\n");
        sb.append("## Machine\n\n").append(machine.markdown(Machine.load()));
        if (!note.isEmpty()) {
            sb.append("- Conditions: ").append(note).append('\n');
        }
        sb.append('\n');
        sb.append("## Goals met and missed\n\n").append(goals(rows)).append('\n');
        sb.append("## Results\n\n").append(Table.format(rows)).append('\n');
        if (method) {
            sb.append(methodText());
        }
        return sb.toString();
    }

    private String mode() {
        return tiny ? "tiny" : quick ? "quick" : "full";
    }

    /** The Maven command that reproduces this run. */
    String command() {
        String c = COMMAND.replace("-Dbench=full", "-Dbench=" + mode());
        if (!allSections()) {
            c = c.replace(" package", " -Dbench.sections=" + String.join(",", sections) + " package");
        }
        return c;
    }

    /**
     * The goals summary, computed from the rows' ratios: per part, how many rows meet the goal, and
     * each row that misses it; for the training-step goal also the A/A control of each framework (the
     * noise of the run), with a miss marked when it lies within that noise of the goal.
     */
    static String goals(List<Row> rows) {
        StringBuilder sb = new StringBuilder();
        Map<String, Double> noise = new TreeMap<>();
        for (Row r : rows) {
            if (r.name().contains("A/A control") && Double.isFinite(r.ratio())) {
                noise.put(framework(r), Math.abs(r.ratio() - 1));
            }
        }
        for (int part : new TreeSet<>(GOALS.keySet())) {
            List<Row> judged = rows.stream().filter(r -> r.part() == part && (r.verdict().equals("meets")
                    || r.verdict().equals("MISSES"))).toList();
            if (judged.isEmpty()) {
                continue;
            }
            List<Row> missed = judged.stream().filter(r -> r.verdict().equals("MISSES")).toList();
            sb.append(String.format(Locale.ROOT, "- **%s: %s** (%d of %d rows meet it).", GOALS.get(part),
                    missed.isEmpty() ? "met" : missed.size() == judged.size() ? "missed" : "partly met",
                    judged.size() - missed.size(), judged.size()));
            if (part == 2 && !noise.isEmpty()) {
                sb.append(" Noise of this run (A/A control, |ratio − 1|): ");
                sb.append(String.join(", ", noise.entrySet().stream()
                        .map(e -> String.format(Locale.ROOT, "%s %.3f", e.getKey(), e.getValue())).toList())).append('.');
            }
            sb.append('\n');
            for (Row r : missed) {
                Double n = noise.get(framework(r));
                boolean withinNoise = part == 2 && n != null && r.ratio() - r.goal() <= n;
                sb.append(String.format(Locale.ROOT, "  - missed: %s%s: %.3f against ≤ %.2f%s%n", r.name(),
                        r.size().isEmpty() || r.part() != 1 ? "" : " (" + r.size() + ")", r.ratio(), r.goal(),
                        withinNoise ? " (within this run's noise of the goal)" : ""));
            }
        }
        for (Row r : rows) {
            if (r.part() == 0 && !r.note().isEmpty()) {
                sb.append("- **Not judged: ").append(r.name()).append("**, whose section did not complete (")
                        .append(r.note()).append("): its goals are not judged on this page.\n");
            }
        }
        if (sb.length() == 0) {
            sb.append("No row with a goal was measured.\n");
        }
        return sb.toString();
    }

    /** The first word of a row's name: the framework or backend it measures. */
    private static String framework(Row r) {
        int space = r.name().indexOf(' ');
        return space < 0 ? r.name() : r.name().substring(0, space);
    }

    /** How the benchmarks are measured (a resource next to this class). */
    static String methodText() {
        try (InputStream in = Runner.class.getResourceAsStream("performance-method.md")) {
            if (in == null) {
                throw new IllegalStateException("performance-method.md is missing from the runner's classpath: rebuild the runner");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read performance-method.md", e);
        }
    }

    /** Whether this run ran every section. */
    private boolean allSections() {
        return sections.equals(SECTIONS.stream().map(Spec::name).toList());
    }

    /**
     * Writes the page: always to benchmarks/target/benchmark-report.md; a full run of every section
     * also to docs/performance.md (a run of some sections only would replace the whole page with
     * part of it).
     */
    void write(String page) {
        try {
            Path out = Files.createDirectories(dir.resolve("target"));
            Files.writeString(out.resolve("benchmark-report.md"), page, StandardCharsets.UTF_8);
            console.println("report: " + out.resolve("benchmark-report.md"));
            if (!tiny && !quick && allSections()) {
                Path docs = Files.createDirectories(dir.toAbsolutePath().normalize().resolveSibling("docs"));
                Files.writeString(docs.resolve("performance.md"), page, StandardCharsets.UTF_8);
                console.println("page:   " + docs.resolve("performance.md"));
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the performance page", e);
        }
    }

    /**
     * The machine the benchmark runs on, read at run time (from /proc where available, else from the
     * JVM's properties), with the load average when the run started.
     */
    record Machine(String cpu, int cores, String memory, String os, String jdk, String loadAtStart, String date) {

        static Machine now() {
            String cpu = firstValue(Path.of("/proc/cpuinfo"), "model name").orElse(System.getProperty("os.arch"));
            String mem = firstValue(Path.of("/proc/meminfo"), "MemTotal")
                    .map(s -> String.format(Locale.ROOT, "%.1f GiB", Long.parseLong(s.replaceAll("[^0-9]", "")) / 1048576.0))
                    .orElse("unknown");
            return new Machine(cpu, Runtime.getRuntime().availableProcessors(), mem,
                    System.getProperty("os.name") + " " + System.getProperty("os.version") + " (" + System.getProperty("os.arch") + ")",
                    System.getProperty("java.version") + " (" + System.getProperty("java.vm.name") + ", "
                            + System.getProperty("java.vendor") + ")",
                    load(), DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm 'UTC'", Locale.ROOT).format(ZonedDateTime.now(ZoneOffset.UTC)));
        }

        /** A Markdown list, with the load average at the end of the run. */
        String markdown(String loadAtEnd) {
            return "- CPU: " + cpu + ", " + cores + " cores available to the JVM\n"
                    + "- Memory: " + memory + "\n"
                    + "- OS: " + os + "\n"
                    + "- JDK: " + jdk + "\n"
                    + "- Load average (1, 5, 15 min): " + loadAtStart + " at the start, " + loadAtEnd + " at the end; it counts "
                    + "the benchmark's own threads and any other work on the machine: a load near or above the core count "
                    + "means the cases shared the cores, which the A/A control rows show as noise\n"
                    + "- OpenMP: " + threads() + "\n"
                    + "- Native allocator (glibc), DJL section: " + malloc() + "\n";
        }

        /** The OpenMP settings the sections' native code runs with. */
        static String threads() {
            String threads = System.getenv("OMP_NUM_THREADS");
            String wait = System.getenv("OMP_WAIT_POLICY");
            return "OMP_WAIT_POLICY=" + (wait == null ? OMP_WAIT_POLICY + " (the runner's default)" : wait)
                    + (threads == null ? "" : ", OMP_NUM_THREADS=" + threads);
        }

        /** The glibc allocator settings the sections run with. */
        static String malloc() {
            StringBuilder out = new StringBuilder();
            boolean given = false;
            for (String key : new java.util.TreeSet<>(MALLOC.keySet())) {
                String v = System.getenv(key);
                given |= v != null;
                out.append(out.length() == 0 ? "" : ", ").append(key).append('=').append(v != null ? v : MALLOC.get(key));
            }
            return out + (given ? "" : " (the runner's default)");
        }

        /** The 1, 5 and 15 minute load averages (other work on the machine makes timings noisy). */
        static String load() {
            return read(Path.of("/proc/loadavg")).map(s -> String.join(" ", Arrays.copyOf(s.trim().split(" "), 3)))
                    .orElse("unknown");
        }

        private static Optional<String> read(Path p) {
            try {
                return Optional.of(Files.readString(p));
            } catch (IOException | RuntimeException e) {
                return Optional.empty();
            }
        }

        private static Optional<String> firstValue(Path p, String key) {
            return read(p).flatMap(text -> text.lines().filter(l -> l.startsWith(key)).findFirst())
                    .map(l -> l.substring(l.indexOf(':') + 1).trim());
        }
    }
}
