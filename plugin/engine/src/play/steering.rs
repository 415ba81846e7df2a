//! From what the user asks (a valence/arousal target, a steer amount, faders set off "auto") and
//! what was heard, to the eight attribute targets the continuation model is conditioned on, and
//! the key it should stay in. The emotion-to-attribute bridge is learned from VGMIDI's per-bar
//! listener ratings (its coefficients live in the continuation model's manifest).
//!
//! Thread: any (worker, command line)

use serde::Deserialize;

use crate::feel::features::Features;
use crate::listen::keyfind::{KeyEstimate, find_key};
use crate::listen::notes::{BarWindow, Note};
use crate::play::attributes::{Attribute, AttributeScale, raw_attributes};

/// From a valence/arousal target to attribute fader values, in two layers.
///
/// - `coef`, learned from listeners: per attribute, fader value in [0, 1] = c0 + c1·V + c2·A +
///   c3·V·A (clamped), a least-squares fit on VGMIDI's rated bars. It says which attributes go
///   with an emotion in real music, but like every regression it is shrunk toward the mean:
///   the faders it sets barely move what a listener (or the estimator) hears.
/// - `forward`, learned by synthesis (`moodfader lab fit-bridge`): how the project's estimator reads
///   a continuation written at given fader values. The bridge then asks for the fader values
///   closest to the listeners' ones whose continuation reads as the target (see
///   [`ForwardModel::invert`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EmotionBridge {
    /// Coefficients in [`Attribute::ALL`] order.
    pub coef: [[f32; 4]; 8],
    /// The span of V·A over the rated bars the coefficients were fitted on (1st to 99th
    /// percentile). The V·A term is evaluated inside it only: the listeners' mean ratings keep
    /// |V·A| under about 0.2, and at the pad's corners (|V·A| up to 1) the fitted curvature would
    /// otherwise decide alone (it made "sad" the loudest quadrant). The forward model, fitted
    /// over the whole fader box, carries the rest of the way.
    pub interaction_span: Option<[f32; 2]>,
    pub forward: Option<ForwardModel>,
}

/// The estimator's reading of a continuation written with the faders at `x` (in
/// [`Attribute::ALL`] order): `[V, A] = intercept + weights · x`, fitted by least squares on
/// continuations of training pieces with every fader drawn at random.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ForwardModel {
    pub intercept: [f32; 2],
    /// Row 0: valence, row 1: arousal.
    pub weights: [[f32; 8]; 2],
    /// Reading asked per unit of target (the estimator's readings span about ±0.5).
    pub gain: f32,
    /// Weight of staying near the listeners' fader values against reaching the reading.
    pub prior_weight: f32,
}

impl ForwardModel {
    /// The estimator's expected reading at fader values `x`.
    pub fn reading(&self, x: &[f32; 8]) -> [f32; 2] {
        std::array::from_fn(|r| self.intercept[r] + self.weights[r].iter().zip(x).map(|(w, x)| w * x).sum::<f32>())
    }

    /// Fader values in [0, 1] minimising |reading(x) − gain·(v, a)|² + prior_weight·|x − prior|²:
    /// projected gradient descent from `prior` (a convex problem on a box; a fixed number of
    /// steps, no allocation).
    pub fn invert(&self, v: f32, a: f32, prior: &[f32; 8]) -> [f32; 8] {
        let goal = [self.gain * v, self.gain * a];
        let lambda = self.prior_weight.max(0.0);
        // Step 1/L with L an upper bound of the gradient's Lipschitz constant.
        let l = 2.0 * (self.weights.iter().flatten().map(|w| w * w).sum::<f32>() + lambda);
        if !(l.is_finite() && l > 0.0) {
            return *prior;
        }
        let step = 1.0 / l;
        let mut x = prior.map(|p| p.clamp(0.0, 1.0));
        for _ in 0..400 {
            let r = self.reading(&x);
            let e = [r[0] - goal[0], r[1] - goal[1]];
            for i in 0..8 {
                let g = 2.0 * (self.weights[0][i] * e[0] + self.weights[1][i] * e[1]) + 2.0 * lambda * (x[i] - prior[i]);
                x[i] = (x[i] - step * g).clamp(0.0, 1.0);
            }
        }
        x
    }

