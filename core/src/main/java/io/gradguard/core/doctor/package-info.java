/**
 * The gradient doctor: reads what a {@link io.gradguard.core.monitor.Monitor} recorded (live, or a
 * JSON Lines file) and says what went wrong first, when and where, with the per-layer gradient
 * profile across depth, ranked remedies with the evidence each comes from, and a ready-to-paste
 * {@link io.gradguard.core.GradientPipeline} for the suggested guard.
 *
 * <pre>{@code
 * Diagnosis d = Doctor.diagnose(RunRecording.readJsonl(Path.of("grad.jsonl")));
 * log.info("{}", d.text());
 * GradientPipeline guard = GradientPipeline.of(d.prescription().transforms());
 * }</pre>
 *
 * <p>From a shell: {@code java -cp gradguard-core.jar io.gradguard.core.doctor.Diagnose grad.jsonl}.
 * Every threshold the doctor uses is a named constant of {@link io.gradguard.core.doctor.Doctor}.
 */
package io.gradguard.core.doctor;
