package io.gradguard.core;

/**
 * Which tensors a norm-based transform treats as one vector.
 *
 * <ul>
 *   <li>{@link #TENSOR}: each parameter on its own (DL4J {@code ClipL2PerParamType}, Keras {@code clipnorm}).</li>
 *   <li>{@link #LAYER}: all parameters of one layer together (DL4J {@code ClipL2PerLayer}).</li>
 *   <li>{@link #GLOBAL}: every gradient of the model at once (PyTorch {@code clip_grad_norm_}, Keras {@code global_clipnorm}).</li>
 * </ul>
 */
public enum Scope {
    TENSOR, LAYER, GLOBAL
}
