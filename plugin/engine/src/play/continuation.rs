//! The continuation model and its sampler: a decoder-only transformer over the token vocabulary
//! of [`crate::play::tokens`], run through ONNX Runtime with its key/value cache as inputs and outputs,
//! and a grammar-constrained sampler (temperature, nucleus, seed) that keeps to the heard key,
//! bounds polyphony and never writes a note past the bars it was asked for.
//!
//! Thread: worker / command line (never the audio thread)

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::feel::emotion::{ENV_MODEL_DIR, ModelOrigin};
use crate::feel::features::is_dissonant;
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
/// it). A cached step costs about 0.2 ms with 16 tokens cached and 0.6 ms with 480 (one core),
/// so a short window keeps eight bars inside the 300 ms budget. 192 rather than 288 costs 0.025
/// nats per token of validation loss (1.551 -> 1.576 on 120 validation pieces, replaying this
/// refill scheme) and takes eight bars' p99 from about 340 ms to about 255 ms.
pub const CACHE_WINDOW: usize = 192;
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
    /// Log-probability added to each pitch class (of the sampled pitch, in the heard key's frame):
    /// how the heard bars used the pitch classes ([`crate::play::steering::heard_pitch_prior`]),
    /// or None.
    pub pitch_prior: Option<[f32; 12]>,
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
            pitch_prior: None,
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

/// Grid steps of the 16th-note slots the feature `rhythm_density` counts.
const STEPS_PER_SLOT: u32 = crate::play::tokens::STEPS_PER_QUARTER / 4;

/// Gains of the governors: log-probability per unit of distance from a target.
pub mod gains {
    /// Ending the bar, per note written beyond the bar's target (or short of it), at most
    /// [`MAX_END_BIAS`] either way; the same per 16th-note slot for the rhythm governor.
    pub const DENSITY: f32 = 3.0;
    pub const MAX_END_BIAS: f32 = 8.0;
    /// Taken off a position per grid step it skips, per note still wanted per step left.
    pub const DENSITY_STEP: f32 = 1.0;
    /// Added to a position in a new slot (taken off per empty slot skipped), per slot still
    /// wanted per slot left.
    pub const RHYTHM_SLOT: f32 = 4.0;
    /// Durations tilt by this times (target − articulation so far) per unit of log length.
    pub const ARTICULATION: f32 = 4.0;
    /// Pitches gain this times (target − dissonant fraction so far) times their own fraction.
    pub const DISSONANCE: f32 = 30.0;
    /// The most a pitch class gains or loses when the mode is a whole fader range off target.
    pub const MODE: f32 = 20.0;
    /// Taken off a velocity bucket per 16 velocity steps it lies from the dynamics governor's aim.
    pub const DYNAMICS: f32 = 3.0;
    /// Taken off a pitch per squared octave it lies from the register governor's aim.
    pub const REGISTER: f32 = 2.0;
    /// Added to a pitch per octave it brings the bar's range nearer the range governor's target
    /// (taken off per octave it takes it further).
    pub const RANGE: f32 = 3.0;
    /// How far (semitones, velocity steps) a governor's aim may lie from its target while it
    /// makes up for the bar so far.
    pub const MAX_PITCH_CORRECTION: f32 = 12.0;
    pub const MAX_VELOCITY_CORRECTION: f32 = 32.0;
}

/// Pseudo-counts each governor starts with, at a neutral value, so its first notes are not
/// pushed by a measurement of nothing.
const PRIOR_PAIRS: f32 = 4.0;
const PRIOR_DISSONANCE: f32 = 0.2;
const PRIOR_NOTES: f32 = 2.0;
const PRIOR_ARTICULATION: f32 = 1.0;

/// Governors: the sampler's closed-loop hold on the attributes the user asks for. Each measures
/// what has been written so far the way the feature does (onsets per bar, filled 16th slots,
/// duration over the gap to the next onset, dissonant intervals at onsets, the key profiles'
/// mode) and tilts the model's next-token probabilities toward its target; what nobody asks
/// for is left to the model.
struct Governors {
    dissonance: Option<f32>,
    mode: Option<(f32, f32)>,
    articulation: Option<f32>,
    /// Dissonant and all intervals written (with the prior).
    dissonant: f32,
    pairs: f32,
    /// Duration-weighted pitch classes written.
    pc_hist: [f32; 12],
    /// Sum and count of duration / gap to the next onset over notes whose next onset is known
    /// (with the prior), and the notes at the current position waiting for theirs.
    artic_sum: f32,
    artic_n: f32,
    group_pos: u32,
    group_durs: Vec<u32>,
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
}

