package io.gradguard.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What the stages of one step recorded: named metrics (backend scalars until read) and the typed
 * reports ({@link Scaling}, {@link NonFiniteCount}) that point at them. One per step, shared by
 * the {@link Step}s of that step and handed to its {@link StepResult}.
 */
final class StepRecords {
    /** A typed report whose values are metrics of the same step, resolved on the host when read. */
    record Entry(String stage, String group, boolean partial, String normKey, String coefficientKey, double threshold,
            boolean nonFinite) {
    }

    final Map<String, Object> metrics = new LinkedHashMap<>();
    final List<Entry> entries = new ArrayList<>(4);
    double lossScale = Double.NaN;
}