    /// Least squares of the readings on the fader values, with an intercept. `None` when the
    /// samples do not determine it (fewer than 9, or collinear).
    pub fn fit(asked: &[[f32; 8]], readings: &[[f32; 2]], gain: f32, prior_weight: f32) -> Option<ForwardModel> {
        if asked.len() < 9 || asked.len() != readings.len() {
            return None;
        }
        // Normal equations on z = (1, x).
        let mut ata = vec![vec![0.0f64; 9]; 9];
        let mut aty = [vec![0.0f64; 9], vec![0.0f64; 9]];
        for (x, y) in asked.iter().zip(readings) {
            let z: [f64; 9] = std::array::from_fn(|i| if i == 0 { 1.0 } else { x[i - 1] as f64 });
            for i in 0..9 {
                for j in 0..9 {
                    ata[i][j] += z[i] * z[j];
                }
                aty[0][i] += z[i] * y[0] as f64;
                aty[1][i] += z[i] * y[1] as f64;
            }
        }
        let mut out = ForwardModel { intercept: [0.0; 2], weights: [[0.0; 8]; 2], gain, prior_weight };
        for (r, rhs) in aty.into_iter().enumerate() {
            let c = crate::linalg::solve(ata.clone(), rhs)?;
            out.intercept[r] = c[0] as f32;
            for (w, c) in out.weights[r].iter_mut().zip(&c[1..]) {
                *w = *c as f32;
            }
        }
        Some(out)
    }
}

#[derive(Deserialize)]
struct BridgeJson {
    attributes: std::collections::HashMap<String, BridgeAttr>,
    #[serde(default)]
    forward: Option<ForwardModel>,
    #[serde(default)]
    interaction_span: Option<[f32; 2]>,
}

#[derive(Deserialize)]
struct BridgeAttr {
    coef: Vec<f32>,
}

impl EmotionBridge {
    /// Reads the `bridge` object of the continuation manifest.
    pub fn from_json(v: &serde_json::Value) -> anyhow::Result<Self> {
        let b: BridgeJson = serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("bridge: {e}"))?;
        let mut coef = [[0.5, 0.0, 0.0, 0.0]; 8];
        for (i, a) in Attribute::ALL.iter().enumerate() {
            let c = b
                .attributes
                .get(a.cli_name())
                .ok_or_else(|| anyhow::anyhow!("bridge has no coefficients for {}", a.cli_name()))?;
            if c.coef.len() != 4 || c.coef.iter().any(|x| !x.is_finite()) {
                anyhow::bail!("bridge coefficients for {} are not 4 finite numbers", a.cli_name());
            }
            coef[i] = [c.coef[0], c.coef[1], c.coef[2], c.coef[3]];
        }
        if let Some(f) = &b.forward {
            let finite = f.intercept.iter().chain(f.weights.iter().flatten()).chain([&f.gain, &f.prior_weight]).all(|x| x.is_finite());
            if !finite || f.prior_weight < 0.0 {
                anyhow::bail!("bridge's forward model is not finite numbers with a prior weight >= 0");
            }
        }
        if let Some([lo, hi]) = b.interaction_span
            && !(lo.is_finite() && hi.is_finite() && lo <= hi)
        {
            anyhow::bail!("bridge's interaction_span is not [low, high]");
        }
        Ok(Self { coef, interaction_span: b.interaction_span, forward: b.forward })
    }

    /// The listeners' fader values for valence `v` and arousal `a` (the regression alone).
    pub fn rated_attributes(&self, v: f32, a: f32) -> [f32; 8] {
        let (v, a) = (unit_or_zero(v), unit_or_zero(a));
        let va = match self.interaction_span {
            Some([lo, hi]) => (v * a).clamp(lo, hi),
            None => v * a,
        };
        self.coef.map(|c| (c[0] + c[1] * v + c[2] * a + c[3] * va).clamp(0.0, 1.0))
    }

    /// Attribute fader values in [0, 1] that carry valence `v` and arousal `a`: the listeners'
    /// values, moved as little as it takes for the continuation to read as the target.
    pub fn attributes_for(&self, v: f32, a: f32) -> [f32; 8] {
        let (v, a) = (unit_or_zero(v), unit_or_zero(a));
        let prior = self.rated_attributes(v, a);
        match &self.forward {
            Some(f) => f.invert(v, a, &prior),
            None => prior,
        }
    }
}

