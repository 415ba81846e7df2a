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

    pub fn from_cli_name(name: &str) -> Option<Attribute> {
        Attribute::ALL.into_iter().find(|a| a.cli_name() == name)
    }
}