impl Governors {
    fn new(s: &SamplerSettings) -> Self {
        let mut gov = Self {
            dissonance: s.dissonance_target,
            mode: s.mode_target,
            articulation: s.articulation_target,
            dissonant: PRIOR_DISSONANCE * PRIOR_PAIRS,
            pairs: PRIOR_PAIRS,
            pc_hist: [0.0; 12],
            artic_sum: PRIOR_ARTICULATION * PRIOR_NOTES,
            artic_n: PRIOR_NOTES,
            group_pos: 0,
            group_durs: Vec::with_capacity(16),
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
        };
        gov.start_bar();
        gov
    }

    /// A bar starts as if it had already written [`PRIOR_NOTES`] notes on target.
    fn start_bar(&mut self) {
        self.vel_sum = self.velocity.unwrap_or(0.0) * PRIOR_NOTES;
        self.vel_n = PRIOR_NOTES;
        self.pitch_sum = self.register.unwrap_or(0.0) * PRIOR_NOTES;
        self.pitch_n = PRIOR_NOTES;
        self.lo = u8::MAX;
        self.hi = 0;
    }

    fn guide(&self, g: &BarGrammar, bar: &BarPlan) -> Guide {
        let mut guide = Guide::default();
        let next = g.pos.map_or(0, |p| p + 1);
        let end_bias = |excess: f32| (gains::DENSITY * excess).clamp(-gains::MAX_END_BIAS, gains::MAX_END_BIAS);
        if let Some(t) = bar.notes_target {
            let left = g.steps.saturating_sub(next).max(1) as f32;
            guide.step_bias = -gains::DENSITY_STEP * (t - g.notes as f32).max(0.0) / left;
            guide.end_bias += end_bias(g.notes as f32 + 0.5 - t);
        }
        if let Some(t) = bar.slots_target {
            let total = g.steps.div_ceil(STEPS_PER_SLOT).max(1);
            let t = t * total as f32;
            let left = total.saturating_sub(g.pos.map_or(0, |p| p / STEPS_PER_SLOT + 1)).max(1) as f32;
            let want = (t - self.num_slots as f32) / left;
            guide.new_slot_bias = gains::RHYTHM_SLOT * want.clamp(-1.0, 2.0);
            guide.skip_slot_bias = -gains::RHYTHM_SLOT * want.max(0.0);
            guide.end_bias += end_bias(self.num_slots as f32 + 0.5 - t);
        }
        if let Some(t) = self.articulation {
            guide.duration_tilt = gains::ARTICULATION * (t - self.artic_sum / self.artic_n);
        }
        if let Some(t) = self.dissonance {
            guide.dissonance_bias = gains::DISSONANCE * (t - self.dissonant / self.pairs);
        }
        let pitch_next = g.phase == Phase::NeedPitch || (g.phase == Phase::Free && g.pos.is_some());
        if let Some((target, span)) = self.mode
            && pitch_next
        {
            guide.mode_pull = mode_pull(&self.pc_hist, target, span, gains::MODE);
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
        }
        guide
    }

    /// The notes waiting at the last position learn their gap to the next onset.
    fn close_group(&mut self, next_onset: u32) {
        let gap = next_onset.saturating_sub(self.group_pos).max(1) as f32;
        for &d in &self.group_durs {
            self.artic_sum += (d as f32 / gap).clamp(0.0, 2.0);
            self.artic_n += 1.0;
        }
        self.group_durs.clear();
    }

    fn on_position(&mut self, pos: u32) {
        self.close_group(pos);
        self.group_pos = pos;
        let slot = (pos / STEPS_PER_SLOT).min(255);
        let bit = 1u64 << (slot % 64);
        if self.slots[(slot / 64) as usize] & bit == 0 {
            self.slots[(slot / 64) as usize] |= bit;
            self.num_slots += 1;
        }
    }

    /// A note of written `pitch` and `velocity` at `pos` for `dur` steps; `sounding` holds what
    /// sounded before it.
    fn on_note(&mut self, pitch: u8, velocity: u8, pos: u32, dur: u32, sounding: &[(u32, u8)], bar_start_abs: u32) {
        self.vel_sum += velocity as f32;
        self.vel_n += 1.0;
        self.pitch_sum += pitch as f32;
        self.pitch_n += 1.0;
        self.lo = self.lo.min(pitch);
        self.hi = self.hi.max(pitch);
        let (d, n) = intervals_with(pitch, sounding, bar_start_abs + pos);
        self.dissonant += d as f32;
        self.pairs += n as f32;
        self.pc_hist[(pitch % 12) as usize] += dur as f32;
        if self.group_durs.len() < self.group_durs.capacity() {
            self.group_durs.push(dur);
        }
    }

