//! The standalone app: Moodfader with its own audio and MIDI I/O (JACK, ALSA through cpal, MIDI
//! input through midir). Run `moodfader-standalone --help` for the device options.
//!
//! Thread: main (nice-plug runs the audio callback on its own thread)

fn main() {
    nice_plug::nice_export_standalone::<moodfader::Moodfader>();
}
