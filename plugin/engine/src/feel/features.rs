//! Per-bar musical features: the single source of truth for what the emotion model sees. The
//! offline analyser, the training exporter and the live worker all call [`bar_features`] and
//! [`context_vector`], so training and the plugin cannot drift apart.
//!
//! Thread: any (allocation-free; the live worker calls it ≥ 10 times a second)

use crate::listen::keyfind::find_key;
use crate::listen::notes::{BarWindow, Note};

/// Bumped whenever a feature's definition, order or count changes, or the context vector's.
/// Models record the version they were trained on and the loader refuses a mismatch.
/// History: 1 first release; 2 bounded look-back ([`MAX_LOOKBACK_NOTES`]) for held notes;
/// 3 the context vector gains the long mean ([`LongMean`]); 4 melody and bass register, melodic
/// motion and leaps, harmonic changes; 5 the long mean starts again at a new section
/// ([`LONG_MEAN_NOVELTY`]); 6 harmony relative to the key (chord quality, scale, tonic, dominant
/// and subdominant weight, the third above the bass) and melodic contour; 7 timing off the grid
/// ([`OFFGRID_TOLERANCE_BEATS`]: performed against sequenced music).
pub const FEATURE_SPEC_VERSION: u32 = 7;

pub const NUM_FEATURES: usize = 28;

/// Feature names, in the order of the feature vector.
pub const FEATURE_NAMES: [&str; NUM_FEATURES] = [
    "note_density",   // note onsets per second
    "rhythm_density", // fraction of the bar's 16th-note slots that hold an onset
    "velocity",       // mean velocity / 127
    "velocity_std",   // spread of velocity / 127
    "pitch_mean",     // mean MIDI pitch
    "pitch_range",    // highest minus lowest pitch, semitones
    "mode",           // major minus minor key-profile correlation over the key window
    "key_clarity",    // correlation of the best key over the key window
    "articulation",   // mean of duration / gap to the next onset (or the bar end), clamped to [0, 2]
    "dur_mean_beats", // mean note duration in quarter notes, clamped to 8
    "polyphony",      // mean number of sounding notes while anything sounds
    "dissonance",     // fraction of dissonant intervals among notes sounding together at onsets
    "tempo_bpm",      // quarter notes per minute
    "silent",         // 1 when the bar has no pitched note onset
    "melody_pitch",   // mean of the highest pitch starting at each onset (the top voice)
    "bass_pitch",     // mean of the lowest pitch starting at each onset
    "melodic_motion", // mean signed step of the top voice between onsets, semitones, clamped to ±12
    "melodic_leap",   // mean size of those steps, semitones, clamped to 12
    "harmonic_changes", // fraction of onsets whose pitch-class set differs from the onset before
    "triad_quality",    // best major-triad share of the bar's pitch-class weight minus best minor-triad share
    "in_key",           // share of the bar's pitch-class weight in the key's scale (minor: natural plus leading tone)
    "tonic_triad",      // share on the key's tonic triad (I or i)
    "dominant_triad",   // share on the dominant triad (V, major in either mode)
    "subdominant_triad", // share on the subdominant triad (IV in major, iv in minor)
    "bass_third",       // over onsets: major third above the lowest sounding note (+1) or minor third (-1)
    "melody_conjunct",  // share of top-voice steps of at most two semitones (repeats included)
    "melody_contour",   // top-voice steps up minus steps down, over all steps
    "onset_offgrid",    // share of onsets off the 32nd and 16th-triplet grid (see OFFGRID_TOLERANCE_BEATS)
];

/// An onset further than this (in quarter notes) from every 32nd-note and 16th-triplet position of
/// its bar counts as off the grid for feature `onset_offgrid`: about 5 ms at 120 BPM. Sequenced
/// or quantized music sits on the grid (0); a performance played freely, or against a click,
/// lands there by chance, about one onset in four (12 grid points per beat, each catching 1/48
/// of a beat). The emotion model reads it to tell the two kinds of music apart: listeners hear
/// the same cues differently in them (EMOPIA's performances against VGMIDI's sequenced pieces).
pub const OFFGRID_TOLERANCE_BEATS: f64 = 1.0 / 96.0;

/// Scale degrees (semitones above the tonic) that feature `in_key` counts, major and minor.
const MAJOR_SCALE: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
const MINOR_SCALE: [u8; 8] = [0, 2, 3, 5, 7, 8, 10, 11];

/// Number of bars (this one included) whose pitch classes decide the key.
pub const KEY_WINDOW_BARS: usize = 4;

/// Number of bars in the context vector's mean (this one and the three before).
pub const CONTEXT_MEAN_BARS: usize = 4;

