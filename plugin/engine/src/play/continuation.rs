//! The continuation model and its sampler: a decoder-only transformer over the token vocabulary
//! of [`crate::play::tokens`], run through ONNX Runtime with its key/value cache as inputs and outputs,
//! and a grammar-constrained sampler (temperature, nucleus, seed) that keeps to the heard key,
//! bounds polyphony and never writes a note past the bars it was asked for.
//!
//! Thread: worker / command line (never the audio thread)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::feel::emotion::{ENV_MODEL_DIR, ModelOrigin};
use crate::feel::features::{KEY_WINDOW_BARS, MAX_CHORD_NOTES, chord_intervals, is_dissonant};
use crate::play::attributes::AttributeScale;
use crate::play::steering::{EmotionBridge, Scale, mode_map};
use crate::runtime::{session_from_bytes, sha256_hex};
use crate::play::tokens::{
    BAR, BOS, DURATION_BASE, DURATION_STEPS, GridNote, NUM_ATTRIBUTES, NUM_POSITIONS, NUM_VELOCITY_BUCKETS, PITCH_BASE,
    POSITION_BASE, TOKEN_SPEC_VERSION, Token, VELOCITY_BASE, VOCAB_SIZE, bucket_velocity,
};

pub const MODEL_FILE: &str = "continuation.onnx";
pub const MANIFEST_FILE: &str = "continuation.json";
/// The committed model, built into every binary.
pub const EMBEDDED_MODEL: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/continuation.onnx"));
pub const EMBEDDED_MANIFEST: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/continuation.json"));

/// Most primer tokens fed before generating (the rest of what was heard is left out, from the
/// front, at a bar line). Keeps the first bar fast.
pub const MAX_PRIMER_TOKENS: usize = 128;
/// Longest the key/value cache grows before it is rebuilt from the recent bars (at most half of
/// it), and the slots of its buffers. 192 rather than 288 cost 0.025 nats per token of validation
/// loss (1.551 -> 1.576 on 120 validation pieces, replaying this refill scheme, an earlier model)
/// and kept eight bars inside the 300 ms budget then. Since stop 36 the cache is written in place
/// and a step no longer copies it: with the four-layer model a step takes about 0.19 ms with 20
/// tokens cached and 0.26 ms with 150 (one core of a Xeon with AMX), and eight bars 231-235 ms at
/// p99 there (`cargo xtask bench`). A longer window and primer would now fit the budget, but buy
/// nothing measurable: on 300 training-split openings × 2 seeds, windows of 192, 288 and 384 with
/// primers of 128, 192 and 256 tokens all gave pitch-class overlap 0.757-0.758 with the real next
/// bars and density error 0.274-0.275 (the governors already carry what was heard).
pub const CACHE_WINDOW: usize = 192;
/// Inputs besides each layer's past keys and values (`past_key_l`, `past_value_l`; outputs
/// `logits`, `present_key_l`, `present_value_l`).
const MODEL_INPUTS: &[&str] = &["tokens", "positions", "seqlens_k", "total_sequence_length"];
/// Lowest and highest pitch the sampler writes (the piano's range).
pub const MIN_PITCH: u8 = 21;
pub const MAX_PITCH: u8 = 108;

#[derive(Debug, Clone, Deserialize)]
pub struct Architecture {
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub context: usize,
}

/// The parts of `continuation.json` the loader and the steering use.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub token_spec_version: u32,
    pub vocab_size: u32,
    pub architecture: Architecture,
    pub attribute_scale: AttributeScale,
    pub bridge: serde_json::Value,
    pub sha256: String,
    #[serde(default)]
    pub valid_loss: Option<f64>,
    #[serde(default)]
    pub steps: Option<u64>,
}

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerSettings {
    /// Softmax temperature (clamped to 0.05..=3).
    pub temperature: f32,
    /// Nucleus: sample among the most likely tokens whose probabilities add up to this.
    pub top_p: f32,
    pub seed: u64,
    /// Keep to this scale (log-probability penalty on other pitches), or None.
    pub scale: Option<Scale>,
    /// Write the notes in this mode of `scale`'s tonic: the model samples in `scale` (the key it
    /// heard) and each note is moved degree by degree ([`mode_map`]) as it is written.
    pub write_in: Option<Scale>,
    /// Tension governor: the fraction of dissonant intervals (feature `dissonance`) to aim for,
    /// or None to leave it to the model.
    pub dissonance_target: Option<f32>,
    /// Mode governor: the major-minus-minor key correlation (feature `mode`) to aim for and the
    /// width of its fader range (the attribute scale's p95 − p5), or None.
    pub mode_target: Option<(f32, f32)>,
    /// Articulation governor: the mean duration over the gap to the next onset (feature
    /// `articulation`) to aim for, or None.
    pub articulation_target: Option<f32>,
    /// Dynamics governor: the bar's mean MIDI velocity (feature `velocity` × 127) to aim for, or
    /// None. In absolute units: the same value plays as loud after a soft primer as after a loud one.
    pub velocity_target: Option<f32>,
    /// Register governor: the bar's mean written MIDI pitch (feature `pitch_mean`), or None.
    pub register_target: Option<f32>,
    /// Pitch-range governor: the bar's highest minus lowest written pitch in semitones (feature
    /// `pitch_range`), or None.
    pub range_target: Option<f32>,
    /// Log-probability taken off a pitch outside the scale.
    pub key_penalty: f32,
    /// Pitch-class governor: the share of notes in each pitch class (written, summing to 1) to
    /// hold the continuation to, and its gain ([`pitch_class_pull`]), or None.
    pub pitch_class_hold: Option<([f32; 12], f32)>,
    /// Copy governor: the most of the continuation's notes that may repeat a primer note note for
    /// note (same written pitch at the same position in its bar, in any primer bar), and its
    /// gain ([`Governors::copy_bias`]), or None.
    pub copy_limit: Option<(f32, f32)>,
    /// Most notes sounding at once.
    pub max_polyphony: usize,
    pub max_notes_per_bar: usize,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 0.95,
            seed: 1,
            scale: None,
            write_in: None,
            dissonance_target: None,
            mode_target: None,
            articulation_target: None,
            velocity_target: None,
            register_target: None,
            range_target: None,
            key_penalty: 4.0,
            pitch_class_hold: None,
            copy_limit: None,
            max_polyphony: 10,
            max_notes_per_bar: 48,
        }
    }
}

impl SamplerSettings {
    /// The pitch a sampled pitch is written as (moved to `write_in`'s mode).
    pub fn written(&self, pitch: u8) -> u8 {
        match (self.scale, self.write_in) {
            (Some(from), Some(to)) => mode_map(pitch, from, to),
            _ => pitch,
        }
    }
}

/// Weight (grid steps) of the note the mode governor imagines adding to the pitch classes so far.
const MODE_PROBE_STEPS: f32 = 4.0;

/// The mode governor's pull on each pitch class: how adding a note of that class would move the
/// written notes' mode (major-minus-minor key correlation of their duration-weighted pitch-class
/// histogram) toward `target`, scaled so the strongest pull is `gain` times the distance to the
/// target in fader ranges.
fn mode_pull(hist: &[f32; 12], target: f32, span: f32, gain: f32) -> [f32; 12] {
    let now = crate::listen::keyfind::find_key(hist).mode;
    let err = ((target - now) / span.max(1e-3)).clamp(-1.0, 1.0);
    let mut delta = [0.0f32; 12];
    for (pc, d) in delta.iter_mut().enumerate() {
        let mut h = *hist;
        h[pc] += MODE_PROBE_STEPS;
        *d = crate::listen::keyfind::find_key(&h).mode - now;
    }
    let max = delta.iter().fold(0.0f32, |m, d| m.max(d.abs()));
    if max < 1e-6 || !err.is_finite() {
        return [0.0; 12];
    }
    delta.map(|d| gain * err * d / max)
}

/// Floor added to both shares in [`pitch_class_pull`], so a pitch class neither asked for nor
/// written yet is left alone rather than pushed without bound.
const PITCH_CLASS_FLOOR: f32 = 0.02;

/// The pitch-class governor's pull on each pitch class: `gain · ln((target + floor) / (now +
/// floor))`, where `now` is each class's share of the notes written so far (`counts`, which
/// start from the target's own shares, see [`PRIOR_CLASS_NOTES`]). A class the continuation has
/// used less than the target gains, one it has overused loses; the model's choice among the
/// classes that are on target is left as it is (unlike a fixed prior, which sharpens it).
fn pitch_class_pull(target: &[f32; 12], counts: &[f32; 12], gain: f32) -> [f32; 12] {
    let total: f32 = counts.iter().sum();
    if !(total > 0.0 && gain.is_finite()) {
        return [0.0; 12];
    }
    std::array::from_fn(|pc| gain * ((target[pc] + PITCH_CLASS_FLOOR) / (counts[pc] / total + PITCH_CLASS_FLOOR)).ln())
}

/// Grid steps of the 16th-note slots the feature `rhythm_density` counts.
const STEPS_PER_SLOT: u32 = crate::play::tokens::STEPS_PER_QUARTER / 4;

