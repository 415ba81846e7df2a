//! How close the unsteered continuation stays to where the music really goes: openings of pieces
//! the continuation model never saw (its validation split) are cut into a primer and the bars that
//! really follow; the continuation of the primer (every fader on auto, steer 0) is compared with
//! those bars, beside the naive answer "play the primer's last bars again".
//!
//! - pitch-class overlap: the histogram intersection of the two note-count pitch-class
//!   distributions (1 = the same pitch classes in the same proportions);
//! - density error: |log2| of the ratio of notes per bar, (n + 1) smoothed, over the bars compared;
//! - copy fraction: the share of continued notes that repeat a primer note note for note (same
//!   pitch, same onset position in its bar on the token grid), in any primer bar.
//!
//! Figures are pooled the way a user meets them: the mean over pieces (and seeds), the copy
//! fraction over every note written.
//!
//! Thread: command line / tests

use anyhow::Result;
use serde::Serialize;

use crate::lab::evaluate::{Primer, split_primers};
use crate::listen::notes::{BarWindow, Note};
use crate::play::compose::{ContinueOptions, bars_after, continue_notes};
use crate::play::continuation::ContinuationModel;
use crate::play::tokens::STEPS_PER_QUARTER;

/// A piece cut into what is heard and what really follows it.
#[derive(Debug, Clone)]
pub struct Opening {
    pub name: String,
    pub primer: Primer,
    /// The notes of the bars that really follow the primer, and those bars.
    pub next_notes: Vec<Note>,
    pub next_bars: Vec<BarWindow>,
}

/// Openings of `n` validation-split pieces of the continuation corpus under `data`: `primer_bars`
/// bars heard, then `next_bars` bars that follow (pieces shorter than both are skipped).
pub fn heldout_openings(data: &std::path::Path, n: usize, primer_bars: usize, next_bars: usize) -> Vec<Opening> {
    split_openings(data, n, primer_bars, next_bars, true, None)
}

/// Openings of `n` pieces of one split (the validation split when `validation`; the training
/// split is where a sampler setting may be tuned), of one data set only when `set` names it.
pub fn split_openings(data: &std::path::Path, n: usize, primer_bars: usize, next_bars: usize, validation: bool, set: Option<&str>) -> Vec<Opening> {
    split_primers(data, n, primer_bars + next_bars, validation, set).into_iter().filter_map(|p| cut(p, primer_bars, next_bars)).collect()
}

/// Splits a primer of at least `primer_bars + next_bars` bars into an [`Opening`].
pub fn cut(p: Primer, primer_bars: usize, next_bars: usize) -> Option<Opening> {
    if primer_bars == 0 || next_bars == 0 || p.bars.len() < primer_bars + next_bars {
        return None;
    }
    let split = p.bars[primer_bars].start_beats;
    let next_bars_v = p.bars[primer_bars..primer_bars + next_bars].to_vec();
    let end = next_bars_v.last().map(|b| b.start_beats + b.len_beats)?;
    let (heard, next): (Vec<Note>, Vec<Note>) = p.notes.iter().filter(|n| !n.is_drum() && n.onset_beats < end).partition(|n| n.onset_beats < split);
    if heard.is_empty() || next.is_empty() {
        return None;
    }
    Some(Opening {
        name: p.name,
        primer: Primer { name: String::new(), notes: heard, bars: p.bars[..primer_bars].to_vec() },
        next_notes: next,
        next_bars: next_bars_v,
    })
}

/// The note-count pitch-class distribution of `notes` (drums ignored); all zero when none.
fn pc_distribution(notes: &[Note]) -> [f64; 12] {
    let mut h = [0.0f64; 12];
    for n in notes.iter().filter(|n| !n.is_drum()) {
        h[(n.pitch % 12) as usize] += 1.0;
    }
    let total: f64 = h.iter().sum();
    if total > 0.0 {
        h.iter_mut().for_each(|v| *v /= total);
    }
    h
}

/// Histogram intersection of the two pitch-class distributions (0 when either is empty).
pub fn pitch_class_overlap(a: &[Note], b: &[Note]) -> f64 {
    let (pa, pb) = (pc_distribution(a), pc_distribution(b));
    pa.iter().zip(pb.iter()).map(|(x, y)| x.min(*y)).sum()
}