/// Length of the model input built by [`context_vector`].
pub const CONTEXT_LEN: usize = 4 * NUM_FEATURES;

/// Memory of the long mean, in bars with notes: a plain mean over the first this-many, then an
/// exponential mean that forgets with this time constant (so a live set moves on between songs).
pub const LONG_MEAN_BARS: u32 = 32;

/// A bar whose features lie this far from the long mean (the mean over [`NOVELTY_FEATURES`] of
/// |f − long| / [`NOVELTY_SCALE`]) starts a new section: the long mean starts again from it, as
/// at a piece's first bar. The live value then follows new material within a bar instead of
/// waiting for a 32-bar mean to move; on the held-out VGMIDI pieces it is neutral (valence r
/// 0.735 → 0.737, arousal 0.858 → 0.855; 1.0 cost 0.01–0.03).
pub const LONG_MEAN_NOVELTY: f32 = 1.5;

/// Features the section test compares (levels a listener hears change): density, dynamics,
/// register, range, articulation, note length, polyphony, dissonance, melody and bass.
pub const NOVELTY_FEATURES: [bool; NUM_FEATURES] = [
    true, true, true, false, true, true, false, false, true, true, true, true, false, false, true, true, false, false, false,
    false, false, false, false, false, false, false, false, false,
];

/// Each feature's spread (standard deviation over the 8 805 labelled VGMIDI bars): the unit of
/// the section test (1 for the features it does not compare).
pub const NOVELTY_SCALE: Features = [
    4.837, 0.239, 0.189, 0.041, 10.698, 12.914, 0.177, 0.124, 0.295, 0.902, 1.736, 0.166, 35.226, 0.118, 12.508, 11.818,
    2.255, 3.162, 0.285, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
];

/// How far `f` lies from `mean` for the section test (see [`LONG_MEAN_NOVELTY`]).
pub fn novelty(f: &Features, mean: &Features) -> f32 {
    let (mut sum, mut n) = (0.0f32, 0u32);
    for i in 0..NUM_FEATURES {
        if NOVELTY_FEATURES[i] {
            sum += (f[i] - mean[i]).abs() / NOVELTY_SCALE[i];
            n += 1;
        }
    }
    sum / n as f32
}

pub type Features = [f32; NUM_FEATURES];

/// Most notes sounding together that [`bar_features`] tracks for dissonance; more are ignored.
pub const MAX_CHORD_NOTES: usize = 16;

/// How far back (in notes, before the one in question) the features look for notes that are
/// still sounding. Bounds the work per bar and per onset, so a file with thousands of notes on
/// one beat, or a hundred thousand tiny bars, costs linear time (found by fuzzing); only a note
/// held under hundreds of later notes is affected.
pub const MAX_LOOKBACK_NOTES: usize = 256;

/// Index of the first note worth looking at for a window starting at note index `first`.
fn lookback_start(first: usize) -> usize {
    first.saturating_sub(MAX_LOOKBACK_NOTES)
}

/// Duration-weighted histogram of the pitch classes sounding inside `w` (drums ignored).
/// `notes` must be sorted by onset.
pub fn pitch_class_hist(notes: &[Note], w: &BarWindow) -> [f32; 12] {
    let mut hist = [0.0f32; 12];
    let first = notes.partition_point(|n| n.onset_s < w.start_s);
    let end = first + notes[first..].partition_point(|n| n.onset_s < w.end_s);
    for n in notes[lookback_start(first)..end].iter().filter(|n| !n.is_drum()) {
        let overlap = n.end_s().min(w.end_s) - n.onset_s.max(w.start_s);
        if overlap > 0.0 {
            hist[(n.pitch % 12) as usize] += overlap as f32;
        }
    }
    hist
}

/// Whether two pitches this far apart clash (seconds, tritone, sevenths, in any octave): what
/// feature `dissonance` counts.
pub fn is_dissonant(interval: u8) -> bool {
    matches!(interval % 12, 1 | 2 | 6 | 10 | 11)
}

/// Dissonant and all intervals among the pitches of one chord, unisons left out: what feature
/// `dissonance` counts at an onset (once per note starting there).
pub fn chord_intervals(chord: &[u8]) -> (u32, u32) {
    let (mut dissonant, mut pairs) = (0, 0);
    for (a, &p) in chord.iter().enumerate() {
        for &q in &chord[a + 1..] {
            let iv = p.abs_diff(q);
            if iv != 0 {
                pairs += 1;
                dissonant += is_dissonant(iv) as u32;
            }
        }
    }
    (dissonant, pairs)
}

