//! A continuation of heard music, end to end: primer tokens from the heard notes, the steered
//! attribute targets and key, the bars to write on the host's (or file's) meter and tempo, the
//! sampler, and the notes placed back on real time. Shared by the worker and `moodfader continue`.
//!
//! Thread: worker / command line

use anyhow::{Result, bail};

use crate::Attribute;
use crate::feel::features::features_for_bars;
use crate::listen::midifile::{Piece, SMF_TICKS_PER_QUARTER, single_track_smf};
use crate::listen::notes::{BarWindow, Note};
use crate::play::attributes::AttributeScale;
use crate::play::continuation::{BarPlan, ContinuationModel, Generated, SamplerSettings};
use crate::play::steering::{Mode, Scale, SteerRequest, attribute_targets, expected_notes_per_beat, heard_attributes, heard_pitch_class_counts, heard_pitch_classes, key_of, level_of, target_scale};
use crate::play::tokens;
use crate::play::tokens::{EOS, NUM_POSITIONS, STEPS_PER_QUARTER, encode, grid_to_notes};

/// Most bars one continuation may have (the product's range is 1–16).
pub const MAX_BARS: u32 = 16;
/// Bars of the primer whose attributes count as "what was heard".
pub const HEARD_BARS: usize = 4;
/// Bars of the primer the key is read from.
pub const KEY_BARS: usize = 8;
/// Default gain of the pitch-class governor ([`ContinueOptions::pitch_class_hold`]). Unsteered,
/// the model alone drifted from the heard harmony: on openings of training-split pieces
/// (`moodfader lab eval-faithfulness --training-split --pieces 80 --seeds 4 --pitch-class-hold
/// G`), the pitch-class overlap with the real next bars was 0.642 without it (0.655 with the fixed
/// prior on the heard pitch classes it replaces, which sharpened the model's choice rather than
/// spreading it as heard), 0.700, 0.721, 0.729, 0.748, 0.752, 0.756, 0.756 and 0.755 at gains
/// 0.5, 1, 2, 4, 6, 8, 12 and 20, the density error unchanged (0.29) and the copy of the primer
/// 0.21–0.24 up to 12. Over 200 pieces × 4 seeds: 0.752, 0.755, 0.760, 0.762 at 4, 6, 8, 12
/// (playing the primer again: 0.757). With the copy governor on, over 300 pieces × 2 seeds:
/// 0.746, 0.748 and 0.746 at 8, 16 and 24; on VGMIDI's openings alone (`--data-set vgmidi
/// --pieces 200`, loop-like music whose next bars repeat half the primer's notes) 0.712, 0.724,
/// 0.730, 0.734 and 0.735 at 4, 8, 12, 20 and 40 (primer again 0.733). 16 is taken: on the
/// plateau for all four data sets, nearer VGMIDI's. Reported on the validation split, which it
/// never saw.
pub const PITCH_CLASS_HOLD: f32 = 16.0;
/// Notes added to each pitch class heard before its share is held: the classes heard recur, but
/// in shares less uneven than four bars showed. On openings of training-split pieces (`moodfader
/// lab eval-faithfulness --training-split --pieces 300 --seeds 2`, and `--data-set vgmidi
/// --pieces 400`), the overlap with the real next bars was 0.748 (VGMIDI 0.735) with none, 0.756
/// (0.740) with 2, 0.758 (0.736) with 3 and 0.756 (0.731) with 5; the heard shares raised to the
/// power 0.7 instead gave 0.758 (0.737).
pub const HEARD_CLASS_PSEUDO_NOTES: f32 = 2.0;
/// Most of a continuation's notes that may repeat a primer note note for note, and the copy
/// governor's gain (log-probability per unit of share over the limit). VGMIDI's loop-like music
/// repeats itself: its real next bars repeat 0.50 of their notes from the primer, and the
/// continuation without the governor 0.38 (all four data sets: 0.32 and 0.24). On VGMIDI openings
/// of training-split pieces (`moodfader lab eval-faithfulness --training-split --data-set vgmidi
/// --pieces 200 --seeds 2 --copy-gain G`), the copy was 0.381, 0.272, 0.242, 0.225 and 0.216 at
/// gains 0, 10, 20, 40 and 80, the pitch-class overlap 0.724–0.728 and the density error
/// 0.300–0.304 throughout.
pub const COPY_LIMIT: f32 = 0.25;
pub const COPY_GAIN: f32 = 20.0;

