package io.gradguard.core.checkpoint;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.gradguard.core.GradientPipeline;
import io.gradguard.core.StateFormatException;
import io.gradguard.core.StepContext;
import io.gradguard.core.internal.AtomicFiles;
import io.gradguard.core.reference.ReferenceOps;
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link GradientPipeline#saveState(Path)} replaces a checkpoint file atomically: a process killed
 * while saving leaves the previous complete checkpoint, which restores.
 */
class CheckpointFileTest {
    static final ReferenceOps OPS = ReferenceOps.INSTANCE;

    @TempDir
    Path dir;

    static GradientPipeline stepped(int calls) {
        GradientPipeline p = CheckpointWriter.pipeline();
        for (int c = 0; c < calls; c++) {
            p.step(CheckpointWriter.gradients(c), OPS, StepContext.ofBatch(1));
        }
        return p;
    }

    static byte[] bytes(GradientPipeline p) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        p.saveState(out);
        return out.toByteArray();
    }

    List<Path> leftovers() throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(f -> f.getFileName().toString().endsWith(".tmp")).collect(Collectors.toList());
        }
    }

    @Test
    void aSavedFileHoldsTheStreamBytesReplacesTheOldOneAndLeavesNoTemporaryFile() throws IOException {
        Path file = dir.resolve("guard.state");
        GradientPipeline p = stepped(2);
        p.saveState(file);
        p.step(CheckpointWriter.gradients(2), OPS, StepContext.ofBatch(1));
        p.saveState(file);
        assertArrayEquals(bytes(p), Files.readAllBytes(file));
        assertEquals(List.of(), leftovers());

        GradientPipeline resumed = CheckpointWriter.pipeline();
        resumed.restoreState(file, OPS);
        assertEquals(3, resumed.heldCount());
        assertArrayEquals(bytes(p), bytes(resumed));
    }

    @Test
    void aFailedWriteKeepsThePreviousFileAndRemovesItsTemporaryFile() throws IOException {
        Path file = dir.resolve("guard.state");
        AtomicFiles.write(file, out -> out.write(new byte[] {1, 2, 3}));
        IOException e = assertThrows(IOException.class, () -> AtomicFiles.write(file, out -> {
            out.write(new byte[100_000]);
            throw new IOException("disk full");
        }));
        assertEquals("disk full", e.getMessage());
        assertArrayEquals(new byte[] {1, 2, 3}, Files.readAllBytes(file));
        assertEquals(List.of(), leftovers());
    }

    @Test
    void badPathsAreRefused() throws IOException {
        GradientPipeline p = stepped(1);
        IllegalArgumentException nul = assertThrows(IllegalArgumentException.class, () -> p.saveState((Path) null));
        assertEquals("target must not be null", nul.getMessage());
        IllegalArgumentException d = assertThrows(IllegalArgumentException.class, () -> p.saveState(dir));
        assertTrue(d.getMessage().startsWith("target must not be a directory, got "), d.getMessage());
        assertThrows(NoSuchFileException.class, () -> p.restoreState(dir.resolve("missing.state"), OPS));
        Path junk = dir.resolve("junk.state");
        Files.write(junk, new byte[] {1, 2, 3});
        assertThrows(StateFormatException.class, () -> p.restoreState(junk, OPS));
    }

    /**
     * A child JVM saves a 16 MB state after every call, forever; it is killed (SIGKILL) at a random
     * moment, until two kills have landed during a save (a temporary file is left). Every time, the
     * file restores, to a save no older than the last one the child announced, with exactly that
     * save's bytes.
     */
    @Test
    void aProcessKilledWhileSavingLeavesTheLastCompleteCheckpoint() throws Exception {
        Path file = dir.resolve("guard.state");
        Random random = new Random(42);
        int midSave = 0;
        for (int attempt = 0; attempt < 12 && midSave < 2; attempt++) {
            Process child = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xmx512m",
                    "-cp", System.getProperty("java.class.path"), CheckpointWriter.class.getName(), file.toString())
                    .redirectErrorStream(true).start();
            // the last save the child announced; its output is read on another thread, as a kill closes the stream
            AtomicInteger announced = new AtomicInteger();
            Thread reader = new Thread(() -> {
                try (BufferedReader out = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
                    for (String line; (line = out.readLine()) != null; ) {
                        if (line.startsWith("saved ")) {
                            announced.set(Integer.parseInt(line.substring(6)));
                        }
                    }
                } catch (IOException closedByTheKill) {
                    // the announcements read so far stand
                }
            });
            reader.start();
            long deadline = System.nanoTime() + 60_000_000_000L;
            while (announced.get() < 2 && child.isAlive() && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            assertTrue(announced.get() >= 2, "the child did not save twice within a minute");
            Thread.sleep(random.nextInt(400));
            int complete = announced.get();
            child.destroyForcibly();
            child.waitFor();
            reader.join();
            List<Path> tmp = leftovers();
            if (!tmp.isEmpty()) {
                midSave++;
            }
            GradientPipeline resumed = CheckpointWriter.pipeline();
            resumed.restoreState(file, OPS);
            long calls = resumed.heldCount();
            assertTrue(calls >= complete, "restored the state after " + calls + " calls; the child had announced " + complete);
            assertArrayEquals(bytes(stepped((int) calls)), Files.readAllBytes(file), "the checkpoint after " + calls + " calls");
            for (Path t : tmp) {
                Files.delete(t);
            }
            Files.delete(file);
        }
        assertTrue(midSave >= 2, "fewer than 2 of 12 kills landed during a save");
        assertFalse(Files.exists(file));
    }
}
