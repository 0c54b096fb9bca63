package io.gradguard.core.monitor;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The JSON form of a {@link StepRecord} (JSON Lines sink, HTML report data, reading files back), and
 * a small strict parser for it. Non-finite numbers are written as the strings {@code "NaN"},
 * {@code "Infinity"} and {@code "-Infinity"}, as protobuf's JSON mapping does, so every line is
 * standard JSON.
 */
final class Json {
    private Json() {
    }

    // ---- writing ---------------------------------------------------------------------------------

    /** One record as a JSON object, written into one builder (a record's line is written at every step). */
    static String record(StepRecord r) {
        StringBuilder b = new StringBuilder(320 + 96 * (r.layers().size() + r.tensors().size()));
        b.append("{\"run\":");
        str(b, r.run()).append(",\"index\":").append(r.index()).append(",\"step\":").append(r.step())
                .append(",\"call\":").append(r.call()).append(",\"skipped\":").append(r.skipped()).append(",\"skipReason\":");
        str(b, r.skipReason()).append(",\"skippedBy\":");
        str(b, r.skippedBy()).append(",\"microBatches\":").append(r.microBatches()).append(",\"loss\":");
        num(b, r.loss()).append(",\"normBefore\":");
        num(b, r.normBefore()).append(",\"normAfter\":");
        num(b, r.normAfter()).append(",\"clipCoefficient\":");
        num(b, r.clipCoefficient()).append(",\"clipped\":").append(r.clipped()).append(",\"clipThreshold\":");
        num(b, r.clipThreshold()).append(",\"nonFinite\":").append(r.nonFinite()).append(",\"detailed\":").append(r.detailed());
        if (!Double.isNaN(r.lossScale())) {
            num(b.append(",\"lossScale\":"), r.lossScale());
        }
        b.append(",\"layers\":[");
        for (int i = 0; i < r.layers().size(); i++) {
            LayerStats l = r.layers().get(i);
            str(b.append(i == 0 ? "{\"layer\":" : ",{\"layer\":"), l.layer()).append(",\"norm\":");
            num(b, l.norm()).append(",\"updateRatio\":");
            num(b, l.updateRatio()).append('}');
        }
        b.append("],\"tensors\":[");
        for (int i = 0; i < r.tensors().size(); i++) {
            TensorStats t = r.tensors().get(i);
            str(b.append(i == 0 ? "{\"name\":" : ",{\"name\":"), t.name()).append(",\"layer\":");
            str(b, t.layer()).append(",\"norm\":");
            num(b, t.norm()).append(",\"maxAbs\":");
            num(b, t.maxAbs()).append(",\"nonFinite\":").append(t.nonFinite()).append('}');
        }
        b.append("],\"events\":[");
        for (int i = 0; i < r.events().size(); i++) {
            b.append(i == 0 ? "" : ",").append(event(r.events().get(i)));
        }
        return b.append("]}").toString();
    }

    static String event(MonitorEvent e) {
        StringBuilder b = new StringBuilder(160).append("{\"kind\":");
        str(b, e.kind().name()).append(",\"step\":").append(e.step()).append(",\"layer\":");
        str(b, e.layer()).append(",\"parameter\":");
        str(b, e.parameter()).append(",\"value\":");
        num(b, e.value()).append(",\"reference\":");
        num(b, e.reference()).append(",\"message\":");
        return str(b, e.message()).append('}').toString();
    }

    /** A number, or a string for NaN and ±Infinity (shortest round-tripping decimal otherwise). */
    static String num(double v) {
        return num(new StringBuilder(24), v).toString();
    }