/// A valence or arousal target clamped to [-1, 1]; 0 (neutral) when it is not a number.
fn unit_or_zero(x: f32) -> f32 {
    if x.is_finite() { x.clamp(-1.0, 1.0) } else { 0.0 }
}

/// What the user asks of the continuation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SteerRequest {
    pub target_valence: f32,
    pub target_arousal: f32,
    /// 0 = continue as heard, 1 = fully steered toward the target.
    pub steer: f32,
    /// Faders set off "auto", in [0, 1]; they override their attribute.
    pub manual: [Option<f32>; 8],
}

impl Default for SteerRequest {
    fn default() -> Self {
        Self { target_valence: 0.0, target_arousal: 0.0, steer: 0.0, manual: [None; 8] }
    }
}

/// The attribute targets (fader values in [0, 1]) for the bars to generate: per attribute, a
/// manual fader wins; otherwise `heard + steer · (bridge(target) − heard)`.
pub fn attribute_targets(bridge: &EmotionBridge, heard: &[f32; 8], req: &SteerRequest) -> [f32; 8] {
    let mapped = bridge.attributes_for(req.target_valence, req.target_arousal);
    let steer = if req.steer.is_finite() { req.steer.clamp(0.0, 1.0) } else { 0.0 };
    std::array::from_fn(|i| match req.manual[i] {
        Some(x) if x.is_finite() => x.clamp(0.0, 1.0),
        _ => {
            let h = if heard[i].is_finite() { heard[i] } else { 0.5 };
            (h + steer * (mapped[i] - h)).clamp(0.0, 1.0)
        }
    })
}

/// Fader value in [0, 1] to a conditioning level.
pub fn level_of(x: f32) -> u32 {
    let n = crate::play::tokens::NUM_ATTRIBUTE_LEVELS;
    if !x.is_finite() {
        return n / 2;
    }
    ((x.clamp(0.0, 1.0) * n as f32) as u32).min(n - 1)
}

/// Mean fader values of the last `last_n` bars that have notes (0.5 each when none has).
pub fn heard_attributes(scale: &AttributeScale, feats: &[Features], last_n: usize) -> [f32; 8] {
    let mut sum = [0.0f32; 8];
    let mut n = 0;
    for f in feats.iter().rev().filter(|f| f[13] < 0.5).take(last_n) {
        let x = scale.normalize(&raw_attributes(f));
        for i in 0..8 {
            sum[i] += x[i];
        }
        n += 1;
    }
    if n == 0 { [0.5; 8] } else { sum.map(|s| s / n as f32) }
}

/// The modes a continuation can be written in, from the brightest to the darkest (the "modal
/// brightness" ladder musicians use: each step down flattens one degree, harmonic minor aside).
/// The mode fader moves along it, so its middle is a real place (Mixolydian, Dorian), not a coin
/// toss between major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Lydian,
    Major,
    Mixolydian,
    Dorian,
    /// Natural minor; its raised seventh (harmonic minor's leading tone) counts as in the scale.
    Minor,
    /// Used when moving to a darker mode than the heard one: a natural minor has its relative
    /// major's notes and is often still heard (and measured) as major.
    HarmonicMinor,
    Phrygian,
}

impl Mode {
    /// Every mode, brightest first.
    pub const ALL: [Mode; 7] = [Mode::Lydian, Mode::Major, Mode::Mixolydian, Mode::Dorian, Mode::Minor, Mode::HarmonicMinor, Mode::Phrygian];

