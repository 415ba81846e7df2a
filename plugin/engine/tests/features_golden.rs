//! Golden tests for the feature extractor, on small MIDI files built here and on the bundled demo.
//!
//! Thread: test

use moodfader_engine::feel::features::{FEATURE_NAMES, NUM_FEATURES, features_for_bars};
use moodfader_engine::listen::midifile::{parse_midi, single_track_smf};

fn smf(tpq: u16, events: &[(u32, Vec<u8>)]) -> Vec<u8> {
    single_track_smf(tpq, events.iter().map(|(d, b)| (*d, b.as_slice())))
}

fn idx(name: &str) -> usize {
    FEATURE_NAMES.iter().position(|n| *n == name).unwrap()
}

/// Bar 0: a C major triad held for the bar. Bar 1: sixteen staccato 16ths, velocity 80/120.
/// Bar 2: silence, closed by a note in bar 3. 120 BPM, 4/4, 480 ticks per quarter.
fn three_bar_file() -> Vec<u8> {
    let mut ev: Vec<(u32, Vec<u8>)> = vec![(0, vec![0xff, 0x51, 3, 0x07, 0xa1, 0x20])];
    ev.push((0, vec![0x90, 60, 100]));
    ev.push((0, vec![0x90, 64, 100]));
    ev.push((0, vec![0x90, 67, 100]));
    ev.push((1920, vec![0x80, 60, 0]));
    ev.push((0, vec![0x80, 64, 0]));
    ev.push((0, vec![0x80, 67, 0]));
    let scale = [60u8, 62, 64, 65, 67, 69, 71, 72];
    for i in 0..16 {
        let p = scale[i % 8];
        ev.push((0, vec![0x90, p, if i % 2 == 0 { 80 } else { 120 }]));
        ev.push((48, vec![0x80, p, 0]));
        ev.push((72, vec![0xb0, 7, 100])); // filler controller event to advance time
    }
    ev.push((1920, vec![0x90, 72, 90]));
    ev.push((480, vec![0x80, 72, 0]));
    smf(480, &ev)
}

