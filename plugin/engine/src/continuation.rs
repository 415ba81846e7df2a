//! The continuation model and its sampler: a decoder-only transformer over the token vocabulary
//! of [`crate::tokens`], run through ONNX Runtime with its key/value cache as inputs and outputs,
//! and a grammar-constrained sampler (temperature, nucleus, seed) that keeps to the heard key,
//! bounds polyphony and never writes a note past the bars it was asked for.
//!
//! Thread: worker / command line (never the audio thread)

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::attributes::AttributeScale;
use crate::emotion::{ENV_MODEL_DIR, ModelOrigin};
use crate::runtime::{session_from_bytes, sha256_hex};
use crate::steering::{EmotionBridge, Scale};
use crate::tokens::{
    BAR, BOS, DURATION_BASE, DURATION_STEPS, GridNote, NUM_ATTRIBUTES, NUM_POSITIONS, NUM_VELOCITY_BUCKETS, PITCH_BASE,
    POSITION_BASE, TOKEN_SPEC_VERSION, Token, VELOCITY_BASE, VOCAB_SIZE, bucket_velocity,
};

pub const MODEL_FILE: &str = "continuation.onnx";
pub const MANIFEST_FILE: &str = "continuation.json";
/// The committed model, built into every binary.
pub const EMBEDDED_MODEL: &[u8] = include_bytes!("../../../models/continuation.onnx");
pub const EMBEDDED_MANIFEST: &str = include_str!("../../../models/continuation.json");

/// Most primer tokens fed before generating (the rest of what was heard is left out, from the
/// front, at a bar line). Keeps the first bar fast.
pub const MAX_PRIMER_TOKENS: usize = 192;
/// Longest the key/value cache grows before it is rebuilt from the recent bars (at most half of
/// it). A cached step costs about 0.2 ms with 16 tokens cached and 0.6 ms with 480 (one core),
/// so a short window keeps eight bars inside the 300 ms budget.
pub const CACHE_WINDOW: usize = 288;
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
    /// Log-probability taken off a pitch outside the scale.
    pub key_penalty: f32,
    /// Most notes sounding at once.
    pub max_polyphony: usize,
    pub max_notes_per_bar: usize,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 0.95, seed: 1, scale: None, key_penalty: 4.0, max_polyphony: 10, max_notes_per_bar: 48 }
    }
}

/// One bar to generate: its length in grid steps and its conditioning levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarPlan {
    pub steps: u32,
    pub levels: [u32; 8],
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
    /// [`crate::tokens::encode`] writes them; may be empty). `on_bar(bar, notes)` gets each bar as
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
        let primer: Vec<u32> = primer.iter().copied().filter(|&t| t != crate::tokens::EOS && t != crate::tokens::PAD).collect();
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
                let tok = sample(&logits, &g, settings, &sounding, bar_start_abs, &mut rng);
                let Some(tok) = tok else { break };
                if tok == BAR {
                    break;
                }
                out.num_tokens += 1;
                match Token::from_id(tok) {
                    Some(Token::Position(p)) => {
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
                        bar_notes.push(GridNote {
                            bar: b as u32,
                            position: pos,
                            pitch: g.pitch,
                            velocity: bucket_velocity(g.velocity),
                            duration_steps: dur,
                        });
                        sounding.push((bar_start_abs + pos + dur, g.pitch));
                        g.notes += 1;
                        g.phase = Phase::Free;
                    }
                    _ => {}
                }
                self.feed_sliding(&mut cache, &[tok], &mut logits, &mut out.num_refills)?;
                out.num_model_calls += 1;
            }
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

/// Picks the next token among those the grammar allows; `None` when nothing is allowed (the
/// bar ends).
fn sample(
    logits: &[f32],
    g: &BarGrammar,
    s: &SamplerSettings,
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
        (MIN_PITCH..=MAX_PITCH).contains(&p)
            && g.last_pitch.is_none_or(|q| p > q)
            && !sounding.iter().any(|&(e, q)| q == p && e > at)
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
                cand.push((PITCH_BASE + p as u32, x));
            }
        }
    };
    match g.phase {
        Phase::Free => {
            cand.push((BAR, logit(BAR)));
            if room {
                let first = g.pos.map_or(0, |p| p + 1);
                for q in first..g.steps.min(NUM_POSITIONS) {
                    if sounding_at(q) < s.max_polyphony {
                        cand.push((POSITION_BASE + q, logit(POSITION_BASE + q)));
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
                cand.push((VELOCITY_BASE + v, logit(VELOCITY_BASE + v)));
            }
        }
        Phase::NeedDuration => {
            for d in 0..DURATION_STEPS.len() as u32 {
                cand.push((DURATION_BASE + d, logit(DURATION_BASE + d)));
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
            if let Some(t) = sample(&logits, &g, &settings, &[], 0, &mut rng) {
                match Token::from_id(t).unwrap() {
                    Token::Bar => {}
                    Token::Position(p) => assert!(p > 12 && p < 48, "trial {trial}: position {p}"),
                    Token::Pitch(p) => assert!(p > 64 && p <= MAX_PITCH, "trial {trial}: pitch {p}"),
                    other => panic!("trial {trial}: {other:?} not allowed between notes"),
                }
            }
            let g = grammar(Phase::NeedDuration, Some(12), Some(64));
            let t = sample(&logits, &g, &settings, &[], 0, &mut rng).unwrap();
            assert!(matches!(Token::from_id(t), Some(Token::Duration(_))));
        }
    }

    #[test]
    fn polyphony_is_bounded_and_key_penalty_applies() {
        let mut rng = SplitMix64::new(3);
        let mut logits = vec![0.0f32; VOCAB_SIZE as usize];
        logits[(PITCH_BASE + 61) as usize] = 5.0; // C#, out of C major
        let settings = SamplerSettings {
            scale: Some(Scale { tonic: 0, is_major: true, harmonic: false }),
            key_penalty: 100.0,
            max_polyphony: 2,
            ..Default::default()
        };
        let g = grammar(Phase::NeedPitch, Some(0), None);
        for _ in 0..100 {
            let t = sample(&logits, &g, &settings, &[], 0, &mut rng).unwrap();
            let Some(Token::Pitch(p)) = Token::from_id(t) else { panic!() };
            assert!(settings.scale.unwrap().contains(p), "pitch {p}");
        }
        // Two notes sound until step 24: no new pitch at step 0, no position before 24.
        let g = grammar(Phase::Free, Some(0), Some(60));
        for _ in 0..100 {
            let t = sample(&logits, &g, &settings, &[(24, 48), (24, 52)], 0, &mut rng).unwrap();
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
                let t = sample(&logits, &g, &settings, &sounding, 48, &mut rng).unwrap();
                assert_ne!(Token::from_id(t), Some(Token::Pitch(60)), "struck again at step {pos}");
            }
        }
        // Once it has ended, it may start again.
        let g = grammar(Phase::NeedPitch, Some(40), None);
        let t = sample(&logits, &g, &settings, &sounding, 48, &mut rng).unwrap();
        assert_eq!(Token::from_id(t), Some(Token::Pitch(60)));
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
