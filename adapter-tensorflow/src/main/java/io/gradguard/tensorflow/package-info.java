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
 *   <li><b>Build once.</b> {@link io.gradguard.tensorflow.TfGuard#attach} adds
 *       {@code tf.gradients(loss, explicit variables)} to the graph (never "every variable of the
 *       graph"), validating the setup: no variable, a variable the loss does not reach, a non-float
 *       variable or gradient, a non-scalar loss all become {@code IllegalArgumentException}s naming
 *       the variable.</li>
 *   <li><b>Replay, memoized.</b> Each step core's step sequence ({@code Guard}) runs the pipeline
 *       on the host over {@link io.gradguard.tensorflow.TfTensor} handles (a mutable reference to a
 *       graph node; in-place primitives rebind it); the graph's {@code GuardedModel} does the
 *       session runs. {@link io.gradguard.tensorflow.TfOps} memoizes every primitive on its kind,
 *       input nodes and parameters, and feeds scalars through placeholders
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
 *   <li><b>Metrics with the last run.</b> The step's last run also fetches every single-element
 *       value the stages recorded (the clip norm and coefficient, non-finite counts...), so the
 *       result's metrics are on the host when {@code step} returns, at no extra run, and the
 *       stateless pipeline stays one run per step.</li>
 *   <li><b>Update ratios.</b> When a monitor asks for ‖Δθ‖/‖θ‖, the variables are copied into
 *       resource variables before the update and one small run measures the change after it.</li>
 *   <li><b>Loss scaling in the graph.</b> With a loss-scale stage first in the pipeline the
 *       gradients built at attach are those of {@code loss · S}, S a fed float64 scalar (the
 *       guard's current scale, fed with every run of the step); the stage divides them back.</li>
 *   <li><b>One optimizer state across branches.</b> A pipeline that takes another graph branch
 *       gets another apply op, with its own slots; the live optimizer state is copied into the
 *       branch's slots before it runs.</li>
 * </ol>
 *
 * <h2>Checkpoints</h2>
 * {@link io.gradguard.tensorflow.TfGuard#save} writes one TensorFlow checkpoint (the V2 format of
 * {@code session.save}): every {@code VariableV2} of the graph (model, optimizer slots) under its op
 * name, and GradGuard's state (the bytes of {@code pipeline.saveState}) under
 * {@value io.gradguard.tensorflow.TfGuard#STATE_KEY}. On a graph built the same way, a new guard with
 * the same pipeline and {@link io.gradguard.tensorflow.TfGuard#restore} before the first step resume
 * bit-identically (tested mid accumulation window with SGD, Momentum and RMSProp; tensorflow-framework's
 * Adam is not reproducible run to run, see below): the optimizer's slots, which the guard creates with
 * the apply op on the first applying step, receive the checkpoint's values when they appear, and a
 * {@code save} before that (checkpointing at the top of the loop) writes those values back. {@code session.restore(prefix)} reads the model alone from it.
 * {@code session.save} alone does not capture GradGuard: tensorflow-core-api 1.1 builds the graph's
 * saver once, at the first {@code save} or {@code restore}, over the {@code VariableV2} ops existing
 * then; GradGuard's counters live on the host and its buffers are resource variables, and a fresh
 * graph restored before the first step lacks the variables the guard creates later (also tested).
 * {@code saveState}/{@code restoreState} still write GradGuard's state as a separate stream.
 *
 * <h2>Precision</h2>
 * By default reductions run in the gradients' dtype, as {@code tf.clip_by_global_norm} does
 * (Σx² of a float32 tensor is {@code 2 · L2Loss(x)}, one fused float32 pass); per-tensor results
 * are widened to float64 scalars, so sums across tensors, norms and coefficients are float64;
 * float16 gradients are reduced in float32.
 * {@code TfGuard.accumulateInDouble()} (or {@code TfOps.accumulateInDouble()}) reduces in float64
 * instead, for norms of values near 1e30 or 1e-30, at the cost of a float64 copy of each gradient
 * per reduction (measured on a 5M-parameter MLP: see the benchmark).
 *
 * <p>Layout: TensorFlow dense kernels are [in, out] and convolution kernels HWIO, so every
 * gradient is declared {@link io.gradguard.core.Layout#outputLast()}. Roles: rank &ge; 2 weight,
 * rank 1 bias. Layer: the variable's name up to its last '/', or for a flat name up to its last '_'
 * ({@code dense_1_kernel} → {@code dense_1}). Note that tensorflow-framework 1.0's
 * slot optimizers (Momentum, Adam, ...) name slot variables {@code <variable>-<slot>} and fail on a
 * variable name with a '/': give trainable variables flat names there (the guard's first step
 * explains this in an {@code IllegalArgumentException}).
 *
 * <p>tensorflow-framework 1.0's {@code Adam} updates its beta powers without a control dependency on
 * its ApplyAdam ops, which read them: two identical runs can differ (by 1e-3 to 1e-2 after a few
 * steps on the GuardKit's model), unwrapped or through {@link io.gradguard.tensorflow.TfGuard}. Use
 * Momentum or RMSProp there where runs must be bit-identical. {@link io.gradguard.tensorflow.TfOptimizer}
 * orders the beta-power update after the ApplyAdam ops: its Adam runs are bit-identical.
 *
 * <p>Every {@code Tensor} the adapter fetches or feeds is closed (fed scalars are cached per slot
 * and closed with the guard).
 */
package io.gradguard.tensorflow;
