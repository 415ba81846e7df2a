//! How the estimator hears audio, measured on VGMIDI's labelled pieces: each piece rendered by
//! the built-in voice, transcribed by Basic Pitch (the offline path the worker streams), its
//! features computed on the piece's own bar grid (as the host's tempo and meter give it in the
//! plugin) and read by the emotion model; against the same pieces read from MIDI; and whether
//! the audio cues of `audio_cues.rs` improve the audio estimate. Corrections are fitted on
//! training pieces and scored on the emotion model's held-out pieces, per bar, pooled.
//!
//! Thread: command line

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::feel::emotion::{EMBEDDED_MANIFEST, EmotionModel};
use crate::feel::features::{context_vectors, features_for_bars};
use crate::lab::export::{ExportReport, labelled_pieces};
use crate::listen::audio_cues::{CUE_NAMES, CUE_SAMPLE_RATE_HZ, CueAnalyzer, NUM_CUES, onset_frames, span_cues};
use crate::listen::midifile::read_midi_file;
use crate::listen::notes::{BarWindow, Note};
use crate::listen::transcribe::{BasicPitch, NoteParams, transcribe_offline};
use crate::rt::synth::render_notes;

/// One piece's per-bar readings.
#[derive(Debug, Clone, Default)]
struct PieceReadings {
    truth: Vec<(f32, f32)>,
    midi: Vec<(f32, f32)>,
    audio: Vec<(f32, f32)>,
    /// Cues of the bar, then their mean over the last four bars.
    cues: Vec<[f32; 2 * NUM_CUES]>,
    num_source_notes: usize,
    num_heard_notes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub valence_r: f64,
    pub arousal_r: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AudioEvalReport {
    pub train_pieces: usize,
    pub test_pieces: usize,
    pub test_bars: usize,
    /// The model on the MIDI files (the reference point).
    pub midi: Scores,
    /// The model on the transcribed audio, as it comes.
    pub audio: Scores,
    /// The audio estimate through a linear map refitted on training pieces' audio (no cues).
    pub audio_refit: Scores,
    /// The same map with the audio cues added.
    pub audio_refit_cues: Scores,
    pub cue_names: Vec<String>,
    /// Ridge weights (standardised inputs: 1, valence, arousal, cues, 4-bar cue means) for
    /// valence and arousal with cues.
    pub weights_valence: Vec<f64>,
    pub weights_arousal: Vec<f64>,
    /// The arousal map with cues, for the live path (`models/audio_cues.json`).
    pub arousal_map: crate::listen::audio_cues::CueMap,
    pub notes_heard_per_source_note: f64,
    pub seconds: f64,
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    if sxx <= 0.0 || syy <= 0.0 { 0.0 } else { sxy / (sxx * syy).sqrt() }
}

/// Ridge regression with standardised columns (the first column, all ones, is not penalised).
struct Ridge {
    mean: Vec<f64>,
    std: Vec<f64>,
    w: Vec<f64>,
}

impl Ridge {
    fn fit(x: &[Vec<f64>], y: &[f64], lambda: f64) -> Self {
        let d = x.first().map_or(0, Vec::len);
        let n = x.len().max(1) as f64;
        let mean: Vec<f64> = (0..d).map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n).collect();
        let std: Vec<f64> =
            (0..d).map(|j| (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt().max(1e-9)).collect();
        let z = |r: &Vec<f64>| -> Vec<f64> { std::iter::once(1.0).chain((0..d).map(|j| (r[j] - mean[j]) / std[j])).collect() };
        let k = d + 1;
        let mut a = vec![vec![0.0; k]; k];
        let mut b = vec![0.0; k];
        for (r, &t) in x.iter().zip(y) {
            let zr = z(r);
            for i in 0..k {
                for j in 0..k {
                    a[i][j] += zr[i] * zr[j];
                }
                b[i] += zr[i] * t;
            }
        }
        for (i, row) in a.iter_mut().enumerate().skip(1) {
            row[i] += lambda * n;
        }
        // With lambda > 0 the system is positive definite; a degenerate one predicts 0.
        let w = crate::linalg::solve(a, b).unwrap_or_else(|| vec![0.0; k]);
        Self { mean, std, w }
    }