    /// Semitones of the seven degrees above the tonic.
    pub const fn steps(self) -> [u8; 7] {
        match self {
            Mode::Lydian => [0, 2, 4, 6, 7, 9, 11],
            Mode::Major => [0, 2, 4, 5, 7, 9, 11],
            Mode::Mixolydian => [0, 2, 4, 5, 7, 9, 10],
            Mode::Dorian => [0, 2, 3, 5, 7, 9, 10],
            Mode::Minor => [0, 2, 3, 5, 7, 8, 10],
            Mode::HarmonicMinor => [0, 2, 3, 5, 7, 8, 11],
            Mode::Phrygian => [0, 1, 3, 5, 7, 8, 10],
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Lydian => "lydian",
            Mode::Major => "major",
            Mode::Mixolydian => "mixolydian",
            Mode::Dorian => "dorian",
            Mode::Minor => "minor",
            Mode::HarmonicMinor => "harmonic minor",
            Mode::Phrygian => "phrygian",
        }
    }
}

/// The scale the continuation keeps to: a tonic pitch class and a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub tonic: u8,
    pub mode: Mode,
}

impl Scale {
    /// The heard key's scale: major or natural minor.
    pub fn of_key(k: &KeyEstimate) -> Scale {
        Scale { tonic: k.tonic % 12, mode: if k.is_major { Mode::Major } else { Mode::Minor } }
    }

    /// Whether `pitch` belongs to the scale (a natural minor also allows its raised seventh).
    pub fn contains(self, pitch: u8) -> bool {
        let rel = (pitch as i32 - self.tonic as i32).rem_euclid(12) as u8;
        self.mode.steps().contains(&rel) || (self.mode == Mode::Minor && rel == 11)
    }

    pub fn name(self) -> String {
        const NAMES: [&str; 12] = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"];
        format!("{} {}", NAMES[self.tonic as usize % 12], self.mode.name())
    }
}

/// Moves a pitch written in `from` to the mode of `to` on the same tonic, degree by degree: C
/// major's E becomes E flat in C minor, its B becomes B flat in C mixolydian. A pitch outside
/// `from` (a chromatic note, or natural minor's raised seventh) stays as it is. The sampler writes
/// in the heard key; this makes a mode change heard on every chord, not left to the model's
/// choice of notes.
pub fn mode_map(pitch: u8, from: Scale, to: Scale) -> u8 {
    if from.tonic != to.tonic || from.mode == to.mode {
        return pitch;
    }
    let rel = (pitch as i32 - from.tonic as i32).rem_euclid(12) as u8;
    let Some(degree) = from.mode.steps().iter().position(|&s| s == rel) else { return pitch };
    let shift = to.mode.steps()[degree] as i32 - rel as i32;
    (pitch as i32 + shift).clamp(0, 127) as u8
}

/// The heard key over the primer's last `last_bars` bars (duration-weighted pitch classes).
pub fn heard_key(notes: &[Note], bars: &[BarWindow], last_bars: usize) -> Option<KeyEstimate> {
    key_of(&heard_pitch_classes(notes, bars, last_bars))
}

/// The duration-weighted pitch-class histogram of the last `last_bars` heard bars: what
/// [`heard_key`] reads.
pub fn heard_pitch_classes(notes: &[Note], bars: &[BarWindow], last_bars: usize) -> [f32; 12] {
    let mut hist = [0.0f32; 12];
    for w in bars.iter().rev().take(last_bars) {
        let h = crate::feel::features::pitch_class_hist(notes, w);
        for pc in 0..12 {
            hist[pc] += h[pc];
        }
    }
    hist
}

