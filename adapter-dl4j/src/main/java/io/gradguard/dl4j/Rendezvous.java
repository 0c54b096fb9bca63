package io.gradguard.dl4j;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The one scalar exchange per step of synchronized guarding ({@link Dl4jParallelGuard#synchronize()}):
 * every worker of a {@code ParallelWrapper} round brings its Σg² and gets back the sum over the
 * round's workers and which of them had a non-finite gradient.
 *
 * <p>A {@code ParallelWrapper} feeds its workers in rounds (one batch each, then it waits for all of
 * them), so a worker's k-th step of a {@code fit} belongs to round k. A round has every worker but
 * the last one of an epoch, which has the batches left over: the batch count becomes known when the
 * data runs out ({@link #batchesKnown}), before that round is fed. A worker that waits longer than
 * the timeout, or whose peer failed ({@link #fail}), gets an {@link IllegalStateException} naming the
 * missing workers; the exchange is then broken until the next {@link #start}.
 */
final class Rendezvous {
    private final int parties;
    private final long timeoutNanos;
    private final long[] calls;
    private final boolean[] arrived;
    private boolean active;
    private long round;
    private int arrivals;
    private double sum;
    private final List<Integer> bad = new ArrayList<>();
    private long batches = -1;
    private RuntimeException failure;
    /** The result of the last completed round: its index, the sum, the workers with a non-finite gradient. */
    private long doneRound = -1;
    private double doneSum;
    private List<Integer> doneBad = List.of();

    Rendezvous(int parties, long timeoutMillis) {
        this.parties = parties;
        this.timeoutNanos = TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
        this.calls = new long[parties];
        this.arrived = new boolean[parties];
    }

    int parties() {
        return parties;
    }

    /** A new {@code fit}: round 0, batch count unknown, no failure. */
    synchronized void start() {
        active = true;
        round = 0;
        arrivals = 0;
        sum = 0;
        bad.clear();
        java.util.Arrays.fill(calls, 0);
        java.util.Arrays.fill(arrived, false);
        batches = -1;
        failure = null;
        doneRound = -1;
    }

    /** The {@code fit} is over: a step outside {@code guard.fit(wrapper, data)} is refused. */
    synchronized void stop() {
        active = false;
    }

    synchronized boolean active() {
        return active;
    }

    /** The data ran out after {@code n} batches: the last round has {@code n mod parties} workers (if not 0). */
    synchronized void batchesKnown(long n) {
        batches = n;
        release();
        notifyAll();
    }

    /** The data was rewound: the batch count is unknown again. */
    synchronized void batchesUnknown() {
        batches = -1;
    }

    /** A worker failed: the others stop waiting and fail with it. */
    synchronized void fail(int worker, RuntimeException cause) {
        if (failure == null && active) {
            failure = new IllegalStateException("Dl4jParallelGuard (synchronized): worker " + worker + " failed at its step "
                    + (calls[worker] - 1) + " (" + cause.getMessage() + "); the other workers stop with it", cause);
            notifyAll();
        }
    }

    /** One exchange: what the worker's round sums to. */
    record Totals(double sumOfSquares, List<Integer> nonFinite) {
    }

    /**
     * Brings this worker's Σg² to its current round and waits for the round's other workers.
     *
     * @throws IllegalStateException if a worker failed, the wait timed out, or the workers are out of step
     */
    synchronized Totals exchange(int worker, double sumOfSquares) {
        if (failure != null) {
            throw failure;
        }
        long mine = calls[worker]++;
        if (mine != round) {
            throw broken(new IllegalStateException("Dl4jParallelGuard (synchronized): worker " + worker + " is at step " + mine
                    + " but the round is " + round + ": the workers are out of step (each ParallelWrapper round must feed "
                    + "every worker once; train with guard.fit(wrapper, data))"));
        }
        arrived[worker] = true;
        arrivals++;
        sum += sumOfSquares;
        if (!Double.isFinite(sumOfSquares)) {
            bad.add(worker);
        }
        release();
        long deadline = System.nanoTime() + timeoutNanos;
        while (doneRound < mine) {
            if (failure != null) {
                throw failure;
            }
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                List<Integer> missing = new ArrayList<>();
                for (int w = 0; w < parties; w++) {
                    if (!arrived[w]) {
                        missing.add(w);
                    }
                }
                throw broken(new IllegalStateException("Dl4jParallelGuard (synchronized): worker " + worker + " waited "
                        + TimeUnit.NANOSECONDS.toMillis(timeoutNanos) + " ms at step " + mine + " for worker(s) " + missing
                        + ": a worker stopped (see its exception) or never runs this guard. Train with guard.fit(wrapper, data) "
                        + "so the guard knows each round's workers, or raise the timeout (synchronize(timeout))"));
            }
            try {
                TimeUnit.NANOSECONDS.timedWait(this, Math.min(left, TimeUnit.MILLISECONDS.toNanos(50)));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw broken(new IllegalStateException("Dl4jParallelGuard (synchronized): worker " + worker
                        + " was interrupted while waiting at step " + mine, e));
            }
        }
        return new Totals(doneSum, doneBad);
    }

    private RuntimeException broken(IllegalStateException e) {
        failure = e;
        notifyAll();
        return e;
    }

    /** Closes the round once every worker it has arrived. */
    private void release() {
        if (arrivals == 0 || arrivals < expected()) {
            return;
        }
        doneRound = round;
        doneSum = sum;
        doneBad = List.copyOf(bad);
        round++;
        arrivals = 0;
        sum = 0;
        bad.clear();
        java.util.Arrays.fill(arrived, false);
        notifyAll();
    }

    /** Workers in the current round: all of them, but the batches left over in the last round of a fit. */
    private int expected() {
        if (batches < 0) {
            return parties;
        }
        long left = batches - round * parties;
        return (int) Math.max(1, Math.min(parties, left));
    }
}
