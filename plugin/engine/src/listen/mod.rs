//! Hearing: the note type, MIDI and WAV files, key finding, audio to notes with Basic Pitch, and
//! the audio cues measured on the transcriber's stream.
//!
//! Thread: worker / command line (`notes` and `keyfind` on any thread; never the audio thread for
//! the rest, which allocate). Uses nothing of `feel`, `play`, `rt` or `lab`.

pub mod audio_cues;
pub mod keyfind;
pub mod midifile;
pub mod notes;
pub mod tempo;
pub mod transcribe;
pub mod wav;
