//! The musical attributes that carry emotion to the generator (product.md): their names on the
//! command line, in the panel and in parameter IDs. One list, used everywhere.
//!
//! Thread: any

/// An attribute fader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    NoteDensity,
    RhythmDensity,
    Dynamics,
    Register,
    PitchRange,
    Mode,
    Articulation,
    Tension,
}

impl Attribute {
    pub const ALL: [Attribute; 8] = [
        Attribute::NoteDensity,
        Attribute::RhythmDensity,
        Attribute::Dynamics,
        Attribute::Register,
        Attribute::PitchRange,
        Attribute::Mode,
        Attribute::Articulation,
        Attribute::Tension,
    ];

    /// The name used by `moodfader continue --NAME X`.
    pub const fn cli_name(self) -> &'static str {
        match self {
            Attribute::NoteDensity => "note-density",
            Attribute::RhythmDensity => "rhythm-density",
            Attribute::Dynamics => "dynamics",
            Attribute::Register => "register",
            Attribute::PitchRange => "pitch-range",
            Attribute::Mode => "mode",
            Attribute::Articulation => "articulation",
            Attribute::Tension => "tension",
        }
    }

    /// Short label for a fader.
    pub const fn label(self) -> &'static str {
        match self {
            Attribute::NoteDensity => "Density",
            Attribute::RhythmDensity => "Rhythm",
            Attribute::Dynamics => "Dynamics",
            Attribute::Register => "Register",
            Attribute::PitchRange => "Range",
            Attribute::Mode => "Mode",
            Attribute::Articulation => "Legato",
            Attribute::Tension => "Tension",
        }
    }

    /// What the two ends of the fader mean.
    pub const fn ends(self) -> (&'static str, &'static str) {
        match self {
            Attribute::NoteDensity => ("sparse", "dense"),
            Attribute::RhythmDensity => ("plain", "busy"),
            Attribute::Dynamics => ("soft", "loud"),
            Attribute::Register => ("low", "high"),
            Attribute::PitchRange => ("narrow", "wide"),
            Attribute::Mode => ("minor", "major"),
            Attribute::Articulation => ("staccato", "legato"),
            Attribute::Tension => ("consonant", "tense"),
        }
    }

    /// The attribute's own unit, and the factor from its feature's value to that unit.
    pub const fn unit(self) -> (&'static str, f32) {
        match self {
            Attribute::NoteDensity => ("note onsets per second", 1.0),
            Attribute::RhythmDensity => ("fraction of 16th-note slots with an onset", 1.0),
            Attribute::Dynamics => ("MIDI velocity", 127.0),
            Attribute::Register => ("mean MIDI pitch", 1.0),
            Attribute::PitchRange => ("semitones", 1.0),
            Attribute::Mode => ("major minus minor key correlation", 1.0),
            Attribute::Articulation => ("duration over the gap to the next onset", 1.0),
            Attribute::Tension => ("fraction of dissonant intervals", 1.0),
        }
    }

    pub fn from_cli_name(name: &str) -> Option<Attribute> {
        Attribute::ALL.into_iter().find(|a| a.cli_name() == name)
    }
}

/// The feature each attribute is measured by (index into [`crate::feel::features::FEATURE_NAMES`]).
pub const fn feature_index(a: Attribute) -> usize {
    match a {
        Attribute::NoteDensity => 0,   // note_density
        Attribute::RhythmDensity => 1, // rhythm_density
        Attribute::Dynamics => 2,      // velocity
        Attribute::Register => 4,      // pitch_mean
        Attribute::PitchRange => 5,    // pitch_range
        Attribute::Mode => 6,          // mode
        Attribute::Articulation => 8,  // articulation
        Attribute::Tension => 11,      // dissonance
    }
}

/// Raw attribute values of a bar, in [`Attribute::ALL`] order.
pub fn raw_attributes(f: &crate::feel::features::Features) -> [f32; 8] {
    Attribute::ALL.map(|a| f[feature_index(a)])
}

/// Maps raw attribute values to fader values in [0, 1] over the training data's 5th–95th
/// percentile, so "0.8 note density" means the same thing everywhere.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttributeScale {
    pub p5: [f32; 8],
    pub p95: [f32; 8],
}

impl AttributeScale {
    /// Percentiles over the bars that have notes.
    pub fn fit(bars: &[crate::feel::features::Features]) -> AttributeScale {
        let mut p5 = [0.0; 8];
        let mut p95 = [1.0; 8];
        for (i, a) in Attribute::ALL.into_iter().enumerate() {
            let mut v: Vec<f32> = bars.iter().filter(|f| f[13] < 0.5).map(|f| f[feature_index(a)]).filter(|x| x.is_finite()).collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(f32::total_cmp);
            let at = |q: f32| v[((v.len() - 1) as f32 * q).round() as usize];
            p5[i] = at(0.05);
            p95[i] = at(0.95).max(p5[i] + 1e-6);
        }
        AttributeScale { p5, p95 }
    }

    /// Fader values in [0, 1].
    pub fn normalize(&self, raw: &[f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| {
            let x = (raw[i] - self.p5[i]) / (self.p95[i] - self.p5[i]);
            if x.is_finite() { x.clamp(0.0, 1.0) } else { 0.5 }
        })
    }

    /// Conditioning levels 0..[`crate::play::tokens::NUM_ATTRIBUTE_LEVELS`] for the tokens.
    pub fn levels(&self, raw: &[f32; 8]) -> [u32; 8] {
        let n = crate::play::tokens::NUM_ATTRIBUTE_LEVELS;
        self.normalize(raw).map(|x| ((x * n as f32) as u32).min(n - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_maps_percentiles_to_the_fader_range() {
        let bars: Vec<crate::feel::features::Features> = (0..101)
            .map(|i| {
                let mut f = [0.0; crate::feel::features::NUM_FEATURES];
                f[0] = i as f32; // note density 0..100
                f
            })
            .collect();
        let s = AttributeScale::fit(&bars);
        assert_eq!((s.p5[0], s.p95[0]), (5.0, 95.0));
        let mut raw = [0.0; 8];
        raw[0] = 50.0;
        assert!((s.normalize(&raw)[0] - 0.5).abs() < 1e-6);
        raw[0] = 1000.0;
        assert_eq!(s.levels(&raw)[0], 7);
        raw[0] = -3.0;
        assert_eq!(s.levels(&raw)[0], 0);
    }
}
