package io.gradguard.core.doctor;

import io.gradguard.core.monitor.HtmlReport;
import io.gradguard.core.monitor.RunRecording;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The doctor from a shell: diagnoses JSON Lines files written by a {@link io.gradguard.core.monitor.Monitor}
 * ({@code Sinks.jsonl}, {@code Monitor.toJsonl}), prints each diagnosis as text and writes an HTML
 * report with a "Diagnosis" section per run.
 *
 * <pre>
 * java -cp gradguard-core.jar io.gradguard.core.doctor.Diagnose grad.jsonl [more.jsonl ...] [--html report.html]
 * </pre>
 *
 * <p>Exit status: 0 when every run was diagnosed (healthy or not), 2 for bad arguments or a file
 * that is not a GradGuard recording (one line on stderr naming the file and line).
 */
public final class Diagnose {
    private Diagnose() {
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs the command; returns the exit status. */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        List<Path> files = new ArrayList<>();
        Path html = null;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--help") || args[i].equals("-h")) {
                out.println("usage: Diagnose FILE.jsonl [FILE.jsonl ...] [--html REPORT.html]  (default report: FILE.html beside the first file)");
                return 0;
            }
            if (args[i].equals("--html")) {
                if (i + 1 >= args.length) {
                    err.println("diagnose: option --html needs a file name");
                    return 2;
                }
                html = Path.of(args[++i]);
            } else if (args[i].startsWith("--")) {
                err.println("diagnose: unknown option " + args[i] + " (use FILE.jsonl ... [--html REPORT.html])");
                return 2;
            } else {
                files.add(Path.of(args[i]));
            }
        }
        if (files.isEmpty()) {
            err.println("diagnose: give at least one JSON Lines file written by a GradGuard Monitor");
            return 2;
        }
        List<RunRecording> runs = new ArrayList<>();
        for (Path f : files) {
            try {
                runs.add(read(f));
            } catch (IllegalArgumentException e) {
                err.println("diagnose: " + e.getMessage());
                return 2;
            }
        }
        for (RunRecording r : runs) {
            out.println(Doctor.diagnose(r).text());
        }
        Path report = html != null ? html : files.get(0).resolveSibling(stem(files.get(0)) + ".html");
        try {
            HtmlReport.write(report, runs);
        } catch (IllegalArgumentException e) {
            err.println("diagnose: " + e.getMessage());
            return 2;
        }
        out.println("report: " + report);
        return 0;
    }

    /**
     * Reads a recording, refusing an empty file (nothing to diagnose).
     *
     * @throws IllegalArgumentException naming the file (and the line) when it cannot be read, is
     *                                  empty, or holds a line that is not a GradGuard record
     */
    public static RunRecording read(Path file) {
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("file must be a readable GradGuard JSON Lines file, got " + file + " (no such file)");
        }
        RunRecording r = RunRecording.readJsonl(file);
        if (r.records().isEmpty()) {
            throw new IllegalArgumentException("file " + file + " holds no records (empty): was the Monitor closed before any step?");
        }
        return r;
    }

    private static String stem(Path p) {
        String n = p.getFileName().toString();
        int dot = n.lastIndexOf('.');
        return dot > 0 ? n.substring(0, dot) : n;
    }
}