/// |log2| of the ratio of notes per bar, each count + 1 (so an empty bar is not infinitely far).
pub fn density_error(a: &[Note], a_bars: usize, b: &[Note], b_bars: usize) -> f64 {
    let per_bar = |notes: &[Note], bars: usize| notes.iter().filter(|n| !n.is_drum()).count() as f64 / bars.max(1) as f64;
    ((per_bar(a, a_bars) + 1.0) / (per_bar(b, b_bars) + 1.0)).log2().abs()
}

/// Where a note starts in its bar, in token-grid steps (None outside every bar).
fn position(n: &Note, bars: &[BarWindow]) -> Option<(u8, i64)> {
    let i = bars.partition_point(|b| b.start_beats <= n.onset_beats + 1e-9).checked_sub(1)?;
    let b = &bars[i];
    let off = n.onset_beats - b.start_beats;
    (off < b.len_beats).then(|| (n.pitch, (off * STEPS_PER_QUARTER as f64).round() as i64))
}

/// How many of `notes` (on `bars`) repeat a note of the primer (on `primer_bars`) note for note.
pub fn copied_notes(notes: &[Note], bars: &[BarWindow], primer: &[Note], primer_bars: &[BarWindow]) -> usize {
    let heard: std::collections::HashSet<(u8, i64)> = primer.iter().filter(|n| !n.is_drum()).filter_map(|n| position(n, primer_bars)).collect();
    notes.iter().filter(|n| !n.is_drum()).filter_map(|n| position(n, bars)).filter(|p| heard.contains(p)).count()
}

/// One answer's figures against the real next bars.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Closeness {
    /// Mean over pieces (and seeds) of the pitch-class overlap with the real next bars.
    pub pitch_class_overlap: f64,
    /// Mean over pieces (and seeds) of the density error against the real next bars.
    pub density_log2_error: f64,
    /// Share of all notes written that repeat a primer note note for note.
    pub copy_fraction: f64,
    /// Notes written, over every piece and seed.
    pub notes: usize,
    /// Mean density error against the heard bars (the primer's last bars, as many as compared):
    /// how closely the answer holds the density it heard.
    pub density_vs_heard: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaithfulnessReport {
    pub protocol: String,
    pub pieces: Vec<String>,
    pub seeds: u64,
    /// The continuation, every fader on auto and steer 0.
    pub continuation: Closeness,
    /// The continuation with each seed alone (seed 1 first).
    pub per_seed: Vec<Closeness>,
    /// The naive answer: the primer's last bars played again.
    pub replay_primer: Closeness,
    /// The real next bars measured the same way (overlap 1 and density error 0 by definition):
    /// how much the music itself repeats its primer note for note, and how far its density
    /// moves from the heard bars'.
    pub real_next: Closeness,
    /// Continuations with no note at all (counted in the figures as written).
    pub empty_continuations: usize,
    /// The continuation and the replayed primer per data set (the first part of a piece's id:
    /// emopia, pop1k7, pop909, vgmidi), in name order.
    pub by_data_set: Vec<(String, Closeness, Closeness)>,
    /// Each piece's notes per bar and per pitch class: heard, really following, and continued
    /// (what `models/train/fit_density.py` fits); left out of the report unless asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_piece: Vec<PieceDensity>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PieceDensity {
    pub name: String,
    pub heard: Vec<usize>,
    pub next: Vec<usize>,
    /// Notes per bar of each seed's continuation.
    pub continued: Vec<f64>,
    /// Notes per pitch class in each heard bar, and in the bars that really follow (all together).
    pub heard_classes: Vec<[u32; 12]>,
    pub next_classes: [u32; 12],
}

/// Notes per pitch class (drums left out) starting in `bar`.
fn classes_in(notes: &[Note], bar: &BarWindow) -> [u32; 12] {
    let mut h = [0u32; 12];
    for n in notes.iter().filter(|n| !n.is_drum() && bar.contains_beat(n.onset_beats)) {
        h[(n.pitch % 12) as usize] += 1;
    }
    h
}

/// Notes (drums left out) starting in each of `bars`.
fn notes_per_bar(notes: &[Note], bars: &[BarWindow]) -> Vec<usize> {
    bars.iter().map(|b| classes_in(notes, b).iter().sum::<u32>() as usize).collect()
}