/// The density an unsteered continuation aims at: notes per beat expected in the bars that
/// follow the last [`DENSITY_BARS`] heard bars (drums left out), from a robust (least absolute
/// deviation) fit of log2(notes per bar + 1) of the four bars that really follow on that of the
/// heard bars: their mean (`m`), the mean of the last two (`l`) and the spread of the bars' own
/// logarithms (`s`): `0.393 + 0.539 m + 0.369 l + 0.140 s`.
///
/// Fitted on 2,186 openings of training-split pieces (all four data sets; `moodfader lab
/// eval-faithfulness --training-split --per-piece --pieces 1500 --seeds 1 -o tr.json`, the same with
/// `--data-set vgmidi --pieces 2000`, then `models/train/fit_density.py tr.json vg.json`). Its
/// |log2| error against the real next bars in 5-fold cross-validation: 0.270, where the heard
/// density alone (the primer played again) misses by 0.327 and its mean bar count fitted alone
/// by 0.286 (VGMIDI 0.249 against 0.281; POP909 0.297 against 0.403). Openings rise: a sparse
/// start is followed by fuller bars, and a last pair of bars fuller than the rest says more
/// than the first.
///
/// Counted in beats, not seconds: a bar's notes belong to the bar whatever its tempo (a
/// beat-tracked performance's bars last as long as the player took).
pub fn expected_notes_per_beat(notes: &[Note], bars: &[BarWindow]) -> Option<f32> {
    let last: Vec<&BarWindow> = bars.iter().rev().take(DENSITY_BARS).collect();
    let dur: f64 = last.iter().map(|w| w.len_beats).sum();
    if last.is_empty() || !dur.is_finite() || dur <= 0.0 {
        return None;
    }
    // Oldest first.
    let counts: Vec<f64> = last
        .iter()
        .rev()
        .map(|w| notes.iter().filter(|n| !n.is_drum() && w.contains_beat(n.onset_beats)).count() as f64)
        .collect();
    let k = counts.len() as f64;
    let m = (counts.iter().sum::<f64>() / k + 1.0).log2();
    let tail = &counts[counts.len().saturating_sub(2)..];
    let l = (tail.iter().sum::<f64>() / tail.len() as f64 + 1.0).log2();
    let logs: Vec<f64> = counts.iter().map(|c| (c + 1.0).log2()).collect();
    let mean_log = logs.iter().sum::<f64>() / k;
    let spread = (logs.iter().map(|x| (x - mean_log).powi(2)).sum::<f64>() / k).sqrt();
    let per_bar = (0.393 + 0.539 * m + 0.369 * l + 0.140 * spread).exp2() - 1.0;
    let per_beat = (per_bar.max(0.0) * k / dur) as f32;
    per_beat.is_finite().then_some(per_beat)
}

/// Heard bars [`expected_notes_per_beat`] reads (as its fit read them).
pub const DENSITY_BARS: usize = 4;

/// How many notes of each pitch class start in the last `last_bars` heard bars (drums left out):
/// the note-count histogram the pitch-class governor holds an unsteered continuation to.
pub fn heard_pitch_class_counts(notes: &[Note], bars: &[BarWindow], last_bars: usize) -> [f32; 12] {
    let mut hist = [0.0f32; 12];
    for w in bars.iter().rev().take(last_bars) {
        let first = notes.partition_point(|n| n.onset_s < w.start_s);
        let end = first + notes[first..].partition_point(|n| n.onset_s < w.end_s);
        for n in notes[first..end].iter().filter(|n| !n.is_drum()) {
            hist[(n.pitch % 12) as usize] += 1.0;
        }
    }
    hist
}

/// The key of a heard pitch-class histogram, or None when it says nothing.
pub fn key_of(hist: &[f32; 12]) -> Option<KeyEstimate> {
    let k = find_key(hist);
    (k.clarity > 0.0).then_some(k)
}

/// Where each mode of the ladder sits on the mode fader, in [`Mode::ALL`] order; `None` keeps a
/// mode off the fader. The fader picks the pitch set; the sampler's mode governor then weights
/// the pitch classes until the written notes measure the asked value. Without the governor,
/// `moodfader lab eval-continuation --only mode` (its `mode_ladder` report) measures lydian darker
/// than major and phrygian brighter than minor on the demo primers (the key profiles hear them
/// as the major key a fifth up and the minor key a fifth down), so those two are left off; the
/// others sit in brightness order, evenly spread.
pub const MODE_LADDER: [Option<f32>; 7] = [None, Some(0.8), Some(0.6), Some(0.4), Some(0.2), Some(0.05), None];

/// Within this distance of the heard mode (on the fader) the heard key is kept as it is.
pub const MODE_KEEP_BAND: f32 = 0.1;

