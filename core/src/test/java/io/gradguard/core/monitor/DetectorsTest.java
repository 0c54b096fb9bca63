package io.gradguard.core.monitor;

import static io.gradguard.core.monitor.Fixtures.layers;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StepContext;
import io.gradguard.core.Transforms;
import io.gradguard.core.reference.ReferenceOps;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The detectors fire on constructed spikes, vanishing layers and NaN, with the expected message, and stay quiet on calm runs. */
class DetectorsTest {
    static final ReferenceOps OPS = ReferenceOps.INSTANCE;

    /** Collects events as they are raised. */
    static final class Events implements MonitorListener {
        final List<MonitorEvent> events = new ArrayList<>();

        @Override
        public void onEvent(MonitorEvent e) {
            events.add(e);
        }

        List<String> messages() {
            return events.stream().map(MonitorEvent::message).toList();
        }
    }

    @Test
    void calmNoisyRunsRaiseNothing() {
        Random rnd = new Random(42);
        Events ev = new Events();
        Monitor m = Monitor.builder().sink(ev).build();
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), m);
        for (int s = 0; s < 2000; s++) {
            float decay = (float) Math.exp(-s / 800.0); // norms shrink as training converges
            float[] norms = new float[4];
            for (int l = 0; l < 4; l++) {
                norms[l] = (float) ((l + 1) * decay * Math.exp(0.5 * rnd.nextGaussian()));
            }
            p.step(layers(norms), OPS, StepContext.empty().withLoss(decay));
        }
        m.close();
        assertEquals(List.of(), ev.messages());
    }

    @Test
    void aLayerSpikeNamesTheLayerAndItsRatioToItsRunningMedianOnce() {
        Events ev = new Events();
        Monitor m = Monitor.builder().sink(ev).build();
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), m);
        for (int s = 0; s < 60; s++) {
            p.step(layers(1, 1, 1, s == 50 || s == 51 ? 40 : 1), OPS, StepContext.empty());
        }
        m.close();
        assertEquals(List.of("layer dense_3 gradient norm 4.0e+01 at step 50: 40x its running median (global norm 4.0e+01, 20x)"),
                ev.messages(), "fires when the spike starts, not again while it lasts");
        MonitorEvent e = ev.events.get(0);
        assertEquals(MonitorEvent.Kind.EXPLODING, e.kind());
        assertEquals("dense_3", e.layer());
        assertEquals(50, e.step());
        assertEquals(40, e.value(), 1e-4);
        assertEquals(1, e.reference(), 1e-6);
    }

    @Test
    void theFirstOffendingLayerInModelOrderIsNamed() {
        Events ev = new Events();
        Monitor m = Monitor.builder().sink(ev).build();
        GradientPipeline p = GradientPipeline.of(m);
        for (int s = 0; s < 40; s++) {
            p.step(layers(1, 2, 3), OPS, StepContext.empty());
        }
        p.step(layers(1, 200, 3000), OPS, StepContext.empty());
        m.close();
        assertEquals(1, ev.events.size());
        assertTrue(ev.messages().get(0).startsWith("layer dense_1 gradient norm 2.0e+02 at step 40: 100x its running median"),
                ev.messages().get(0));
    }

    @Test
    void aSpikeBetweenCadenceStepsStillNamesTheLayer() {
        Events ev = new Events();
        Monitor m = Monitor.builder().every(10).sink(ev).build();
        GradientPipeline p = GradientPipeline.of(m);
        for (int s = 0; s < 37; s++) {
            p.step(layers(1, 1), OPS, StepContext.empty());
        }
        p.step(layers(1, 500), OPS, StepContext.empty());
        m.close();
        // layer baselines hold the 4 measured steps 0, 10, 20, 30; step 37 is measured because it spikes
        assertEquals(List.of("layer dense_1 gradient norm 5.0e+02 at step 37: 500x its running median (global norm 5.0e+02, 354x)"),
                ev.messages());
    }

    @Test
    void aGlobalSpikeBeforeLayerBaselinesExistNamesTheLargestLayer() {
        Events ev = new Events();
        Monitor m = Monitor.builder().every(1000).warmup(5).sink(ev).build();
        GradientPipeline p = GradientPipeline.of(m);
        for (int s = 0; s < 10; s++) {
            p.step(layers(3, 4), OPS, StepContext.empty());
        }
        p.step(layers(300, 400), OPS, StepContext.empty());
        m.close();
        assertEquals(List.of("gradient norm 5.0e+02 at step 10: 100x its running median; largest layer dense_1 (4.0e+02)"),
                ev.messages());
    }

    @Test
    void aLayerBelowTheAbsoluteThresholdForNStepsIsReportedOnce() {
        Events ev = new Events();
        Monitor m = Monitor.builder().vanishing(1e-7, 0, 20).sink(ev).build();
        GradientPipeline p = GradientPipeline.of(m);
        for (int s = 0; s < 60; s++) {
            p.step(layers(1e-9f, 1), OPS, StepContext.empty());
        }
        m.close();
        assertEquals(List.of("layer dense_0 gradient norm 1.0e-09 at step 19: below 1.0e-07 for 20 measured steps in a row"),
                ev.messages());
        assertEquals(MonitorEvent.Kind.VANISHING, ev.events.get(0).kind());
    }

    @Test
    void aLayerFarBelowTheLargestLayerIsReported() {
        Events ev = new Events();
        Monitor m = Monitor.builder().vanishing(0, 1e-4, 5).sink(ev).build();
        GradientPipeline p = GradientPipeline.of(m);
        for (int s = 0; s < 5; s++) {
            p.step(layers(2e-5f, 0.5f, 1), OPS, StepContext.empty());
        }
        m.close();
        assertEquals(List.of("layer dense_0 gradient norm 2.0e-05 at step 4: below 1.0e-04 of the largest layer's (dense_2, 1.0e+00)"
                + " for 5 measured steps in a row"), ev.messages());
    }

    @Test
    void aLayerThatRecoversIsNotReportedAndTooSmallALayerCannotExplode() {
        Events ev = new Events();
        Monitor m = Monitor.builder().vanishing(1e-7, 1e-4, 5).sink(ev).build();
        GradientPipeline p = GradientPipeline.of(m);
        for (int s = 0; s < 40; s++) {
            p.step(layers(s % 4 == 3 ? 0.01f : 1e-9f, 1), OPS, StepContext.empty());
        }
        m.close();
        assertEquals(List.of(), ev.messages());
    }

    @Test
    void nanNamesTheFirstParameterAndStepOncePerEpisode() {
        Events ev = new Events();
        Monitor m = Monitor.builder().every(10).sink(ev).build();
        GradientPipeline p = GradientPipeline.of(m);
        for (int s = 0; s < 30; s++) {
            boolean bad = s == 12 || s == 13 || s == 20;
            p.step(layers(1, bad ? Float.NaN : 1, bad ? Float.POSITIVE_INFINITY : 1), OPS, StepContext.empty());
        }
        m.close();
        assertEquals(List.of(
                "non-finite gradient at step 12: first in parameter dense_1/W (layer dense_1), 1 NaN/Inf values; 2 in all",
                "non-finite gradient at step 20: first in parameter dense_1/W (layer dense_1), 1 NaN/Inf values; 2 in all"),
                ev.messages());
        assertEquals("dense_1/W", ev.events.get(0).parameter());
        assertEquals(MonitorEvent.Kind.NON_FINITE, ev.events.get(0).kind());
    }

    @Test
    void nanSpreadByClippingIsNotBlamedOnTheFirstParameter() {
        Events ev = new Events();
        Monitor m = Monitor.builder().sink(ev).build();
        GradientPipeline p = GradientPipeline.of(Transforms.clipByGlobalNorm(1.0), m);
        p.step(layers(1, Float.NaN, 1), OPS, StepContext.empty());
        m.close();
        assertEquals(List.of("non-finite gradient at step 0: clipping spread it to 3 values, so the parameter it started in"
                + " cannot be named; put Transforms.zeroNonFinite() or a skip policy ahead of clipping"), ev.messages());
    }

    @Test
    void detectorsCanBeTurnedOffButSkipsAreStillReported() {
        Events ev = new Events();
        Monitor m = Monitor.builder().detectors(false).sink(ev).build();
        GradientPipeline p = GradientPipeline.of(new Fixtures.SkipLossAbove(5), m);
        for (int s = 0; s < 30; s++) {
            p.step(layers(1, s == 25 ? Float.NaN : 1), OPS, StepContext.empty().withLoss(s == 27 ? 9 : 1));
        }
        m.close();
        assertEquals(List.of("step 27 skipped by lossGuard: loss 9.0 above 5.0"), ev.messages());
    }
}
