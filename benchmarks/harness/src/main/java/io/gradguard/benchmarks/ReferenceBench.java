package io.gradguard.benchmarks;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.GradientSet;
import io.gradguard.core.GradientTensor;
import io.gradguard.core.Layout;
import io.gradguard.core.Role;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import io.gradguard.core.reference.ReferenceOps;
import io.gradguard.core.reference.ReferenceTensor;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

/**
 * Parts 1 and 4 on the pure-Java reference backend: each transform on 1M, 10M and 100M float32
 * values as a ratio to the {@link BandwidthFloor memory-bandwidth floor} measured in the same run,
 * and how the cost grows with the number of values.
 *
 * <p>The gradient is one [n/1000, 1000] weight tensor. Every transform works on its own copy of the
 * data (so no transform changes what another one sees), through the public API a user calls
 * ({@link GradientPipeline#step}). The floor each transform is held to is the passes it cannot
 * avoid:
 *
 * <table>
 *   <caption>Floors</caption>
 *   <tr><th>transform</th><th>floor</th></tr>
 *   <tr><td>clipByGlobalNorm</td><td>read(g) + read-write(g): one pass for Σg², one for the scale</td></tr>
 *   <tr><td>clipByValue</td><td>read-write(g)</td></tr>
 *   <tr><td>adaptiveClip</td><td>read(w) + read(g) + read-write(g): unit norms of weights and gradients, then the scale</td></tr>
 *   <tr><td>accumulate(4): one window of four micro-batches (three held, the fourth writes the mean)</td>
 *       <td>4 axpy(acc, g) + read-write(g): each micro-batch added once, the mean scaled once</td></tr>
 * </table>
 *
 * <p>Every sample starts with cold private caches (a 64 MB scratch array is read, untimed, on all
 * cores before it), so no case inherits a warm L2 from the case before it; a shared L3 larger than
 * the arrays still holds the 1M and 10M arrays for all cases alike.
 *
 * <p>Run it through the runner ({@code Runner}); alone: {@code java -Xmx4g -cp ... io.gradguard.benchmarks.ReferenceBench --mode full}.
 */
public final class ReferenceBench {
    private static final long[] SIZES = {1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000};
    private static final long[] TINY_SIZES = {100_000, 5_000_000};
    /** The sizes part 1 reports; the others only feed the part-4 fit. */
    private static final long[] PART1 = {1_000_000, 10_000_000, 100_000_000};

    private static final String[] OPS = {"clipByGlobalNorm", "clipByValue", "adaptiveClip (outputFirst)",
        "adaptiveClip (outputLast)", "accumulate(4), one window"};
    private static final String[] FLOOR_NAMES = {"floor read+rw", "floor rw", "floor 2 read+rw", "floor 2 read+rw",
        "floor 4 axpy+rw"};

    /** Read (on all cores) before every sample: 64 MB, several times the private L2 caches. */
    private static final float[] SCRATCH = new float[16 << 20];

    /**
     * Row label prefix: the reference section runs twice, with the Vector API Σx² (the JVM started
     * with --add-modules jdk.incubator.vector) and without it (-Dgradguard.simd=false).
     */
    private static final String LABEL = io.gradguard.core.reference.ReferenceOps.usesVectorApi() ? "reference " : "reference (scalar Σx²) ";

    private final Section section;

    private ReferenceBench(Section section) {
        this.section = section;
    }

    public static void main(String[] args) {
        try (Section s = Section.fromArgs("reference", args)) {
            new ReferenceBench(s).run();
        }
    }

    private void run() {
        long[] sizes = section.tiny() ? TINY_SIZES : SIZES;
        double[][] times = new double[OPS.length][sizes.length];
        section.part(1, "reference backend vs bandwidth floor", () -> {
            section.progress("common pool parallelism %d (+ the caller), %d processors",
                    java.util.concurrent.ForkJoinPool.getCommonPoolParallelism(), Runtime.getRuntime().availableProcessors());
            for (int s = 0; s < sizes.length; s++) {
                measure(sizes[s], times, s, section.tiny() || isPart1(sizes[s]));
            }
        });
        section.part(4, "reference cost vs size", () -> {
            for (int o = 0; o < OPS.length; o++) {
                section.emit(Scaling.row(LABEL + OPS[o], sizes, times[o]));
            }
        });
    }

    private static boolean isPart1(long n) {
        for (long p : PART1) {
            if (p == n) {
                return true;
            }
        }
        return false;
    }

