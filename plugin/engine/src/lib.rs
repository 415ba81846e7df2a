//! Moodfader's engine: everything that hears, feels and plays, with no host, plugin framework or
//! GUI types in it, so the plugin, the command line, the tests and the benchmarks all share one
//! implementation.
//!
//! The folders follow the stages of the signal and say which thread runs them:
//! - [`rt`]: what the audio thread's `process()` calls (the queues' items and ends, the audio
//!   side of the bridge, the preview voice). No allocation, lock, log or ONNX Runtime.
//! - [`listen`]: notes, MIDI and WAV files, key finding, transcription, audio cues.
//! - [`feel`]: features, the emotion model, the live estimator, calibration, whole-piece analysis.
//! - [`play`]: tokens, attributes, the continuation model and its sampler, steering, composing a
//!   continuation, the player.
//! - [`worker`] (the worker thread), [`runtime`] (finding ONNX Runtime), [`shared`] (the atomics
//!   and panel state the threads share), [`files`] and [`linalg`].
//! - `lab` (cargo feature `lab`): offline measurement, training export and fits. The plugin does
//!   not enable it; the command line's `moodfader lab …` does.
//!
//! Thread: any (each module says which thread runs it)
//!
//! Architecture invariants, checked by `cargo xtask test` (`xtask/src/invariants.rs`): this crate
//! does not depend on nice-plug, egui or any host API; nothing under `rt/` names `lab`, `ort` or a
//! lock; `listen` uses no later stage, `feel` does not use `play`, and none of the stages uses the
//! worker; only `lab` uses `lab`; no engine files import each other in a circle; the plugin's
//! cdylib is built without `lab`.

pub mod feel;
pub mod files;
#[cfg(feature = "lab")]
pub mod lab;
pub mod linalg;
pub mod listen;
pub mod play;
pub mod rt;
pub mod runtime;
pub mod shared;
pub mod worker;

pub use feel::features::{FEATURE_NAMES, FEATURE_SPEC_VERSION, NUM_FEATURES};
pub use listen::notes::Note;
pub use play::attributes::Attribute;
pub use shared::{Shared, WorkerStatus};