/// Attributes governed even on auto, when nothing is asked. Note density aims at what the heard
/// bars predict for the next ones ([`crate::play::steering::expected_notes_per_beat`]); the
/// heard density, clamped to the fader's range, is only the fallback when no bar was heard. The
/// history: the model follows its density
/// conditioning loosely: unsteered, on 120 openings of training-split pieces × 4 seeds (`moodfader
/// lab eval-faithfulness --training-split --pieces 120 --seeds 4`), the continuation missed the
/// real next bars' notes per bar by 0.344 (|log2|) where replaying the primer missed by 0.295;
/// with the density governor holding the heard density, 0.277 (pitch-class overlap unchanged,
/// 0.632). Also holding rhythm, tension, register, range, dynamics or articulation moved the
/// overlap by at most 0.01; holding the mode lowered it to 0.561. Only when nothing is asked (no
/// steer, every fader on auto): held while another fader moved, the heard density fought it
/// (rhythm's pooled R² fell from 0.965 to 0.833 on the held-out primers).
pub const AUTO_GOVERNED: [Attribute; 1] = [Attribute::NoteDensity];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContinueOptions {
    pub bars: u32,
    pub steer: SteerRequest,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Zero-based MIDI channel of the generated notes.
    pub channel: u8,
    /// Keep to the heard key (moved to another mode on its tonic when the mode target asks).
    pub key_aware: bool,
    /// Write in this mode on the heard tonic whatever the mode target (the evaluation places the
    /// modes on the fader with it).
    pub force_mode: Option<Mode>,
    /// Gain of the pitch-class governor (0 for none): unless the mode or the tension is asked for,
    /// the continuation's notes are held to the shares of the pitch classes in the heard bars
    /// ([`KEY_BARS`]), as the density governor holds the heard density.
    pub pitch_class_hold: f32,
    /// The copy governor: at most this share of the notes written repeats a note of the primer
    /// note for note (same pitch, same position in its bar), held with `copy_gain` (0 for none).
    pub copy_limit: f32,
    pub copy_gain: f32,
}

impl Default for ContinueOptions {
    fn default() -> Self {
        Self {
            bars: 4,
            steer: SteerRequest::default(),
            temperature: 1.0,
            top_p: 0.95,
            seed: 1,
            channel: 0,
            key_aware: true,
            force_mode: None,
            pitch_class_hold: PITCH_CLASS_HOLD,
            copy_limit: COPY_LIMIT,
            copy_gain: COPY_GAIN,
        }
    }
}

/// A generated continuation and how it was asked for.
#[derive(Debug, Clone)]
pub struct Continuation {
    /// Notes on the real timeline (beats and seconds continue the primer's).
    pub notes: Vec<Note>,
    /// The bars written, after the primer's last bar.
    pub bars: Vec<BarWindow>,
    /// What was heard (fader values) and what was asked (fader values), per attribute.
    pub heard: [f32; 8],
    pub targets: [f32; 8],
    pub scale: Option<Scale>,
    pub tempo_bpm: f64,
    pub meter: (u32, u32),
    pub generated: Generated,
}

/// Tokens of what was heard, each bar conditioned on its own measured attributes (exactly as the
/// training data was written), without the end token.
pub fn primer_tokens(scale: &AttributeScale, notes: &[Note], bars: &[BarWindow]) -> Vec<u32> {
    let feats = features_for_bars(notes, bars);
    let mut t = encode(notes, bars, |b| scale.levels(&crate::play::attributes::raw_attributes(&feats[b])));
    if t.last() == Some(&EOS) {
        t.pop();
    }
    t
}

/// `n` bars following `last`, same length and tempo.
pub fn bars_after(last: &BarWindow, n: u32) -> Vec<BarWindow> {
    let dur_s = last.len_beats * 60.0 / last.tempo_bpm.max(1.0);
    (1..=n as usize)
        .map(|k| {
            let start_s = last.start_s + dur_s * k as f64;
            BarWindow {
                start_s,
                end_s: start_s + dur_s,
                start_beats: last.start_beats + last.len_beats * k as f64,
                len_beats: last.len_beats,
                tempo_bpm: last.tempo_bpm,
            }
        })
        .collect()
}

