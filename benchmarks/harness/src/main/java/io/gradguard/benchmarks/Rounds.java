package io.gradguard.benchmarks;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * Interleaved timing: every round runs every case once, in a new random order each round (seeded,
 * so runs are repeatable), so a slow spell of a shared machine hits all cases alike and no case
 * always follows the same neighbour (whose garbage or cache footprint it would inherit). The first rounds
 * warm up the JIT and caches and are discarded; each case's result is the median of the rest.
 *
 * <pre>{@code
 * Rounds r = new Rounds(3, 15);
 * r.add("floor", () -> floor.run());
 * r.add("clip", () -> pipeline.step(g, ops, ctx));
 * Map<String, Double> medians = r.run();
 * }</pre>
 */
public final class Rounds {
    private final int warmup;
    private final int rounds;
    private final Map<String, Runnable> cases = new LinkedHashMap<>();
    private final Map<String, Runnable> prepare = new LinkedHashMap<>();
    private Runnable before = () -> { };

    /**
     * @throws IllegalArgumentException if warmup &lt; 0 or rounds &lt; 1
     */
    public Rounds(int warmup, int rounds) {
        if (warmup < 0) {
            throw new IllegalArgumentException("warmup must be >= 0, got " + warmup);
        }
        if (rounds < 1) {
            throw new IllegalArgumentException("rounds must be >= 1, got " + rounds);
        }
        this.warmup = warmup;
        this.rounds = rounds;
    }

    /**
     * Runs {@code untimed} before every sample (to give every case the same cache state, say).
     *
     * @throws IllegalArgumentException if it is null
     */
    public Rounds beforeEach(Runnable untimed) {
        if (untimed == null) {
            throw new IllegalArgumentException("untimed must not be null");
        }
        this.before = untimed;
        return this;
    }

    /**
     * Adds a case; one call of {@code body} is one timed sample.
     *
     * @throws IllegalArgumentException if the name is already used
     */
    public Rounds add(String name, Runnable body) {
        if (cases.putIfAbsent(name, body) != null) {
            throw new IllegalArgumentException("case name must be unique, got " + name + " twice");
        }
        return this;
    }

    /**
     * Adds a case with its own untimed preparation, run before each of its samples (and before
     * {@link #beforeEach}): to make a clip act on every sample, say, by scaling the gradient back up.
     *
     * @throws IllegalArgumentException if the name is already used or {@code untimed} is null
     */
    public Rounds add(String name, Runnable untimed, Runnable body) {
        if (untimed == null) {
            throw new IllegalArgumentException("untimed must not be null");
        }
        add(name, body);
        prepare.put(name, untimed);
        return this;
    }

    /** Runs all rounds and returns each case's median time in milliseconds, in insertion order. */
    public Map<String, Double> run() {
        List<String> names = new ArrayList<>(cases.keySet());
        int k = names.size();
        double[][] samples = new double[k][rounds];
        List<Integer> order = new ArrayList<>();
        for (int c = 0; c < k; c++) {
            order.add(c);
        }
        Random shuffle = new Random(42);
        for (int r = 0; r < warmup + rounds; r++) {
            Collections.shuffle(order, shuffle);
            for (int j = 0; j < k; j++) {
                int c = order.get(j);
                Runnable body = cases.get(names.get(c));
                prepare.getOrDefault(names.get(c), () -> { }).run();
                before.run();
                long t0 = System.nanoTime();
                body.run();
                long t1 = System.nanoTime();
                if (r >= warmup) {
                    samples[c][r - warmup] = (t1 - t0) / 1e6;
                }
            }
        }
        Map<String, Double> out = new LinkedHashMap<>();
        for (int c = 0; c < k; c++) {
            out.put(names.get(c), Stats.median(samples[c]));
        }
        return out;
    }
}
