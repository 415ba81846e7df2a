//! Every host-automatable parameter of product.md, with IDs that never change once released,
//! their ranges, units and display text. Saved enums use stable `#[id]`s so presets survive renames.
//!
//! Thread: any (parameters are atomics inside nice-plug)

use std::sync::Arc;

use moodfader_engine::Attribute;
use nice_plug::prelude::*;

/// Panel size in logical pixels at zoom 1: the size a new instance opens at.
pub const EDITOR_WIDTH: u32 = 960;
pub const EDITOR_HEIGHT: u32 = 700;
/// The smallest and largest panel (logical pixels) the host or the resize corner may make.
pub const EDITOR_MIN: [f32; 2] = [760.0, 600.0];
pub const EDITOR_MAX: [f32; 2] = [2560.0, 1800.0];

/// A saved panel size brought within [`EDITOR_MIN`]..[`EDITOR_MAX`] (a damaged project's NaN or
/// zero gives the default size).
pub fn clamp_panel_size(size: [f32; 2]) -> [f32; 2] {
    let default = [EDITOR_WIDTH as f32, EDITOR_HEIGHT as f32];
    std::array::from_fn(|i| if size[i].is_finite() && size[i] > 0.0 { size[i].clamp(EDITOR_MIN[i], EDITOR_MAX[i]) } else { default[i] })
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerMode {
    #[id = "demand"]
    #[name = "On demand"]
    OnDemand,
    #[id = "follow"]
    #[name = "Follow"]
    Follow,
    #[id = "call"]
    #[name = "Call and response"]
    CallResponse,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSource {
    #[id = "midi"]
    #[name = "MIDI"]
    Midi,
    #[id = "audio"]
    #[name = "Audio"]
    Audio,
    #[id = "both"]
    #[name = "MIDI + audio"]
    Both,
}

/// One attribute fader: its value over the training data's 5th–95th percentile, and whether it
/// follows the valence/arousal target ("auto").
#[derive(Params)]
pub struct AttributeParam {
    #[id = "v"]
    pub value: FloatParam,
    #[id = "auto"]
    pub auto: BoolParam,
}

impl AttributeParam {
    fn new(a: Attribute) -> Self {
        let (lo, hi) = a.ends();
        Self {
            value: FloatParam::new(a.label(), 0.5, FloatRange::Linear { min: 0.0, max: 1.0 })
                .with_step_size(0.01)
                .with_value_to_string(Arc::new(move |v| {
                    if v <= 0.005 {
                        format!("{v:.2} ({lo})")
                    } else if v >= 0.995 {
                        format!("{v:.2} ({hi})")
                    } else {
                        format!("{v:.2}")
                    }
                }))
                .with_string_to_value(Arc::new(|s| s.split_whitespace().next()?.parse().ok())),
            auto: BoolParam::new(format!("{} auto", a.label()), true)
                .with_value_to_string(Arc::new(|on| if on { "Auto".into() } else { "Manual".into() }))
                .with_string_to_value(Arc::new(|s| match s.trim().to_ascii_lowercase().as_str() {
                    "auto" | "on" | "1" | "true" => Some(true),
                    "manual" | "off" | "0" | "false" => Some(false),
                    _ => None,
                })),
        }
    }
}

/// The eight attribute faders. IDs are `<prefix>_v` / `<prefix>_auto`.
#[derive(Params)]
pub struct AttributeParams {
    #[nested(id_prefix = "ndens", group = "Attributes")]
    pub note_density: AttributeParam,
    #[nested(id_prefix = "rdens", group = "Attributes")]
    pub rhythm_density: AttributeParam,
    #[nested(id_prefix = "dyn", group = "Attributes")]
    pub dynamics: AttributeParam,
    #[nested(id_prefix = "reg", group = "Attributes")]
    pub register: AttributeParam,
    #[nested(id_prefix = "range", group = "Attributes")]
    pub pitch_range: AttributeParam,
    #[nested(id_prefix = "mode", group = "Attributes")]
    pub mode: AttributeParam,
    #[nested(id_prefix = "artic", group = "Attributes")]
    pub articulation: AttributeParam,
    #[nested(id_prefix = "tens", group = "Attributes")]
    pub tension: AttributeParam,
}

impl AttributeParams {
    pub fn get(&self, a: Attribute) -> &AttributeParam {
        match a {
            Attribute::NoteDensity => &self.note_density,
            Attribute::RhythmDensity => &self.rhythm_density,
            Attribute::Dynamics => &self.dynamics,
            Attribute::Register => &self.register,
            Attribute::PitchRange => &self.pitch_range,
            Attribute::Mode => &self.mode,
            Attribute::Articulation => &self.articulation,
            Attribute::Tension => &self.tension,
        }
    }
}

/// "+0.42", "-0.10", and "0.00" (never "-0.00", which would not read back the same).
fn signed(v: f32) -> String {
    let rounded = (v * 100.0).round() / 100.0;
    if rounded == 0.0 { "0.00".into() } else { format!("{rounded:+.2}") }
}

#[derive(Params)]
pub struct MoodfaderParams {
    /// The panel's size in logical pixels, saved with the project: the panel reopens at the size
    /// the user last dragged it to (GUI thread only).
    #[persist = "panel-size"]
    pub panel_size: std::sync::RwLock<[f32; 2]>,
    /// The listener's calibration points, each (estimate valence, estimate arousal, felt valence,
    /// felt arousal): saved with the project, fitted again on load.
    #[persist = "calibration"]
    pub calibration_points: std::sync::RwLock<Vec<[f32; 4]>>,

    #[id = "tgt_val"]
    pub target_valence: FloatParam,
    #[id = "tgt_aro"]
    pub target_arousal: FloatParam,
    /// 0 = continue as heard, 1 = fully steered to the target.
    #[id = "steer"]
    pub steer: FloatParam,

    #[nested(group = "Attributes")]
    pub attributes: AttributeParams,

    #[id = "cont_on"]
    pub continuation: BoolParam,
    #[id = "trigger"]
    pub trigger: EnumParam<TriggerMode>,
    #[id = "bars"]
    pub bars: IntParam,
    #[id = "temp"]
    pub temperature: FloatParam,
    #[id = "seed"]
    pub seed: IntParam,
    /// Momentary "generate now" for automation and the panel's button.
    #[id = "gen"]
    pub generate: BoolParam,
    /// A MIDI note that triggers generation (128 = off).
    #[id = "trig_note"]
    pub trigger_note: IntParam,
    #[id = "out_ch"]
    pub out_channel: IntParam,
    #[id = "in_src"]
    pub input_source: EnumParam<InputSource>,
    #[id = "preview"]
    pub preview: BoolParam,
    /// Pass the heard MIDI through to the output.
    #[id = "thru"]
    pub thru: BoolParam,
    /// Send the live estimate as MIDI CC 20 (valence) and 21 (arousal) on the output channel.
    #[id = "mood_cc"]
    pub mood_cc: BoolParam,
    /// The host's bypass: audio and MIDI pass through, nothing is generated or sent.
    #[id = "bypass"]
    pub bypass: BoolParam,
}

impl Default for MoodfaderParams {
    fn default() -> Self {
        Self {
            calibration_points: std::sync::RwLock::new(Vec::new()),
            panel_size: std::sync::RwLock::new([EDITOR_WIDTH as f32, EDITOR_HEIGHT as f32]),
            target_valence: FloatParam::new("Target valence", 0.0, FloatRange::Linear { min: -1.0, max: 1.0 })
                .with_step_size(0.01)
                .with_value_to_string(Arc::new(signed)),
            target_arousal: FloatParam::new("Target arousal", 0.0, FloatRange::Linear { min: -1.0, max: 1.0 })
                .with_step_size(0.01)
                .with_value_to_string(Arc::new(signed)),
            steer: FloatParam::new("Steer", 0.5, FloatRange::Linear { min: 0.0, max: 1.0 })
                .with_unit(" %")
                .with_value_to_string(formatters::v2s_f32_percentage(0))
                .with_string_to_value(formatters::s2v_f32_percentage()),
            attributes: AttributeParams {
                note_density: AttributeParam::new(Attribute::NoteDensity),
                rhythm_density: AttributeParam::new(Attribute::RhythmDensity),
                dynamics: AttributeParam::new(Attribute::Dynamics),
                register: AttributeParam::new(Attribute::Register),
                pitch_range: AttributeParam::new(Attribute::PitchRange),
                mode: AttributeParam::new(Attribute::Mode),
                articulation: AttributeParam::new(Attribute::Articulation),
                tension: AttributeParam::new(Attribute::Tension),
            },
            continuation: BoolParam::new("Continuation", false),
            trigger: EnumParam::new("Trigger", TriggerMode::OnDemand),
            bars: IntParam::new("Bars", 4, IntRange::Linear { min: 1, max: 16 }).with_unit(" bars"),
            temperature: FloatParam::new("Temperature", 1.0, FloatRange::Linear { min: 0.1, max: 2.0 })
                .with_step_size(0.01),
            seed: IntParam::new("Seed", 1, IntRange::Linear { min: 0, max: 65_535 }),
            generate: BoolParam::new("Generate", false),
            trigger_note: IntParam::new("Trigger note", 128, IntRange::Linear { min: 0, max: 128 })
                .with_value_to_string(Arc::new(|v| {
                    if v >= 128 { "Off".into() } else { formatters::v2s_i32_key_formatter()(v) }
                }))
                .with_string_to_value(Arc::new(|s| {
                    if s.trim().eq_ignore_ascii_case("off") { Some(128) } else { formatters::s2v_i32_key_formatter()(s) }
                })),
            out_channel: IntParam::new("Output channel", 1, IntRange::Linear { min: 1, max: 16 }),
            input_source: EnumParam::new("Input", InputSource::Midi),
            preview: BoolParam::new("Preview voice", false),
            thru: BoolParam::new("MIDI thru", true),
            mood_cc: BoolParam::new("Mood CC out", false),
            bypass: BoolParam::new("Bypass", false).make_bypass(),
        }
    }
}

/// A factory preset: the mood controls it sets (everything else is left as it is).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub what: &'static str,
    pub target_valence: f32,
    pub target_arousal: f32,
    pub steer: f32,
    pub trigger: TriggerMode,
}

/// The factory presets a producer reaches for: all faders on auto, continuation on.
pub const PRESETS: [Preset; 5] = [
    Preset { name: "Brighten", what: "same energy, happier", target_valence: 0.7, target_arousal: 0.2, steer: 0.7, trigger: TriggerMode::OnDemand },
    Preset { name: "Darken", what: "same energy, sadder and tenser", target_valence: -0.7, target_arousal: 0.1, steer: 0.7, trigger: TriggerMode::OnDemand },
    Preset { name: "Calm down", what: "softer, sparser, slower-feeling", target_valence: 0.3, target_arousal: -0.8, steer: 0.8, trigger: TriggerMode::OnDemand },
    Preset { name: "Build up", what: "louder, denser, more driving", target_valence: 0.3, target_arousal: 0.9, steer: 0.8, trigger: TriggerMode::OnDemand },
    Preset { name: "Follow me", what: "keeps playing along as heard", target_valence: 0.0, target_arousal: 0.0, steer: 0.0, trigger: TriggerMode::Follow },
];

/// How many parameters a factory preset sets: the mood target, steer, trigger, continuation on,
/// and the eight faders' "auto".
const PRESET_PARAMS: usize = 13;

/// A factory preset's parameter values by parameter ID (nested IDs carry their prefix), as CLAP
/// hosts load it through `clap.preset-load`; the same values [`crate::editor::apply_preset`] sets.
const fn preset_values(p: &Preset) -> [(&'static str, PresetValue); PRESET_PARAMS] {
    let trigger = match p.trigger {
        TriggerMode::OnDemand => "demand",
        TriggerMode::Follow => "follow",
        TriggerMode::CallResponse => "call",
    };
    [
        ("tgt_val", PresetValue::Float(p.target_valence)),
        ("tgt_aro", PresetValue::Float(p.target_arousal)),
        ("steer", PresetValue::Float(p.steer)),
        ("trigger", PresetValue::Enum(trigger)),
        ("cont_on", PresetValue::Bool(true)),
        ("ndens_auto", PresetValue::Bool(true)),
        ("rdens_auto", PresetValue::Bool(true)),
        ("dyn_auto", PresetValue::Bool(true)),
        ("reg_auto", PresetValue::Bool(true)),
        ("range_auto", PresetValue::Bool(true)),
        ("mode_auto", PresetValue::Bool(true)),
        ("artic_auto", PresetValue::Bool(true)),
        ("tens_auto", PresetValue::Bool(true)),
    ]
}

const PRESET_VALUES: [[(&str, PresetValue); PRESET_PARAMS]; 5] = [
    preset_values(&PRESETS[0]),
    preset_values(&PRESETS[1]),
    preset_values(&PRESETS[2]),
    preset_values(&PRESETS[3]),
    preset_values(&PRESETS[4]),
];

/// The factory presets as CLAP preset discovery lists them (the patched nice-plug's
/// `ClapPlugin::CLAP_FACTORY_PRESETS`); the load keys never change once released.
pub const CLAP_PRESETS: [ClapFactoryPreset; 5] = [
    ClapFactoryPreset { load_key: "brighten", name: PRESETS[0].name, description: PRESETS[0].what, values: &PRESET_VALUES[0] },
    ClapFactoryPreset { load_key: "darken", name: PRESETS[1].name, description: PRESETS[1].what, values: &PRESET_VALUES[1] },
    ClapFactoryPreset { load_key: "calm-down", name: PRESETS[2].name, description: PRESETS[2].what, values: &PRESET_VALUES[2] },
    ClapFactoryPreset { load_key: "build-up", name: PRESETS[3].name, description: PRESETS[3].what, values: &PRESET_VALUES[3] },
    ClapFactoryPreset { load_key: "follow-me", name: PRESETS[4].name, description: PRESETS[4].what, values: &PRESET_VALUES[4] },
];
