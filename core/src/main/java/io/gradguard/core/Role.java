package io.gradguard.core;

/** What a parameter is, so transforms and masks can treat weights and biases differently. */
public enum Role {
    /** A weight matrix or kernel (has output units; AGC and centralization act per unit). */
    WEIGHT,
    /** A bias vector. */
    BIAS,
    /** Anything else (batch-norm scale/shift, embeddings, recurrent weights the adapter cannot classify). */
    OTHER
}
