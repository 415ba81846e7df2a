//! How well the continuation obeys: attribute control with Music FaderNets' metrics (linearity,
//! consistency, restrictiveness), emotion control read back by the project's own estimator,
//! staying in key, and staying inside the asked bars. `cargo xtask train continuation` writes
//! these into the model's manifest; `tests/continuation_control.rs` re-measures a smaller grid.
//!
//! Thread: command line / tests

use anyhow::Result;
use serde::Serialize;

use crate::Attribute;
use crate::feel::emotion::EmotionModel;
use crate::feel::features::{context_vectors, features_for_bars};
use crate::listen::notes::{BarWindow, Note};
use crate::play::attributes::raw_attributes;
use crate::play::compose;
use crate::play::compose::{ContinueOptions, bars_after, continue_notes};
use crate::play::continuation::ContinuationModel;
use crate::play::steering::{Mode, SteerRequest, heard_key};

/// A primer: heard notes and their bars.
#[derive(Debug, Clone)]
pub struct Primer {
    pub name: String,
    pub notes: Vec<Note>,
    pub bars: Vec<BarWindow>,
}

/// Primers from the repository alone: the demo's three 8-bar moods (calm C major, tense A minor,
/// bright G major) and the whole demo.
pub fn demo_primers(demo: &crate::listen::midifile::Piece) -> Vec<Primer> {
    let mut out = Vec::new();
    for (name, from, to) in [("demo bars 1-8 (calm)", 0, 8), ("demo bars 9-16 (tense)", 8, 16), ("demo bars 17-24 (bright)", 16, 24)] {
        let to = to.min(demo.bars.len());
        if from >= to {
            continue;
        }
        let bars = demo.bars[from..to].to_vec();
        let (s, e) = (bars[0].start_beats, bars[bars.len() - 1].start_beats + bars[bars.len() - 1].len_beats);
        let notes = demo.notes.iter().filter(|n| n.onset_beats >= s && n.onset_beats < e).copied().collect();
        out.push(Primer { name: name.into(), notes, bars });
    }
    out.push(Primer { name: "demo, whole".into(), notes: demo.notes.clone(), bars: demo.bars.clone() });
    out
}

/// Primers the continuation model never saw: the first `bars` bars of `n` pieces of the token
/// export's validation split (every 10th group of [`crate::lab::export::continuation_corpus`] in
/// sorted order), spread evenly over it.
pub fn heldout_primers(data: &std::path::Path, n: usize, bars: usize) -> Vec<Primer> {
    split_primers(data, n, bars, true, None)
}

/// Primers from pieces the continuation model trained on (none of [`heldout_primers`]' split):
/// what the bridge is calibrated on, so the evaluation's primers stay unseen by it too.
pub fn training_primers(data: &std::path::Path, n: usize, bars: usize) -> Vec<Primer> {
    split_primers(data, n, bars, false, None)
}

/// `n` primers of `bars` bars spread evenly over one split of the continuation corpus (the
/// validation split or the training split), from one data set only when `set` names it (the
/// first part of a piece's id: emopia, pop1k7, pop909, vgmidi).
pub fn split_primers(data: &std::path::Path, n: usize, bars: usize, validation: bool, set: Option<&str>) -> Vec<Primer> {
    let files = crate::lab::export::continuation_corpus(data);
    let valid: Vec<_> = files.into_iter().filter(|e| e.valid == validation && set.is_none_or(|s| e.id.split('/').next() == Some(s))).collect();
    let step = (valid.len() / n.max(1)).max(1);
    valid
        .iter()
        .step_by(step)
        .filter_map(|entry| {
            let piece = crate::lab::export::read_corpus_piece(entry).ok()?;
            // Skip a silent opening: start at the first bar with notes.
            let first = piece.bars.iter().position(|b| piece.notes.iter().any(|n| !n.is_drum() && n.onset_beats >= b.start_beats && n.onset_beats < b.start_beats + b.len_beats))?;
            let bars_v: Vec<BarWindow> = piece.bars.iter().skip(first).take(bars).copied().collect();
            let (s, last) = (bars_v.first()?.start_beats, bars_v.last()?);
            let e = last.start_beats + last.len_beats;
            let notes = piece.notes.iter().filter(|n| n.onset_beats >= s && n.onset_beats < e).copied().collect();
            Some(Primer { name: entry.id.clone(), notes, bars: bars_v })
        })
        .take(n)
        .collect()
}

