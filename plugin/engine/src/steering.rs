//! From what the user asks (a valence/arousal target, a steer amount, faders set off "auto") and
//! what was heard, to the eight attribute targets the continuation model is conditioned on, and
//! the key it should stay in. The emotion-to-attribute bridge is learned from VGMIDI's per-bar
//! listener ratings (its coefficients live in the continuation model's manifest).
//!
//! Thread: any (worker, command line)

use serde::Deserialize;

use crate::attributes::{Attribute, AttributeScale, raw_attributes};
use crate::features::Features;
use crate::keyfind::{KeyEstimate, find_key};
use crate::notes::{BarWindow, Note};

/// Per attribute: fader value in [0, 1] = c0 + c1·V + c2·A + c3·V·A (clamped).
#[derive(Debug, Clone, PartialEq)]
pub struct EmotionBridge {
    /// Coefficients in [`Attribute::ALL`] order.
    pub coef: [[f32; 4]; 8],
}

#[derive(Deserialize)]
struct BridgeJson {
    attributes: std::collections::HashMap<String, BridgeAttr>,
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
        Ok(Self { coef })
    }

    /// Attribute fader values in [0, 1] that carry valence `v` and arousal `a`.
    pub fn attributes_for(&self, v: f32, a: f32) -> [f32; 8] {
        let v = if v.is_finite() { v.clamp(-1.0, 1.0) } else { 0.0 };
        let a = if a.is_finite() { a.clamp(-1.0, 1.0) } else { 0.0 };
        self.coef.map(|c| (c[0] + c[1] * v + c[2] * a + c[3] * v * a).clamp(0.0, 1.0))
    }
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
    let n = crate::tokens::NUM_ATTRIBUTE_LEVELS;
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
    let mut hist = [0.0f32; 12];
    for w in bars.iter().rev().take(last_bars) {
        let h = crate::features::pitch_class_hist(notes, w);
        for pc in 0..12 {
            hist[pc] += h[pc];
        }
    }
    let k = find_key(&hist);
    (k.clarity > 0.0).then_some(k)
}

/// Where each mode of the ladder sits on the mode fader, in [`Mode::ALL`] order; `None` keeps a
/// mode off the fader. The fader picks the pitch set; the sampler's mode governor then weights
/// the pitch classes until the written notes measure the asked value. Without the governor,
/// `moodfader eval-continuation --only mode` (its `mode_ladder` report) measures lydian darker
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
        EmotionBridge { coef }
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
