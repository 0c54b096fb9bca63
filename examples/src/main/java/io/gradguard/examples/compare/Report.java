package io.gradguard.examples.compare;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import io.gradguard.core.monitor.HtmlReport;

/** The comparison's output: the tables and parity on the console, the charts in {@code report.html}. */
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
        HtmlReport.write(file, c.runs().stream().map(RunResult::recording).toList());
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
