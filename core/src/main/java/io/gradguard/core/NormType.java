package io.gradguard.core;

/**
 * How a norm is measured over a tensor or a group of tensors (treated as one flat vector).
 *
 * <ul>
 *   <li>{@link #L2}: √(Σ x²), the default everywhere (PyTorch {@code clip_grad_norm_}, Optax, TF).</li>
 *   <li>{@link #L1}: Σ |x|.</li>
 *   <li>{@link #INF}: max |x| (PyTorch {@code norm_type=inf}).</li>
 *   <li>{@link #RMS}: √(Σ x² / n), the root mean square (Optax {@code clip_by_block_rms}).
 *       Defined as 0 for an empty group.</li>
 * </ul>
 */
public enum NormType {
    L2, L1, INF, RMS
}