/// Gains of the governors: log-probability per unit of distance from a target.
pub mod gains {
    /// Ending the bar, per note written beyond the bar's target (or short of it), at most
    /// [`MAX_END_BIAS`] either way; the same per 16th-note slot for the rhythm governor. Chosen
    /// on training-split primers: note-density pooled R² 0.837 at (3, 8), 0.893 at (6, 16), 0.901
    /// at (10, 30) before [`LONG_NOTE`]; with it, 0.966, 0.988 and 0.994.
    pub const DENSITY: f32 = 10.0;
    pub const MAX_END_BIAS: f32 = 30.0;
    /// Ending the bar is neutral this many notes short of the target. At 0.5 the bar ran over
    /// (notes go on being added at an onset after the target is reached): unsteered, on openings
    /// of training-split pieces (`moodfader lab eval-faithfulness --training-split --pieces 300
    /// --seeds 2`), the notes per bar overshot the density aimed at by 0.078 (log2; |error| 0.083)
    /// and missed the real next bars by 0.282; at 1.0 by +0.022 (0.042) and 0.272; at 1.5 they
    /// fell short by 0.081. The note-density fader's pooled R² was 0.994 at 0.5 and 0.995 at 1.0
    /// (`lab eval-continuation --training-split 16 --only note-density`).
    pub const DENSITY_END_AT: f32 = 1.0;
    /// While a bar still wants onsets, a note longer than [`LONG_NOTE_OVERLAP`] times the gap
    /// between the onsets still wanted loses this per unit of log length. Without it a performed
    /// primer's long, pedalled notes fill the polyphony and the bar runs out of room: note-density
    /// pooled R² 0.901 without, 0.992 at 3, 0.994 at 10 (training split); rhythm 0.957 → 0.967.
    pub const LONG_NOTE: f32 = 3.0;
    pub const LONG_NOTE_OVERLAP: f32 = 4.0;
    /// Taken off a position per grid step it skips, per note still wanted per step left.
    pub const DENSITY_STEP: f32 = 1.0;
    /// Added to a position in a new slot (taken off per empty slot skipped), per slot still
    /// wanted per slot left.
    pub const RHYTHM_SLOT: f32 = 4.0;
    /// Durations tilt by this times (target − articulation so far) per unit of log length.
    /// Chosen on training-split primers (`lab eval-continuation --training-split 16`): pooled R²
    /// 0.767 at 4, 0.796 at 10, 0.782 at 25.
    pub const ARTICULATION: f32 = 10.0;
    /// Taken off a duration per squared unit of log length between it and the articulation
    /// governor's aim. Training split: articulation pooled R² 0.796 without the aim, 0.857 at 1,
    /// 0.877 at 2, 0.846 at 5 (with [`ARTICULATION`] 10; 0.787 with it at 4).
    pub const ARTICULATION_AIM: f32 = 2.0;
    /// Added to the next onset (or the bar's end) per unit it brings the articulation measured so
    /// far nearer the target, once the notes waiting for their gap are closed there: the duration
    /// is chosen before the gap that measures it, so the governor holds both. Training split
    /// (`lab eval-continuation --training-split 16 --only articulation`): pooled R² 0.929 without,
    /// 0.966 at 20, 0.976 at 35, 0.986 at 50, 0.982 at 70, 0.968 at 100, 0.916 at 150 (with the
    /// pitch-class governor also on: 0.976 at 50; the other faders moved by at most 0.002).
    pub const ARTICULATION_GAP: f32 = 50.0;
    /// Added to a pitch per unit it brings the bar's dissonant fraction (measured as the feature
    /// measures it) nearer the tension governor's target, taken off per unit it takes it further.
    /// Chosen on training-split primers: pooled R² 0.734 at 60, 0.769 at 150, 0.782 at 400;
    /// above 150 the gain buys little and overrides the model's voicing more often.
    pub const DISSONANCE: f32 = 150.0;
    /// The most a pitch class gains or loses when the mode is a whole fader range off target.
    /// Chosen on training-split primers, with the governor reading the key window as the feature
    /// does: pooled R² 0.757 at 10, 0.866 at 20, 0.926 at 40, 0.960 at 80, 0.974 at 160 (where
    /// the other attributes start to move with it).
    pub const MODE: f32 = 80.0;
    /// Taken off a velocity bucket per 16 velocity steps it lies from the dynamics governor's aim.
    pub const DYNAMICS: f32 = 3.0;
    /// Taken off a pitch per squared octave it lies from the register governor's aim.
    pub const REGISTER: f32 = 2.0;
    /// Added to a pitch per octave it brings the bar's range nearer the range governor's target
    /// (taken off per octave it takes it further). Training split: pooled R² 0.941 at 3, 0.933
    /// at 6, 0.966 at 9, 0.975 at 12, 0.988 at 24, 0.992 at 48 (where the other attributes move
    /// more with it).
    pub const RANGE: f32 = 24.0;
    /// How far (semitones, velocity steps) a governor's aim may lie from its target while it
    /// makes up for the bar so far.
    pub const MAX_PITCH_CORRECTION: f32 = 12.0;
    pub const MAX_VELOCITY_CORRECTION: f32 = 32.0;
}

/// Pseudo-counts each governor starts with, at a neutral value, so its first notes are not
/// pushed by a measurement of nothing. The tension governor's interval starts consonant, since a
/// bar with no interval measures 0 (the feature's value): at the target instead, the governor
/// preferred pitches that made no interval at all, and a sparse bar measured 0 whatever was
/// asked. Training split: pooled R² 0.769 with 2 pairs at the target, 0.849 with 2 consonant,
/// 0.960 with 1 (0.950 with 0.5, 0.671 with 4).
const PRIOR_PAIRS: f32 = 1.0;
const PRIOR_NOTES: f32 = 2.0;
const PRIOR_ARTICULATION: f32 = 1.0;
/// Notes the pitch-class governor starts from, spread over the classes as its target spreads them.
const PRIOR_CLASS_NOTES: f32 = 4.0;
/// Notes the copy governor starts from, as many copies among them as its limit allows.
const PRIOR_COPY_NOTES: f32 = 4.0;

/// Governors: the sampler's closed-loop hold on the attributes the user asks for. Each measures
/// what has been written so far the way the feature does (onsets per bar, filled 16th slots,
/// duration over the gap to the next onset, dissonant intervals at onsets, the key profiles'
/// mode) and tilts the model's next-token probabilities toward its target; what nobody asks
/// for is left to the model.
struct Governors {
    dissonance: Option<f32>,
    mode: Option<(f32, f32)>,
    articulation: Option<f32>,
    /// This bar's dissonant and all intervals over its closed onset groups, counted as the
    /// feature `dissonance` counts them (every pair sounding at a group's onset, once per note
    /// starting there), with [`PRIOR_PAIRS`] consonant ones; and the notes started in the open group.
    dissonant: f32,
    pairs: f32,
    group_new: u32,
    /// Duration-weighted pitch classes sounding in each bar of the key window (a ring; `pc_bar`
    /// is this bar's), counted as [`pitch_class_hist`] counts them: a note held over the bar line
    /// adds what it holds of the next bar there (`pc_carry`).
    pc_bars: [[f32; 12]; KEY_WINDOW_BARS],
    pc_bar: usize,
    pc_carry: [f32; 12],
    /// Sum and count of duration / gap to the next onset over notes whose next onset is known
    /// (with the prior), and the notes at the current position waiting for theirs.
    artic_sum: f32,
    artic_n: f32,
    /// Sum and count of the logarithm of the gaps between onset groups (with the prior).
    gap_log_sum: f32,
    gap_n: f32,
    group_pos: u32,
    group_durs: [u32; MAX_GROUP],
    group_len: usize,
    /// 16th-note slots holding an onset in this bar.
    slots: [u64; 4],
    num_slots: u32,
    velocity: Option<f32>,
    register: Option<f32>,
    range: Option<f32>,
    /// This bar's velocities and written pitches so far (sums and counts, with the prior), and
    /// its lowest and highest written pitch.
    vel_sum: f32,
    vel_n: f32,
    pitch_sum: f32,
    pitch_n: f32,
    lo: u8,
    hi: u8,
    /// The pitch-class governor's target shares and gain, and the notes written in each pitch
    /// class over the whole continuation (with the prior).
    class_hold: Option<([f32; 12], f32)>,
    class_notes: [f32; 12],
    /// The copy governor's limit and gain; the primer's notes as a bit per pitch at each position
    /// in the bar; the notes written and those that repeat a primer note (with the prior).
    copy: Option<(f32, f32)>,
    primer_cells: [u128; NUM_POSITIONS as usize],
    copied: f32,
    written: f32,
}

impl Governors {
    fn new(s: &SamplerSettings) -> Self {
        let mut gov = Self {
            dissonance: s.dissonance_target,
            mode: s.mode_target,
            articulation: s.articulation_target,
            dissonant: 0.0,
            pairs: 0.0,
            group_new: 0,
            pc_bars: [[0.0; 12]; KEY_WINDOW_BARS],
            pc_bar: 0,
            pc_carry: [0.0; 12],
            artic_sum: PRIOR_ARTICULATION * PRIOR_NOTES,
            artic_n: PRIOR_NOTES,
            gap_log_sum: PRIOR_NOTES * (STEPS_PER_SLOT as f32 * 2.0).ln(),
            gap_n: PRIOR_NOTES,
            group_pos: 0,
            group_durs: [0; MAX_GROUP],
            group_len: 0,
            slots: [0; 4],
            num_slots: 0,
            velocity: s.velocity_target.filter(|t| t.is_finite()).map(|t| t.clamp(1.0, 127.0)),
            register: s.register_target.filter(|t| t.is_finite()).map(|t| t.clamp(MIN_PITCH as f32, MAX_PITCH as f32)),
            range: s.range_target.filter(|t| t.is_finite()).map(|t| t.clamp(0.0, (MAX_PITCH - MIN_PITCH) as f32)),
            vel_sum: 0.0,
            vel_n: 0.0,
            pitch_sum: 0.0,
            pitch_n: 0.0,
            lo: u8::MAX,
            hi: 0,
            class_hold: None,
            class_notes: [0.0; 12],
            copy: s.copy_limit.filter(|(limit, gain)| limit.is_finite() && *limit >= 0.0 && *limit < 1.0 && gain.is_finite() && *gain > 0.0),
            primer_cells: [0; NUM_POSITIONS as usize],
            copied: 0.0,
            written: 0.0,
        };
        if let Some((limit, _)) = gov.copy {
            gov.copied = limit * PRIOR_COPY_NOTES;
            gov.written = PRIOR_COPY_NOTES;
        }
        if let Some((t, gain)) = s.pitch_class_hold {
            let sum: f32 = t.iter().sum();
            if gain > 0.0 && sum > 0.0 && t.iter().all(|x| x.is_finite() && *x >= 0.0) {
                let shares = t.map(|x| x / sum);
                gov.class_hold = Some((shares, gain));
                gov.class_notes = shares.map(|x| x * PRIOR_CLASS_NOTES);
            }
        }
        gov.start_bar();
        gov
    }

