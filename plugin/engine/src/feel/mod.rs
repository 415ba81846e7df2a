//! Feeling: per-bar features (the one source of truth for what the emotion model sees), the
//! valence/arousal model, the live estimator, personal calibration, and whole-piece analysis.
//!
//! Thread: worker / command line. Uses `listen`; nothing of `play`, `rt` or `lab`.

pub mod analyze;
pub mod calibration;
pub mod emotion;
pub mod features;
pub mod live;