#[test]
fn hand_computed_features() {
    let piece = parse_midi(&three_bar_file()).unwrap();
    assert_eq!(piece.bars.len(), 4);
    let f = features_for_bars(&piece.notes, &piece.bars);
    let close = |got: f32, want: f32, what: &str| assert!((got - want).abs() < 1e-4, "{what}: got {got}, want {want}");

    // Bar 0: the held triad.
    close(f[0][idx("note_density")], 1.5, "bar 0 density (3 onsets / 2 s)");
    close(f[0][idx("rhythm_density")], 1.0 / 16.0, "bar 0 rhythm");
    close(f[0][idx("velocity")], 100.0 / 127.0, "bar 0 velocity");
    close(f[0][idx("velocity_std")], 0.0, "bar 0 velocity spread");
    close(f[0][idx("pitch_mean")], (60.0 + 64.0 + 67.0) / 3.0, "bar 0 pitch");
    close(f[0][idx("pitch_range")], 7.0, "bar 0 range");
    close(f[0][idx("articulation")], 1.0, "bar 0 legato");
    close(f[0][idx("dur_mean_beats")], 4.0, "bar 0 duration");
    close(f[0][idx("polyphony")], 3.0, "bar 0 polyphony");
    close(f[0][idx("dissonance")], 0.0, "bar 0 triad is consonant");
    close(f[0][idx("tempo_bpm")], 120.0, "tempo");
    close(f[0][idx("silent")], 0.0, "bar 0 not silent");
    assert!(f[0][idx("mode")] > 0.0 && f[0][idx("key_clarity")] > 0.5, "C major triad reads major");

    // Bar 1: staccato sixteenths.
    close(f[1][idx("note_density")], 8.0, "bar 1 density");
    close(f[1][idx("rhythm_density")], 1.0, "bar 1 rhythm fills every 16th");
    close(f[1][idx("velocity")], 100.0 / 127.0, "bar 1 velocity");
    close(f[1][idx("velocity_std")], 20.0 / 127.0, "bar 1 velocity spread");
    close(f[1][idx("articulation")], 0.4, "bar 1 staccato (0.05 s of 0.125 s)");
    close(f[1][idx("dur_mean_beats")], 0.1, "bar 1 duration");
    close(f[1][idx("polyphony")], 1.0, "bar 1 monophonic");
    close(f[1][idx("pitch_range")], 12.0, "bar 1 range");
    // The scale twice: top voice = bass = each note; steps +2 +2 +1 +2 +2 +2 +1, -12, and again.
    close(f[1][idx("melody_pitch")], 530.0 / 8.0, "bar 1 melody");
    close(f[1][idx("bass_pitch")], 530.0 / 8.0, "bar 1 bass");
    close(f[1][idx("melodic_motion")], 12.0 / 15.0, "bar 1 motion");
    close(f[1][idx("melodic_leap")], 36.0 / 15.0, "bar 1 leaps");
    close(f[1][idx("harmonic_changes")], 14.0 / 15.0, "bar 1 changes (C5 to C4 keeps the pitch class)");
    // Bar 0: one chord.
    close(f[0][idx("melody_pitch")], 67.0, "bar 0 melody is the triad's top");
    close(f[0][idx("bass_pitch")], 60.0, "bar 0 bass");
    close(f[0][idx("melodic_leap")], 0.0, "bar 0 no steps");
    // Bar 0's harmony: C major in C major. The best minor triad (A-C-E or E-G-B) holds 2 of 3.
    close(f[0][idx("triad_quality")], 1.0 / 3.0, "bar 0 triad quality");
    close(f[0][idx("in_key")], 1.0, "bar 0 in the key");
    close(f[0][idx("tonic_triad")], 1.0, "bar 0 tonic triad");
    close(f[0][idx("dominant_triad")], 1.0 / 3.0, "bar 0 dominant (G)");
    close(f[0][idx("subdominant_triad")], 1.0 / 3.0, "bar 0 subdominant (C)");
    close(f[0][idx("bass_third")], 1.0, "bar 0 major third over the bass");
    // Bar 1's melody: 14 of 15 steps conjunct, 14 up and 1 down; single notes have no third.
    close(f[1][idx("melody_conjunct")], 14.0 / 15.0, "bar 1 conjunct");
    close(f[1][idx("melody_contour")], 13.0 / 15.0, "bar 1 contour");
    close(f[1][idx("bass_third")], 0.0, "bar 1 no chords");
    close(f[1][idx("triad_quality")], 0.0, "bar 1 the scale leans neither way");

    // Bar 2: silence.
    close(f[2][idx("silent")], 1.0, "bar 2 silent");
    close(f[2][idx("note_density")], 0.0, "bar 2 density");
    close(f[2][idx("tempo_bpm")], 120.0, "bar 2 tempo");
    for bar in &f {
        assert!(bar.iter().all(|v| v.is_finite()));
    }
}

/// Two bars of an A minor triad in first inversion (C-E-A), then one of E major (the minor key's
/// dominant, G# the leading tone).
#[test]
fn minor_harmony_reads_minor() {
    let mut ev: Vec<(u32, Vec<u8>)> = Vec::new();
    for chord in [[60u8, 64, 69], [60, 64, 69], [64, 68, 71]] {
        for p in chord {
            ev.push((0, vec![0x90, p, 90]));
        }
        ev.push((1920, vec![0x80, chord[0], 0]));
        ev.push((0, vec![0x80, chord[1], 0]));
        ev.push((0, vec![0x80, chord[2], 0]));
    }
    let piece = parse_midi(&smf(480, &ev)).unwrap();
    let f = features_for_bars(&piece.notes, &piece.bars);
    let close = |got: f32, want: f32, what: &str| assert!((got - want).abs() < 1e-4, "{what}: got {got}, want {want}");
    close(f[0][idx("triad_quality")], -1.0 / 3.0, "A minor triad");
    // The bass is C: E is its major third, so an inversion reads major over the bass.
    close(f[0][idx("bass_third")], 1.0, "C under E");
    close(f[2][idx("triad_quality")], 1.0 / 3.0, "E major triad");
    close(f[2][idx("bass_third")], 1.0, "E under G#");
    assert!(f[2][idx("mode")] < 0.0, "the three bars read as A minor: {}", f[2][idx("mode")]);
    close(f[2][idx("in_key")], 1.0, "G# is the minor key's leading tone");
    close(f[2][idx("dominant_triad")], 1.0, "E major is V of A minor");
    close(f[2][idx("tonic_triad")], 1.0 / 3.0, "E is in the tonic triad too");
    close(f[2][idx("subdominant_triad")], 0.0, "nothing of D minor");
}

