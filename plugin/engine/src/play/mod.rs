//! Playing: the token vocabulary, the eight attributes, the continuation model and its sampler,
//! steering (emotion to attributes), a continuation end to end, and the player that decides when
//! to generate and feeds the audio thread.
//!
//! Thread: worker (the player's generator runs on a thread of its own) / command line. Uses
//! `listen` and `feel`; nothing of `lab`.

pub mod attributes;
pub mod compose;
pub mod continuation;
pub mod player;
pub mod steering;
pub mod tokens;