/// Features of the notes whose onsets fall in `w`. `bar_hist` is the bar's own pitch-class
/// histogram ([`pitch_class_hist`] of `w`), `key_hist` the one over the key window (this bar and the
/// [`KEY_WINDOW_BARS`]` - 1` before it). `notes` must be sorted
/// by onset; it may hold notes outside the window. Never returns NaN or infinity.
pub fn bar_features(notes: &[Note], w: &BarWindow, bar_hist: &[f32; 12], key_hist: &[f32; 12]) -> Features {
    let mut f = [0.0f32; NUM_FEATURES];
    let tempo_bpm = if w.tempo_bpm.is_finite() { w.tempo_bpm.clamp(10.0, 1000.0) } else { 120.0 };
    f[12] = tempo_bpm as f32;

    let first = notes.partition_point(|n| n.onset_s < w.start_s);
    let num_notes = notes[first..].iter().take_while(|n| n.onset_s < w.end_s).filter(|n| !n.is_drum()).count();
    if num_notes == 0 {
        f[13] = 1.0;
        let key = find_key(key_hist);
        f[6] = key.mode;
        f[7] = key.clarity;
        return f;
    }
    let count = num_notes as f32;
    let bar_notes = || notes[first..].iter().take_while(|n| n.onset_s < w.end_s).filter(|n| !n.is_drum());

    // Density.
    f[0] = (count as f64 / w.dur_s()) as f32;
    let num_slots = ((w.len_beats * 4.0).round() as i64).clamp(1, 256);
    let mut slot_bits = [0u64; 4];
    for n in bar_notes() {
        let slot = (((n.onset_beats - w.start_beats) * 4.0 + 1e-6).floor() as i64).clamp(0, num_slots - 1);
        slot_bits[(slot / 64) as usize] |= 1 << (slot % 64);
    }
    let filled: u32 = slot_bits.iter().map(|b| b.count_ones()).sum();
    f[1] = filled as f32 / num_slots as f32;
    f[27] = bar_notes().filter(|n| off_grid(n.onset_beats - w.start_beats)).count() as f32 / count;

    // Dynamics.
    let vel_mean = bar_notes().map(|n| n.velocity as f32).sum::<f32>() / count;
    let vel_var = bar_notes().map(|n| (n.velocity as f32 - vel_mean).powi(2)).sum::<f32>() / count;
    f[2] = vel_mean / 127.0;
    f[3] = vel_var.sqrt() / 127.0;

    // Register.
    let (mut lo, mut hi, mut sum) = (127u8, 0u8, 0.0f32);
    for n in bar_notes() {
        lo = lo.min(n.pitch);
        hi = hi.max(n.pitch);
        sum += n.pitch as f32;
    }
    f[4] = sum / count;
    f[5] = (hi - lo) as f32;

    // Key.
    let key = find_key(key_hist);
    f[6] = key.mode;
    f[7] = key.clarity;
    harmony_in_key(bar_hist, key, &mut f);

    // Articulation: how much of the gap to the next onset (or the bar end) a note fills. Walk
    // the bar backwards keeping the onset of the next group of simultaneous onsets: linear time.
    let end = first + notes[first..].partition_point(|n| n.onset_s < w.end_s);
    let mut artic_sum = 0.0f32;
    let mut dur_sum = 0.0f32;
    let (mut group_onset, mut next_group_onset) = (f64::INFINITY, f64::INFINITY);
    for n in notes[first..end].iter().rev().filter(|n| !n.is_drum()) {
        if n.onset_s < group_onset - 1e-4 {
            next_group_onset = group_onset;
            group_onset = n.onset_s;
        }
        let next_onset = next_group_onset.min(w.end_s.max(n.onset_s + 1e-3));
        let ioi = (next_onset - n.onset_s).max(1e-3);
        artic_sum += ((n.dur_s / ioi) as f32).clamp(0.0, 2.0);
        dur_sum += (n.dur_beats as f32).clamp(0.0, 8.0);
    }
    f[8] = artic_sum / count;
    f[9] = dur_sum / count;

    // Polyphony: sounding-note time over time where anything sounds, within the window.
    let mut sounding_s = 0.0f64;
    let mut covered_s = 0.0f64;
    let mut cover_end = w.start_s;
    // Notes that started before the window but still sound count for polyphony too.
    for n in notes[first.saturating_sub(64)..end].iter() {
        if n.is_drum() {
            continue;
        }
        let s = n.onset_s.max(w.start_s);
        let e = n.end_s().min(w.end_s);
        if e > s {
            sounding_s += e - s;
        }
    }
    for n in bar_notes() {
        let s = n.onset_s.max(cover_end);
        let e = n.end_s().min(w.end_s);
        if e > s {
            covered_s += e - s;
            cover_end = e;
        }
    }
    f[10] = if covered_s > 1e-6 { (sounding_s / covered_s).clamp(0.0, 16.0) as f32 } else { 1.0 };

    // Dissonance among notes sounding at each onset, counted once per note that starts there.
    // One chord per group of simultaneous onsets, looking back a bounded number of notes.
    let (mut pairs, mut dissonant) = (0u32, 0u32);
    let (mut chords, mut thirds) = (0u32, 0i32);
    let mut i = first;
    while i < end {
        let onset = notes[i].onset_s;
        let mut group_end = i;
        let mut num_starting = 0u32;
        while group_end < notes.len() && notes[group_end].onset_s <= onset + 1e-4 {
            num_starting += (group_end < end && !notes[group_end].is_drum()) as u32;
            group_end += 1;
        }
        let mut chord = [0u8; MAX_CHORD_NOTES];
        let mut num_chord = 0;
        let from = first.saturating_sub(64).max(lookback_start(group_end));
        for m in &notes[from..group_end] {
            if !m.is_drum() && m.end_s() > onset + 1e-4 && num_chord < MAX_CHORD_NOTES {
                chord[num_chord] = m.pitch;
                num_chord += 1;
            }
        }
        if num_starting > 0 && num_chord > 0 {
            let bass = chord[..num_chord].iter().copied().min().unwrap_or(0);
            let above = |iv: u8| chord[..num_chord].iter().any(|&p| (p - bass) % 12 == iv);
            chords += 1;
            thirds += above(4) as i32 - above(3) as i32;
        }
        let (d, n) = chord_intervals(&chord[..num_chord]);
        pairs += num_starting * n;
        dissonant += num_starting * d;
        i = group_end;
    }
    f[11] = if pairs > 0 { dissonant as f32 / pairs as f32 } else { 0.0 };
    f[24] = if chords > 0 { thirds as f32 / chords as f32 } else { 0.0 };

    // The top voice and the bass, and how the harmony moves: one pass over the onset groups.
    let (mut groups, mut top_sum, mut bass_sum) = (0u32, 0.0f32, 0.0f32);
    let (mut steps, mut motion, mut leap, mut changes) = (0u32, 0.0f32, 0.0f32, 0u32);
    let (mut conjunct, mut contour) = (0u32, 0i32);
    let (mut prev_top, mut prev_set): (Option<u8>, u16) = (None, 0);
    let mut i = first;
    while i < end {
        let onset = notes[i].onset_s;
        let (mut top, mut bass, mut set, mut any) = (0u8, 127u8, 0u16, false);
        while i < end && notes[i].onset_s <= onset + 1e-4 {
            let n = &notes[i];
            if !n.is_drum() {
                top = top.max(n.pitch);
                bass = bass.min(n.pitch);
                set |= 1 << (n.pitch % 12);
                any = true;
            }
            i += 1;
        }
        if !any {
            continue;
        }
        groups += 1;
        top_sum += top as f32;
        bass_sum += bass as f32;
        if let Some(p) = prev_top {
            let step = (top as f32 - p as f32).clamp(-12.0, 12.0);
            steps += 1;
            motion += step;
            leap += step.abs();
            changes += (set != prev_set) as u32;
            conjunct += (step.abs() <= 2.0) as u32;
            contour += (top > p) as i32 - (top < p) as i32;
        }
        prev_top = Some(top);
        prev_set = set;
    }
    if groups > 0 {
        f[14] = top_sum / groups as f32;
        f[15] = bass_sum / groups as f32;
    }
    if steps > 0 {
        f[16] = motion / steps as f32;
        f[17] = leap / steps as f32;
        f[18] = changes as f32 / steps as f32;
        f[25] = conjunct as f32 / steps as f32;
        f[26] = contour as f32 / steps as f32;
    }

    for v in f.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
        }
    }
    f
}

