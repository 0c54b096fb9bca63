/**
 * GradGuard for TensorFlow Java (graph mode): the pipeline's transforms run as TensorFlow
 * operations between {@code tf.gradients} and the framework optimizer's {@code applyGradients};
 * gradients never travel to the Java heap.
 *
 * <h2>Design</h2>
 * TensorFlow Java computes gradients only in graph mode, while a GradGuard pipeline is host code
 * that runs once per step, keeps host counters and decisions (hold, skip) and calls a dozen tensor
 * primitives. The adapter reconciles the two like this:
 * <ol>
 *   <li><b>Build once.</b> {@link io.gradguard.tensorflow.TfGuard#create} adds
 *       {@code tf.gradients(loss, explicit variables)} to the graph (never "every variable of the
 *       graph"), validating the setup: no variable, a variable the loss does not reach, a non-float
 *       variable or gradient, a non-scalar loss all become {@code IllegalArgumentException}s naming
 *       the variable.</li>
 *   <li><b>Replay, memoized.</b> Each step the pipeline runs on the host over
 *       {@link io.gradguard.tensorflow.TfTensor} handles (a mutable reference to a graph node;
 *       in-place primitives rebind it). {@link io.gradguard.tensorflow.TfOps} memoizes every
 *       primitive on its input nodes and parameters, and feeds scalars through placeholders
 *       ("scalar slots") instead of baking constants, so a replay adds no node after the first
 *       step(s) even when thresholds change every step.</li>
 *   <li><b>One run when nothing is read.</b> A stateless pipeline (clipping, normalization,
 *       centralization, AGC, zeroing) is a single session run per step: forward, backward,
 *       transforms and apply.</li>
 *   <li><b>Gradient buffers when the host decides.</b> On the first host read (a skip policy, a
 *       monitor), the step's gradients are written into resource variables by one run (which also
 *       fetches the loss), every node built so far is <em>rebased</em> onto the buffers (the memo
 *       knows each node's recipe), and from then on each step is: run 1 forward/backward into the
 *       buffers; host reads evaluate only the small graphs they need; a last run transforms and
 *       applies. On HOLD and SKIP the apply op is not run, so variables and optimizer slots (and
 *       step counters) do not move.</li>
 *   <li><b>State in graph variables.</b> {@code zerosLike}/{@code fromHost} create resource
 *       variables (accumulators...). Writes during a step rebind the handle; at the end of the step
 *       the adapter runs the assignments, each ordered after the variable's read so that the step's
 *       values are computed from the old state.</li>
 * </ol>
 *
 * <p>Layout: TensorFlow dense kernels are [in, out] and convolution kernels HWIO, so every
 * gradient is declared {@link io.gradguard.core.Layout#outputLast()}. Roles: rank &ge; 2 weight,
 * rank 1 bias. Layer: the variable's name up to its last '/'.
 *
 * <p>Reductions accumulate in float64. Every {@code Tensor} the adapter fetches or feeds is closed
 * (fed scalars are cached per slot and closed with the guard).
 */
package io.gradguard.tensorflow;