    fn on_bar_end(&mut self, steps: u32) {
        self.close_group(steps);
        self.group_pos = 0;
        self.slots = [0; 4];
        self.num_slots = 0;
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

/// The key/value cache of one generation.
struct Cache {
    keys: Vec<ort::value::DynValue>,
    values: Vec<ort::value::DynValue>,
    /// Tokens the cache holds, in order (position i = history[i]).
    history: Vec<u32>,
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

    fn empty_cache(&self) -> Result<Cache> {
        let a = &self.manifest.architecture;
        let empty = || -> Result<ort::value::DynValue> {
            let t = ort::value::Tensor::<f32>::from_array(([1usize, a.heads, 0, self.head_dim], Vec::<f32>::new()))
                .map_err(|e| anyhow!("{e}"))?;
            Ok(t.into_dyn())
        };
        let mut keys = Vec::with_capacity(a.layers);
        let mut values = Vec::with_capacity(a.layers);
        for _ in 0..a.layers {
            keys.push(empty()?);
            values.push(empty()?);
        }
        Ok(Cache { keys, values, history: Vec::with_capacity(a.context) })
    }

    /// Feeds `tokens` after what the cache holds; `logits` gets the next-token logits.
    fn feed(&mut self, cache: &mut Cache, tokens: &[u32], logits: &mut Vec<f32>) -> Result<()> {
        let t = tokens.len();
        let p = cache.history.len();
        if t == 0 || p + t > self.context() {
            bail!("feed of {t} tokens after {p} does not fit the context of {}", self.context());
        }
        let ids: Vec<i64> = tokens.iter().map(|&x| x as i64).collect();
        let pos: Vec<i64> = (p..p + t).map(|x| x as i64).collect();
        let mut bias = vec![0.0f32; t * (p + t)];
        for i in 0..t {
            for j in (p + i + 1)..(p + t) {
                bias[i * (p + t) + j] = -1e9;
            }
        }
        let tensor_i64 = |v: Vec<i64>| -> Result<ort::value::DynValue> {
            Ok(ort::value::Tensor::from_array(([1usize, t], v)).map_err(|e| anyhow!("{e}"))?.into_dyn())
        };
        let mut inputs: Vec<(Cow<'_, str>, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(3 + 2 * cache.keys.len());
        inputs.push((Cow::Borrowed("tokens"), tensor_i64(ids)?.into()));
        inputs.push((Cow::Borrowed("positions"), tensor_i64(pos)?.into()));
        let bias = ort::value::Tensor::from_array(([t, p + t], bias)).map_err(|e| anyhow!("{e}"))?;
        inputs.push((Cow::Borrowed("attn_bias"), bias.into_dyn().into()));
        for (l, (k, v)) in self.past_names.iter().enumerate() {
            inputs.push((Cow::Borrowed(k.as_str()), (&cache.keys[l]).into()));
            inputs.push((Cow::Borrowed(v.as_str()), (&cache.values[l]).into()));
        }
        let mut outputs = self.session.run(inputs).map_err(|e| anyhow!("{e}"))?;
        {
            let (shape, data) = outputs["logits"].try_extract_tensor::<f32>().map_err(|e| anyhow!("{e}"))?;
            if shape.len() != 2 || shape[1] as u32 != VOCAB_SIZE {
                bail!("model logits have shape {shape:?}, expected [1, {VOCAB_SIZE}]");
            }
            logits.clear();
            logits.extend_from_slice(data);
        }
        for (l, (k, v)) in self.present_names.iter().enumerate() {
            cache.keys[l] = outputs.remove(k).ok_or_else(|| anyhow!("model has no output {k}"))?;
            cache.values[l] = outputs.remove(v).ok_or_else(|| anyhow!("model has no output {v}"))?;
        }
        cache.history.extend_from_slice(tokens);
        Ok(())
    }

    /// Feeds `tokens`, first rebuilding the cache from the recent history (at a bar line) when
    /// they would not fit the context.
    fn feed_sliding(&mut self, cache: &mut Cache, tokens: &[u32], logits: &mut Vec<f32>, refills: &mut usize) -> Result<()> {
        let ctx = self.context().min(CACHE_WINDOW);
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
            *cache = self.empty_cache()?;
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
                let guide = gov.guide(&g, bar);
                let tok = sample(&logits, &g, settings, &guide, &sounding, bar_start_abs, &mut rng);
                let Some(tok) = tok else { break };
                if tok == BAR {
                    break;
                }
                out.num_tokens += 1;
                match Token::from_id(tok) {
                    Some(Token::Position(p)) => {
                        gov.on_position(p);
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
                        gov.on_note(pitch, velocity, pos, dur, &sounding, bar_start_abs);
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
            gov.on_bar_end(steps);
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
    /// Added to a pitch's logit times its dissonant fraction against what sounds.
    dissonance_bias: f32,
    /// Added to the logit of a pitch written in each pitch class.
    mode_pull: [f32; 12],
    /// The velocity the dynamics governor aims the next note at.
    velocity_aim: Option<f32>,
    /// The written pitch the register governor pulls the next note toward.
    pitch_aim: Option<f32>,
    /// The bar's lowest and highest written pitch so far and the range governor's target.
    range: Option<(u8, u8, f32)>,
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
                if let Some(prior) = &s.pitch_prior {
                    x += prior[(p % 12) as usize];
                }
                x += guide.mode_pull[(s.written(p) % 12) as usize] + guide.pitch_bias(s.written(p));
                if guide.dissonance_bias != 0.0 {
                    let (d, n) = intervals_with(s.written(p), sounding, at);
                    if n > 0 {
                        x += guide.dissonance_bias * d as f32 / n as f32;
                    }
                }
                cand.push((PITCH_BASE + p as u32, x));
            }
        }
    };
    match g.phase {
        Phase::Free => {
            cand.push((BAR, logit(BAR) + guide.end_bias));
            if room {
                let first = g.pos.map_or(0, |p| p + 1);
                for q in first..g.steps.min(NUM_POSITIONS) {
                    if sounding_at(q) < s.max_polyphony {
                        let mut x = logit(POSITION_BASE + q) + guide.step_bias * (q - first) as f32;
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
                cand.push((DURATION_BASE + d, logit(DURATION_BASE + d) + guide.duration_tilt * (DURATION_STEPS[d as usize] as f32).ln()));
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
        let guide = gov.guide(&g, &plan(Some(4.0), None));
        assert!(guide.end_bias < 0.0 && guide.step_bias < 0.0, "{guide:?}");
        // Wanted dissonance above the prior, legato above it: both push up.
        assert!(guide.dissonance_bias > 0.0 && guide.duration_tilt > 0.0, "{guide:?}");
        // Six notes written where four were wanted: end the bar.
        g.notes = 6;
        assert!(gov.guide(&g, &plan(Some(4.0), None)).end_bias > 0.0);
        // A C major triad written, a minor mode wanted: the pitch class pulled hardest is one that
        // makes what is written measure more minor, and the one pushed away hardest more major.
        gov.on_position(0);
        let sounding = [];
        for p in [60u8, 64, 67] {
            gov.on_note(p, 80, 0, 3, &sounding, 0);
        }
        let g = grammar(Phase::NeedPitch, Some(0), None);
        let pull = gov.guide(&g, &plan(None, None)).mode_pull;
        let mode_with = |pc: usize| {
            let mut h = gov.pc_hist;
            h[pc] += MODE_PROBE_STEPS;
            crate::listen::keyfind::find_key(&h).mode
        };
        let now = crate::listen::keyfind::find_key(&gov.pc_hist).mode;
        let (top, bottom) = (0..12).fold((0, 0), |(t, b), pc| (if pull[pc] > pull[t] { pc } else { t }, if pull[pc] < pull[b] { pc } else { b }));
        assert!(mode_with(top) < now && mode_with(bottom) > now, "{pull:?}");
        // Staccato quarters (3 steps of a 12-step gap) bring the articulation governor's measure
        // down, so it pushes harder for long notes than before.
        let before = gov.guide(&g, &plan(None, None)).duration_tilt;
        gov.on_position(12);
        gov.on_bar_end(48);
        assert!(gov.guide(&g, &plan(None, None)).duration_tilt > before);
        // Rhythm: one slot of twelve filled where all are wanted: favour new slots, keep going.
        let mut gov = Governors::new(&SamplerSettings::default());
        gov.on_position(0);
        let g = grammar(Phase::Free, Some(0), Some(60));
        let r = gov.guide(&g, &plan(None, Some(1.0)));
        assert!(r.new_slot_bias > 0.0 && r.skip_slot_bias < 0.0 && r.end_bias < 0.0, "{r:?}");
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
