package io.gradguard.core.monitor;

/**
 * Receives what a {@link Monitor} produces: every step's record and every detector event. Sinks
 * implement it, and so can user code.
 *
 * <p>A listener that throws is reported once through SLF4J and switched off; training goes on.
 *
 * <pre>{@code
 * monitor.addListener(new MonitorListener() {
 *     public void onRecord(StepRecord r) { dashboard.plot(r.step(), r.normBefore()); }
 *     public void onEvent(MonitorEvent e) { alerts.send(e.message()); }
 * });
 * }</pre>
 */
public interface MonitorListener {

    /** One record per optimizer step (applied or skipped), in order. */
    default void onRecord(StepRecord record) {
    }

    /**
     * A detector fired. Called as soon as the step is measured, before that step's record is
     * delivered (the record also lists it in {@link StepRecord#events()}).
     */
    default void onEvent(MonitorEvent event) {
    }

    /** Called once by {@link Monitor#close()}: flush and release files. */
    default void close() {
    }
}