#[test]
fn drums_are_ignored_for_pitch_features() {
    let mut ev: Vec<(u32, Vec<u8>)> = vec![
        (0, vec![0x90, 60, 100]),
        (0, vec![0x99, 36, 127]), // kick on channel 10
        (960, vec![0x89, 36, 0]),
    ];
    ev.push((960, vec![0x80, 60, 0]));
    let piece = parse_midi(&smf(480, &ev)).unwrap();
    let f = features_for_bars(&piece.notes, &piece.bars);
    assert!((f[0][idx("pitch_mean")] - 60.0).abs() < 1e-6);
    assert!((f[0][idx("pitch_range")]).abs() < 1e-6);
    assert!((f[0][idx("note_density")] - 0.5).abs() < 1e-6);
}

/// The demo's features are pinned in `golden/demo_features.json`; a change to the feature code
/// that moves them must be deliberate (bump FEATURE_SPEC_VERSION, retrain, and regenerate with
/// `UPDATE_GOLDEN=1 cargo test -p moodfader-engine --test features_golden`).
#[test]
fn demo_features_match_golden() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = root.join("../../assets/demo.mid");
    let piece = moodfader_engine::listen::midifile::read_midi_file(&demo).unwrap();
    let f = features_for_bars(&piece.notes, &piece.bars);
    let golden_path = root.join("tests/golden/demo_features.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, serde_json::to_string_pretty(&f).unwrap()).unwrap();
    }
    let golden: Vec<Vec<f32>> = serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
    assert_eq!(golden.len(), f.len(), "bar count");
    for (bar, (g, got)) in golden.iter().zip(f.iter()).enumerate() {
        assert_eq!(g.len(), NUM_FEATURES);
        for (i, (a, b)) in g.iter().zip(got.iter()).enumerate() {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "bar {bar} {}: golden {a}, now {b}", FEATURE_NAMES[i]);
        }
    }
}

/// `onset_offgrid`: onsets on the 32nd and 16th-triplet grid count as on it, whatever the note
/// values; onsets a few milliseconds off count as off. Sequenced bars read 0, played ones more.
#[test]
fn onsets_off_the_grid_are_counted() {
    use moodfader_engine::feel::features::off_grid;
    for beats in [0.0, 0.125, 1.0 / 6.0, 0.25, 1.0 / 3.0, 0.5, 2.0 / 3.0, 0.875, 3.0, 3.0 + 5.0 / 6.0] {
        assert!(!off_grid(beats), "{beats} is on the grid");
    }
    for beats in [0.03, 0.21, 0.3, 1.45, 2.0 + 0.06] {
        assert!(off_grid(beats), "{beats} is off the grid");
    }
    // The three-bar file is sequenced: every bar with notes reads 0.
    let piece = parse_midi(&three_bar_file()).unwrap();
    let f = features_for_bars(&piece.notes, &piece.bars);
    assert!(f.iter().all(|b| b[idx("onset_offgrid")] == 0.0));
    // Four quarter notes, the 2nd and 4th played 20 ms late (120 BPM, 480 ticks: 19 ticks).
    let mut ev: Vec<(u32, Vec<u8>)> = Vec::new();
    for (delay, hold) in [(0u32, 480u32), (19, 461), (0, 480), (19, 461)] {
        ev.push((delay, vec![0x90, 60, 90]));
        ev.push((hold, vec![0x80, 60, 0]));
    }
    let piece = parse_midi(&smf(480, &ev)).unwrap();
    let f = features_for_bars(&piece.notes, &piece.bars);
    assert!((f[0][idx("onset_offgrid")] - 0.5).abs() < 1e-6, "got {}", f[0][idx("onset_offgrid")]);
}
