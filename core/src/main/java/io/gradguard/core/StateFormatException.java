package io.gradguard.core;

import java.io.IOException;

/**
 * A pipeline checkpoint that cannot be restored: truncated, corrupt (checksum), of an unknown
 * version, or saved from a different pipeline or model. The pipeline is left untouched.
 */
public class StateFormatException extends IOException {
    private static final long serialVersionUID = 1L;

    public StateFormatException(String message) {
        super(message);
    }
}
