package io.gradguard.core.monitor;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Logs through SLF4J (logger {@code io.gradguard.core.monitor.Slf4jSink}): every event as a
 * warning, and every {@code every} optimizer steps an INFO summary of the steps since the last one:
 *
 * <pre>GradGuard run 'mlp' step 200: loss 0.4123, grad norm 3.1e+00 (max 5.2e+00) → 1.0e+00, clipped 87/100, skipped 0, update/param 1.2e-03</pre>
 *
 * Create with {@link Sinks#slf4j(int)} ({@code every} = 0 logs events only).
 */
final class Slf4jSink implements MonitorListener {
    private static final Logger LOG = LoggerFactory.getLogger(Slf4jSink.class);

    private final int every;
    private int steps;
    private int clipped;
    private int skipped;
    private double maxNorm = Double.NaN;
    private double ratio = Double.NaN;

    Slf4jSink(int every) {
        this.every = every;
    }

    @Override
    public void onEvent(MonitorEvent event) {
        LOG.warn("GradGuard {}: {}", event.kind(), event.message());
    }

    @Override
    public void onRecord(StepRecord r) {
        if (every == 0) {
            return;
        }
        if (r.skipped()) {
            skipped++;
            return;
        }
        steps++;
        clipped += r.clipped() ? 1 : 0;
        if (!(maxNorm >= r.normBefore())) {
            maxNorm = r.normBefore();
        }
        List<Double> ratios = new ArrayList<>();
        for (LayerStats l : r.layers()) {
            if (Double.isFinite(l.updateRatio())) {
                ratios.add(l.updateRatio());
            }
        }
        if (!ratios.isEmpty()) {
            Collections.sort(ratios);
            ratio = ratios.get(ratios.size() / 2);
        }
        if ((r.step() + 1) % every == 0 && LOG.isInfoEnabled()) {
            LOG.info("GradGuard run '{}' step {}: loss {}, grad norm {} (max {}) → {}, clipped {}/{}, skipped {}{}", r.run(),
                    r.step() + 1, r.hasLoss() ? String.format(java.util.Locale.ROOT, "%.4g", r.loss()) : "unknown",
                    Detectors.sci(r.normBefore()), Detectors.sci(maxNorm), Detectors.sci(r.normAfter()), clipped, steps, skipped,
                    Double.isNaN(ratio) ? "" : ", update/param " + Detectors.sci(ratio) + " (median layer)");
        }
        if ((r.step() + 1) % every == 0) {
            steps = 0;
            clipped = 0;
            skipped = 0;
            maxNorm = Double.NaN;
            ratio = Double.NaN;
        }
    }

    @Override
    public String toString() {
        return "Slf4jSink(every " + every + ")";
    }
}