    /** {@link #num(double)} appended to {@code b}. */
    static StringBuilder num(StringBuilder b, double v) {
        if (Double.isNaN(v)) {
            return b.append("\"NaN\"");
        }
        if (Double.isInfinite(v)) {
            return b.append(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        }
        if (v == Math.rint(v) && Math.abs(v) < 1e15) {
            return b.append((long) v);
        }
        return b.append(v);
    }

    /** A JSON string literal (also safe inside an HTML script element: '<' is escaped). */
    static String str(String s) {
        return str(new StringBuilder(s.length() + 2), s).toString();
    }

    /** {@link #str(String)} appended to {@code b}. */
    static StringBuilder str(StringBuilder b, String s) {
        b.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                case '<' -> b.append("\\u003c");
                default -> {
                    if (c < 0x20 || c == 0x2028 || c == 0x2029) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"');
    }

    // ---- reading ---------------------------------------------------------------------------------

    /** Parses one JSON value: objects become LinkedHashMaps, arrays Lists, numbers Doubles. */
    static Object parse(String text) {
        Parser p = new Parser(text);
        Object v = p.value();
        p.ws();
        if (p.i != text.length()) {
            throw p.error("end of input");
        }
        return v;
    }

    /** The fields every record line holds (a line without them is not a GradGuard record). */
    static final List<String> FIELDS = List.of("run", "index", "step", "skipped", "skipReason", "skippedBy", "microBatches", "loss",
            "normBefore", "normAfter", "clipCoefficient", "clipped", "clipThreshold", "nonFinite", "detailed", "layers", "tensors",
            "events");

    /**
     * The record a parsed line holds.
     *
     * @throws IllegalArgumentException naming the missing fields, or the field of the wrong type, when
     *                                  the JSON is not a GradGuard step record
     */
    @SuppressWarnings("unchecked")
    static StepRecord toRecord(Object json) {
        if (!(json instanceof Map)) {
            throw new IllegalArgumentException("expected a JSON object (a GradGuard step record), got "
                    + (json == null ? "null" : json instanceof List ? "an array" : "a " + json.getClass().getSimpleName().toLowerCase()));
        }
        Map<String, Object> m = (Map<String, Object>) json;
        List<String> missing = FIELDS.stream().filter(f -> !m.containsKey(f)).toList();
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("not a GradGuard step record: missing field" + (missing.size() > 1 ? "s " : " ")
                    + String.join(", ", missing));
        }
        try {
            return fields(m);
        } catch (ClassCastException | NullPointerException e) {
            throw new IllegalArgumentException("not a GradGuard step record: a field has the wrong type (" + e.getMessage() + ")", e);
        }
    }

    @SuppressWarnings("unchecked")
    private static StepRecord fields(Map<String, Object> m) {
        List<LayerStats> layers = new ArrayList<>();
        for (Object o : (List<Object>) m.get("layers")) {
            Map<String, Object> l = (Map<String, Object>) o;
            layers.add(new LayerStats((String) l.get("layer"), dbl(l.get("norm")), dbl(l.get("updateRatio"))));
        }
        List<TensorStats> tensors = new ArrayList<>();
        for (Object o : (List<Object>) m.get("tensors")) {
            Map<String, Object> t = (Map<String, Object>) o;
            tensors.add(new TensorStats((String) t.get("name"), (String) t.get("layer"), dbl(t.get("norm")),
                    dbl(t.get("maxAbs")), (long) dbl(t.get("nonFinite"))));
        }
        List<MonitorEvent> events = new ArrayList<>();
        for (Object o : (List<Object>) m.get("events")) {
            Map<String, Object> e = (Map<String, Object>) o;
            events.add(new MonitorEvent(MonitorEvent.Kind.valueOf((String) e.get("kind")), (long) dbl(e.get("step")),
                    (String) e.get("layer"), (String) e.get("parameter"), dbl(e.get("value")), dbl(e.get("reference")),
                    (String) e.get("message")));
        }
        return new StepRecord((String) m.get("run"), (long) dbl(m.get("index")), (long) dbl(m.get("step")),
                m.containsKey("call") ? (long) dbl(m.get("call")) : -1,
                (Boolean) m.get("skipped"), (String) m.get("skipReason"), (String) m.get("skippedBy"),
                (int) dbl(m.get("microBatches")), dbl(m.get("loss")), dbl(m.get("normBefore")), dbl(m.get("normAfter")),
                dbl(m.get("clipCoefficient")), (Boolean) m.get("clipped"), dbl(m.get("clipThreshold")),
                (long) dbl(m.get("nonFinite")), (Boolean) m.get("detailed"), layers, tensors, events,
                m.containsKey("lossScale") ? dbl(m.get("lossScale")) : Double.NaN);
    }

    /** A number written by {@link #num}. */
    static double dbl(Object o) {
        if (o instanceof Double d) {
            return d;
        }
        if (o instanceof String s) {
            return switch (s) {
                case "NaN" -> Double.NaN;
                case "Infinity" -> Double.POSITIVE_INFINITY;
                case "-Infinity" -> Double.NEGATIVE_INFINITY;
                default -> throw new IllegalArgumentException("not a number: \"" + s + "\"");
            };
        }
        throw new IllegalArgumentException("not a number: " + o);
    }

    private static final class Parser {
        final String s;
        int i;

        Parser(String s) {
            this.s = s;
        }

        IllegalArgumentException error(String expected) {
            return new IllegalArgumentException("invalid JSON at offset " + i + ": expected " + expected);
        }

        void ws() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        Object value() {
            ws();
            if (i >= s.length()) {
                throw error("a value");
            }
            char c = s.charAt(i);
            switch (c) {
                case '{' -> {
                    i++;
                    Map<String, Object> m = new LinkedHashMap<>();
                    ws();
                    if (peek('}')) {
                        return m;
                    }
                    do {
                        ws();
                        String k = string();
                        ws();
                        expect(':');
                        m.put(k, value());
                        ws();
                    } while (peek(','));
                    expect('}');
                    return m;
                }
                case '[' -> {
                    i++;
                    List<Object> l = new ArrayList<>();
                    ws();
                    if (peek(']')) {
                        return l;
                    }
                    do {
                        l.add(value());
                        ws();
                    } while (peek(','));
                    expect(']');
                    return l;
                }
                case '"' -> {
                    return string();
                }
                default -> {
                    if (s.startsWith("true", i)) {
                        i += 4;
                        return Boolean.TRUE;
                    }
                    if (s.startsWith("false", i)) {
                        i += 5;
                        return Boolean.FALSE;
                    }
                    if (s.startsWith("null", i)) {
                        i += 4;
                        return null;
                    }
                    int start = i;
                    while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                        i++;
                    }
                    if (start == i) {
                        throw error("a value");
                    }
                    try {
                        return Double.parseDouble(s.substring(start, i));
                    } catch (NumberFormatException e) {
                        i = start;
                        throw error("a number");
                    }
                }
            }
        }

        boolean peek(char c) {
            if (i < s.length() && s.charAt(i) == c) {
                i++;
                return true;
            }
            return false;
        }

        void expect(char c) {
            if (!peek(c)) {
                throw error("'" + c + "'");
            }
        }

        String string() {
            expect('"');
            StringBuilder b = new StringBuilder();
            while (true) {
                if (i >= s.length()) {
                    throw error("'\"'");
                }
                char c = s.charAt(i++);
                if (c == '"') {
                    return b.toString();
                }
                if (c != '\\') {
                    if (c < 0x20) {
                        i--;
                        throw error("no raw control character in a string");
                    }
                    b.append(c);
                    continue;
                }
                if (i >= s.length()) {
                    throw error("an escape");
                }
                char e = s.charAt(i++);
                switch (e) {
                    case '"', '\\', '/' -> b.append(e);
                    case 'n' -> b.append('\n');
                    case 'r' -> b.append('\r');
                    case 't' -> b.append('\t');
                    case 'b' -> b.append('\b');
                    case 'f' -> b.append('\f');
                    case 'u' -> {
                        if (i + 4 > s.length()) {
                            throw error("4 hex digits");
                        }
                        b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        i += 4;
                    }
                    default -> throw error("a valid escape");
                }
            }
        }
    }
}