/// Grid steps of a bar (at most the vocabulary's longest bar).
pub fn bar_steps(bar: &BarWindow) -> u32 {
    ((bar.len_beats * STEPS_PER_QUARTER as f64).round() as u32).clamp(1, NUM_POSITIONS)
}

/// Generates `opts.bars` bars after `heard_bars`, from the notes heard in them. `on_bar` sees
/// each bar's notes on the real timeline as soon as it is written and may stop early.
pub fn continue_notes(
    model: &mut ContinuationModel,
    heard_notes: &[Note],
    heard_bars: &[BarWindow],
    future: &[BarWindow],
    opts: &ContinueOptions,
    mut on_bar: impl FnMut(u32, &[Note]) -> bool,
) -> Result<Continuation> {
    if future.is_empty() || future.len() > MAX_BARS as usize {
        bail!("bars to generate must be 1..={MAX_BARS}, not {}", future.len());
    }
    let scale = model.scale().clone();
    let feats = features_for_bars(heard_notes, heard_bars);
    let heard = heard_attributes(&scale, &feats, HEARD_BARS);
    let targets = attribute_targets(&model.bridge, &heard, &opts.steer);
    let mode_i = Attribute::ALL.iter().position(|&a| a == Attribute::Mode).unwrap_or(5);
    // The sampler keeps to the heard key; a mode change is made by moving each written note to
    // the target mode on the same tonic (see `mode_map`).
    let heard_pcs = if opts.key_aware { heard_pitch_classes(heard_notes, heard_bars, KEY_BARS) } else { [0.0; 12] };
    let heard_k = key_of(&heard_pcs);
    let heard_scale = heard_k.as_ref().map(Scale::of_key);
    let key = match (opts.force_mode, heard_scale) {
        (Some(mode), Some(h)) => Some(Scale { tonic: h.tonic, mode }),
        _ => target_scale(heard_k, heard[mode_i], targets[mode_i]),
    };
    let mut levels = targets.map(level_of);
    // Level 0 of the densities also stands for empty bars in the training data: "sparse" must
    // never mean "silent", so the lowest level asked for is 1.
    for a in [Attribute::NoteDensity, Attribute::RhythmDensity] {
        if let Some(i) = Attribute::ALL.iter().position(|&x| x == a) {
            levels[i] = levels[i].max(1);
        }
    }
    // Governors in the sampler hold the attributes the user asks for (a fader off auto, or a
    // steer toward a target) to their targets, on the attribute scale's raw units; on auto the
    // model alone follows what was heard, but for [`AUTO_GOVERNED`] when nothing is asked.
    let steering = opts.steer.steer.is_finite() && opts.steer.steer > 0.0;
    let unsteered = !steering && opts.steer.manual.iter().all(Option::is_none);
    let governed = |a: Attribute| -> Option<f32> {
        let i = Attribute::ALL.iter().position(|&x| x == a)?;
        if opts.steer.manual[i].is_none() && !steering && !(unsteered && AUTO_GOVERNED.contains(&a)) {
            return None;
        }
        let raw = scale.p5[i] + targets[i].clamp(0.0, 1.0) * (scale.p95[i] - scale.p5[i]);
        raw.is_finite().then_some(raw)
    };
    let mode_span = scale.p95[mode_i] - scale.p5[mode_i];
    let mode_target = governed(Attribute::Mode).filter(|_| key.is_some() && opts.force_mode.is_none() && mode_span > 0.0).map(|t| (t, mode_span));
    let dissonance_target = governed(Attribute::Tension);
    // The pitch-class governor holds the heard harmony unless the mode or the tension is asked
    // for: those governors move the pitch classes themselves. The other faders moved by at most
    // 0.01 with it on the training-split primers (`moodfader lab eval-continuation --training-split
    // 16 --no-emotion`; articulation 0.986 without, 0.976 with).
    let class_hold = heard_scale.is_some() && key == heard_scale && mode_target.is_none() && dissonance_target.is_none();
    // Note onsets per second, over each bar's duration. Unsteered, the density held is the one
    // expected after what was heard, per beat (not clamped to the fader's range).
    let onsets_per_s = governed(Attribute::NoteDensity);
    let expected_per_beat = if unsteered { expected_notes_per_beat(heard_notes, heard_bars) } else { None };
    let slots = governed(Attribute::RhythmDensity);
    let plan: Vec<BarPlan> = future
        .iter()
        .map(|b| BarPlan {
            steps: bar_steps(b),
            levels,
            notes_target: match expected_per_beat {
                Some(x) => Some((x as f64 * b.len_beats) as f32),
                None => onsets_per_s.map(|x| (x as f64 * b.dur_s()) as f32),
            },
            slots_target: slots,
        })
        .collect();
    let primer = primer_tokens(&scale, heard_notes, heard_bars);
    let settings = SamplerSettings {
        temperature: opts.temperature,
        top_p: opts.top_p,
        seed: opts.seed,
        scale: heard_scale,
        write_in: key,
        dissonance_target,
        mode_target,
        articulation_target: governed(Attribute::Articulation),
        velocity_target: governed(Attribute::Dynamics).map(|v| v * Attribute::Dynamics.unit().1),
        register_target: governed(Attribute::Register),
        range_target: governed(Attribute::PitchRange),
        pitch_class_hold: (class_hold && opts.pitch_class_hold > 0.0).then(|| {
            let heard = heard_pitch_class_counts(heard_notes, heard_bars, KEY_BARS);
            (heard.map(|n| if n > 0.0 { n + HEARD_CLASS_PSEUDO_NOTES } else { 0.0 }), opts.pitch_class_hold)
        }),
        copy_limit: (opts.copy_gain > 0.0 && opts.copy_limit < 1.0).then_some((opts.copy_limit, opts.copy_gain)),
        ..Default::default()
    };
    let channel = opts.channel & 15;
    let generated = model.generate(&primer, &plan, &settings, |b, grid| {
        let placed: Vec<tokens::GridNote> = grid.iter().map(|g| tokens::GridNote { bar: b, ..*g }).collect();
        on_bar(b, &grid_to_notes(&placed, future, channel))
    })?;
    let notes = grid_to_notes(&generated.notes, future, channel);
    let last = future[future.len() - 1];
    Ok(Continuation {
        notes,
        bars: future.to_vec(),
        heard,
        targets,
        scale: key,
        tempo_bpm: last.tempo_bpm,
        meter: (0, 0),
        generated,
    })
}