/// Accumulates [`Closeness`] over trials.
#[derive(Default)]
struct Tally {
    overlap: f64,
    density: f64,
    copied: usize,
    notes: usize,
    trials: usize,
    vs_heard: f64,
}

impl Tally {
    /// `again` is the replayed primer and its bar count ([`replay_last_bars`]), which
    /// `density_vs_heard` compares with.
    fn add(&mut self, written: &[Note], bars: &[BarWindow], o: &Opening, again: (&[Note], usize)) {
        self.overlap += pitch_class_overlap(written, &o.next_notes);
        self.density += density_error(written, bars.len(), &o.next_notes, o.next_bars.len());
        self.copied += copied_notes(written, bars, &o.primer.notes, &o.primer.bars);
        self.notes += written.iter().filter(|n| !n.is_drum()).count();
        self.vs_heard += density_error(written, bars.len(), again.0, again.1);
        self.trials += 1;
    }

    fn closeness(&self) -> Closeness {
        let t = self.trials.max(1) as f64;
        Closeness {
            pitch_class_overlap: self.overlap / t,
            density_log2_error: self.density / t,
            copy_fraction: if self.notes > 0 { self.copied as f64 / self.notes as f64 } else { 0.0 },
            notes: self.notes,
            density_vs_heard: self.vs_heard / t,
        }
    }
}

/// The primer's last `n` bars moved to start where the primer ends: the naive continuation.
pub fn replay_last_bars(o: &Opening, n: usize) -> (Vec<Note>, Vec<BarWindow>) {
    let bars = &o.primer.bars;
    let from = bars.len().saturating_sub(n);
    let (start, end) = (bars[from].start_beats, bars[bars.len() - 1].start_beats + bars[bars.len() - 1].len_beats);
    let start_s = bars[from].start_s;
    let (shift_beats, shift_s) = (end - start, bars[bars.len() - 1].end_s - start_s);
    let notes = o
        .primer
        .notes
        .iter()
        .filter(|m| m.onset_beats >= start)
        .map(|m| Note { onset_beats: m.onset_beats + shift_beats, onset_s: m.onset_s + shift_s, ..*m })
        .collect();
    (notes, bars_after(&bars[bars.len() - 1], (bars.len() - from) as u32))
}

