package io.gradguard.examples.compare;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What one training run did, step by step, and its summary.
 *
 * @param backend     the backend's id
 * @param task        the task
 * @param guarded     whether the guard pipeline ran (else: monitoring only)
 * @param loss        the batch loss of every step run
 * @param globalNorm  the raw gradient's global L2 norm of every step
 * @param layerNorms  the raw gradient's L2 norm per layer, every step
 * @param events      per step: "" or what happened ("clipped", "skipped", "NaN loss")
 * @param clipped     steps whose gradient was scaled down by the clip
 * @param skipped     steps the guard skipped
 * @param stoppedBy   why the run ended early, or "" when it ran all steps
 * @param seconds     wall time of the training loop
 */
public record RunResult(String backend, Task task, boolean guarded, List<Double> loss, List<Double> globalNorm,
        Map<String, List<Double>> layerNorms, List<String> events, int clipped, int skipped, String stoppedBy, double seconds) {

    /** Explosion threshold of the layer detector: a layer norm this many times its recent median. */
    static final double SPIKE = 10;
    private static final int WARMUP = 3;
    private static final int WINDOW = 20;

    /** The first step (0-based) whose loss is NaN or infinite, or -1. */
    public int nonFiniteStep() {
        for (int i = 0; i < loss.size(); i++) {
            if (!Double.isFinite(loss.get(i))) {
                return i;
            }
        }
        return -1;
    }

    /** Mean loss of the last 10% of steps (at least 1): NaN if training diverged. */
    public double finalLoss() {
        int n = Math.max(1, loss.size() / 10);
        double s = 0;
        for (int i = loss.size() - n; i < loss.size(); i++) {
            s += loss.get(i);
        }
        return loss.isEmpty() ? Double.NaN : s / n;
    }

    /** The first-step raw global gradient norm. */
    public double firstNorm() {
        return globalNorm.isEmpty() ? Double.NaN : globalNorm.get(0);
    }

    /**
     * The first layer whose raw gradient norm explodes: at the earliest step where some layer's
     * norm is non-finite or more than {@value #SPIKE}× the median of its previous (up to 20)
     * norms, the layer with the largest ratio; empty if none did.
     */
    public Map.Entry<String, Integer> firstExplodingLayer() {
        int steps = globalNorm.size();
        for (int s = WARMUP; s < steps; s++) {
            String worst = null;
            double worstRatio = SPIKE;
            for (Map.Entry<String, List<Double>> e : layerNorms.entrySet()) {
                List<Double> h = e.getValue();
                double now = h.get(s);
                double ratio = Double.isFinite(now) ? now / median(h.subList(Math.max(0, s - WINDOW), s)) : Double.POSITIVE_INFINITY;
                if (ratio > worstRatio || (worst == null && ratio == Double.POSITIVE_INFINITY)) {
                    worst = e.getKey();
                    worstRatio = ratio;
                }
            }
            if (worst != null) {
                return Map.entry(worst, s);
            }
        }
        return null;
    }

    private static double median(List<Double> xs) {
        double[] a = xs.stream().mapToDouble(Double::doubleValue).filter(Double::isFinite).sorted().toArray();
        return a.length == 0 ? Double.NaN : a[a.length / 2];
    }

    /** A fresh accumulator for the run's per-step records. */
    static Map<String, List<Double>> newLayerMap() {
        return new LinkedHashMap<>();
    }
}