/// Whether an onset `beats` after its bar's start lies off the grid (feature `onset_offgrid`).
pub fn off_grid(beats: f64) -> bool {
    let from = |per_beat: f64| ((beats * per_beat).round() - beats * per_beat).abs() / per_beat;
    from(8.0).min(from(6.0)) > OFFGRID_TOLERANCE_BEATS
}

/// The harmony features of a bar (its duration-weighted pitch-class histogram `hist`) relative to
/// `key`: `triad_quality`, `in_key`, `tonic_triad`, `dominant_triad`, `subdominant_triad`. All are
/// shares of the bar's pitch-class weight, so they do not depend on loudness, length or tempo.
fn harmony_in_key(hist: &[f32; 12], key: crate::listen::keyfind::KeyEstimate, f: &mut Features) {
    let total: f32 = hist.iter().sum();
    if total.partial_cmp(&1e-9) != Some(std::cmp::Ordering::Greater) {
        return;
    }
    let share = |pcs: &[u8], root: u8| pcs.iter().map(|&d| hist[((root + d) % 12) as usize]).sum::<f32>() / total;
    let (mut major, mut minor) = (0.0f32, 0.0f32);
    for root in 0..12 {
        major = major.max(share(&[0, 4, 7], root));
        minor = minor.max(share(&[0, 3, 7], root));
    }
    let t = key.tonic % 12;
    f[19] = major - minor;
    f[20] = if key.is_major { share(&MAJOR_SCALE, t) } else { share(&MINOR_SCALE, t) };
    f[21] = share(if key.is_major { &[0, 4, 7] } else { &[0, 3, 7] }, t);
    f[22] = share(&[7, 11, 2], t);
    f[23] = share(if key.is_major { &[5, 9, 0] } else { &[5, 8, 0] }, t);
}

