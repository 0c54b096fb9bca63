package io.gradguard.consumers;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * docs/install.md shows what the consumer projects under src/it build and run, verbatim: each
 * framework's Java file (the block after {@code <!-- snippet: NAME -->}) equals the project's main
 * class, and the BOM import and dependency blocks ({@code <!-- deps: bom -->}, {@code <!-- deps:
 * NAME -->}) appear in the project's pom.xml, with GradGuard's current version.
 */
class InstallDocTest {
    static final Path DOC = Path.of("..", "docs", "install.md");
    static final Path PROJECTS = Path.of("src", "it");

    static String doc() throws IOException {
        return Files.readString(DOC, StandardCharsets.UTF_8);
    }

    /** The fenced block of the given language that follows the marker line. */
    static String block(String doc, String marker, String language) {
        int at = doc.indexOf(marker);
        assertTrue(at >= 0, "docs/install.md has no marker " + marker);
        String fence = "```" + language + "\n";
        int start = doc.indexOf(fence, at);
        assertTrue(start >= 0 && doc.substring(at + marker.length(), start).isBlank(),
                "the marker " + marker + " in docs/install.md must be followed by a " + fence.trim() + " block");
        start += fence.length();
        int end = doc.indexOf("```", start);
        return doc.substring(start, end);
    }

    static String pom(String project) throws IOException {
        return Files.readString(PROJECTS.resolve(project).resolve("pom.xml"), StandardCharsets.UTF_8)
                .replace("@project.version@", System.getProperty("gradguard.version"));
    }

    static String squeeze(String xml) {
        return xml.replaceAll("\\s+", " ").trim();
    }

    @ParameterizedTest
    @ValueSource(strings = {"djl", "dl4j", "tensorflow"})
    void theDocsShowTheConsumersJavaFile(String project) throws IOException {
        List<Path> sources;
        try (var files = Files.walk(PROJECTS.resolve(project).resolve("src/main/java"))) {
            sources = files.filter(f -> f.toString().endsWith(".java")).toList();
        }
        assertEquals(1, sources.size(), "one Java file in " + project + ": " + sources);
        String code = Files.readString(sources.get(0), StandardCharsets.UTF_8);
        assertEquals(code, block(doc(), "<!-- snippet: " + project + " -->", "java"),
                "docs/install.md's " + project + " snippet differs from " + sources.get(0) + ": copy the file into the docs");
    }

    @ParameterizedTest
    @ValueSource(strings = {"djl", "dl4j", "tensorflow"})
    void theDocsDependencyBlocksAreTheConsumersOwn(String project) throws IOException {
        String pom = squeeze(pom(project));
        for (String marker : List.of("<!-- deps: bom -->", "<!-- deps: " + project + " -->")) {
            String xml = squeeze(block(doc(), marker, "xml"));
            assertTrue(pom.contains(xml), "the block after " + marker + " in docs/install.md is not in " + project
                    + "/pom.xml (with version " + System.getProperty("gradguard.version") + "):\n" + xml);
        }
    }
}
