package io.gradguard.benchmarks;

import java.util.Map;

/**
 * Part 5 of every framework section: the guard's fixed cost per step. On a small model a training
 * step takes a fraction of a millisecond, so what the guard does once per step (host reads,
 * framework calls, bookkeeping) shows in the ratio, where on the 5M-parameter model of part 2 it is
 * lost in the arithmetic. Each section trains MLPs of these widths (ReLU, softmax cross-entropy,
 * Adam) on one fixed batch of {@link #BATCH}, timing four cases interleaved ({@link Rounds}):
 * {@code "plain"} (unguarded), {@code "clip"} ({@link Pipelines#globalClip()}), {@code "readme"}
 * ({@link Pipelines#readme()}) and {@code "monitored"} ({@link Pipelines#readmeMonitored()}).
 *
 * <pre>{@code
 * for (int[] widths : SmallModels.widths(section)) {
 *     ... r.add("plain", ...); r.add("clip", ...); r.add("readme", ...); r.add("monitored", ...);
 *     SmallModels.emit(section, "dl4j", "Dl4jGuard listener in fit", params, r.run());
 * }
 * }</pre>
 */
public final class SmallModels {
    /** Layer widths of the two models: about 5.6k and 94k parameters (softmax needs two classes). */
    private static final int[][] SIZES = {{20, 64, 64, 2}, {100, 256, 256, 10}};
    /** Examples per batch. */
    public static final int BATCH = 64;
    /** The clip-only guard's goal, a ratio to the unguarded step. */
    public static final double CLIP_GOAL = 1.15;
    /** The goal of the README's pipeline with a Monitor, a ratio to the unguarded step. */
    public static final double MONITORED_GOAL = 1.3;

    private SmallModels() {
    }

    /** The widths to train: the smaller model only in tiny mode. */
    public static int[][] widths(Section section) {
        return section.tiny() ? new int[][] {SIZES[0].clone()} : new int[][] {SIZES[0].clone(), SIZES[1].clone()};
    }

    /** Warm-up steps of every case before the rounds (the JIT compiles the guard's host code). */
    public static int warmUpSteps(Section section) {
        return section.tiny() ? 1 : 1000;
    }

    /** The rounds: many, as each sample is a fraction of a millisecond. */
    public static Rounds rounds(Section section) {
        return section.tiny() ? new Rounds(1, 2) : new Rounds(50, 600);
    }

    /**
     * Emits the three rows of one model size from the medians of the four cases.
     *
     * @param how the hook the guarded cases trained through, for the row names
     */
    public static void emit(Section section, String framework, String how, long params, Map<String, Double> m) {
        String size = Table.count(params) + " params, batch " + BATCH;
        double base = m.get("plain");
        section.progress("%s: plain %s, clip %s, readme %s, monitored %s", size, Table.time(base), Table.time(m.get("clip")),
                Table.time(m.get("readme")), Table.time(m.get("monitored")));
        section.emit(Row.ratio(5, framework + " small model, clipByGlobalNorm (" + how + ")", size, m.get("clip"),
                "unguarded step", base, CLIP_GOAL, ""));
        section.emit(Row.ratio(5, framework + " small model, skipNonFinite + clipByGlobalNorm (README, " + how + ")", size,
                m.get("readme"), "unguarded step", base, Double.NaN, ""));
        section.emit(Row.ratio(5, framework + " small model, skipNonFinite + clipByGlobalNorm + Monitor (README, " + how + ")", size,
                m.get("monitored"), "unguarded step", base, MONITORED_GOAL, ""));
    }
}