/// The size of the evaluation grid.
#[derive(Debug, Clone, Copy)]
pub struct EvalConfig {
    pub levels: usize,
    pub seeds: u64,
    pub bars: u32,
    pub emotion_bars: u32,
    pub temperature: f32,
    /// Which faders to sweep: bit i for [`Attribute::ALL`]`[i]`.
    pub attributes: u8,
    /// Whether to run the emotion grid.
    pub emotion: bool,
}

impl EvalConfig {
    pub const FULL: EvalConfig = EvalConfig { levels: 8, seeds: 3, bars: 2, emotion_bars: 4, temperature: 1.0, attributes: 0xff, emotion: true };
    pub const QUICK: EvalConfig = EvalConfig { levels: 4, seeds: 1, bars: 2, emotion_bars: 4, temperature: 1.0, attributes: 0xff, emotion: true };
}

#[derive(Debug, Clone, Serialize)]
pub struct AttributeControl {
    pub attribute: String,
    /// The headline: R² of a line through every single measurement (every primer, seed and
    /// level) in the attribute's own units, unclamped: whether a fader value means the same
    /// measured attribute on every track.
    pub pooled_r2_units: f64,
    /// The unit, and the measured change over the whole fader in it (slope of that line).
    pub unit: String,
    pub pooled_slope_units: f64,
    /// Spread of the measurements around that line (root mean square, in the unit).
    pub pooled_rmse_units: f64,
    /// The part of that spread that is each primer's own offset from the line (root mean square
    /// over primers of their mean residual): what makes a fader mean different things on
    /// different tracks, as against the noise of single continuations.
    pub primer_offset_rms_units: f64,
    /// R² of a line through the mean measured value at each fader level.
    pub linearity_r2: f64,
    /// R² of a line through every single measurement.
    pub linearity_r2_all: f64,
    /// 1 − mean (over levels) of the measured values' standard deviation, on the [0, 1] scale.
    pub consistency: f64,
    /// Slope of measured on asked (1 = the fader moves the attribute one for one).
    pub slope: f64,
    /// Mean |correlation| of the seven other attributes with this fader (lower = more restrictive).
    pub others_mean_abs_r: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub config: String,
    pub primers: Vec<String>,
    pub attributes: Vec<AttributeControl>,
    /// Mean over the faders of [`AttributeControl::pooled_r2_units`], and the lowest.
    pub mean_pooled_r2_units: f64,
    pub min_pooled_r2_units: f64,
    pub mean_linearity_r2: f64,
    pub mean_consistency: f64,
    /// Fraction of continuations the estimator reads in the asked quadrant.
    pub emotion_quadrant_accuracy: f64,
    /// Per target: (target V, target A, mean estimated V, mean estimated A, hits, trials).
    pub emotion_by_target: Vec<(f32, f32, f32, f32, usize, usize)>,
    pub emotion_trials: usize,
    /// Per mode of the ladder (brightest first): its name and the mode fader value that
    /// continuations written in it measure (mean over primers and seeds), the figures
    /// [`crate::play::steering::MODE_LADDER`] is set from.
    pub mode_ladder: Vec<(String, f64)>,
    /// Fraction of notes in the heard key (mode on auto, steer 0).
    pub in_key_fraction: f64,
    /// Notes past the asked bars (must be 0).
    pub notes_past_end: usize,
    pub num_generations: usize,
    pub tokens_per_second: f64,
}

/// The attributes of a continuation, mean over its sounding bars: on the fader scale [0, 1]
/// and raw, in each attribute's own unit.
fn measure_both(notes: &[Note], bars: &[BarWindow], scale: &crate::play::attributes::AttributeScale) -> ([f32; 8], [f32; 8]) {
    let feats = features_for_bars(notes, bars);
    let sounding: Vec<_> = feats.iter().filter(|f| f[13] < 0.5).collect();
    if sounding.is_empty() {
        return ([0.0; 8], [0.0; 8]);
    }
    let (mut sum, mut raw_sum) = ([0.0f32; 8], [0.0f32; 8]);
    for f in &sounding {
        let raw = raw_attributes(f);
        let x = scale.normalize(&raw);
        for i in 0..8 {
            sum[i] += x[i];
            raw_sum[i] += raw[i] * Attribute::ALL[i].unit().1;
        }
    }
    let n = sounding.len() as f32;
    (sum.map(|s| s / n), raw_sum.map(|s| s / n))
}

