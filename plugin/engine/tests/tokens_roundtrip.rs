//! MIDI → tokens → MIDI keeps every note on the grid: same pitch, onset within half a grid step
//! (1/24 quarter), the nearest duration class, a velocity within its bucket. On the bundled demo
//! always, and on POP909 and VGMIDI pieces when the data set is there (loudly skipped otherwise;
//! required when CI=true).
//!
//! Thread: test

use std::path::Path;

use moodfader_engine::lab::export::data_dir;
use moodfader_engine::listen::midifile::read_midi_file;
use moodfader_engine::play::tokens::{DURATION_STEPS, STEPS_PER_QUARTER, decode, duration_class, encode, grid_to_notes};

/// Round-trips one file; returns (notes checked, notes that could not be addressed).
fn round_trip(path: &Path) -> (usize, usize) {
    let piece = read_midi_file(path).unwrap();
    let tokens = encode(&piece.notes, &piece.bars, |_| [4; 8]);
    let grid = decode(&tokens, usize::MAX);
    let back = grid_to_notes(&grid, &piece.bars, 0);
    let half_step = 0.5 / STEPS_PER_QUARTER as f64 + 1e-9;
    let (mut checked, mut unaddressable) = (0, 0);
    for n in piece.notes.iter().filter(|n| !n.is_drum()) {
        let snapped = (n.onset_beats * STEPS_PER_QUARTER as f64).round() / STEPS_PER_QUARTER as f64;
        let bar = piece.bars.partition_point(|b| b.start_beats <= snapped + 1e-9);
        let fits = bar > 0 && {
            let b = &piece.bars[bar - 1];
            let pos = ((snapped - b.start_beats) * STEPS_PER_QUARTER as f64).round();
            pos < (b.len_beats * STEPS_PER_QUARTER as f64).round().min(96.0)
        };
        if !fits {
            unaddressable += 1;
            continue;
        }
        let found = back.iter().find(|m| m.pitch == n.pitch && (m.onset_beats - n.onset_beats).abs() <= half_step);
        let m = found.unwrap_or_else(|| panic!("{}: note {} at beat {:.4} lost", path.display(), n.pitch, n.onset_beats));
        // Notes of one pitch struck together on several tracks merge into one, whose velocity and
        // duration are one of theirs.
        let last_end = piece.bars.last().map(|b| b.start_beats + b.len_beats).unwrap();
        let matches = |o: &&moodfader_engine::Note| {
            let steps = DURATION_STEPS[duration_class(o.dur_beats * STEPS_PER_QUARTER as f64) as usize] as f64;
            let want_beats = (steps / STEPS_PER_QUARTER as f64).min(last_end - m.onset_beats);
            (m.dur_beats - want_beats).abs() < 1e-6 && (m.velocity as i32 - o.velocity as i32).abs() <= 5
        };
        let ok = piece
            .notes
            .iter()
            .filter(|o| !o.is_drum() && o.pitch == n.pitch && (o.onset_beats - n.onset_beats).abs() <= 2.0 * half_step)
            .any(|o| matches(&o));
        assert!(ok, "{}: pitch {} at beat {:.4}: duration {} / velocity {} match none of the originals", path.display(), n.pitch, n.onset_beats, m.dur_beats, m.velocity);
        checked += 1;
    }
    (checked, unaddressable)
}

#[test]
fn demo_round_trips() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/demo.mid");
    let (checked, lost) = round_trip(&demo);
    assert!(checked > 400 && lost == 0, "checked {checked}, unaddressable {lost}");
}

#[test]
fn data_set_pieces_round_trip() {
    let data = data_dir();
    let pop = data.join("pop909");
    let vg = data.join("vgmidi/unlabelled");
    if !pop.is_dir() || !vg.is_dir() {
        moodfader_engine::lab::skipped("token round trip on POP909/VGMIDI (tokens_roundtrip.rs)", &format!("no data at {} (set MOODFADER_DATA)", data.display()));
        return;
    }
    let mut files: Vec<_> = (1..=20).map(|i| pop.join(format!("{i:03}/{i:03}.mid"))).collect();
    let mut vg_files: Vec<_> = std::fs::read_dir(&vg).unwrap().map(|e| e.unwrap().path()).collect();
    vg_files.sort();
    files.extend(vg_files.into_iter().take(20));
    let (mut checked, mut lost) = (0, 0);
    for f in &files {
        let (c, l) = round_trip(f);
        checked += c;
        lost += l;
    }
    eprintln!("{} files: {checked} notes round-tripped on the grid, {lost} outside addressable bars", files.len());
    assert!(lost * 1000 <= checked, "at most 0.1% of notes unaddressable: {lost} of {checked}");
}