    /// Marks the notes of the primer's tokens (as [`crate::play::tokens::encode`] writes them), for
    /// the copy governor.
    fn hear_primer(&mut self, primer: &[u32]) {
        let mut pos = None;
        for &t in primer {
            match Token::from_id(t) {
                Some(Token::Position(p)) => pos = Some(p as usize),
                Some(Token::Pitch(q)) => {
                    if let Some(cell) = pos.and_then(|p| self.primer_cells.get_mut(p)) {
                        *cell |= 1u128 << (q & 127);
                    }
                }
                _ if t == BAR => pos = None,
                _ => {}
            }
        }
    }

    /// The copy governor's bias on a written pitch that would repeat a primer note: nothing while
    /// the share of copies stays within the limit with it, else `gain` times the share over.
    fn copy_bias(&self) -> f32 {
        match self.copy {
            Some((limit, gain)) => -gain * ((self.copied + 1.0) / (self.written + 1.0) - limit).max(0.0),
            None => 0.0,
        }
    }

    /// A note of written `pitch` at `pos` joins the copy governor's count.
    fn on_written(&mut self, pos: u32, pitch: u8) {
        self.written += 1.0;
        if self.primer_cells.get(pos as usize).is_some_and(|c| c >> (pitch & 127) & 1 == 1) {
            self.copied += 1.0;
        }
    }

    /// A bar starts as if it had already written [`PRIOR_NOTES`] notes on target (and
    /// [`PRIOR_PAIRS`] consonant intervals).
    fn start_bar(&mut self) {
        self.dissonant = 0.0;
        self.pairs = PRIOR_PAIRS;
        self.group_new = 0;
        self.vel_sum = self.velocity.unwrap_or(0.0) * PRIOR_NOTES;
        self.vel_n = PRIOR_NOTES;
        self.pitch_sum = self.register.unwrap_or(0.0) * PRIOR_NOTES;
        self.pitch_n = PRIOR_NOTES;
        self.lo = u8::MAX;
        self.hi = 0;
    }

    fn guide(&self, g: &BarGrammar, bar: &BarPlan, sounding: &[(u32, u8)], bar_start_abs: u32) -> Guide {
        let mut guide = Guide::default();
        let next = g.pos.map_or(0, |p| p + 1);
        let end_bias = |excess: f32| (gains::DENSITY * excess).clamp(-gains::MAX_END_BIAS, gains::MAX_END_BIAS);
        if let Some(t) = bar.notes_target {
            let left = g.steps.saturating_sub(next).max(1) as f32;
            guide.step_bias = -gains::DENSITY_STEP * (t - g.notes as f32).max(0.0) / left;
            let wanted = t - g.notes as f32;
            if wanted > 0.5 {
                guide.long_note = Some(gains::LONG_NOTE_OVERLAP * left / wanted);
            }
            guide.end_bias += end_bias(g.notes as f32 + gains::DENSITY_END_AT - t);
        }
        if let Some(t) = bar.slots_target {
            let total = g.steps.div_ceil(STEPS_PER_SLOT).max(1);
            let t = t * total as f32;
            let left = total.saturating_sub(g.pos.map_or(0, |p| p / STEPS_PER_SLOT + 1)).max(1) as f32;
            let want = (t - self.num_slots as f32) / left;
            guide.new_slot_bias = gains::RHYTHM_SLOT * want.clamp(-1.0, 2.0);
            guide.skip_slot_bias = -gains::RHYTHM_SLOT * want.max(0.0);
            guide.end_bias += end_bias(self.num_slots as f32 + 0.5 - t);
            let wanted = t - self.num_slots as f32;
            if wanted > 0.5 {
                let room = gains::LONG_NOTE_OVERLAP * left * STEPS_PER_SLOT as f32 / wanted;
                guide.long_note = Some(guide.long_note.map_or(room, |r| r.min(room)));
            }
        }
        if let Some(t) = self.articulation {
            let now = self.artic_sum / self.artic_n;
            guide.duration_tilt = gains::ARTICULATION * (t - now);
            // Aim each note at the ratio wanted (making up for what is off so far) times the gap
            // between onset groups this continuation has kept so far.
            let ratio = (2.0 * t - now).clamp(0.25, 3.0);
            guide.duration_aim = Some(ratio.ln() + self.gap_log_sum / self.gap_n);
            if g.phase == Phase::Free && self.group_len > 0 {
                guide.gap = Some(GapAim { sum: self.artic_sum, n: self.artic_n, durs: self.group_durs, k: self.group_len, from: self.group_pos, target: t });
            }
        }
        let pitch_next = g.phase == Phase::NeedPitch || (g.phase == Phase::Free && g.pos.is_some());
        if let Some(target) = self.dissonance
            && pitch_next
        {
            let (chord_d, chord_n) = sounding_intervals(sounding, bar_start_abs + g.pos.unwrap_or(0));
            let ns = self.group_new as f32;
            let now = (self.dissonant + ns * chord_d as f32) / (self.pairs + ns * chord_n as f32);
            guide.dissonance = Some(DissonanceAim {
                dissonant: self.dissonant,
                pairs: self.pairs,
                chord_d: chord_d as f32,
                chord_n: chord_n as f32,
                starting: ns + 1.0,
                target,
                now_off: (now - target).abs(),
            });
        }
        if let Some((target, span)) = self.mode
            && pitch_next
        {
            guide.class_pull = mode_pull(&self.key_window_hist(), target, span, gains::MODE);
        }
        if let Some((target, gain)) = &self.class_hold
            && pitch_next
        {
            let pull = pitch_class_pull(target, &self.class_notes, *gain);
            for (x, p) in guide.class_pull.iter_mut().zip(pull) {
                *x += p;
            }
        }
        if let Some(t) = self.velocity
            && g.phase == Phase::NeedVelocity
        {
            let c = gains::MAX_VELOCITY_CORRECTION;
            guide.velocity_aim = Some((2.0 * t - self.vel_sum / self.vel_n).clamp(t - c, t + c).clamp(1.0, 127.0));
        }
        if pitch_next {
            if let Some(t) = self.register {
                let c = gains::MAX_PITCH_CORRECTION;
                guide.pitch_aim = Some((2.0 * t - self.pitch_sum / self.pitch_n).clamp(t - c, t + c));
            }
            if let Some(t) = self.range
                && self.lo <= self.hi
            {
                guide.range = Some((self.lo, self.hi, t));
            }
            if self.copy.is_some() {
                let cells = g.pos.and_then(|p| self.primer_cells.get(p as usize)).copied().unwrap_or(0);
                guide.copy = (cells != 0).then(|| (cells, self.copy_bias()));
            }
        }
        guide
    }

    /// The notes waiting at the last position learn their gap to the next onset.
    fn close_group(&mut self, next_onset: u32) {
        let gap = next_onset.saturating_sub(self.group_pos).max(1) as f32;
        if self.group_len > 0 {
            self.gap_log_sum += gap.ln();
            self.gap_n += 1.0;
        }
        for &d in &self.group_durs[..self.group_len] {
            self.artic_sum += (d as f32 / gap).clamp(0.0, 2.0);
            self.artic_n += 1.0;
        }
        self.group_len = 0;
    }

    /// The open onset group's intervals join the bar's count (`sounding` holds every written note
    /// that may still sound at its onset).
    fn close_dissonance_group(&mut self, sounding: &[(u32, u8)], bar_start_abs: u32) {
        if self.group_new > 0 {
            let (d, n) = sounding_intervals(sounding, bar_start_abs + self.group_pos);
            self.dissonant += (self.group_new * d) as f32;
            self.pairs += (self.group_new * n) as f32;
            self.group_new = 0;
        }
    }

    fn on_position(&mut self, pos: u32, sounding: &[(u32, u8)], bar_start_abs: u32) {
        self.close_dissonance_group(sounding, bar_start_abs);
        self.close_group(pos);
        self.group_pos = pos;
        let slot = (pos / STEPS_PER_SLOT).min(255);
        let bit = 1u64 << (slot % 64);
        if self.slots[(slot / 64) as usize] & bit == 0 {
            self.slots[(slot / 64) as usize] |= bit;
            self.num_slots += 1;
        }
    }

    /// The pitch classes over the key window, as the feature `mode` reads them at this bar.
    fn key_window_hist(&self) -> [f32; 12] {
        let mut h = [0.0f32; 12];
        for bar in &self.pc_bars {
            for (s, x) in h.iter_mut().zip(bar) {
                *s += x;
            }
        }
        h
    }