fn measure(notes: &[Note], bars: &[BarWindow], scale: &crate::play::attributes::AttributeScale) -> [f32; 8] {
    measure_both(notes, bars, scale).0
}

fn r2(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    if sxx <= 0.0 || syy <= 0.0 {
        return (0.0, 0.0);
    }
    (sxy * sxy / (sxx * syy), sxy / sxx)
}

fn corr(x: &[f64], y: &[f64]) -> f64 {
    let (r2v, slope) = r2(x, y);
    r2v.sqrt() * slope.signum()
}

/// One trial of the emotion grid: a continuation steered fully to a target, and how the
/// project's estimator read it.
#[derive(Debug, Clone, Copy)]
pub struct EmotionTrial<'a> {
    pub primer: usize,
    pub seed: u64,
    pub target: (f32, f32),
    pub reading: (f32, f32),
    pub notes: &'a [Note],
    pub bars: &'a [BarWindow],
}

/// Runs the whole evaluation.
pub fn evaluate(model: &mut ContinuationModel, emotion: &mut EmotionModel, primers: &[Primer], cfg: EvalConfig) -> Result<EvalReport> {
    evaluate_with(model, emotion, primers, cfg, &mut |_| Ok(()))
}

/// [`evaluate`], handing every trial of the emotion grid to `trial` as well (so another judge can
/// read the same continuations).
pub fn evaluate_with(
    model: &mut ContinuationModel,
    emotion: &mut EmotionModel,
    primers: &[Primer],
    cfg: EvalConfig,
    trial: &mut dyn FnMut(&EmotionTrial) -> Result<()>,
) -> Result<EvalReport> {
    let scale = model.scale().clone();
    let mut num_generations = 0usize;
    let mut tokens = 0usize;
    let mut seconds = 0.0f64;
    let mut notes_past_end = 0usize;
    let (mut in_key, mut key_total) = (0usize, 0usize);
    let mut run = |model: &mut ContinuationModel, p: &Primer, bars: u32, opts: ContinueOptions| -> Result<(Vec<Note>, Vec<BarWindow>)> {
        let future = bars_after(p.bars.last().expect("primer has bars"), bars);
        let c = continue_notes(model, &p.notes, &p.bars, &future, &opts, |_, _| true)?;
        num_generations += 1;
        tokens += c.generated.num_tokens;
        seconds += c.generated.total.as_secs_f64();
        let end = future[future.len() - 1].start_beats + future[future.len() - 1].len_beats;
        notes_past_end += c.notes.iter().filter(|n| n.onset_beats < future[0].start_beats - 1e-9 || n.onset_beats + n.dur_beats > end + 1e-6).count();
        Ok((c.notes, future))
    };

    let mut attributes = Vec::new();
    for (ai, a) in Attribute::ALL.iter().enumerate() {
        if cfg.attributes & (1 << ai) == 0 {
            continue;
        }
        let mut xs = Vec::new();
        let mut measured: Vec<[f32; 8]> = Vec::new();
        let mut in_units: Vec<f64> = Vec::new();
        let mut primer_of: Vec<usize> = Vec::new();
        let mut level_means = Vec::new();
        let mut spreads = Vec::new();
        for k in 0..cfg.levels {
            let x = (k as f32 + 0.5) / cfg.levels as f32;
            let mut at_level = Vec::new();
            for (pi, p) in primers.iter().enumerate() {
                for seed in 0..cfg.seeds {
                    let mut manual = [None; 8];
                    manual[ai] = Some(x);
                    let opts = ContinueOptions {
                        bars: cfg.bars,
                        steer: SteerRequest { manual, ..Default::default() },
                        temperature: cfg.temperature,
                        seed: 1000 + seed,
                        ..Default::default()
                    };
                    let (notes, future) = run(model, p, cfg.bars, opts)?;
                    let (m, raw) = measure_both(&notes, &future, &scale);
                    in_units.push(raw[ai] as f64);
                    primer_of.push(pi);
                    xs.push(x as f64);
                    at_level.push(m[ai] as f64);
                    measured.push(m);
                    // Staying in key: only where the mode is left to what was heard.
                    if *a != Attribute::Mode
                        && let Some(key) = heard_key(&p.notes, &p.bars, compose::KEY_BARS)
                    {
                        let s = crate::play::steering::Scale::of_key(&key);
                        key_total += notes.len();
                        in_key += notes.iter().filter(|n| s.contains(n.pitch)).count();
                    }
                }
            }
            let mean = at_level.iter().sum::<f64>() / at_level.len().max(1) as f64;
            let sd = (at_level.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / at_level.len().max(1) as f64).sqrt();
            level_means.push(mean);
            spreads.push(sd);
        }
        let levels: Vec<f64> = (0..cfg.levels).map(|k| (k as f64 + 0.5) / cfg.levels as f64).collect();
        let (lin, slope) = r2(&levels, &level_means);
        let ys: Vec<f64> = measured.iter().map(|m| m[ai] as f64).collect();
        let (lin_all, _) = r2(&xs, &ys);
        let (pooled, pooled_slope) = r2(&xs, &in_units);
        let residuals: Vec<f64> = {
            let n = xs.len().max(1) as f64;
            let (mx, my) = (xs.iter().sum::<f64>() / n, in_units.iter().sum::<f64>() / n);
            xs.iter().zip(&in_units).map(|(x, y)| y - my - pooled_slope * (x - mx)).collect()
        };
        let rmse = (residuals.iter().map(|r| r * r).sum::<f64>() / residuals.len().max(1) as f64).sqrt();
        let primer_offset = {
            let (mut sum, mut count) = (vec![0.0f64; primers.len()], vec![0usize; primers.len()]);
            for (r, &pi) in residuals.iter().zip(&primer_of) {
                sum[pi] += r;
                count[pi] += 1;
            }
            let offsets: Vec<f64> = sum.iter().zip(&count).filter(|(_, c)| **c > 0).map(|(s, c)| s / *c as f64).collect();
            (offsets.iter().map(|o| o * o).sum::<f64>() / offsets.len().max(1) as f64).sqrt()
        };
        let others: Vec<f64> = (0..8)
            .filter(|&j| j != ai)
            .map(|j| corr(&xs, &measured.iter().map(|m| m[j] as f64).collect::<Vec<_>>()).abs())
            .collect();
        attributes.push(AttributeControl {
            attribute: a.cli_name().into(),
            pooled_r2_units: pooled,
            unit: a.unit().0.into(),
            pooled_slope_units: pooled_slope,
            pooled_rmse_units: rmse,
            primer_offset_rms_units: primer_offset,
            linearity_r2: lin,
            linearity_r2_all: lin_all,
            consistency: 1.0 - spreads.iter().sum::<f64>() / spreads.len().max(1) as f64,
            slope,
            others_mean_abs_r: others.iter().sum::<f64>() / others.len().max(1) as f64,
        });
    }

    // Where each mode sits on the mode fader: written in it, mode fader left on auto.
    let mut mode_ladder = Vec::new();
    let mode_i = Attribute::ALL.iter().position(|&a| a == Attribute::Mode).unwrap_or(5);
    if cfg.attributes & (1 << mode_i) != 0 {
        for mode in Mode::ALL {
            let mut sum = 0.0f64;
            let mut n = 0usize;
            for p in primers {
                for seed in 0..cfg.seeds {
                    let opts = ContinueOptions { bars: cfg.bars, temperature: cfg.temperature, seed: 3000 + seed, force_mode: Some(mode), ..Default::default() };
                    let (notes, future) = run(model, p, cfg.bars, opts)?;
                    sum += measure(&notes, &future, &scale)[mode_i] as f64;
                    n += 1;
                }
            }
            mode_ladder.push((mode.name().to_string(), sum / n.max(1) as f64));
        }
    }

    // Emotion control: a grid over the four quadrants, steered fully, read back by the estimator.
    let targets: [(f32, f32); 8] = [(0.7, 0.7), (0.4, 0.8), (-0.7, 0.7), (-0.4, 0.8), (-0.7, -0.7), (-0.4, -0.8), (0.7, -0.7), (0.4, -0.8)];
    let (mut hits, mut trials) = (0usize, 0usize);
    let mut by_target = Vec::new();
    for &(v, a) in targets.iter().filter(|_| cfg.emotion) {
        let (mut sv, mut sa, mut h, mut t) = (0.0f32, 0.0f32, 0usize, 0usize);
        for (pi, p) in primers.iter().enumerate() {
            for seed in 0..cfg.seeds {
                let opts = ContinueOptions {
                    bars: cfg.emotion_bars,
                    steer: SteerRequest { target_valence: v, target_arousal: a, steer: 1.0, manual: [None; 8] },
                    temperature: cfg.temperature,
                    seed: 2000 + seed,
                    ..Default::default()
                };
                let (notes, future) = run(model, p, cfg.emotion_bars, opts)?;
                let (ev, ea) = mean_reading(emotion, &notes, &future)?;
                trial(&EmotionTrial { primer: pi, seed, target: (v, a), reading: (ev, ea), notes: &notes, bars: &future })?;
                let hit = (ev >= 0.0) == (v >= 0.0) && (ea >= 0.0) == (a >= 0.0);
                trials += 1;
                hits += hit as usize;
                (sv, sa, h, t) = (sv + ev, sa + ea, h + hit as usize, t + 1);
            }
        }
        by_target.push((v, a, sv / t.max(1) as f32, sa / t.max(1) as f32, h, t));
    }
    let n_attr = attributes.len().max(1) as f64;
    Ok(EvalReport {
        config: format!("{cfg:?}"),
        primers: primers.iter().map(|p| p.name.clone()).collect(),
        mean_pooled_r2_units: attributes.iter().map(|a| a.pooled_r2_units).sum::<f64>() / n_attr,
        min_pooled_r2_units: attributes.iter().map(|a| a.pooled_r2_units).fold(f64::INFINITY, f64::min).min(1.0),
        mean_linearity_r2: attributes.iter().map(|a| a.linearity_r2).sum::<f64>() / n_attr,
        mean_consistency: attributes.iter().map(|a| a.consistency).sum::<f64>() / n_attr,
        attributes,
        emotion_quadrant_accuracy: hits as f64 / trials.max(1) as f64,
        emotion_trials: trials,
        mode_ladder,
        emotion_by_target: by_target,
        in_key_fraction: if key_total == 0 { 1.0 } else { in_key as f64 / key_total as f64 },
        notes_past_end,
        num_generations,
        tokens_per_second: tokens as f64 / seconds.max(1e-9),
    })
}