/// Continues every opening `seeds` times (with `base`'s options: the product's defaults are steer 0
/// and every fader on auto; bars and seed are set here) and measures
/// both the continuation and the replayed primer against what really follows.
pub fn faithfulness(model: &mut ContinuationModel, openings: &[Opening], seeds: u64, base: &ContinueOptions, mut progress: impl FnMut(usize)) -> Result<FaithfulnessReport> {
    let (mut cont, mut replay, mut real) = (Tally::default(), Tally::default(), Tally::default());
    let mut by_set: std::collections::BTreeMap<String, (Tally, Tally)> = std::collections::BTreeMap::new();
    let mut per_seed: Vec<Tally> = (0..seeds).map(|_| Tally::default()).collect();
    let mut empty = 0;
    let mut per_piece = Vec::with_capacity(openings.len());
    for (i, o) in openings.iter().enumerate() {
        let mut continued = Vec::with_capacity(seeds as usize);
        let bars = o.next_bars.len();
        let (again, again_bars) = replay_last_bars(o, bars);
        let heard = (again.as_slice(), again_bars.len());
        replay.add(&again, &again_bars, o, heard);
        real.add(&o.next_notes, &o.next_bars, o, heard);
        let set = by_set.entry(o.name.split('/').next().unwrap_or("").to_string()).or_default();
        set.1.add(&again, &again_bars, o, heard);
        let future = bars_after(&o.primer.bars[o.primer.bars.len() - 1], bars as u32);
        for seed in 0..seeds {
            let opts = ContinueOptions { bars: bars as u32, seed: 1 + seed, ..*base };
            let c = continue_notes(model, &o.primer.notes, &o.primer.bars, &future, &opts, |_, _| true)?;
            empty += c.notes.is_empty() as usize;
            continued.push(c.notes.iter().filter(|n| !n.is_drum()).count() as f64 / bars as f64);
            cont.add(&c.notes, &future, o, heard);
            per_seed[seed as usize].add(&c.notes, &future, o, heard);
            if let Some(set) = by_set.get_mut(o.name.split('/').next().unwrap_or("")) {
                set.0.add(&c.notes, &future, o, heard);
            }
        }
        per_piece.push(PieceDensity {
            name: o.name.clone(),
            heard: notes_per_bar(&o.primer.notes, &o.primer.bars),
            next: notes_per_bar(&o.next_notes, &o.next_bars),
            continued,
            heard_classes: o.primer.bars.iter().map(|b| classes_in(&o.primer.notes, b)).collect(),
            next_classes: o.next_bars.iter().map(|b| classes_in(&o.next_notes, b)).fold([0; 12], |a, h| std::array::from_fn(|i| a[i] + h[i])),
        });
        progress(i + 1);
    }
    Ok(FaithfulnessReport {
        protocol: "openings of validation-split pieces (never trained on): the continuation of the first bars, steer 0 and every fader on auto, against the bars that really follow; pitch-class overlap = intersection of note-count pitch-class distributions; density error = |log2((notes per bar + 1) / (real notes per bar + 1))|; copy fraction = notes repeating a primer note's pitch and onset position in its bar".into(),
        pieces: openings.iter().map(|o| o.name.clone()).collect(),
        seeds,
        continuation: cont.closeness(),
        per_seed: per_seed.iter().map(Tally::closeness).collect(),
        replay_primer: replay.closeness(),
        real_next: real.closeness(),
        empty_continuations: empty,
        by_data_set: by_set.into_iter().map(|(k, (c, r))| (k, c.closeness(), r.closeness())).collect(),
        per_piece,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(i: usize) -> BarWindow {
        BarWindow { start_s: i as f64 * 2.0, end_s: i as f64 * 2.0 + 2.0, start_beats: i as f64 * 4.0, len_beats: 4.0, tempo_bpm: 120.0 }
    }

    fn note(beats: f64, pitch: u8) -> Note {
        Note { onset_s: beats / 2.0, dur_s: 0.2, onset_beats: beats, dur_beats: 0.4, pitch, velocity: 90, channel: 0 }
    }

    /// Eight bars: C-E-G quarters in the first four, D-F-A eighths in the next four.
    fn opening() -> Opening {
        let mut notes = Vec::new();
        for b in 0..4 {
            for (k, p) in [60u8, 64, 67, 72].iter().enumerate() {
                notes.push(note(b as f64 * 4.0 + k as f64, *p));
            }
        }
        for b in 4..8 {
            for k in 0..8 {
                notes.push(note(b as f64 * 4.0 + k as f64 * 0.5, [62u8, 65, 69][k % 3]));
            }
        }
        cut(Primer { name: "t".into(), notes, bars: (0..8).map(bar).collect() }, 4, 4).unwrap()
    }

    #[test]
    fn the_replayed_primer_is_measured_against_what_follows() {
        let o = opening();
        assert_eq!((o.primer.notes.len(), o.next_notes.len()), (16, 32));
        let (again, bars) = replay_last_bars(&o, 4);
        assert_eq!(again.len(), 16);
        assert_eq!(bars[0].start_beats, 16.0);
        assert!((again[0].onset_beats - 16.0).abs() < 1e-9);
        // C E G C against D F A: no pitch class shared.
        assert_eq!(pitch_class_overlap(&again, &o.next_notes), 0.0);
        assert_eq!(pitch_class_overlap(&o.next_notes, &o.next_notes), 1.0);
        // 4 notes per bar against 8: log2(9 / 5).
        assert!((density_error(&again, 4, &o.next_notes, 4) - (9.0f64 / 5.0).log2()).abs() < 1e-12);
        // Every replayed note repeats the primer; none of the real next bars does.
        assert_eq!(copied_notes(&again, &bars, &o.primer.notes, &o.primer.bars), 16);
        assert_eq!(copied_notes(&o.next_notes, &o.next_bars, &o.primer.notes, &o.primer.bars), 0);
    }

    #[test]
    fn too_short_or_empty_pieces_are_not_openings() {
        let o = opening();
        let p = Primer { name: "short".into(), notes: o.primer.notes.clone(), bars: (0..6).map(bar).collect() };
        assert!(cut(p, 4, 4).is_none());
        let p = Primer { name: "nothing after".into(), notes: o.primer.notes.clone(), bars: (0..8).map(bar).collect() };
        assert!(cut(p, 4, 4).is_none());
    }
}
