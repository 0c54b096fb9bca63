package io.gradguard.benchmarks;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Runs every section in tiny mode (seconds) through the runner, each in its own JVM, and checks
 * that the table is produced with measured rows from every section. No timing is asserted: the
 * numbers of a tiny run mean nothing.
 */
class RunnerSmokeTest {

    @Test
    void tinyRunProducesATableWithEverySection() {
        Path dir = Path.of(System.getProperty("benchmarks.dir", "benchmarks"));
        StringWriter console = new StringWriter();
        Runner runner = new Runner(dir, true, new PrintWriter(console, true));
        List<Row> rows = runner.run(List.of("reference", "reference-scalar", "dl4j", "djl", "tensorflow"));
        String report = runner.page(rows, true);

        assertTrue(report.startsWith("# Performance"), report);
        for (String heading : List.of("## Command", "## Machine", "## Goals met and missed", "## Results", "## How it is measured")) {
            assertTrue(report.contains("\n" + heading + "\n"), heading + "\n" + report);
        }
        assertTrue(report.contains("tiny mode") && report.contains("-Dbench=tiny"), report);
        assertTrue(report.contains("- Load average (1, 5, 15 min): "), report);
        assertTrue(report.contains(Table.header()), report);
        for (Row r : rows) {
            assertFalse(r.note().startsWith("FAILED") || r.note().startsWith("TIMED OUT") || r.note().startsWith("skipped: "), "section problem: " + Table.format(r) + "\n" + console);
        }
        long part1 = rows.stream().filter(r -> r.part() == 1 && Double.isFinite(r.ratio()) && r.ratio() > 0).count();
        assertEquals(20, part1, "five reference transforms at two tiny sizes, with and without the Vector API, each with a ratio to its floor\n" + report);
        assertEquals(5, rows.stream().filter(r -> r.part() == 4 && r.name().startsWith("reference (scalar")).count(), report);
        assertEquals(10, rows.stream().filter(r -> r.part() == 4 && r.name().startsWith("reference")).count(), report);
        for (String framework : List.of("dl4j", "djl", "tensorflow")) {
            assertTrue(rows.stream().anyMatch(r -> r.name().startsWith(framework) && Double.isFinite(r.ratio()) && r.ratio() > 0),
                    "a measured row from " + framework + "\n" + report);
        }
    }

    @Test
    void goalsAreComputedFromTheRatios() {
        List<Row> rows = List.of(
                Row.ratio(1, "reference clipByGlobalNorm", "100M", 30, "floor read+rw", 40, 1.5, ""),
                Row.ratio(1, "reference clipByValue", "1M", 0.45, "floor rw", 0.15, 1.5, ""),
                Row.ratio(2, "dl4j unguarded step, A/A control (noise)", "5.02M params", 47.0, "unguarded step", 46.7, Double.NaN, ""),
                Row.ratio(2, "dl4j guarded step", "5.02M params", 48.1, "unguarded step", 46.7, 1.03, ""),
                Row.ratio(2, "djl unguarded step, A/A control (noise)", "5.02M params", 35.6, "unguarded step", 35.9, Double.NaN, ""),
                Row.ratio(2, "djl guarded step", "5.02M params", 38.0, "unguarded step", 35.9, 1.03, ""),
                Row.note(4, "reference clipByGlobalNorm, 1M..100M params", "t ≈ 0.3 ns/param · n"),
                Row.note(0, "tensorflow", "TIMED OUT after 300 s"));
        String goals = Runner.goals(rows);

        assertTrue(goals.contains("- **Reference backend within 1.5× of the bandwidth floor: partly met** (1 of 2 rows meet it)."), goals);
        assertTrue(goals.contains("  - missed: reference clipByValue (1M): 3.000 against ≤ 1.50\n"), goals);
        assertTrue(goals.contains("within 3% of the unguarded step: partly met** (1 of 2 rows meet it)."), goals);
        assertTrue(goals.contains("djl 0.008, dl4j 0.006"), goals);
        assertTrue(goals.contains("  - missed: djl guarded step: 1.058 against ≤ 1.03\n"), goals);
        assertFalse(goals.contains("within this run's noise"), "a miss of 0.028 is outside an A/A noise of 0.008: " + goals);
        assertFalse(goals.contains("built-in"), "no part-3 row, no part-3 line: " + goals);
        assertTrue(goals.contains("- **Not judged: tensorflow**, whose section did not complete (TIMED OUT after 300 s)"), goals);
        assertFalse(goals.contains("Not judged: reference"), "a part-4 note is a result, not a failure: " + goals);
    }

