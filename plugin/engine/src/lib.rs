//! Moodfader's engine: everything that hears, feels and (later) plays, with no host, plugin
//! framework or GUI types in it, so the plugin, the command line, the tests and the benchmarks all
//! share one implementation.
//!
//! Thread: any (each module says which thread runs it)
//!
//! Architecture invariant: this crate does not depend on nice-plug, egui or any host API. `cargo
//! xtask test` checks it with `cargo tree`.

pub mod analyze;
pub mod audio_cues;
pub mod audio_eval;
pub mod attributes;
pub mod audio_side;
pub mod bridge;
pub mod calibration;
pub mod compose;
pub mod continuation;
pub mod emotion;
pub mod evaluate;
pub mod export;
pub mod features;
pub mod keyfind;
pub mod linalg;
pub mod live;
pub mod midifile;
pub mod notes;
pub mod player;
pub mod runtime;
pub mod steering;
pub mod synth;
pub mod tokens;
pub mod transcribe;
pub mod wav;
pub mod worker;

pub use attributes::Attribute;
pub use bridge::{Shared, WorkerStatus};
pub use features::{FEATURE_NAMES, FEATURE_SPEC_VERSION, NUM_FEATURES};
pub use notes::Note;