    fn predict(&self, r: &[f64]) -> f64 {
        self.w[0] + (0..self.mean.len()).map(|j| self.w[j + 1] * (r[j] - self.mean[j]) / self.std[j]).sum::<f64>()
    }
}

/// Onset beats of a time on the bar grid (the tempo of the bar it falls in).
fn beats_at(bars: &[BarWindow], t: f64) -> f64 {
    let i = bars.partition_point(|b| b.start_s <= t).saturating_sub(1);
    match bars.get(i) {
        Some(b) => b.start_beats + (t - b.start_s) * b.tempo_bpm / 60.0,
        None => t * 2.0,
    }
}

fn read_piece(
    labelled: &Path,
    id: &str,
    bars: &[BarWindow],
    truth: Vec<(f32, f32)>,
    emo: &mut EmotionModel,
    bp: &mut BasicPitch,
    cue: &mut CueAnalyzer,
) -> Result<PieceReadings> {
    let piece = read_midi_file(&labelled.join(id))?;
    let n = truth.len().min(bars.len());
    let end_s = bars[..n].last().map_or(0.0, |b| b.end_s);
    let notes: Vec<Note> = piece.notes.iter().filter(|x| x.onset_s < end_s).copied().collect();
    let mut audio = render_notes(&notes, CUE_SAMPLE_RATE_HZ);
    audio.truncate(((end_s + 0.5) * CUE_SAMPLE_RATE_HZ as f64) as usize);
    let heard: Vec<Note> = transcribe_offline(bp, &audio, CUE_SAMPLE_RATE_HZ, &NoteParams::default())?
        .iter()
        .map(|t| {
            let on = beats_at(bars, t.start_s);
            Note {
                onset_s: t.start_s,
                dur_s: t.end_s - t.start_s,
                onset_beats: on,
                dur_beats: (beats_at(bars, t.end_s) - on).max(0.0),
                pitch: t.pitch,
                velocity: t.velocity.max(1),
                channel: 0,
            }
        })
        .collect();
    let midi = emo.predict(&context_vectors(&features_for_bars(&piece.notes, &bars[..n])))?;
    let audio_va = emo.predict(&context_vectors(&features_for_bars(&heard, &bars[..n])))?;
    let frames = cue.frames(&audio);
    let onsets = onset_frames(&frames.flux);
    let per_bar: Vec<[f32; NUM_CUES]> = bars[..n].iter().map(|b| span_cues(&frames, &onsets, 0.0, b.start_s, b.end_s)).collect();
    let cues = (0..n)
        .map(|t| {
            let from = t.saturating_sub(3);
            let mut out = [0.0f32; 2 * NUM_CUES];
            for c in 0..NUM_CUES {
                out[c] = per_bar[t][c];
                out[NUM_CUES + c] = per_bar[from..=t].iter().map(|v| v[c]).sum::<f32>() / (t - from + 1) as f32;
            }
            out
        })
        .collect();
    Ok(PieceReadings {
        truth: truth[..n].to_vec(),
        midi,
        audio: audio_va,
        cues,
        num_source_notes: notes.len(),
        num_heard_notes: heard.len(),
    })
}

/// Runs the evaluation on up to `max_train` training pieces (every k-th, spread over the set)
/// and up to `max_test` of the emotion model's held-out pieces.
pub fn eval_audio_input(
    data: &Path,
    emo: &mut EmotionModel,
    bp: &mut BasicPitch,
    max_train: usize,
    max_test: usize,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<AudioEvalReport> {
    let started = std::time::Instant::now();
    let manifest: serde_json::Value = serde_json::from_str(EMBEDDED_MANIFEST)?;
    let holdout: Vec<String> = manifest["holdout_pieces"]
        .as_array()
        .context("the emotion model's manifest lists no held-out pieces")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let mut report = ExportReport::default();
    let pieces = labelled_pieces(data, &mut report)?;
    let (test, train): (Vec<_>, Vec<_>) = pieces.into_iter().partition(|p| holdout.contains(&p.id));
    let step = (train.len() / max_train.max(1)).max(1);
    let train: Vec<_> = train.into_iter().step_by(step).take(max_train).collect();
    let test: Vec<_> = test.into_iter().take(max_test).collect();
    if train.is_empty() || test.is_empty() {
        bail!("no pieces to evaluate (train {}, test {})", train.len(), test.len());
    }
    let labelled = data.join("vgmidi/labelled");
    let mut cue = CueAnalyzer::new();
    let total = train.len() + test.len();
    let mut read = |set: &[crate::lab::export::LabelledPiece], offset: usize| -> Result<Vec<PieceReadings>> {
        set.iter()
            .enumerate()
            .map(|(i, p)| {
                progress(offset + i + 1, total, &p.id);
                let truth = p.valence.iter().copied().zip(p.arousal.iter().copied()).collect();
                read_piece(&labelled, &p.id, &p.bars, truth, emo, bp, &mut cue).with_context(|| p.id.clone())
            })
            .collect()
    };
    let train_r = read(&train, 0)?;
    let test_r = read(&test, train.len())?;

    let rows = |r: &[PieceReadings], with_cues: bool| -> Vec<Vec<f64>> {
        r.iter()
            .flat_map(|p| {
                p.audio.iter().zip(&p.cues).map(move |(va, c)| {
                    let mut row = vec![va.0 as f64, va.1 as f64];
                    if with_cues {
                        row.extend(c.iter().map(|&x| x as f64));
                    }
                    row
                })
            })
            .collect()
    };
    let truth = |r: &[PieceReadings], k: usize| -> Vec<f64> {
        r.iter().flat_map(|p| p.truth.iter().map(move |t| if k == 0 { t.0 as f64 } else { t.1 as f64 })).collect()
    };
    let col = |r: &[PieceReadings], which: &dyn Fn(&PieceReadings) -> &Vec<(f32, f32)>, k: usize| -> Vec<f64> {
        r.iter().flat_map(|p| which(p).iter().map(move |t| if k == 0 { t.0 as f64 } else { t.1 as f64 })).collect()
    };
    let scores = |pred_v: &[f64], pred_a: &[f64]| Scores {
        valence_r: pearson(pred_v, &truth(&test_r, 0)),
        arousal_r: pearson(pred_a, &truth(&test_r, 1)),
    };
    const LAMBDA: f64 = 0.01;
    let fit_and_score = |with_cues: bool| -> (Scores, Ridge, Ridge) {
        let (xtr, xte) = (rows(&train_r, with_cues), rows(&test_r, with_cues));
        let mv = Ridge::fit(&xtr, &truth(&train_r, 0), LAMBDA);
        let ma = Ridge::fit(&xtr, &truth(&train_r, 1), LAMBDA);
        let pv: Vec<f64> = xte.iter().map(|r| mv.predict(r)).collect();
        let pa: Vec<f64> = xte.iter().map(|r| ma.predict(r)).collect();
        (scores(&pv, &pa), mv, ma)
    };
    let (refit, _, _) = fit_and_score(false);
    let (refit_cues, mv, ma) = fit_and_score(true);
    let (wv, wa) = (mv.w.clone(), ma.w.clone());
    let arousal_map = crate::listen::audio_cues::CueMap { inputs: crate::listen::audio_cues::cue_map_inputs(), mean: ma.mean, std: ma.std, w: ma.w };
    let source: usize = test_r.iter().chain(&train_r).map(|p| p.num_source_notes).sum();
    let heard: usize = test_r.iter().chain(&train_r).map(|p| p.num_heard_notes).sum();
    Ok(AudioEvalReport {
        train_pieces: train_r.len(),
        test_pieces: test_r.len(),
        test_bars: test_r.iter().map(|p| p.truth.len()).sum(),
        midi: scores(&col(&test_r, &|p| &p.midi, 0), &col(&test_r, &|p| &p.midi, 1)),
        audio: scores(&col(&test_r, &|p| &p.audio, 0), &col(&test_r, &|p| &p.audio, 1)),
        audio_refit: refit,
        audio_refit_cues: refit_cues,
        cue_names: CUE_NAMES.iter().map(|s| s.to_string()).chain(CUE_NAMES.iter().map(|s| format!("{s}_mean4"))).collect(),
        weights_valence: wv,
        weights_arousal: wa,
        arousal_map,
        notes_heard_per_source_note: heard as f64 / source.max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_map() {
        let x: Vec<Vec<f64>> = (0..200).map(|i| vec![(i as f64 * 0.37).sin(), (i as f64 * 0.11).cos() * 3.0]).collect();
        let y: Vec<f64> = x.iter().map(|r| 0.5 + 2.0 * r[0] - 0.25 * r[1]).collect();
        let m = Ridge::fit(&x, &y, 1e-9);
        for (r, t) in x.iter().zip(&y) {
            assert!((m.predict(r) - t).abs() < 1e-6);
        }
        assert!((pearson(&y, &y) - 1.0).abs() < 1e-12);
    }
}