/// Features for every bar of a sorted note list, with the key window applied.
pub fn features_for_bars(notes: &[Note], bars: &[BarWindow]) -> Vec<Features> {
    let hists: Vec<[f32; 12]> = bars.iter().map(|w| pitch_class_hist(notes, w)).collect();
    bars.iter()
        .enumerate()
        .map(|(t, w)| {
            let mut key_hist = [0.0f32; 12];
            for h in &hists[t.saturating_sub(KEY_WINDOW_BARS - 1)..=t] {
                for pc in 0..12 {
                    key_hist[pc] += h[pc];
                }
            }
            bar_features(notes, w, &hists[t], &key_hist)
        })
        .collect()
}

/// The long mean of the bars heard so far: how the music has been, not just the last bars.
/// Listeners rate the level of a passage more than its bar-to-bar moves, and this carries it.
/// Bars without notes are left out; with none heard yet it is the current bar itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongMean {
    mean: Features,
    count: u32,
}

impl Default for LongMean {
    fn default() -> Self {
        Self { mean: [0.0; NUM_FEATURES], count: 0 }
    }
}

impl LongMean {
    /// Folds in a finished bar (ignored when it has no notes); a bar far from the mean starts
    /// it again ([`LONG_MEAN_NOVELTY`]).
    pub fn push(&mut self, f: &Features) {
        if f[13] >= 0.5 {
            return;
        }
        if self.count > 0 && novelty(f, &self.mean) > LONG_MEAN_NOVELTY {
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        let alpha = (1.0 / self.count as f32).max(1.0 / LONG_MEAN_BARS as f32);
        for (m, &x) in self.mean.iter_mut().zip(f.iter()) {
            *m += alpha * (x - *m);
        }
    }

    /// The long mean so far (`current` itself when no bar with notes was folded in yet).
    pub fn value_or(&self, current: &Features) -> Features {
        if self.count == 0 { *current } else { self.mean }
    }

    /// The long mean with `current` folded in, without keeping it.
    pub fn with(&self, current: &Features) -> Features {
        let mut m = *self;
        m.push(current);
        if m.count == 0 { *current } else { m.mean }
    }
}

/// The model input for bar `t`: `[f(t), f(t-1), mean(f(t-3..=t)), long]`, where a bar before
/// the first one is replaced by bar `t` itself and `long` is the [`LongMean`] up to and including
/// bar `t`. Training (models/train) builds the identical vector from the exported features.
pub fn context_vector(feats: &[Features], t: usize, long: &Features) -> [f32; CONTEXT_LEN] {
    let mut out = [0.0f32; CONTEXT_LEN];
    let prev = |k: usize| if t >= k { &feats[t - k] } else { &feats[t] };
    out[..NUM_FEATURES].copy_from_slice(&feats[t]);
    out[NUM_FEATURES..2 * NUM_FEATURES].copy_from_slice(prev(1));
    for k in 0..CONTEXT_MEAN_BARS {
        for (i, v) in prev(k).iter().enumerate() {
            out[2 * NUM_FEATURES + i] += v / CONTEXT_MEAN_BARS as f32;
        }
    }
    out[3 * NUM_FEATURES..].copy_from_slice(long);
    out
}

/// [`context_vector`] for every bar of a piece, in order.
pub fn context_vectors(feats: &[Features]) -> Vec<[f32; CONTEXT_LEN]> {
    let mut long = LongMean::default();
    (0..feats.len())
        .map(|t| {
            let l = long.with(&feats[t]);
            long.push(&feats[t]);
            context_vector(feats, t, &l)
        })
        .collect()
}