/// The estimator's mean valence and arousal over the bars of a continuation.
fn mean_reading(emotion: &mut EmotionModel, notes: &[Note], bars: &[BarWindow]) -> Result<(f32, f32)> {
    let va = emotion.predict(&context_vectors(&features_for_bars(notes, bars)))?;
    let n = va.len().max(1) as f32;
    Ok((va.iter().map(|x| x.0).sum::<f32>() / n, va.iter().map(|x| x.1).sum::<f32>() / n))
}

/// One continuation written with every fader set by hand, and how it came out.
#[derive(Debug, Clone, Serialize)]
pub struct SynthesisSample {
    pub primer: usize,
    /// The fader values asked, in [`Attribute::ALL`] order.
    pub asked: [f32; 8],
    /// The same attributes measured in the continuation.
    pub measured: [f32; 8],
    /// The estimator's mean valence and arousal over the continuation's bars.
    pub valence: f32,
    pub arousal: f32,
}

/// Writes `n` continuations of `bars` bars with every fader drawn uniformly in [0, 1] (primer
/// and seed drawn too) and reads each back with the estimator, as the emotion grid of
/// [`evaluate`] does: the samples the bridge is calibrated on.
pub fn synthesis_samples(
    model: &mut ContinuationModel,
    emotion: &mut EmotionModel,
    primers: &[Primer],
    n: usize,
    bars: u32,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<Vec<SynthesisSample>> {
    anyhow::ensure!(!primers.is_empty(), "no primers to calibrate on");
    let scale = model.scale().clone();
    let mut rng = crate::play::continuation::SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let asked: [f32; 8] = std::array::from_fn(|_| rng.next_f64() as f32);
        let primer = (rng.next_u64() % primers.len() as u64) as usize;
        let p = &primers[primer];
        let future = bars_after(p.bars.last().expect("primer has bars"), bars);
        let opts = ContinueOptions {
            bars,
            steer: SteerRequest { manual: asked.map(Some), ..Default::default() },
            seed: rng.next_u64(),
            ..Default::default()
        };
        let c = continue_notes(model, &p.notes, &p.bars, &future, &opts, |_, _| true)?;
        let measured = measure(&c.notes, &future, &scale);
        let (valence, arousal) = mean_reading(emotion, &c.notes, &future)?;
        out.push(SynthesisSample { primer, asked, measured, valence, arousal });
        progress(i + 1);
    }
    Ok(out)
}
