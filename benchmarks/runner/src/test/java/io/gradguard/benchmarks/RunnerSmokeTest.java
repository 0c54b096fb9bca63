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
        String report = runner.report(rows);

        assertTrue(report.startsWith("Machine: "), report);
        assertTrue(report.contains(Table.header()), report);
        for (Row r : rows) {
            assertFalse(r.note().startsWith("FAILED") || r.note().startsWith("TIMED OUT") || r.note().startsWith("skipped: "
                    + dir), "section problem: " + Table.format(r) + "\n" + console);
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
    void unknownSectionIsRejectedByName() {
        Runner runner = new Runner(Path.of("benchmarks"), true, new PrintWriter(new StringWriter()));
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> runner.run(List.of("pytorch")));
        assertTrue(e.getMessage().contains("got pytorch"), e.getMessage());
    }
}
