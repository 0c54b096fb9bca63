package io.gradguard.consumers;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Runs in the verify phase, after the consumer projects were built and run: each snippet printed
 * five guarded steps, and its loss fell at every step (the guarded updates reached the model).
 */
class ConsumerRunTest {
    static final Pattern STEP = Pattern.compile("^step (\\d+): .*loss (-?[0-9.]+)$", Pattern.MULTILINE);

    @ParameterizedTest
    @ValueSource(strings = {"djl", "dl4j", "tensorflow"})
    void theSnippetTrainedFiveStepsWithAFallingLoss(String project) throws IOException {
        Path log = Path.of("target", "it", project, "build.log");
        Matcher m = STEP.matcher(Files.readString(log, StandardCharsets.UTF_8));
        List<Double> losses = m.results().map(r -> Double.parseDouble(r.group(2))).toList();
        assertEquals(5, losses.size(), project + " printed " + losses.size() + " steps; see " + log);
        for (int i = 1; i < losses.size(); i++) {
            assertTrue(losses.get(i) < losses.get(i - 1), project + "'s loss did not fall at step " + i + ": " + losses);
        }
    }
}
