package io.gradguard.consumers;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.io.IOException;
import java.nio.file.Path;
import java.util.jar.JarFile;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Core and each adapter, as the reactor packaged them before this module: the jar names its stable
 * module, and the sources and javadoc jars are attached beside it (unless the build skipped them
 * with -Dmaven.source.skip / -Dmaven.javadoc.skip).
 */
class ReleaseArtifactsTest {
    static Path artifact(String module, String artifactId, String suffix) {
        return Path.of("..", module, "target", artifactId + "-" + System.getProperty("gradguard.version") + suffix + ".jar");
    }

    @ParameterizedTest
    @CsvSource({
        "core,               gradguard-core,               io.gradguard.core,       io/gradguard/core/GradientPipeline",
        "adapter-djl,        gradguard-adapter-djl,        io.gradguard.djl,        io/gradguard/djl/DjlGuard",
        "adapter-dl4j,       gradguard-adapter-dl4j,       io.gradguard.dl4j,       io/gradguard/dl4j/Dl4jGuard",
        "adapter-tensorflow, gradguard-adapter-tensorflow, io.gradguard.tensorflow, io/gradguard/tensorflow/TfGuard",
    })
    void theJarNamesItsModuleAndHasSourcesAndJavadoc(String module, String artifactId, String moduleName, String type) throws IOException {
        try (JarFile jar = new JarFile(artifact(module, artifactId, "").toFile())) {
            assertEquals(moduleName, jar.getManifest().getMainAttributes().getValue("Automatic-Module-Name"));
            assertNotNull(jar.getEntry(type + ".class"));
        }
        assumeFalse(Boolean.getBoolean("maven.source.skip"), "the build skipped the sources jars");
        try (JarFile sources = new JarFile(artifact(module, artifactId, "-sources").toFile())) {
            assertNotNull(sources.getEntry(type + ".java"), "sources jar of " + artifactId);
        }
        assumeFalse(Boolean.getBoolean("maven.javadoc.skip"), "the build skipped the javadoc jars");
        try (JarFile javadoc = new JarFile(artifact(module, artifactId, "-javadoc").toFile())) {
            assertNotNull(javadoc.getEntry(type + ".html"), "javadoc jar of " + artifactId);
        }
    }
}
