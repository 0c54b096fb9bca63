package io.gradguard.examples.compare;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.io.PrintStream;
import java.nio.file.Path;
import io.gradguard.core.monitor.HtmlReport;

/**
 * The comparison's output: the tables and parity on the console; in {@code report.html} the
 * spread over seeds first, then the charts of every run of the first seed.
 */
public final class Report {
    private Report() {
    }

    /**
     * Prints the tables and parity lines, writes the HTML report.
     *
     * @return the report's path
     * @throws IOException if the report cannot be written
     */
    public static Path print(Comparison c, PrintStream out) throws IOException {
        Table.print(c, out);
        Path file = c.options().out().resolve("report.html");
        // with several seeds, the per-run charts show the first seed; the spread is in the "Across seeds" section
        String html = HtmlReport.render(c.runs().stream().filter(r -> r.seed() == c.options().seed()).map(RunResult::recording).toList());
        int at = html.indexOf("<table class=\"summary\">");
        Files.createDirectories(file.getParent());
        Files.writeString(file, html.substring(0, at) + SpreadSection.render(c) + html.substring(at), StandardCharsets.UTF_8);
        return file;
    }

    /**
     * Keeps the frameworks' start-up chatter (INFO lines, a CUDA probe on a machine without a GPU)
     * off the console; warnings stay. Call before the first framework class loads.
     */
    public static void quietFrameworkLogs() {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.log.ai.djl.util.cuda.CudaUtils", "error");
        System.setProperty("org.bytedeco.javacpp.logger", "slf4j");
    }
}
