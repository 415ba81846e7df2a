//! Awkward but legal input through the whole offline path (MIDI file → features → model): each
//! gives a finite estimate in [-1, 1] for every bar, and the contrasts that should show, show.
//!
//! Thread: test

use moodfader_engine::feel::analyze::{Analysis, analyze_piece};
use moodfader_engine::feel::emotion::EmotionModel;
use moodfader_engine::listen::midifile::{parse_midi, single_track_smf};
use moodfader_engine::runtime::ensure_runtime;

const TPQ: u16 = 480;

/// Builds a file from (tick, bytes) at absolute ticks.
fn file(mut events: Vec<(u32, Vec<u8>)>) -> Vec<u8> {
    events.sort_by_key(|e| e.0);
    let mut last = 0;
    let deltas: Vec<(u32, Vec<u8>)> = events
        .into_iter()
        .map(|(t, b)| {
            let d = t - last;
            last = t;
            (d, b)
        })
        .collect();
    single_track_smf(TPQ, deltas.iter().map(|(d, b)| (*d, b.as_slice())))
}

fn note(out: &mut Vec<(u32, Vec<u8>)>, ch: u8, start: u32, len: u32, pitch: u8, vel: u8) {
    out.push((start, vec![0x90 | ch, pitch, vel]));
    out.push((start + len, vec![0x80 | ch, pitch, 0]));
}

fn analyse(bytes: &[u8]) -> Analysis {
    ensure_runtime(None).expect("ONNX Runtime (run `cargo xtask setup`)");
    let mut model = EmotionModel::load_default().unwrap();
    let piece = parse_midi(bytes).unwrap();
    let a = analyze_piece(&piece, &mut model).unwrap();
    assert!(!a.bars.is_empty());
    for b in &a.bars {
        for x in [b.valence, b.arousal] {
            assert!(x.is_finite() && (-1.0..=1.0).contains(&x), "bar {}: {x}", b.bar);
        }
    }
    assert!(a.overall.valence.is_finite() && a.overall.arousal.is_finite());
    a
}

#[test]
fn sequencer_velocities_tempo_changes_and_odd_meters() {
    let mut ev = vec![
        (0, vec![0xff, 0x58, 4, 7, 3, 24, 8]),          // 7/8
        (0, vec![0xff, 0x51, 3, 0x07, 0xa1, 0x20]),     // 120 BPM
        (TPQ as u32 * 14, vec![0xff, 0x58, 4, 5, 2, 24, 8]), // 5/4 after four bars
        (TPQ as u32 * 14, vec![0xff, 0x51, 3, 0x03, 0xd0, 0x90]), // 240 BPM
    ];
    for i in 0..60 {
        note(&mut ev, 0, i * 240, 200, 60 + (i % 7) as u8 * 2, 100); // every velocity the same
    }
    let bytes = file(ev);
    let a = analyse(&bytes);
    // Notes end at tick 14 360: four 7/8 bars (6 720 ticks), then 5/4 bars of 2 400 ticks.
    assert_eq!(a.bars.len(), 4 + 4, "4 bars of 7/8 then 5/4 bars to the end");
    let piece = parse_midi(&bytes).unwrap();
    assert!(piece.bars[..4].iter().all(|b| (b.len_beats - 3.5).abs() < 1e-9));
    assert!(piece.bars[4..].iter().all(|b| (b.len_beats - 5.0).abs() < 1e-9));
    // 240 BPM from bar 4 on: a 5/4 bar lasts 1.25 s.
    assert!((piece.bars[5].end_s - piece.bars[5].start_s - 1.25).abs() < 1e-9);
}

#[test]
fn dense_reads_more_aroused_than_sparse() {
    let mut sparse = Vec::new();
    for bar in 0..8u32 {
        if bar % 4 == 0 {
            note(&mut sparse, 0, bar * 1920, 960, 55, 40);
        }
    }
    sparse.push((8 * 1920, vec![0xb0, 7, 100]));
    let mut dense = Vec::new();
    for i in 0..(8 * 32u32) {
        for p in [60u8, 64, 67, 71, 74, 77, 81, 84, 88, 91] {
            note(&mut dense, 0, i * 60, 50, p, 120);
        }
    }
    let (s, d) = (analyse(&file(sparse)), analyse(&file(dense)));
    eprintln!("sparse arousal {:+.2}, dense arousal {:+.2}", s.overall.arousal, d.overall.arousal);
    assert!(d.overall.arousal > s.overall.arousal + 0.2);
}

#[test]
fn single_melody_line_and_drums_only() {
    let mut melody = Vec::new();
    for i in 0..32u32 {
        note(&mut melody, 0, i * 480, 400, [67u8, 69, 71, 72, 74, 72, 71, 69][i as usize % 8], 90);
    }
    analyse(&file(melody));
    let mut drums = Vec::new();
    for i in 0..32u32 {
        note(&mut drums, 9, i * 480, 100, if i % 2 == 0 { 36 } else { 38 }, 110);
    }
    let a = analyse(&file(drums));
    assert_eq!(a.bars.len(), 8);
}
