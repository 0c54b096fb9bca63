package io.gradguard.core.internal;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;

/**
 * Crash-safe file replacement, the one place GradGuard writes checkpoints: the new content goes to a
 * temporary file in the target's directory, is forced to disk, and is then renamed over the target.
 * A process that dies at any point before the rename leaves the previous file untouched (and at
 * worst a stray {@code .<name>.*.tmp} file beside it); after the rename the new file is complete.
 * Internal to GradGuard.
 *
 * <pre>{@code
 * AtomicFiles.write(Path.of("ckpt/guard.state"), out -> pipeline.saveState(out));
 * }</pre>
 */
public final class AtomicFiles {
    private AtomicFiles() {
    }

    /** Writes the content of a file; may throw what writing throws. */
    @FunctionalInterface
    public interface Content {
        /** Writes everything to {@code out} (do not close it). */
        void writeTo(OutputStream out) throws IOException;
    }

    /**
     * Replaces {@code target} with what {@code content} writes, atomically where the file system can
     * rename atomically (see {@link #replace}).
     *
     * @throws IllegalArgumentException if target or content is null, or target names a directory
     * @throws IOException if writing, syncing or renaming fails; target is then unchanged and the
     *     temporary file removed
     */
    public static void write(Path target, Content content) throws IOException {
        Checks.notNull("target", target);
        Checks.notNull("content", content);
        Checks.require(!Files.isDirectory(target), "target", "not be a directory", target);
        Path tmp = temporaryFor(target);
        try {
            try (FileChannel channel = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                OutputStream out = new BufferedOutputStream(Channels.newOutputStream(channel), 1 << 16);
                content.writeTo(out);
                out.flush();
                channel.force(true);
            }
            replace(tmp, target);
        } catch (IOException | RuntimeException | Error e) {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
    }

    /**
     * A new empty file in {@code target}'s directory, named {@code .<target name>.<random>.tmp}, for
     * content that will be moved over target with {@link #replace}.
     *
     * @throws IOException if the directory is missing or not writable
     */
    public static Path temporaryFor(Path target) throws IOException {
        Path abs = target.toAbsolutePath();
        return Files.createTempFile(abs.getParent(), "." + abs.getFileName() + ".", ".tmp");
    }

    /** Forces a complete file's content to disk (fsync), for files another writer produced. */
    public static void force(Path file) throws IOException {
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.WRITE)) {
            channel.force(true);
        }
    }

    /**
     * Moves a complete file that is already on disk ({@link #force}) over {@code target}, in the same
     * directory: an atomic rename, so a reader or a crash sees either the old or the new file. Then
     * syncs the directory, so the rename itself survives a power loss.
     *
     * @throws IOException if the move fails; target is then unchanged
     */
    public static void replace(Path source, Path target) throws IOException {
        try {
            Files.move(source, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            // Some file systems (certain network and FUSE mounts) cannot rename atomically. Replacing
            // is the best left: source is complete and synced, so a crash before this line keeps the
            // old file, but a crash during this move may leave neither file complete at target.
            Files.move(source, target, StandardCopyOption.REPLACE_EXISTING);
        }
        syncDirectory(target.toAbsolutePath().getParent());
    }

    private static void syncDirectory(Path dir) {
        try (FileChannel channel = FileChannel.open(dir, StandardOpenOption.READ)) {
            channel.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // Windows cannot open a directory as a channel; its renames are journaled by NTFS
        }
    }
}