/// `moodfader continue`: the bars after a MIDI file's end, on its last tempo and meter.
pub fn continue_piece(model: &mut ContinuationModel, piece: &Piece, opts: &ContinueOptions) -> Result<Continuation> {
    if !(1..=MAX_BARS).contains(&opts.bars) {
        bail!("--bars must be 1..={MAX_BARS}, not {}", opts.bars);
    }
    let Some(last) = piece.bars.last() else { bail!("the primer has no bars (no notes)") };
    let future = bars_after(last, opts.bars);
    let mut c = continue_notes(model, &piece.notes, &piece.bars, &future, opts, |_, _| true)?;
    c.meter = piece.meters.last().map(|m| (m.num, m.den)).unwrap_or((4, 4));
    Ok(c)
}

/// A format-0 Standard MIDI File with `notes` (placed by their beats), the tempo and the meter.
pub fn notes_to_smf(notes: &[Note], tempo_bpm: f64, meter: (u32, u32)) -> Vec<u8> {
    let tpq = SMF_TICKS_PER_QUARTER as f64;
    let us = (60_000_000.0 / tempo_bpm.clamp(1.0, 2000.0)).round() as u32;
    let (num, den) = (meter.0.clamp(1, 255) as u8, meter.1.clamp(1, 128));
    let den_pow = (31 - den.leading_zeros()) as u8; // log2, rounded down
    let mut events: Vec<(u64, u8, Vec<u8>)> = vec![
        (0, 0, vec![0xff, 0x51, 3, (us >> 16) as u8, (us >> 8) as u8, us as u8]),
        (0, 0, vec![0xff, 0x58, 4, num, den_pow, 24, 8]),
    ];
    for n in notes {
        let on = (n.onset_beats.max(0.0) * tpq).round() as u64;
        let off = ((n.onset_beats + n.dur_beats).max(0.0) * tpq).round().max(on as f64 + 1.0) as u64;
        let ch = n.channel & 15;
        // Order at equal ticks: note-offs (1) before note-ons (2), so a repeated note re-strikes.
        events.push((on, 2, vec![0x90 | ch, n.pitch & 127, n.velocity.clamp(1, 127)]));
        events.push((off, 1, vec![0x80 | ch, n.pitch & 127, 0]));
    }
    events.sort_by_key(|e| (e.0, e.1));
    let mut last = 0u64;
    let deltas: Vec<(u32, Vec<u8>)> = events
        .into_iter()
        .map(|(t, _, b)| {
            let d = (t - last).min(u32::MAX as u64 >> 4) as u32;
            last = t;
            (d, b)
        })
        .collect();
    single_track_smf(SMF_TICKS_PER_QUARTER, deltas.iter().map(|(d, b)| (*d, b.as_slice())))
}

