package io.gradguard.benchmarks;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.junit.jupiter.api.Test;

/** The harness's bookkeeping: rows survive the trip between JVMs, medians, fits, rounds. */
class HarnessTest {

    @Test
    void rowRoundTripsThroughItsLine() {
        Row r = Row.ratio(1, "reference clipByGlobalNorm", "100M", 61.5, "floor read+rw", 50.0, 1.5, "a\tb");
        Row back = Row.parse(r.toLine());
        assertEquals("a b", back.note());
        assertEquals(r.millis(), back.millis(), 1e-6);
        assertEquals(1.23, back.ratio(), 1e-9);
        assertEquals("meets", back.verdict());
        assertEquals("MISSES", Row.ratio(1, "x", "1", 80, "f", 50, 1.5, "").verdict());
        assertEquals("report", Row.ratio(2, "x", "1", 80, "f", 50, Double.NaN, "").verdict());
        assertEquals("", Row.note(2, "x", "skipped").verdict());
    }

    @Test
    void aPipeInARowsTextStaysInItsTableCell() {
        String line = Table.format(Row.ratio(2, "per-tensor max|x|", "1", 80, "f", 50, Double.NaN, "max|x| each step"));
        assertEquals(9, line.replace("\\|", "").chars().filter(c -> c == '|').count(), line);
        assertTrue(line.contains("max\\|x\\| each step"), line);
    }

    @Test
    void malformedLineIsRejected() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Row.parse("1\tx"));
        assertTrue(e.getMessage().contains("got 2"), e.getMessage());
    }

    @Test
    void quickModeRunsOnlyTheSmallModelsAtRealSizes() {
        try (Section quick = Section.fromArgs("t", new String[] {"--mode", "quick"});
                Section tiny = Section.fromArgs("t", new String[] {"--mode", "tiny"})) {
            assertTrue(quick.quick() && !quick.tiny());
            assertTrue(tiny.tiny() && !tiny.quick());
            assertEquals(2, SmallModels.widths(quick).length);
            assertEquals(1, SmallModels.widths(tiny).length);
        }
        assertThrows(IllegalArgumentException.class, () -> Section.fromArgs("t", new String[] {"--mode", "fast"}));
    }

    @Test
    void medianAndFit() {
        assertEquals(2.0, Stats.median(new double[] {3, 1, 2}));
        assertEquals(2.5, Stats.median(new double[] {4, 1, 3, 2}));
        Stats.Line line = Stats.fit(new double[] {1, 2, 3, 4}, new double[] {3, 5, 7, 9});
        assertEquals(2.0, line.slope(), 1e-9);
        assertEquals(1.0, line.intercept(), 1e-9);
        assertEquals(0.0, line.maxDeviation(), 1e-9);
        assertThrows(IllegalArgumentException.class, () -> Stats.fit(new double[] {1}, new double[] {1}));
    }

    @Test
    void roundsTimeEveryCaseOncePerRound() {
        int[] calls = new int[2];
        Map<String, Double> m = new Rounds(2, 5).add("a", () -> calls[0]++).add("b", () -> calls[1]++).run();
        assertEquals(7, calls[0]);
        assertEquals(7, calls[1]);
        assertEquals(2, m.size());
        assertThrows(IllegalArgumentException.class, () -> new Rounds(0, 1).add("a", () -> { }).add("a", () -> { }));
    }

    @Test
    void floorLoopsDoTheirWork() {
        float[] x = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        float[] y = {1, 1, 1, 1, 1, 1, 1, 1, 1};
        assertEquals(45f, BandwidthFloor.readRange(x, 0, x.length));
        BandwidthFloor.axpy(x, y, false);
        assertEquals(10f, x[8]);
        BandwidthFloor.readWrite(x, true);
        assertEquals(2f, x[0]);
    }
}