    /// A note of written `pitch` and `velocity` for `dur` steps, `room` steps before the bar line.
    fn on_note(&mut self, pitch: u8, velocity: u8, dur: u32, room: u32) {
        self.vel_sum += velocity as f32;
        self.vel_n += 1.0;
        self.pitch_sum += pitch as f32;
        self.pitch_n += 1.0;
        self.lo = self.lo.min(pitch);
        self.hi = self.hi.max(pitch);
        self.group_new += 1;
        let pc = (pitch % 12) as usize;
        self.class_notes[pc] += 1.0;
        self.pc_bars[self.pc_bar][pc] += dur.min(room) as f32;
        self.pc_carry[pc] += dur.saturating_sub(room) as f32;
        if self.group_len < MAX_GROUP {
            self.group_durs[self.group_len] = dur;
            self.group_len += 1;
        }
    }

    fn on_bar_end(&mut self, steps: u32, sounding: &[(u32, u8)], bar_start_abs: u32) {
        self.close_dissonance_group(sounding, bar_start_abs);
        self.close_group(steps);
        self.group_pos = 0;
        self.slots = [0; 4];
        self.num_slots = 0;
        self.pc_bar = (self.pc_bar + 1) % KEY_WINDOW_BARS;
        self.pc_bars[self.pc_bar] = std::mem::take(&mut self.pc_carry);
        self.start_bar();
    }
}

/// Dissonant and all (non-unison) intervals `pitch` makes with the notes sounding at `at`.
fn intervals_with(pitch: u8, sounding: &[(u32, u8)], at: u32) -> (u32, u32) {
    let (mut d, mut n) = (0, 0);
    for &(_, q) in sounding.iter().filter(|&&(e, q)| e > at && q != pitch) {
        n += 1;
        d += is_dissonant(pitch.abs_diff(q)) as u32;
    }
    (d, n)
}

/// Dissonant and all intervals (unisons left out) among the notes sounding at `at`, at most
/// [`MAX_CHORD_NOTES`] of them, as the feature `dissonance` counts a chord.
fn sounding_intervals(sounding: &[(u32, u8)], at: u32) -> (u32, u32) {
    let mut chord = [0u8; MAX_CHORD_NOTES];
    let mut len = 0;
    for &(_, q) in sounding.iter().filter(|&&(e, _)| e > at).take(MAX_CHORD_NOTES) {
        chord[len] = q;
        len += 1;
    }
    chord_intervals(&chord[..len])
}

/// One bar to generate: its length in grid steps, its conditioning levels and, for the density
/// governor, the note onsets to aim for (None leaves the count to the model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BarPlan {
    pub steps: u32,
    pub levels: [u32; 8],
    pub notes_target: Option<f32>,
    /// For the rhythm governor: the fraction of the bar's 16th-note slots to start a note in.
    pub slots_target: Option<f32>,
}

/// What a generation produced and what it cost.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Notes with `bar` counted from the first generated bar.
    pub notes: Vec<GridNote>,
    /// Tokens sampled (attribute and bar tokens forced by the plan included).
    pub num_tokens: usize,
    pub num_model_calls: usize,
    /// Time until the first bar was complete.
    pub first_bar: Duration,
    pub total: Duration,
    /// Times the cache was rebuilt because it reached the model's context.
    pub num_refills: usize,
}

/// A loaded continuation model.
pub struct ContinuationModel {
    session: ort::session::Session,
    pub manifest: Manifest,
    pub bridge: EmotionBridge,
    pub origin: ModelOrigin,
    head_dim: usize,
    past_names: Vec<(String, String)>,
    present_names: Vec<(String, String)>,
}

impl std::fmt::Debug for ContinuationModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinuationModel").field("manifest", &self.manifest).field("origin", &self.origin).finish()
    }
}

/// The key/value cache of one generation: per layer one buffer of [`CACHE_WINDOW`] slots for the
/// keys and one for the values, bound as both the model's past and its present, so each run writes
/// its new keys and values into the next free slots and nothing is copied (ONNX Runtime's I/O
/// binding; the graph's GroupQueryAttention sees that past and present share a buffer). The
/// buffers come from ONNX Runtime's allocator (`Tensor::new`): `ort` binds only such a value as an
/// output, and binds it as an input without copying it.
struct Cache {
    binding: ort::session::IoBinding,
    /// Tokens the cache holds, in order (slot i = history[i]).
    history: Vec<u32>,
    /// Slots per buffer.
    capacity: usize,
}

impl ContinuationModel {
    /// Loads from `MOODFADER_MODEL_DIR` when set, else the embedded model. ONNX Runtime must be
    /// loaded first ([`crate::runtime::ensure_runtime`]).
    pub fn load_default() -> Result<Self> {
        match std::env::var_os(ENV_MODEL_DIR).filter(|v| !v.is_empty()) {
            Some(dir) => Self::load_dir(Path::new(&dir)),
            None => Self::from_bytes(EMBEDDED_MODEL, EMBEDDED_MANIFEST, ModelOrigin::Embedded),
        }
    }