    /**
     * The quick parts' rows are the median of the runs that measured them, with every run's ratio
     * in the note; the first run's other rows and order are kept, and what only a later run
     * measured, or where a later run failed, is added.
     */
    @Test
    void quickPartsReportTheMedianRunOfSeveral() {
        List<Row> full = List.of(
                Row.ratio(2, "tf guarded step", "5M", 50, "unguarded step", 49, 1.03, ""),
                Row.ratio(5, "tf small, monitored", "5.6k", 1.36, "unguarded step", 1.0, 1.3, "drains included"),
                Row.ratio(5, "tf small, clip", "5.6k", 1.10, "unguarded step", 1.0, 1.15, ""));
        List<Row> second = List.of(
                Row.ratio(5, "tf small, monitored", "5.6k", 2.54, "unguarded step", 2.0, 1.3, "drains included"),
                Row.ratio(5, "tf small, clip", "5.6k", 2.40, "unguarded step", 2.0, 1.15, ""),
                Row.ratio(5, "tf small, clip", "94k", 1.05, "unguarded step", 1.0, 1.15, ""));
        List<Row> third = List.of(
                Row.ratio(5, "tf small, monitored", "5.6k", 3.87, "unguarded step", 3.0, 1.3, "drains included"),
                Row.note(0, "tensorflow", "TIMED OUT after 300 s"));

        List<Row> rows = Runner.combineRuns(List.of(full, second, third));

        assertEquals(5, rows.size(), rows.toString());
        assertEquals(full.get(0), rows.get(0), "a part the other runs did not measure is kept as it was");
        Row monitored = rows.get(1);
        assertEquals(1.29, monitored.ratio(), 1e-12, "the median of 1.36, 1.27 and 1.29");
        assertEquals(3.0, monitored.baselineMillis(), "the median run's own times");
        assertEquals("drains included (median of 3 runs: 1.270, 1.290, 1.360)", monitored.note());
        assertEquals("meets", monitored.verdict());
        Row clip = rows.get(2);
        assertEquals(1.2, clip.ratio(), 1e-12, "of two runs, the upper middle: 1.10 and 1.20");
        assertEquals("median of 2 runs: 1.100, 1.200", clip.note());
        assertEquals("94k", rows.get(3).size(), "measured by a later run only: added after the first run's rows");
        assertEquals("median of 1 run: 1.050", rows.get(3).note());
        assertEquals("run 3 of 3: TIMED OUT after 300 s", rows.get(4).note());
        assertEquals(full, Runner.combineRuns(List.of(full)), "one run: its rows");
    }

    /**
     * A full run writes docs/performance.md only when it ran every section: a run of some sections
     * would replace the whole page with part of it. (No module is built in the temporary folder, so
     * each section is reported as skipped at once.)
     */
    @Test
    void onlyAFullRunOfEverySectionReplacesThePerformancePage(@org.junit.jupiter.api.io.TempDir Path tmp) {
        Path dir = tmp.resolve("benchmarks");
        Path page = tmp.resolve("docs").resolve("performance.md");
        Runner some = new Runner(dir, "full", new PrintWriter(new StringWriter()));
        some.write(some.page(some.run(List.of("tensorflow")), true));
        assertTrue(java.nio.file.Files.isRegularFile(dir.resolve("target").resolve("benchmark-report.md")), "the target report is always written");
        assertFalse(java.nio.file.Files.exists(page), "a run of one section must not write " + page);
        Runner all = new Runner(dir, "full", new PrintWriter(new StringWriter()));
        all.write(all.page(all.run(List.of("reference", "reference-scalar", "dl4j", "djl", "tensorflow")), true));
        assertTrue(java.nio.file.Files.isRegularFile(page), "a full run of every section writes " + page);
    }

    @Test
    void unknownSectionIsRejectedByName() {
        Runner runner = new Runner(Path.of("benchmarks"), true, new PrintWriter(new StringWriter()));
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> runner.run(List.of("pytorch")));
        assertTrue(e.getMessage().contains("got pytorch"), e.getMessage());
    }
}
