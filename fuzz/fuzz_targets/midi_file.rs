//! Fuzz target `midi_file`: the command line's path for a MIDI file. Arbitrary bytes go through
//! `midifile::parse_midi`; when they parse, every bar's features (`features::features_for_bars`)
//! must be finite, and the piece must respect the parser's own limits.
//!
//! Thread: test
#![no_main]

use libfuzzer_sys::fuzz_target;
use moodfader_engine::FEATURE_NAMES;
use moodfader_engine::feel::features::features_for_bars;
use moodfader_engine::listen::midifile::{MAX_BARS, MAX_NOTES, parse_midi};

fuzz_target!(|data: &[u8]| {
    let Ok(piece) = parse_midi(data) else { return };
    assert!(piece.notes.len() <= MAX_NOTES, "{} notes", piece.notes.len());
    assert!(piece.bars.len() <= MAX_BARS, "{} bars", piece.bars.len());
    for (i, n) in piece.notes.iter().enumerate() {
        assert!(
            n.onset_s.is_finite() && n.dur_s.is_finite() && n.onset_beats.is_finite() && n.dur_beats.is_finite(),
            "note {i} has a non-finite time: {n:?}"
        );
        assert!(n.dur_s >= 0.0 && n.dur_beats >= 0.0, "note {i} has a negative duration: {n:?}");
    }
    let feats = features_for_bars(&piece.notes, &piece.bars);
    assert_eq!(feats.len(), piece.bars.len());
    for (b, f) in feats.iter().enumerate() {
        for (k, v) in f.iter().enumerate() {
            assert!(v.is_finite(), "bar {b} ({:?}): feature {} = {v}", piece.bars[b], FEATURE_NAMES[k]);
        }
    }
});