    pub fn load_dir(dir: &Path) -> Result<Self> {
        let model_path: PathBuf = dir.join(MODEL_FILE);
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&model_path)
            .with_context(|| format!("continuation model {} is missing or unreadable", model_path.display()))?;
        let manifest = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("continuation model manifest {} is missing or unreadable", manifest_path.display()))?;
        Self::from_bytes(&bytes, &manifest, ModelOrigin::File(model_path.clone()))
            .with_context(|| format!("continuation model {} cannot be used", model_path.display()))
    }

    /// Checks the manifest against the bytes and this build's tokens, then opens a session and
    /// proves it with one probe step.
    pub fn from_bytes(bytes: &[u8], manifest_json: &str, origin: ModelOrigin) -> Result<Self> {
        let manifest: Manifest =
            serde_json::from_str(manifest_json).map_err(|e| anyhow!("manifest is not valid: {e}"))?;
        let sha = sha256_hex(bytes);
        if !sha.eq_ignore_ascii_case(&manifest.sha256) {
            bail!("model file is corrupt: sha256 {sha} does not match the manifest's {}", manifest.sha256);
        }
        if manifest.token_spec_version != TOKEN_SPEC_VERSION || manifest.vocab_size != VOCAB_SIZE {
            bail!(
                "model was trained on token spec {} (vocabulary {}) but this build writes spec {TOKEN_SPEC_VERSION} (vocabulary {VOCAB_SIZE})",
                manifest.token_spec_version,
                manifest.vocab_size
            );
        }
        let a = &manifest.architecture;
        if a.layers == 0 || a.layers > 64 || a.heads == 0 || !a.d_model.is_multiple_of(a.heads) || a.context < 64 {
            bail!("manifest architecture is not usable: {a:?}");
        }
        let bridge = EmotionBridge::from_json(&manifest.bridge)?;
        let session = session_from_bytes(bytes).map_err(|e| anyhow!("ONNX Runtime rejects the model: {e}"))?;
        for name in MODEL_INPUTS {
            if !session.inputs().iter().any(|i| i.name() == *name) {
                bail!("model has no input '{name}': it was exported for another cache layout (re-export it with train_continuation.py --export-only)");
            }
        }
        let head_dim = a.d_model / a.heads;
        let past_names = (0..a.layers).map(|l| (format!("past_key_{l}"), format!("past_value_{l}"))).collect();
        let present_names = (0..a.layers).map(|l| (format!("present_key_{l}"), format!("present_value_{l}"))).collect();
        let mut model = Self { session, manifest, bridge, origin, head_dim, past_names, present_names };
        let mut cache = model.empty_cache()?;
        let mut logits = Vec::new();
        model.feed(&mut cache, &[BOS, BAR], &mut logits).context("model does not run on a probe input")?;
        Ok(model)
    }

    pub fn context(&self) -> usize {
        self.manifest.architecture.context
    }

    pub fn scale(&self) -> &AttributeScale {
        &self.manifest.attribute_scale
    }

    /// Slots of the key/value cache: the window the sampler keeps, within the model's context.
    fn cache_capacity(&self) -> usize {
        CACHE_WINDOW.min(self.context())
    }

    fn empty_cache(&self) -> Result<Cache> {
        let a = &self.manifest.architecture;
        let capacity = self.cache_capacity();
        let allocator = ort::memory::Allocator::default();
        let mut binding = self.session.create_binding().map_err(|e| anyhow!("{e}"))?;
        binding.bind_output_to_device("logits", allocator.memory_info()).map_err(|e| anyhow!("{e}"))?;
        for ((past_k, past_v), (present_k, present_v)) in self.past_names.iter().zip(&self.present_names) {
            for (past, present) in [(past_k, present_k), (past_v, present_v)] {
                let mut buffer = ort::value::Tensor::<f32>::new(&allocator, [1usize, a.heads, capacity, self.head_dim])
                    .map_err(|e| anyhow!("{e}"))?;
                // Slots past the cached tokens are never read (the operator stops at seqlens_k), but
                // start them defined.
                buffer.extract_tensor_mut().1.fill(0.0);
                binding.bind_input(past.as_str(), &buffer).map_err(|e| anyhow!("{e}"))?;
                binding.bind_output(present.as_str(), &mut buffer).map_err(|e| anyhow!("{e}"))?;
            }
        }
        Ok(Cache { binding, history: Vec::with_capacity(capacity), capacity })
    }

    /// Feeds `tokens` after what the cache holds; `logits` gets the next-token logits.
    fn feed(&mut self, cache: &mut Cache, tokens: &[u32], logits: &mut Vec<f32>) -> Result<()> {
        let t = tokens.len();
        let p = cache.history.len();
        if t == 0 || p + t > cache.capacity {
            bail!("feed of {t} tokens after {p} does not fit the cache of {}", cache.capacity);
        }
        let tensor_i64 = |v: Vec<i64>| ort::value::Tensor::from_array(([1usize, t], v)).map_err(|e| anyhow!("{e}"));
        let ids = tensor_i64(tokens.iter().map(|&x| x as i64).collect())?;
        let pos = tensor_i64((p..p + t).map(|x| x as i64).collect())?;
        let seqlens = ort::value::Tensor::from_array(([1usize], vec![(p + t - 1) as i32])).map_err(|e| anyhow!("{e}"))?;
        let total = ort::value::Tensor::from_array(([0usize; 0], vec![(p + t) as i32])).map_err(|e| anyhow!("{e}"))?;
        let b = &mut cache.binding;
        b.bind_input("tokens", &ids).map_err(|e| anyhow!("{e}"))?;
        b.bind_input("positions", &pos).map_err(|e| anyhow!("{e}"))?;
        b.bind_input("seqlens_k", &seqlens).map_err(|e| anyhow!("{e}"))?;
        b.bind_input("total_sequence_length", &total).map_err(|e| anyhow!("{e}"))?;
        let outputs = self.session.run_binding(&cache.binding).map_err(|e| anyhow!("{e}"))?;
        let (shape, data) = outputs["logits"].try_extract_tensor::<f32>().map_err(|e| anyhow!("{e}"))?;
        if shape.len() != 2 || shape[1] as u32 != VOCAB_SIZE {
            bail!("model logits have shape {shape:?}, expected [1, {VOCAB_SIZE}]");
        }
        logits.clear();
        logits.extend_from_slice(data);
        cache.history.extend_from_slice(tokens);
        Ok(())
    }

    /// The next-token logits after feeding `chunks` in turn through one fresh cache, each chunk in
    /// one run (the generator feeds a primer at once, a bar's conditioning tokens together, then
    /// one token at a time). Fails when they do not fit the cache ([`CACHE_WINDOW`] tokens).
    pub fn logits_after(&mut self, chunks: &[&[u32]]) -> Result<Vec<f32>> {
        let mut cache = self.empty_cache()?;
        let mut logits = Vec::with_capacity(VOCAB_SIZE as usize);
        for chunk in chunks {
            self.feed(&mut cache, chunk, &mut logits)?;
        }
        Ok(logits)
    }

    /// Feeds `tokens`, first rebuilding the cache from the recent history (at a bar line) when
    /// they would not fit its slots.
    fn feed_sliding(&mut self, cache: &mut Cache, tokens: &[u32], logits: &mut Vec<f32>, refills: &mut usize) -> Result<()> {
        let ctx = cache.capacity;
        if cache.history.len() + tokens.len() > ctx {
            *refills += 1;
            let hist = std::mem::take(&mut cache.history);
            // Keep the longest suffix starting at a bar line that leaves half the context free.
            let budget = ctx / 2;
            let keep_from = hist
                .iter()
                .enumerate()
                .filter(|&(i, &tok)| tok == BAR && hist.len() - i <= budget)
                .map(|(i, _)| i)
                .next()
                .or_else(|| hist.iter().rposition(|&tok| tok == BAR).filter(|&i| hist.len() - i + tokens.len() <= ctx));
            // The buffers stay: the kept tokens are written again from slot 0.
            if let Some(i) = keep_from {
                self.feed(cache, &hist[i..], logits)?;
            }
        }
        self.feed(cache, tokens, logits)
    }

    /// Generates `plan.len()` bars after `primer` (tokens of what was heard, as
    /// [`crate::play::tokens::encode`] writes them; may be empty). `on_bar(bar, notes)` gets each bar as
    /// soon as it is complete and may return `false` to stop early.
    pub fn generate(
        &mut self,
        primer: &[u32],
        plan: &[BarPlan],
        settings: &SamplerSettings,
        mut on_bar: impl FnMut(u32, &[GridNote]) -> bool,
    ) -> Result<Generated> {
        let started = Instant::now();
        let mut out = Generated::default();
        let mut cache = self.empty_cache()?;
        let mut logits = Vec::with_capacity(VOCAB_SIZE as usize);
        let mut rng = SplitMix64::new(settings.seed);

        // Primer: the suffix that starts at a bar line and fits MAX_PRIMER_TOKENS.
        let primer: Vec<u32> = primer.iter().copied().filter(|&t| t != crate::play::tokens::EOS && t != crate::play::tokens::PAD).collect();
        let budget = MAX_PRIMER_TOKENS.min(self.context() / 2);
        let start = primer
            .iter()
            .enumerate()
            .filter(|&(i, &tok)| tok == BAR && primer.len() - i <= budget)
            .map(|(i, _)| i)
            .next();
        let mut pending: Vec<u32> = match start {
            Some(i) => primer[i..].to_vec(),
            None => vec![BOS],
        };

        // (end step from the first generated bar, pitch) of every note that may still sound.
        let mut sounding: Vec<(u32, u8)> = Vec::with_capacity(64);
        let mut bar_start_abs = 0u32;
        let mut bar_notes: Vec<GridNote> = Vec::with_capacity(settings.max_notes_per_bar);
        let mut gov = Governors::new(settings);
        gov.hear_primer(&primer);
        for (b, bar) in plan.iter().enumerate() {
            let steps = bar.steps.clamp(1, NUM_POSITIONS);
            pending.push(BAR);
            for (a, &level) in bar.levels.iter().enumerate().take(NUM_ATTRIBUTES as usize) {
                pending.push(Token::Attribute(a as u32, level).id());
            }
            self.feed_sliding(&mut cache, &pending, &mut logits, &mut out.num_refills)?;
            out.num_model_calls += 1;
            out.num_tokens += 1 + NUM_ATTRIBUTES as usize;
            pending.clear();

            let mut g = BarGrammar { steps, pos: None, last_pitch: None, phase: Phase::Free, notes: 0, pitch: 0, velocity: 0 };
            bar_notes.clear();
            loop {
                sounding.retain(|&(e, _)| e > bar_start_abs + g.pos.unwrap_or(0));
                let guide = gov.guide(&g, bar, &sounding, bar_start_abs);
                let tok = sample(&logits, &g, settings, &guide, &sounding, bar_start_abs, &mut rng);
                let Some(tok) = tok else { break };
                if tok == BAR {
                    break;
                }
                out.num_tokens += 1;
                match Token::from_id(tok) {
                    Some(Token::Position(p)) => {
                        gov.on_position(p, &sounding, bar_start_abs);
                        g.pos = Some(p);
                        g.last_pitch = None;
                        g.phase = Phase::NeedPitch;
                    }
                    Some(Token::Pitch(p)) => {
                        g.pitch = p;
                        g.last_pitch = Some(p);
                        g.phase = Phase::NeedVelocity;
                    }
                    Some(Token::Velocity(v)) => {
                        g.velocity = v;
                        g.phase = Phase::NeedDuration;
                    }
                    Some(Token::Duration(d)) => {
                        let pos = g.pos.unwrap_or(0);
                        let dur = DURATION_STEPS[d as usize];
                        let pitch = settings.written(g.pitch);
                        let velocity = bucket_velocity(g.velocity);
                        gov.on_note(pitch, velocity, dur, steps.saturating_sub(pos));
                        gov.on_written(pos, pitch);
                        bar_notes.push(GridNote {
                            bar: b as u32,
                            position: pos,
                            pitch,
                            velocity,
                            duration_steps: dur,
                        });
                        sounding.push((bar_start_abs + pos + dur, pitch));
                        g.notes += 1;
                        g.phase = Phase::Free;
                    }
                    _ => {}
                }
                self.feed_sliding(&mut cache, &[tok], &mut logits, &mut out.num_refills)?;
                out.num_model_calls += 1;
            }
            gov.on_bar_end(steps, &sounding, bar_start_abs);
            bar_start_abs += steps;
            out.notes.extend_from_slice(&bar_notes);
            if b == 0 {
                out.first_bar = started.elapsed();
            }
            if !on_bar(b as u32, &bar_notes) {
                break;
            }
        }
        out.total = started.elapsed();
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between notes: a later position, another pitch at this position, or the bar's end.
    Free,
    NeedPitch,
    NeedVelocity,
    NeedDuration,
}

/// Where the sampler is inside the bar being written.
#[derive(Debug, Clone, Copy)]
struct BarGrammar {
    steps: u32,
    pos: Option<u32>,
    /// Pitches at one position go up (as the tokeniser writes them), so no note repeats.
    last_pitch: Option<u8>,
    phase: Phase,
    notes: usize,
    pitch: u8,
    velocity: u32,
}

/// What the governors ask of the next token, on top of the model's logits.
#[derive(Debug, Clone, Copy, Default)]
struct Guide {
    /// Added to the logit of ending the bar.
    end_bias: f32,
    /// Added to a position's logit per grid step it skips (≤ 0: a bar short of notes moves on in
    /// small steps).
    step_bias: f32,
    /// Added to a position's logit when it starts a new 16th-note slot, and per empty slot it
    /// skips (the rhythm governor).
    new_slot_bias: f32,
    skip_slot_bias: f32,
    /// Added to a duration's logit times the logarithm of its length in grid steps.
    duration_tilt: f32,
    /// The density and rhythm governors' hold on long notes while onsets are still wanted: the
    /// steps a note may last before [`gains::LONG_NOTE`] is taken off per unit of log length.
    long_note: Option<f32>,
    /// The logarithm of the duration (grid steps) the articulation governor aims the next note
    /// at; a duration loses [`gains::ARTICULATION_AIM`] per squared unit of log length it misses by.
    duration_aim: Option<f32>,
    /// The tension governor's view of the bar's dissonant fraction, for pitches at this onset.
    dissonance: Option<DissonanceAim>,
    /// The articulation governor's view of where the next onset should fall, for the notes
    /// waiting at this one.
    gap: Option<GapAim>,
    /// Added to the logit of a pitch written in each pitch class (the mode and pitch-class governors).
    class_pull: [f32; 12],
    /// The velocity the dynamics governor aims the next note at.
    velocity_aim: Option<f32>,
    /// The written pitch the register governor pulls the next note toward.
    pitch_aim: Option<f32>,
    /// The bar's lowest and highest written pitch so far and the range governor's target.
    range: Option<(u8, u8, f32)>,
    /// The written pitches a primer note has at this position (a bit each), and what the copy
    /// governor adds to the logit of each.
    copy: Option<(u128, f32)>,
}

