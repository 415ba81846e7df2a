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

/// The scale the continuation keeps to: a tonic pitch class and major or minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub tonic: u8,
    pub is_major: bool,
    /// Minor with the raised seventh only (harmonic minor): used when moving a major key to its
    /// parallel minor, because a natural minor has its relative major's notes and would still be
    /// heard (and measured) as major.
    pub harmonic: bool,
}

const MAJOR_STEPS: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
const MINOR_STEPS: [u8; 7] = [0, 2, 3, 5, 7, 8, 10];
const HARMONIC_MINOR_STEPS: [u8; 7] = [0, 2, 3, 5, 7, 8, 11];

impl Scale {
    /// Whether pitch class `pc` belongs to the scale (natural minor; the raised 7th is allowed
    /// in minor too, as in harmonic minor).
    pub fn contains(self, pitch: u8) -> bool {
        let rel = (pitch as i32 - self.tonic as i32).rem_euclid(12) as u8;
        if self.is_major {
            MAJOR_STEPS.contains(&rel)
        } else if self.harmonic {
            HARMONIC_MINOR_STEPS.contains(&rel)
        } else {
            MINOR_STEPS.contains(&rel) || rel == 11
        }
    }

    pub fn name(self) -> String {
        const NAMES: [&str; 12] = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"];
        format!("{} {}", NAMES[self.tonic as usize % 12], if self.is_major { "major" } else { "minor" })
    }
}

/// Moves a pitch written in `from` to the parallel mode `to` (same tonic): in major → minor the
/// third and sixth go down a semitone (the leading tone stays: harmonic minor); in minor → major
/// the third, sixth and seventh go up. Any other pitch, or the same mode, stays as it is. The
/// sampler writes in the heard key; this makes a mode change heard on every chord, not left to
/// the model's choice of notes.
pub fn parallel_map(pitch: u8, from: Scale, to: Scale) -> u8 {
    if from.tonic != to.tonic || from.is_major == to.is_major {
        return pitch;
    }
    let rel = (pitch as i32 - from.tonic as i32).rem_euclid(12);
    let shift = match (from.is_major, rel) {
        (true, 4) | (true, 9) => -1,
        (false, 3) | (false, 8) | (false, 10) => 1,
        _ => 0,
    };
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

/// The scale to keep to: the heard key, moved to its parallel major or minor when the mode
/// target asks clearly for the other one (above 0.6 for major, below 0.4 for minor).
pub fn target_scale(heard: Option<KeyEstimate>, mode_target: f32) -> Option<Scale> {
    let k = heard?;
    let is_major = if k.is_major && mode_target < 0.4 {
        false
    } else if !k.is_major && mode_target > 0.6 {
        true
    } else {
        k.is_major
    };
    Some(Scale { tonic: k.tonic, is_major, harmonic: k.is_major && !is_major })
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
        let c_major = Scale { tonic: 0, is_major: true, harmonic: false };
        assert!(c_major.contains(60) && c_major.contains(71) && !c_major.contains(61));
        let a_minor = Scale { tonic: 9, is_major: false, harmonic: false };
        assert!(a_minor.contains(69) && a_minor.contains(72) && a_minor.contains(68) && !a_minor.contains(70));
        let heard = KeyEstimate { tonic: 9, is_major: false, mode: -0.3, clarity: 0.8 };
        assert_eq!(target_scale(Some(heard), 0.5), Some(a_minor));
        assert_eq!(target_scale(Some(heard), 0.9), Some(Scale { tonic: 9, is_major: true, harmonic: false }));
        // C major asked to go minor: C harmonic minor (B natural, no B flat).
        let c = KeyEstimate { tonic: 0, is_major: true, mode: 0.3, clarity: 0.8 };
        let cm = target_scale(Some(c), 0.1).unwrap();
        assert!(!cm.is_major && cm.harmonic && cm.contains(63) && cm.contains(71) && !cm.contains(70) && !cm.contains(64));
        // A C major line mapped to C minor: E -> Eb, A -> Ab, B stays; and back to major.
        let cmaj = Scale { tonic: 0, is_major: true, harmonic: false };
        let mapped: Vec<u8> = [60u8, 62, 64, 65, 67, 69, 71].iter().map(|&p| parallel_map(p, cmaj, cm)).collect();
        assert_eq!(mapped, vec![60, 62, 63, 65, 67, 68, 71]);
        assert!(mapped.iter().all(|&p| cm.contains(p)));
        let am = Scale { tonic: 9, is_major: false, harmonic: false };
        let amaj = Scale { tonic: 9, is_major: true, harmonic: false };
        let up: Vec<u8> = [69u8, 72, 76, 77, 79].iter().map(|&p| parallel_map(p, am, amaj)).collect();
        assert_eq!(up, vec![69, 73, 76, 78, 80]);
        assert!(up.iter().all(|&p| amaj.contains(p)));
        assert_eq!(target_scale(None, 0.9), None);
    }
}
