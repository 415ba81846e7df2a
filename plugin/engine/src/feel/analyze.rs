//! Offline analysis of a whole piece: per-bar valence/arousal following the file's meter, and an
//! overall value. The command line's `analyze` uses it.
//!
//! Thread: command line / worker

use anyhow::Result;
use serde::Serialize;

use crate::feel::emotion::EmotionModel;
use crate::feel::features::{context_vectors, features_for_bars};
use crate::listen::midifile::Piece;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BarEstimate {
    pub bar: usize,
    pub start_s: f64,
    pub valence: f32,
    pub arousal: f32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overall {
    pub valence: f32,
    pub arousal: f32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Analysis {
    pub bars: Vec<BarEstimate>,
    pub overall: Overall,
}

/// Estimates every bar of `piece`. The overall value is the mean over bars that have notes (or
/// over all bars when none has).
pub fn analyze_piece(piece: &Piece, model: &mut EmotionModel) -> Result<Analysis> {
    let feats = features_for_bars(&piece.notes, &piece.bars);
    let inputs = context_vectors(&feats);
    let va = model.predict(&inputs)?;
    let bars: Vec<BarEstimate> = piece
        .bars
        .iter()
        .zip(va.iter())
        .enumerate()
        .map(|(i, (w, &(valence, arousal)))| BarEstimate { bar: i, start_s: w.start_s, valence, arousal })
        .collect();
    let sounding: Vec<&BarEstimate> =
        bars.iter().zip(feats.iter()).filter(|(_, f)| f[13] < 0.5).map(|(b, _)| b).collect();
    let pool: Vec<&BarEstimate> = if sounding.is_empty() { bars.iter().collect() } else { sounding };
    let n = pool.len().max(1) as f32;
    let overall = Overall {
        valence: pool.iter().map(|b| b.valence).sum::<f32>() / n,
        arousal: pool.iter().map(|b| b.arousal).sum::<f32>() / n,
    };
    Ok(Analysis { bars, overall })
}
