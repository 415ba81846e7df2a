//! Inputs that once made feature extraction quadratic (found by fuzzing `fuzz/midi_file`):
//! thousands of notes on one onset, and thousands of notes over a hundred thousand tiny bars.
//! They must now finish in linear time; the 3 s bound is a generous guard against the old
//! blow-up (debug build before the fix: 4.7 s and 10.8 s; after: 15 ms and 1.0 s), not a speed
//! measurement (see the benches).
//!
//! Thread: test

use std::time::{Duration, Instant};

use moodfader_engine::feel::features::features_for_bars;
use moodfader_engine::listen::midifile::{parse_midi, single_track_smf};

fn timed(what: &str, bytes: &[u8]) {
    let start = Instant::now();
    let piece = parse_midi(bytes).unwrap();
    let f = features_for_bars(&piece.notes, &piece.bars);
    let took = start.elapsed();
    eprintln!("{what}: {} notes, {} bars, {took:?}", piece.notes.len(), piece.bars.len());
    assert!(f.iter().flatten().all(|v| v.is_finite()));
    assert!(took < Duration::from_secs(3), "{what} took {took:?}");
}

#[test]
fn twenty_thousand_notes_on_one_onset() {
    let mut ev: Vec<(u32, Vec<u8>)> = Vec::new();
    for i in 0..20_000u32 {
        ev.push((0, vec![0x90 | (i % 9) as u8, (i % 128) as u8, 100]));
    }
    ev.push((480, vec![0xb0, 7, 100]));
    timed("20k-note chord", &single_track_smf(480, ev.iter().map(|(d, b)| (*d, b.as_slice()))));
}

#[test]
fn ten_thousand_notes_over_ninety_thousand_bars() {
    // One tick per quarter and a 1/64 meter make bars of 1/16 tick: a bar per few ticks.
    let mut ev: Vec<(u32, Vec<u8>)> = vec![(0, vec![0xff, 0x58, 4, 1, 6, 24, 8])];
    for i in 0..10_000u32 {
        ev.push((if i == 0 { 0 } else { 9 }, vec![0x90, 40 + (i % 40) as u8, 90]));
    }
    ev.push((1_000, vec![0xb0, 7, 100]));
    timed("tiny bars", &single_track_smf(16, ev.iter().map(|(d, b)| (*d, b.as_slice()))));
}
