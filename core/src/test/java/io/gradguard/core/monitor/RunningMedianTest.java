package io.gradguard.core.monitor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Deque;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class RunningMedianTest {

    /** The median by definition: sort the last {@code window} values. */
    private static double sortedMedian(Deque<Double> last) {
        double[] s = last.stream().mapToDouble(Double::doubleValue).toArray();
        Arrays.sort(s);
        return s.length == 0 ? Double.NaN : s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    @Test
    void the_median_after_every_value_is_that_of_the_sorted_window_ties_zeros_and_non_finite_included() {
        double[] pool = {1, 1, 2, 3, 0.0, -0.0, -5, Double.NaN, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY, 1e-300, 7.5};
        for (int window : new int[] {1, 2, 3, 8, 51}) {
            SplittableRandom rnd = new SplittableRandom(window);
            RunningMedian m = new RunningMedian(window);
            Deque<Double> last = new ArrayDeque<>();
            assertEquals(Double.NaN, m.median());
            for (int i = 0; i < 2000; i++) {
                double v = rnd.nextInt(3) == 0 ? pool[rnd.nextInt(pool.length)] : rnd.nextGaussian();
                m.add(v);
                last.addLast(v);
                if (last.size() > window) {
                    last.removeFirst();
                }
                assertEquals(sortedMedian(last), m.median(), "window " + window + ", value " + i);
                assertEquals(last.size(), m.size());
            }
            assertArrayEquals(last.stream().mapToDouble(Double::doubleValue).toArray(), m.values());
        }
    }
}