/// What the tension governor knows when a pitch is chosen: the bar's closed intervals (with the
/// prior), the intervals among what sounds at this onset, the notes that would then start here.
#[derive(Debug, Clone, Copy)]
struct DissonanceAim {
    dissonant: f32,
    pairs: f32,
    chord_d: f32,
    chord_n: f32,
    starting: f32,
    target: f32,
    /// How far the bar's fraction lies from the target without another note here.
    now_off: f32,
}

/// Most notes of one onset group the articulation governor follows.
const MAX_GROUP: usize = 16;

/// What the articulation governor knows when the next onset (or the bar's end) is chosen: the
/// measure so far (sum and count of duration over gap, with the prior), and the durations of the
/// notes at the open onset, whose gap that choice sets.
#[derive(Debug, Clone, Copy)]
struct GapAim {
    sum: f32,
    n: f32,
    durs: [u32; MAX_GROUP],
    k: usize,
    from: u32,
    target: f32,
}

impl GapAim {
    /// What closing the open group at step `next` adds to that onset's (or the bar end's) logit.
    fn bias(&self, next: u32) -> f32 {
        let gap = next.saturating_sub(self.from).max(1) as f32;
        let add: f32 = self.durs[..self.k].iter().map(|&d| (d as f32 / gap).clamp(0.0, 2.0)).sum();
        let now = self.sum / self.n;
        let then = (self.sum + add) / (self.n + self.k as f32);
        gains::ARTICULATION_GAP * ((now - self.target).abs() - (then - self.target).abs())
    }
}

impl DissonanceAim {
    /// What a pitch making `d` dissonant of `n` intervals with what sounds adds to its logit.
    fn bias(&self, d: u32, n: u32) -> f32 {
        let then = (self.dissonant + self.starting * (self.chord_d + d as f32)) / (self.pairs + self.starting * (self.chord_n + n as f32));
        gains::DISSONANCE * (self.now_off - (then - self.target).abs())
    }
}

impl Guide {
    /// What the register and range governors add to the logit of written pitch `w`.
    fn pitch_bias(&self, w: u8) -> f32 {
        let mut x = 0.0;
        if let Some(aim) = self.pitch_aim {
            x -= gains::REGISTER * ((w as f32 - aim) / 12.0).powi(2);
        }
        if let Some((lo, hi, t)) = self.range {
            let now = (hi - lo) as f32;
            let then = (hi.max(w) - lo.min(w)) as f32;
            x -= gains::RANGE * ((t - then).abs() - (t - now).abs()) / 12.0;
        }
        x
    }
}

/// Picks the next token among those the grammar allows; `None` when nothing is allowed (the
/// bar ends). `sounding` holds the written pitches.
fn sample(
    logits: &[f32],
    g: &BarGrammar,
    s: &SamplerSettings,
    guide: &Guide,
    sounding: &[(u32, u8)],
    bar_start_abs: u32,
    rng: &mut SplitMix64,
) -> Option<u32> {
    let temperature = if s.temperature.is_finite() { s.temperature.clamp(0.05, 3.0) } else { 1.0 };
    let mut cand: Vec<(u32, f32)> = Vec::with_capacity(160);
    let logit = |id: u32| {
        let x = logits.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY);
        if x.is_finite() { x / temperature } else { f32::NEG_INFINITY }
    };
    let sounding_at = |pos: u32| sounding.iter().filter(|&&(e, _)| e > bar_start_abs + pos).count();
    let room = g.notes < s.max_notes_per_bar;
    // A pitch still sounding at this position cannot start again: one key cannot be struck twice
    // without a note-off between, and overlapping same-pitch notes would end each other early.
    let at = bar_start_abs + g.pos.unwrap_or(0);
    let pitch_ok = |p: u8| {
        let w = s.written(p);
        (MIN_PITCH..=MAX_PITCH).contains(&p)
            && (MIN_PITCH..=MAX_PITCH).contains(&w)
            && g.last_pitch.is_none_or(|q| p > q)
            && !sounding.iter().any(|&(e, q)| q == w && e > at)
    };
    let push_pitches = |cand: &mut Vec<(u32, f32)>| {
        for p in MIN_PITCH..=MAX_PITCH {
            if pitch_ok(p) {
                let mut x = logit(PITCH_BASE + p as u32);
                if let Some(scale) = s.scale
                    && !scale.contains(p)
                {
                    x -= s.key_penalty.max(0.0);
                }
                let w = s.written(p);
                x += guide.class_pull[(w % 12) as usize] + guide.pitch_bias(w);
                if let Some((cells, bias)) = guide.copy
                    && cells >> (w & 127) & 1 == 1
                {
                    x += bias;
                }
                if let Some(aim) = &guide.dissonance {
                    let (d, n) = intervals_with(s.written(p), sounding, at);
                    x += aim.bias(d, n);
                }
                cand.push((PITCH_BASE + p as u32, x));
            }
        }
    };
    match g.phase {
        Phase::Free => {
            cand.push((BAR, logit(BAR) + guide.end_bias + guide.gap.map_or(0.0, |a| a.bias(g.steps))));
            if room {
                let first = g.pos.map_or(0, |p| p + 1);
                for q in first..g.steps.min(NUM_POSITIONS) {
                    if sounding_at(q) < s.max_polyphony {
                        let mut x = logit(POSITION_BASE + q) + guide.step_bias * (q - first) as f32 + guide.gap.map_or(0.0, |a| a.bias(q));
                        if guide.new_slot_bias != 0.0 || guide.skip_slot_bias != 0.0 {
                            let (slot, from) = (q / STEPS_PER_SLOT, g.pos.map_or(0, |p| p / STEPS_PER_SLOT + 1));
                            let new = g.pos.is_none_or(|p| slot > p / STEPS_PER_SLOT);
                            x += guide.new_slot_bias * new as u32 as f32 + guide.skip_slot_bias * slot.saturating_sub(from) as f32;
                        }
                        cand.push((POSITION_BASE + q, x));
                    }
                }
                if let Some(pos) = g.pos
                    && sounding_at(pos) < s.max_polyphony
                {
                    push_pitches(&mut cand);
                }
            }
        }
        Phase::NeedPitch => push_pitches(&mut cand),
        Phase::NeedVelocity => {
            for v in 0..NUM_VELOCITY_BUCKETS {
                let pull = guide.velocity_aim.map_or(0.0, |aim| -gains::DYNAMICS * (bucket_velocity(v) as f32 - aim).abs() / 16.0);
                cand.push((VELOCITY_BASE + v, logit(VELOCITY_BASE + v) + pull));
            }
        }
        Phase::NeedDuration => {
            for d in 0..DURATION_STEPS.len() as u32 {
                let steps = DURATION_STEPS[d as usize] as f32;
                let long = guide.long_note.map_or(0.0, |room| -gains::LONG_NOTE * (steps / room.max(1.0)).ln().max(0.0))
                    + guide.duration_aim.map_or(0.0, |aim| -gains::ARTICULATION_AIM * (steps.ln() - aim).powi(2));
                cand.push((DURATION_BASE + d, logit(DURATION_BASE + d) + guide.duration_tilt * steps.ln() + long));
            }
        }
    }
    cand.retain(|c| c.1 > f32::NEG_INFINITY);
    if cand.is_empty() {
        return match g.phase {
            // A note was started: finish it with the model's most neutral choice.
            Phase::NeedVelocity => Some(VELOCITY_BASE + NUM_VELOCITY_BUCKETS / 2),
            Phase::NeedDuration => Some(DURATION_BASE + 3),
            Phase::NeedPitch => None,
            Phase::Free => None,
        };
    }
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0f64;
    for c in cand.iter_mut() {
        c.1 = ((c.1 - max) as f64).exp() as f32;
        total += c.1 as f64;
    }
    cand.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top_p = if s.top_p.is_finite() { s.top_p.clamp(0.01, 1.0) as f64 } else { 1.0 };
    let mut kept = 0.0f64;
    let mut n = 0;
    for c in &cand {
        kept += c.1 as f64;
        n += 1;
        if kept >= top_p * total {
            break;
        }
    }
    let mut r = rng.next_f64() * kept;
    for c in &cand[..n] {
        r -= c.1 as f64;
        if r <= 0.0 {
            return Some(c.0);
        }
    }
    Some(cand[n - 1].0)
}