/// The scale to write in: the heard key, or the mode of the ladder nearest the mode target on the
/// heard tonic when the target is more than [`MODE_KEEP_BAND`] away from what was heard.
pub fn target_scale(heard: Option<KeyEstimate>, heard_mode: f32, mode_target: f32) -> Option<Scale> {
    let k = heard?;
    let scale = Scale::of_key(&k);
    if !mode_target.is_finite() || !heard_mode.is_finite() || (mode_target - heard_mode).abs() <= MODE_KEEP_BAND {
        return Some(scale);
    }
    let nearest = Mode::ALL
        .iter()
        .zip(MODE_LADDER)
        .filter_map(|(&m, at)| at.map(|x| (m, (x - mode_target).abs())))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(m, _)| m)
        .unwrap_or(scale.mode);
    Some(Scale { tonic: scale.tonic, mode: nearest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge() -> EmotionBridge {
        let mut coef = [[0.5, 0.0, 0.0, 0.0]; 8];
        coef[0] = [0.5, 0.0, 0.4, 0.0]; // density follows arousal
        coef[5] = [0.5, 0.4, 0.0, 0.0]; // mode follows valence
        EmotionBridge { coef, interaction_span: None, forward: None }
    }

    #[test]
    fn heard_pitch_classes_are_counted_per_note_in_the_last_bars() {
        let bar = |i: usize| BarWindow { start_s: i as f64 * 2.0, end_s: i as f64 * 2.0 + 2.0, start_beats: i as f64 * 4.0, len_beats: 4.0, tempo_bpm: 120.0 };
        let note = |beats: f64, pitch: u8, channel: u8| Note { onset_s: beats / 2.0, dur_s: 1.5, onset_beats: beats, dur_beats: 3.0, pitch, velocity: 90, channel };
        // Bar 0: D; bar 1: C held long, G short, and a drum; bar 2: two Cs.
        let notes = vec![note(0.0, 62, 0), note(4.0, 60, 0), note(7.0, 67, 0), note(7.5, 38, 9), note(8.0, 48, 0), note(10.0, 72, 0)];
        let bars = [bar(0), bar(1), bar(2)];
        let h = heard_pitch_class_counts(&notes, &bars, 2);
        // By notes, not by time; drums left out; bar 0 is outside the last two bars.
        assert_eq!(h[0], 3.0);
        assert_eq!(h[7], 1.0);
        assert_eq!(h[2], 0.0);
        assert_eq!(h.iter().sum::<f32>(), 4.0);
        assert_eq!(heard_pitch_class_counts(&notes, &bars, 8)[2], 1.0);
        assert_eq!(heard_pitch_class_counts(&[], &bars, 8), [0.0; 12]);
    }

    #[test]
    fn the_density_expected_next_follows_the_heard_bars_in_beats() {
        // Bars of 4 beats lasting 3 s (a slow performance): the notes count per beat, not per second.
        let bar = |i: usize| BarWindow { start_s: i as f64 * 3.0, end_s: i as f64 * 3.0 + 3.0, start_beats: i as f64 * 4.0, len_beats: 4.0, tempo_bpm: 80.0 };
        let bars: Vec<BarWindow> = (0..5).map(bar).collect();
        let steady = |per_bar: usize| -> Vec<Note> {
            (0..5 * per_bar)
                .map(|k| {
                    let beats = k as f64 * 4.0 / per_bar as f64;
                    Note { onset_s: beats * 0.75, dur_s: 0.2, onset_beats: beats, dur_beats: 0.25, pitch: 60, velocity: 90, channel: 0 }
                })
                .collect()
        };
        // Eight notes in every bar: 2^(0.393 + 0.908 log2 9) - 1 = 8.65 per bar expected.
        let x = expected_notes_per_beat(&steady(8), &bars).unwrap() * 4.0;
        assert!((x - 8.65).abs() < 0.02, "{x}");
        // Denser heard, denser expected; only the last four bars count; drums do not.
        assert!(expected_notes_per_beat(&steady(16), &bars).unwrap() * 4.0 > 16.0);
        let mut with_drums = steady(8);
        with_drums.extend(steady(16).into_iter().map(|n| Note { channel: 9, ..n }));
        assert_eq!(expected_notes_per_beat(&with_drums, &bars), expected_notes_per_beat(&steady(8), &bars));
        let mut first_bar_full = steady(8);
        let first = first_bar_full[0];
        first_bar_full.extend((0..20).map(|k| Note { onset_beats: k as f64 * 0.2, onset_s: k as f64 * 0.15, ..first }));
        assert_eq!(expected_notes_per_beat(&first_bar_full, &bars), expected_notes_per_beat(&steady(8), &bars));
        // A last pair of bars fuller than the first weighs more than the mean alone.
        let rising: Vec<Note> = steady(4).into_iter().filter(|n| n.onset_beats < 12.0).chain(steady(12).into_iter().filter(|n| n.onset_beats >= 12.0)).collect();
        assert!(expected_notes_per_beat(&rising, &bars).unwrap() * 4.0 > 9.5);
        assert_eq!(expected_notes_per_beat(&[], &[]), None);
    }

    #[test]
    fn steer_blends_heard_and_target_and_manual_wins() {
        let heard = [0.2; 8];
        let mut req = SteerRequest { target_valence: 1.0, target_arousal: 1.0, steer: 0.0, manual: [None; 8] };
        assert_eq!(attribute_targets(&bridge(), &heard, &req), heard);
        req.steer = 1.0;
        let t = attribute_targets(&bridge(), &heard, &req);
        assert!((t[0] - 0.9).abs() < 1e-6 && (t[5] - 0.9).abs() < 1e-6 && (t[1] - 0.5).abs() < 1e-6);
        req.steer = 0.5;
        assert!((attribute_targets(&bridge(), &heard, &req)[0] - 0.55).abs() < 1e-6);
        req.manual[0] = Some(0.05);
        assert_eq!(attribute_targets(&bridge(), &heard, &req)[0], 0.05);
        req.target_valence = f32::NAN;
        req.steer = f32::NAN;
        assert!(attribute_targets(&bridge(), &heard, &req).iter().all(|x| x.is_finite()));
    }

    #[test]
    fn forward_model_is_fitted_and_inverted() {
        // Readings from a known linear model plus deterministic noise.
        let truth = ForwardModel { intercept: [0.1, -0.05], weights: [[0.0, 0.2, 0.0, 0.0, 0.0, 0.45, -0.15, -0.1], [0.15, 0.3, 0.1, 0.0, 0.0, -0.1, -0.35, 0.0]], gain: 0.4, prior_weight: 0.02 };
        let mut rng = crate::play::continuation::SplitMix64::new(3);
        let asked: Vec<[f32; 8]> = (0..400).map(|_| std::array::from_fn(|_| rng.next_f64() as f32)).collect();
        let readings: Vec<[f32; 2]> = asked.iter().map(|x| truth.reading(x).map(|r| r + 0.02 * (rng.next_f64() as f32 - 0.5))).collect();
        let fit = ForwardModel::fit(&asked, &readings, 0.4, 0.02).expect("determined");
        for r in 0..2 {
            assert!((fit.intercept[r] - truth.intercept[r]).abs() < 0.01);
            for i in 0..8 {
                assert!((fit.weights[r][i] - truth.weights[r][i]).abs() < 0.01, "{r} {i}: {:?}", fit.weights);
            }
        }
        assert!(ForwardModel::fit(&asked[..5], &readings[..5], 0.4, 0.02).is_none());
        // Every quadrant is reached where the model can reach it, inside the faders' range.
        let prior = [0.5; 8];
        for (v, a) in [(0.7, 0.7), (-0.7, 0.7), (-0.7, -0.7), (0.7, -0.7)] {
            let x = fit.invert(v, a, &prior);
            assert!(x.iter().all(|x| (0.0..=1.0).contains(x)));
            let r = truth.reading(&x);
            assert!(r[0] * v > 0.0 && r[1] * a > 0.0, "target ({v}, {a}) reads {r:?} at {x:?}");
        }
        // A target the model already reads at the prior leaves the prior nearly as it is.
        let at_prior = fit.reading(&prior);
        let x = fit.invert(at_prior[0] / 0.4, at_prior[1] / 0.4, &prior);
        assert!(x.iter().all(|x| (x - 0.5).abs() < 0.02), "{x:?}");
        // The bridge uses it, and without it falls back to the listeners' fit.
        let mut b = bridge();
        assert_eq!(b.attributes_for(0.7, -0.7), b.rated_attributes(0.7, -0.7));
        b.forward = Some(fit);
        let x = b.attributes_for(-0.7, 0.7);
        assert!(truth.reading(&x)[0] < 0.0 && truth.reading(&x)[1] > 0.0);
        assert!(b.attributes_for(f32::NAN, f32::INFINITY).iter().all(|x| x.is_finite()));
    }

    #[test]
    fn levels_cover_the_range() {
        assert_eq!(level_of(0.0), 0);
        assert_eq!(level_of(0.999), 7);
        assert_eq!(level_of(1.0), 7);
        assert_eq!(level_of(0.5), 4);
        assert_eq!(level_of(f32::NAN), 4);
    }

    #[test]
    fn scales_and_mode_moves() {
        let c_major = Scale { tonic: 0, mode: Mode::Major };
        assert!(c_major.contains(60) && c_major.contains(71) && !c_major.contains(61));
        let a_minor = Scale { tonic: 9, mode: Mode::Minor };
        assert!(a_minor.contains(69) && a_minor.contains(72) && a_minor.contains(68) && !a_minor.contains(70));
        let heard = KeyEstimate { tonic: 9, is_major: false, mode: -0.3, clarity: 0.8 };
        // Near what was heard, the heard key stays.
        assert_eq!(target_scale(Some(heard), 0.3, 0.3 + MODE_KEEP_BAND * 0.9), Some(a_minor));
        // The brightest end is the brightest mode, the darkest end the darkest, on the heard tonic.
        let on_ladder: Vec<Mode> = Mode::ALL.iter().zip(MODE_LADDER).filter(|(_, at)| at.is_some()).map(|(&m, _)| m).collect();
        assert_eq!(target_scale(Some(heard), 0.3, 1.0), Some(Scale { tonic: 9, mode: on_ladder[0] }));
        assert_eq!(target_scale(Some(heard), 0.3, 0.0).map(|s| s.mode), on_ladder.last().copied());
        // The ladder is ordered: a brighter target never gives a darker mode.
        let rank = |m: Mode| Mode::ALL.iter().position(|&x| x == m).unwrap();
        let c = KeyEstimate { tonic: 0, is_major: true, mode: 0.3, clarity: 0.8 };
        let mut last = usize::MAX;
        for k in 0..=20 {
            let t = k as f32 / 20.0;
            let m = target_scale(Some(c), 0.5, t).unwrap().mode;
            if (t - 0.5).abs() > MODE_KEEP_BAND {
                assert!(rank(m) <= last, "{t}: {m:?}");
                last = rank(m);
            }
        }
        // A C major line mapped to C harmonic minor: E -> Eb, A -> Ab, B stays; to mixolydian
        // only B -> Bb; a chromatic note stays.
        let cm = Scale { tonic: 0, mode: Mode::HarmonicMinor };
        let mapped: Vec<u8> = [60u8, 62, 64, 65, 67, 69, 71, 61].iter().map(|&p| mode_map(p, c_major, cm)).collect();
        assert_eq!(mapped, vec![60, 62, 63, 65, 67, 68, 71, 61]);
        let mixo = Scale { tonic: 0, mode: Mode::Mixolydian };
        assert_eq!([64u8, 71, 72].map(|p| mode_map(p, c_major, mixo)), [64, 70, 72]);
        // A minor to A major: C -> C#, F -> F#, G -> G#; the raised seventh G# stays.
        let amaj = Scale { tonic: 9, mode: Mode::Major };
        let up: Vec<u8> = [69u8, 72, 76, 77, 79, 80].iter().map(|&p| mode_map(p, a_minor, amaj)).collect();
        assert_eq!(up, vec![69, 73, 76, 78, 80, 80]);
        assert!(up.iter().all(|&p| amaj.contains(p)));
        for m in Mode::ALL {
            let to = Scale { tonic: 0, mode: m };
            assert!((0..128u8).filter(|&p| c_major.contains(p)).all(|p| to.contains(mode_map(p, c_major, to))), "{m:?}");
        }
        assert_eq!(target_scale(None, 0.5, 0.9), None);
    }
}