/// The panel's "Export": the piano roll's notes (the continuation, and with `with_heard` the bars
/// heard before it) as a Standard MIDI File on the host's tempo and meter. The file starts at
/// the first bar line at or before its first note, so it drops onto a bar in any DAW.
pub fn roll_to_smf(roll: &crate::shared::Roll, with_heard: bool, tempo_bpm: f64, meter: (u32, u32), channel: u8) -> Option<Vec<u8>> {
    let notes: Vec<&crate::shared::RollNote> =
        roll.generated.iter().chain(roll.heard.iter().filter(|_| with_heard)).filter(|n| n.end_beats > n.start_beats).collect();
    let first = notes.iter().map(|n| n.start_beats).fold(f64::INFINITY, f64::min);
    if !first.is_finite() {
        return None;
    }
    let bar = if roll.bar_len_beats > 0.0 { roll.bar_len_beats } else { 4.0 };
    // Bar lines of the roll are at bar_start + k * bar.
    let origin = roll.bar_start_beats + ((first - roll.bar_start_beats) / bar).floor() * bar;
    let beat_s = 60.0 / tempo_bpm.clamp(1.0, 2000.0);
    let out: Vec<Note> = notes
        .iter()
        .map(|n| {
            let onset_beats = n.start_beats - origin;
            let dur_beats = n.end_beats - n.start_beats;
            Note {
                onset_s: onset_beats * beat_s,
                dur_s: dur_beats * beat_s,
                onset_beats,
                dur_beats,
                pitch: n.pitch,
                velocity: n.velocity.clamp(1, 127),
                channel: channel & 15,
            }
        })
        .collect();
    Some(notes_to_smf(&out, tempo_bpm, meter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::{Roll, RollNote};

    #[test]
    fn roll_exports_on_bar_lines_with_tempo_and_meter() {
        let note = |s: f64, e: f64, p: u8| RollNote { start_beats: s, end_beats: e, pitch: p, velocity: 90 };
        let roll = Roll {
            now_beats: 101.0,
            bar_start_beats: 99.0, // bars of 3 beats (3/4) at 99, 102, ...
            bar_len_beats: 3.0,
            heard: vec![note(94.5, 95.0, 60), note(97.0, 98.0, 62)],
            generated: vec![note(102.0, 103.0, 67), note(103.5, 104.0, 69)],
        };
        let only = crate::listen::midifile::parse_midi(&roll_to_smf(&roll, false, 90.0, (3, 4), 2).unwrap()).unwrap();
        assert_eq!(only.notes.len(), 2);
        assert!(only.notes[0].onset_beats.abs() < 1e-9, "the continuation starts on the file's first bar line");
        assert_eq!((only.meters[0].num, only.meters[0].den), (3, 4));
        assert!((60e6 / only.tempos[0].us_per_quarter as f64 - 90.0).abs() < 0.01);
        assert_eq!(only.notes[0].channel, 2);
        let both = crate::listen::midifile::parse_midi(&roll_to_smf(&roll, true, 90.0, (3, 4), 0).unwrap()).unwrap();
        assert_eq!(both.notes.len(), 4);
        // First note at 94.5: its bar starts at 93, so it sits 1.5 beats into the file.
        assert!((both.notes[0].onset_beats - 1.5).abs() < 1e-9, "{}", both.notes[0].onset_beats);
        assert!(roll_to_smf(&Roll::default(), true, 120.0, (4, 4), 0).is_none());
    }
}
