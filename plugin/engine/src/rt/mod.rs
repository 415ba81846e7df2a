//! The audio thread's side: what `process()` calls. The queue item types and their ends, the
//! listening clock and the scheduled-event player ([`audio_side`]), and the preview voice.
//!
//! Thread: audio (and whoever builds these before activation). Nothing here allocates in
//! `process()`, locks, logs, blocks, returns a `Result` on the audio path, or touches ONNX Runtime.

pub mod audio_side;
pub mod queues;
pub mod synth;