    private void measure(long size, double[][] times, int slot, boolean report) {
        int n = (int) size;
        int cols = 1000;
        long[] shape = {n / cols, cols};
        float[] gGlobal = random(n, 1);
        float[] gValue = random(n, 2);
        float[] gAgcFirst = random(n, 3);
        float[] gAgcLast = random(n, 4);
        float[] w = random(n, 5);
        float[] acc = new float[n];
        ReferenceOps ops = ReferenceOps.INSTANCE;

        GradientPipeline global = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0));
        GradientPipeline value = GradientPipeline.of(Transforms.clipByValue(0.5));
        GradientPipeline agcFirst = GradientPipeline.of(Transforms.adaptiveClip(0.01));
        GradientPipeline agcLast = GradientPipeline.of(Transforms.adaptiveClip(0.01));
        GradientPipeline accumulate = GradientPipeline.of(Transforms.accumulate(4));
        ReferenceTensor wt = ReferenceTensor.of(w, shape);
        GradientSet<ReferenceTensor> setGlobal = weight(gGlobal, shape, Layout.outputFirst(), null);
        GradientSet<ReferenceTensor> setValue = weight(gValue, shape, Layout.outputFirst(), null);
        GradientSet<ReferenceTensor> setAgcFirst = weight(gAgcFirst, shape, Layout.outputFirst(), wt);
        GradientSet<ReferenceTensor> setAgcLast = weight(gAgcLast, shape, Layout.outputLast(), wt);
        GradientSet<ReferenceTensor> setAccumulate = weight(gGlobal, shape, Layout.outputFirst(), null);
        StepContext ctx = StepContext.ofBatch(64);

        int warmup = section.tiny() ? 1 : 3;
        int rounds = section.tiny() ? 3 : size >= 30_000_000 ? 11 : 21;
        // Every sample starts with cold private caches: without this, a floor loop that follows
        // another pass over the same 4 MB array would find it in L2 and the transforms would not.
        Rounds r = new Rounds(warmup, rounds).beforeEach(() -> BandwidthFloor.read(SCRATCH, true));
        r.add("read 1t", () -> BandwidthFloor.read(gGlobal, false));
        r.add("read mt", () -> BandwidthFloor.read(gGlobal, true));
        r.add("rw 1t", () -> BandwidthFloor.readWrite(gGlobal, false));
        r.add("rw mt", () -> BandwidthFloor.readWrite(gGlobal, true));
        r.add("axpy 1t", () -> BandwidthFloor.axpy(acc, gGlobal, false));
        r.add("axpy mt", () -> BandwidthFloor.axpy(acc, gGlobal, true));
        // the clip must act on every sample: the previous sample left the norm at exactly 1
        r.add(OPS[0], () -> doubleAll(gGlobal), () -> global.step(setGlobal, ops, ctx));
        r.add(OPS[1], () -> value.step(setValue, ops, ctx));
        r.add(OPS[2], () -> agcFirst.step(setAgcFirst, ops, ctx));
        r.add(OPS[3], () -> agcLast.step(setAgcLast, ops, ctx));
        r.add(OPS[4], () -> {
            for (int k = 0; k < 4; k++) {
                accumulate.step(setAccumulate, ops, ctx);
            }
        });
        Map<String, Double> m = r.run();

        double read = Math.min(m.get("read 1t"), m.get("read mt"));
        double rw = Math.min(m.get("rw 1t"), m.get("rw mt"));
        double axpy = Math.min(m.get("axpy 1t"), m.get("axpy mt"));
        double[] floors = {read + rw, rw, 2 * read + rw, 2 * read + rw, 4 * axpy + rw};
        section.progress("%s values: floor read %s (%s), rw %s (%s), axpy %s (%s); %.3f ns/value for read+rw",
                Table.count(size), Table.time(read), m.get("read 1t") <= m.get("read mt") ? "1 thread" : "all cores",
                Table.time(rw), m.get("rw 1t") <= m.get("rw mt") ? "1 thread" : "all cores",
                Table.time(axpy), m.get("axpy 1t") <= m.get("axpy mt") ? "1 thread" : "all cores",
                (read + rw) * 1e6 / size);
        for (int o = 0; o < OPS.length; o++) {
            times[o][slot] = m.get(OPS[o]);
            if (report) {
                section.emit(Row.ratio(1, LABEL + OPS[o], Table.count(size), m.get(OPS[o]), FLOOR_NAMES[o],
                        floors[o], 1.5, ""));
            }
        }
    }

    /** x ← 2x (untimed), so a norm clipped to 1 by the previous sample is 2 again. */
    private static void doubleAll(float[] x) {
        for (int i = 0; i < x.length; i++) {
            x[i] *= 2;
        }
    }

    private static GradientSet<ReferenceTensor> weight(float[] g, long[] shape, Layout layout, ReferenceTensor param) {
        return GradientSet.of(new GradientTensor<>("w", shape, Role.WEIGHT, "dense", layout, ReferenceTensor.of(g, shape), param));
    }

    /** Uniform values in [-1, 1), filled in parallel from a fixed seed per chunk (reproducible). */
    static float[] random(int n, long seed) {
        float[] x = new float[n];
        int chunks = (n + BandwidthFloor.CHUNK - 1) / BandwidthFloor.CHUNK;
        IntStream.range(0, chunks).parallel().forEach(c -> {
            SplittableRandom rnd = new SplittableRandom(seed * 1_000_003L + c);
            for (int i = c * BandwidthFloor.CHUNK, e = Math.min(n, (c + 1) * BandwidthFloor.CHUNK); i < e; i++) {
                x[i] = (float) (rnd.nextDouble() * 2 - 1);
            }
        });
        return x;
    }

}