/// A small, seedable generator (SplitMix64): the same seed gives the same continuation.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grammar(phase: Phase, pos: Option<u32>, last_pitch: Option<u8>) -> BarGrammar {
        BarGrammar { steps: 48, pos, last_pitch, phase, notes: 0, pitch: 60, velocity: 8 }
    }

    #[test]
    fn sampler_keeps_to_the_grammar_whatever_the_logits() {
        let mut rng = SplitMix64::new(7);
        let settings = SamplerSettings { top_p: 1.0, ..Default::default() };
        for trial in 0..200 {
            // Random logits, some non-finite.
            let logits: Vec<f32> = (0..VOCAB_SIZE)
                .map(|_| match rng.next_u64() % 20 {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    _ => (rng.next_f64() * 20.0 - 10.0) as f32,
                })
                .collect();
            let g = grammar(Phase::Free, Some(12), Some(64));
            if let Some(t) = sample(&logits, &g, &settings, &Guide::default(), &[], 0, &mut rng) {
                match Token::from_id(t).unwrap() {
                    Token::Bar => {}
                    Token::Position(p) => assert!(p > 12 && p < 48, "trial {trial}: position {p}"),
                    Token::Pitch(p) => assert!(p > 64 && p <= MAX_PITCH, "trial {trial}: pitch {p}"),
                    other => panic!("trial {trial}: {other:?} not allowed between notes"),
                }
            }
            let g = grammar(Phase::NeedDuration, Some(12), Some(64));
            let t = sample(&logits, &g, &settings, &Guide::default(), &[], 0, &mut rng).unwrap();
            assert!(matches!(Token::from_id(t), Some(Token::Duration(_))));
        }
    }

    #[test]
    fn polyphony_is_bounded_and_key_penalty_applies() {
        let mut rng = SplitMix64::new(3);
        let mut logits = vec![0.0f32; VOCAB_SIZE as usize];
        logits[(PITCH_BASE + 61) as usize] = 5.0; // C#, out of C major
        let settings = SamplerSettings {
            scale: Some(Scale { tonic: 0, mode: crate::play::steering::Mode::Major }),
            key_penalty: 100.0,
            max_polyphony: 2,
            ..Default::default()
        };
        let g = grammar(Phase::NeedPitch, Some(0), None);
        for _ in 0..100 {
            let t = sample(&logits, &g, &settings, &Guide::default(), &[], 0, &mut rng).unwrap();
            let Some(Token::Pitch(p)) = Token::from_id(t) else { panic!() };
            assert!(settings.scale.unwrap().contains(p), "pitch {p}");
        }
        // Two notes sound until step 24: no new pitch at step 0, no position before 24.
        let g = grammar(Phase::Free, Some(0), Some(60));
        for _ in 0..100 {
            let t = sample(&logits, &g, &settings, &Guide::default(), &[(24, 48), (24, 52)], 0, &mut rng).unwrap();
            match Token::from_id(t).unwrap() {
                Token::Bar => {}
                Token::Position(p) => assert!(p >= 24),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_sounding_pitch_is_not_struck_again() {
        let mut rng = SplitMix64::new(5);
        let mut logits = vec![-50.0f32; VOCAB_SIZE as usize];
        logits[(PITCH_BASE + 60) as usize] = 50.0; // the model insists on middle C
        let settings = SamplerSettings::default();
        // Middle C sounds from the previous bar until step 40 of this 48-step bar.
        let sounding = [(48 + 40, 60u8)];
        for pos in [0, 16, 39] {
            let g = grammar(Phase::NeedPitch, Some(pos), None);
            for _ in 0..50 {
                let t = sample(&logits, &g, &settings, &Guide::default(), &sounding, 48, &mut rng).unwrap();
                assert_ne!(Token::from_id(t), Some(Token::Pitch(60)), "struck again at step {pos}");
            }
        }
        // Once it has ended, it may start again.
        let g = grammar(Phase::NeedPitch, Some(40), None);
        let t = sample(&logits, &g, &settings, &Guide::default(), &sounding, 48, &mut rng).unwrap();
        assert_eq!(Token::from_id(t), Some(Token::Pitch(60)));
    }

    #[test]
    fn governors_push_toward_their_targets() {
        let plan = |notes, slots| BarPlan { steps: 48, levels: [4; 8], notes_target: notes, slots_target: slots };
        let settings = SamplerSettings {
            dissonance_target: Some(0.5),
            articulation_target: Some(1.5),
            mode_target: Some((-0.3, 0.6)),
            ..Default::default()
        };
        let mut gov = Governors::new(&settings);
        let mut g = grammar(Phase::Free, None, None);
        // Nothing written, four notes wanted: do not end the bar, do not skip ahead.
        let guide = gov.guide(&g, &plan(Some(4.0), None), &[], 0);
        assert!(guide.end_bias < 0.0 && guide.step_bias < 0.0, "{guide:?}");
        // ... and no note so long it would ring over the four still to come (48 steps, 12 apart).
        assert_eq!(guide.long_note, Some(gains::LONG_NOTE_OVERLAP * 48.0 / 4.0), "{guide:?}");
        // Legato wanted above the prior: longer notes, aimed at 2 × 1.5 - 1 = 2 times an eighth.
        assert!(guide.duration_tilt > 0.0, "{guide:?}");
        let aim = guide.duration_aim.expect("an articulation target sets an aim");
        assert!((aim - (2.0 * 2.0 * STEPS_PER_SLOT as f32).ln()).abs() < 1e-5, "{guide:?}");
        // Six notes written where four were wanted: end the bar.
        g.notes = 6;
        let done = gov.guide(&g, &plan(Some(4.0), None), &[], 0);
        assert!(done.end_bias > 0.0 && done.long_note.is_none(), "{done:?}");
        // A C major triad written, a minor mode wanted: the pitch class pulled hardest is one that
        // makes what is written measure more minor, and the one pushed away hardest more major.
        gov.on_position(0, &[], 0);
        for p in [60u8, 64, 67] {
            gov.on_note(p, 80, 3, 48);
        }
        let g = grammar(Phase::NeedPitch, Some(0), None);
        let pull = gov.guide(&g, &plan(None, None), &[], 0).class_pull;
        let mode_with = |pc: usize| {
            let mut h = gov.key_window_hist();
            h[pc] += MODE_PROBE_STEPS;
            crate::listen::keyfind::find_key(&h).mode
        };
        let now = crate::listen::keyfind::find_key(&gov.key_window_hist()).mode;
        let (top, bottom) = (0..12).fold((0, 0), |(t, b), pc| (if pull[pc] > pull[t] { pc } else { t }, if pull[pc] < pull[b] { pc } else { b }));
        assert!(mode_with(top) < now && mode_with(bottom) > now, "{pull:?}");
        // Staccato quarters (3 steps of a 12-step gap) bring the articulation governor's measure
        // down, so it pushes harder for long notes than before.
        let before = gov.guide(&g, &plan(None, None), &[], 0).duration_tilt;
        gov.on_position(12, &[], 0);
        gov.on_bar_end(48, &[], 0);
        assert!(gov.guide(&g, &plan(None, None), &[], 0).duration_tilt > before);
        // Rhythm: one slot of twelve filled where all are wanted: favour new slots, keep going.
        let mut gov = Governors::new(&SamplerSettings::default());
        gov.on_position(0, &[], 0);
        let g = grammar(Phase::Free, Some(0), Some(60));
        let r = gov.guide(&g, &plan(None, Some(1.0)), &[], 0);
        assert!(r.new_slot_bias > 0.0 && r.skip_slot_bias < 0.0 && r.end_bias < 0.0, "{r:?}");
    }

    #[test]
    fn copy_governor_holds_back_primer_notes_once_over_its_limit() {
        use crate::play::tokens::Token;
        let plan = BarPlan { steps: 48, levels: [4; 8], notes_target: None, slots_target: None };
        // The primer: C4 and E4 at step 0, G4 at step 12 (two bars; the second has E4 at 0 too).
        let t = |x: Token| x.id();
        let primer = [BOS, BAR, t(Token::Position(0)), t(Token::Pitch(60)), t(Token::Pitch(64)), t(Token::Position(12)), t(Token::Pitch(67)), BAR, t(Token::Position(0)), t(Token::Pitch(64))];
        let mut gov = Governors::new(&SamplerSettings { copy_limit: Some((0.25, 20.0)), ..Default::default() });
        gov.hear_primer(&primer);
        let at = |pos: u32| grammar(Phase::NeedPitch, Some(pos), None);
        // The primer's notes are marked where they were. The prior (one copy in four notes) sits
        // at the limit, so even the first copy is held back a little: 2 of 5 is 0.15 over.
        let (cells, bias) = gov.guide(&at(0), &plan, &[], 0).copy.unwrap();
        assert_eq!(cells, 1u128 << 60 | 1u128 << 64);
        assert!((bias + 3.0).abs() < 1e-4, "{bias}");
        assert!(gov.guide(&at(6), &plan, &[], 0).copy.is_none());
        // Copies push the bias down; notes of its own bring it back to nothing.
        gov.on_written(0, 60);
        gov.on_written(12, 67);
        let (_, bias) = gov.guide(&at(0), &plan, &[], 0).copy.unwrap();
        assert!(bias < -5.0, "{bias}");
        for p in 0..10 {
            gov.on_written(1, 70 + p);
        }
        let (_, bias) = gov.guide(&at(0), &plan, &[], 0).copy.unwrap();
        assert_eq!(bias, 0.0);
        // Off without a limit.
        let mut gov = Governors::new(&SamplerSettings::default());
        gov.hear_primer(&primer);
        assert!(gov.guide(&at(0), &plan, &[], 0).copy.is_none());
    }

    #[test]
    fn pitch_class_governor_holds_the_shares_it_was_given() {
        let plan = BarPlan { steps: 48, levels: [4; 8], notes_target: None, slots_target: None };
        // Heard: C three times as often as G (counts; the governor normalises them).
        let mut target = [0.0f32; 12];
        target[0] = 6.0;
        target[7] = 2.0;
        let mut gov = Governors::new(&SamplerSettings { pitch_class_hold: Some((target, 8.0)), ..Default::default() });
        let g = grammar(Phase::NeedPitch, Some(0), None);
        // Nothing written yet: the prior stands on the target, so nothing is pulled.
        let pull = gov.guide(&g, &plan, &[], 0).class_pull;
        assert!(pull.iter().all(|x| x.abs() < 1e-5), "{pull:?}");
        // Four Cs written: G is now short of its share and C over it; a class never heard and
        // never written stays where the model put it.
        gov.on_position(0, &[], 0);
        for _ in 0..4 {
            gov.on_note(72, 80, 3, 48);
        }
        let pull = gov.guide(&g, &plan, &[], 0).class_pull;
        assert!(pull[7] > 0.0 && pull[0] < 0.0 && pull[3] == 0.0, "{pull:?}");
        // It lasts over the bar line (the whole continuation counts), and a pitch is not pulled
        // while the grammar asks for something else.
        gov.on_bar_end(48, &[], 0);
        assert_eq!(gov.guide(&g, &plan, &[], 0).class_pull, pull);
        assert_eq!(gov.guide(&grammar(Phase::NeedVelocity, Some(0), Some(72)), &plan, &[], 0).class_pull, [0.0; 12]);
        // Off without a gain, or with nothing heard.
        for hold in [Some((target, 0.0)), Some(([0.0; 12], 8.0)), None] {
            let mut gov = Governors::new(&SamplerSettings { pitch_class_hold: hold, ..Default::default() });
            gov.on_position(0, &[], 0);
            gov.on_note(72, 80, 3, 48);
            assert_eq!(gov.guide(&g, &plan, &[], 0).class_pull, [0.0; 12], "{hold:?}");
        }
    }

    #[test]
    fn articulation_governor_places_the_next_onset_for_the_notes_waiting() {
        let plan = BarPlan { steps: 48, levels: [4; 8], notes_target: None, slots_target: None };
        let bias_at = |target: f32, next: u32| {
            let mut gov = Governors::new(&SamplerSettings { articulation_target: Some(target), ..Default::default() });
            // A note of 6 steps at step 0, waiting for the next onset.
            gov.on_position(0, &[], 0);
            gov.on_note(60, 80, 6, 48);
            let aim = gov.guide(&grammar(Phase::Free, Some(0), Some(60)), &plan, &[], 0).gap.expect("a note waits for its gap");
            aim.bias(next)
        };
        // Legato asked (duration = gap): the next onset right where the note ends is best, and an
        // onset far later (a short note in a long gap) worse than one soon after.
        assert!(bias_at(1.0, 6) > bias_at(1.0, 12) && bias_at(1.0, 12) > bias_at(1.0, 36));
        // Staccato asked (a third of the gap) from the legato prior: closing the note legato
        // leaves the measure as far from the target, a later onset brings it nearer.
        assert!(bias_at(0.33, 6).abs() < 1e-4 && bias_at(0.33, 18) > 0.0 && bias_at(0.33, 18) > bias_at(0.33, 12));
        // Nothing waits, or no articulation is asked: no pull on where the next onset goes.
        let gov = Governors::new(&SamplerSettings { articulation_target: Some(1.0), ..Default::default() });
        assert!(gov.guide(&grammar(Phase::Free, None, None), &plan, &[], 0).gap.is_none());
        let mut gov = Governors::new(&SamplerSettings::default());
        gov.on_position(0, &[], 0);
        gov.on_note(60, 80, 6, 48);
        assert!(gov.guide(&grammar(Phase::Free, Some(0), Some(60)), &plan, &[], 0).gap.is_none());
    }

    #[test]
    fn tension_governor_counts_as_the_feature_and_pulls_toward_its_target() {
        let plan = BarPlan { steps: 48, levels: [4; 8], notes_target: None, slots_target: None };
        let bias_of = |target: f32, sounding: &[(u32, u8)], pitch: u8| {
            let mut gov = Governors::new(&SamplerSettings { dissonance_target: Some(target), ..Default::default() });
            gov.on_position(0, &[], 0);
            gov.on_note(60, 80, 12, 48);
            let g = grammar(Phase::NeedPitch, Some(0), Some(60));
            let aim = gov.guide(&g, &plan, sounding, 0).dissonance.expect("a pitch is next");
            let (d, n) = intervals_with(pitch, sounding, 0);
            aim.bias(d, n)
        };
        let c = [(12u32, 60u8)];
        // Over a sounding C: tense wanted, the minor second gains on the third; calm wanted, the reverse.
        assert!(bias_of(0.8, &c, 61) > bias_of(0.8, &c, 64));
        assert!(bias_of(0.0, &c, 61) < bias_of(0.0, &c, 64));
        // The bar's count is the feature's, on random bars of chords and held notes.
        let mut rng = SplitMix64::new(7);
        for _ in 0..50 {
            let mut gov = Governors::new(&SamplerSettings { dissonance_target: Some(0.5), ..Default::default() });
            let (mut sounding, mut notes) = (Vec::new(), Vec::new());
            let mut pos = 0u32;
            while pos < 48 {
                // As `generate` does: the position is taken before what has ended by then is dropped.
                gov.on_position(pos, &sounding, 0);
                sounding.retain(|&(e, _)| e > pos);
                let mut pitch = 55 + (rng.next_u64() % 6) as u8;
                for _ in 0..1 + rng.next_u64() % 3 {
                    pitch += 1 + (rng.next_u64() % 5) as u8;
                    if sounding.iter().any(|&(_, q)| q == pitch) {
                        continue;
                    }
                    let dur = [3u32, 6, 12, 24, 36][(rng.next_u64() % 5) as usize].min(48 - pos);
                    gov.on_note(pitch, 80, dur, 48 - pos);
                    sounding.push((pos + dur, pitch));
                    let beats = |steps: u32| steps as f64 / crate::play::tokens::STEPS_PER_QUARTER as f64;
                    notes.push(crate::Note { onset_s: beats(pos) / 2.0, dur_s: beats(dur) / 2.0, onset_beats: beats(pos), dur_beats: beats(dur), pitch, velocity: 80, channel: 0 });
                }
                pos += [3u32, 6, 12][(rng.next_u64() % 3) as usize];
            }
            let last = notes.last().map_or(0, |n| (n.onset_beats * crate::play::tokens::STEPS_PER_QUARTER as f64).round() as u32);
            sounding.retain(|&(e, _)| e > last);
            gov.close_dissonance_group(&sounding, 0);
            let bar = crate::listen::notes::BarWindow { start_s: 0.0, end_s: 2.0, start_beats: 0.0, len_beats: 4.0, tempo_bpm: 120.0 };
            let feature = crate::feel::features::features_for_bars(&notes, &[bar])[0][11];
            let counted = if gov.pairs > PRIOR_PAIRS { gov.dissonant / (gov.pairs - PRIOR_PAIRS) } else { 0.0 };
            assert!((counted - feature).abs() < 1e-5, "governor {counted} vs feature {feature} on {notes:?}");
        }
        // A new bar starts counting again from the prior.
        let mut gov = Governors::new(&SamplerSettings { dissonance_target: Some(0.5), ..Default::default() });
        gov.on_position(0, &[], 0);
        gov.on_note(60, 80, 12, 48);
        gov.on_note(61, 80, 12, 48);
        gov.on_bar_end(48, &[(12, 60), (12, 61)], 0);
        assert_eq!((gov.dissonant, gov.pairs), (0.0, PRIOR_PAIRS), "a new bar starts from the prior");
    }

    #[test]
    fn mode_governor_reads_the_key_window_as_the_feature_does() {
        let steps = 48u32;
        let beats = |s: u32| s as f64 / crate::play::tokens::STEPS_PER_QUARTER as f64;
        let mut rng = SplitMix64::new(11);
        let mut gov = Governors::new(&SamplerSettings { mode_target: Some((0.0, 1.0)), ..Default::default() });
        let mut notes = Vec::new();
        let mut modes = Vec::new();
        for bar in 0..7u32 {
            let mut pos = 0u32;
            while pos < steps {
                let pitch = 48 + (rng.next_u64() % 30) as u8;
                // Up to a whole bar long, so notes ring over the bar line.
                let dur = [3u32, 6, 12, 24, 48][(rng.next_u64() % 5) as usize];
                gov.on_note(pitch, 80, dur, steps - pos);
                let at = bar * steps + pos;
                notes.push(crate::Note { onset_s: beats(at) / 2.0, dur_s: beats(dur) / 2.0, onset_beats: beats(at), dur_beats: beats(dur), pitch, velocity: 80, channel: 0 });
                pos += [3u32, 6, 12, 24][(rng.next_u64() % 4) as usize];
            }
            modes.push(crate::listen::keyfind::find_key(&gov.key_window_hist()).mode);
            gov.on_bar_end(steps, &[], bar * steps);
        }
        let bars: Vec<_> = (0..7u32)
            .map(|b| crate::listen::notes::BarWindow { start_s: beats(b * steps) / 2.0, end_s: beats((b + 1) * steps) / 2.0, start_beats: beats(b * steps), len_beats: 4.0, tempo_bpm: 120.0 })
            .collect();
        let feats = crate::feel::features::features_for_bars(&notes, &bars);
        for (b, (f, m)) in feats.iter().zip(&modes).enumerate() {
            assert!((f[6] - m).abs() < 1e-4, "bar {b}: feature mode {} vs governor {m}", f[6]);
        }
    }

    #[test]
    fn seeded_generator_repeats() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!((0..1000).map(|_| a.next_f64()).all(|x| (0.0..1.0).contains(&x)));
    }
}
