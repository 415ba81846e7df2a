//! The live estimator: keeps the recently heard notes, builds the same per-bar context vector the
//! model was trained on over sliding bar windows ending now, and smooths the model's answer.
//!
//! Thread: worker (allocates only while its buffers grow to their working size)

use crate::feel::features::{CONTEXT_LEN, CONTEXT_MEAN_BARS, Features, LongMean, bar_features, context_vector, pitch_class_hist};
use crate::listen::notes::{BarWindow, Note};
use crate::rt::queues::ToWorker;

/// Most notes the live history keeps; the oldest go first.
pub const MAX_LIVE_NOTES: usize = 4096;
/// Notes held longer than this are closed (a lost note-off must not grow forever).
pub const MAX_OPEN_NOTE_S: f64 = 60.0;
/// Smoothing time constant of the live value.
pub const SMOOTHING_TAU_S: f64 = 0.15;
/// How fast confidence fades while nothing is heard, per second.
const SILENT_CONFIDENCE_DECAY_PER_S: f32 = 0.5;

/// The context vector for "now" and what it rests on.
#[derive(Debug, Clone, Copy)]
pub struct LiveContext {
    pub input: [f32; CONTEXT_LEN],
    /// Pitched note onsets in the last [`CONTEXT_MEAN_BARS`] bars.
    pub num_recent_notes: usize,
    /// Bars (1..=4) of the window that lie after listening started.
    pub num_bars_heard: usize,
    /// No onset in the last two bars.
    pub silent: bool,
}

/// What one update produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveEstimate {
    pub valence: f32,
    pub arousal: f32,
    pub confidence: f32,
    /// The estimate at the end of a bar that just finished, for the trail.
    pub bar_done: Option<(f32, f32)>,
}

#[derive(Debug, Default)]
pub struct LiveEstimator {
    notes: Vec<Note>,
    open: Vec<Note>,
    scratch: Vec<Note>,
    listen_start_s: Option<f64>,
    smoothed: Option<(f32, f32)>,
    confidence: f32,
    last_update_s: Option<f64>,
    last_bar_index: Option<i64>,
    /// The long mean over the bars heard since listening started (or the last reset).
    long: LongMean,
    /// Bar index (of the listening clock) last folded into `long`.
    long_bar_index: Option<i64>,
}

impl LiveEstimator {
    pub fn new() -> Self {
        Self {
            notes: Vec::with_capacity(MAX_LIVE_NOTES),
            open: Vec::with_capacity(256),
            scratch: Vec::with_capacity(MAX_LIVE_NOTES),
            ..Default::default()
        }
    }

    /// Forget everything heard.
    pub fn reset(&mut self) {
        self.notes.clear();
        self.open.clear();
        self.listen_start_s = None;
        self.smoothed = None;
        self.confidence = 0.0;
        self.last_update_s = None;
        self.last_bar_index = None;
        self.long = LongMean::default();
        self.long_bar_index = None;
    }

    pub fn num_notes(&self) -> usize {
        self.notes.len() + self.open.len()
    }

    /// Pitched notes heard with onsets in `[from_beats, to_beats)` of the listening clock, sorted
    /// by onset, as they stood at `now_beats` (`now_s`): notes still held then (or released
    /// after it) are cut there.
    pub fn notes_between(&self, from_beats: f64, to_beats: f64, now_s: f64, now_beats: f64) -> Vec<Note> {
        let mut out: Vec<Note> = self
            .notes
            .iter()
            .filter(|n| !n.is_drum() && n.onset_beats >= from_beats && n.onset_beats < to_beats)
            .map(|n| {
                let mut n = *n;
                n.dur_s = n.dur_s.min((now_s - n.onset_s).max(0.0));
                n.dur_beats = n.dur_beats.min((now_beats - n.onset_beats).max(0.0));
                n
            })
            .collect();
        for n in self.open.iter().filter(|n| !n.is_drum() && n.onset_beats >= from_beats && n.onset_beats < to_beats) {
            let mut n = *n;
            n.dur_s = (now_s - n.onset_s).max(0.0);
            n.dur_beats = (now_beats - n.onset_beats).max(0.0);
            out.push(n);
        }
        out.sort_by(|a, b| a.onset_beats.total_cmp(&b.onset_beats).then(a.pitch.cmp(&b.pitch)));
        out
    }

    /// Takes one event from the audio thread.
    pub fn on_event(&mut self, ev: &ToWorker) {
        match *ev {
            ToWorker::Note { on, channel, pitch, velocity, time_s, beats, .. } => {
                if !time_s.is_finite() || !beats.is_finite() {
                    return;
                }
                self.listen_start_s.get_or_insert(time_s);
                // Close any open note of this key (a re-strike closes the previous one).
                if let Some(i) = self.open.iter().position(|n| n.channel == channel && n.pitch == pitch) {
                    let mut n = self.open.swap_remove(i);
                    n.dur_s = (time_s - n.onset_s).max(0.0);
                    n.dur_beats = (beats - n.onset_beats).max(0.0);
                    self.insert_closed(n);
                }
                if on && velocity > 0 {
                    if self.open.len() >= 512 {
                        let n = self.open.remove(0);
                        self.insert_closed(n);
                    }
                    self.open.push(Note { onset_s: time_s, dur_s: 0.0, onset_beats: beats, dur_beats: 0.0, pitch, velocity, channel });
                }
            }
            ToWorker::Reset => self.reset(),
            ToWorker::Control { .. } | ToWorker::Transport { .. } | ToWorker::Tick(_) | ToWorker::Sync { .. } => {}
        }
    }

    fn insert_closed(&mut self, n: Note) {
        let at = self.notes.partition_point(|m| m.onset_s <= n.onset_s);
        self.notes.insert(at, n);
        if self.notes.len() > MAX_LIVE_NOTES {
            self.notes.remove(0);
        }
    }

    /// Builds the model input for the bar ending at `now_s`.
    pub fn context(&mut self, now_s: f64, now_beats: f64, tempo_bpm: f64, bar_len_beats: f64) -> LiveContext {
        let tempo_bpm = if tempo_bpm.is_finite() && tempo_bpm > 0.0 { tempo_bpm } else { 120.0 };
        let bar_len_beats = if bar_len_beats.is_finite() && bar_len_beats > 0.0 { bar_len_beats } else { 4.0 };
        let bar_s = bar_len_beats * 60.0 / tempo_bpm;
        let horizon_s = now_s - (CONTEXT_MEAN_BARS as f64 + 1.0) * bar_s;

        // Close stuck notes and drop history nobody will look at again.
        let mut i = 0;
        while i < self.open.len() {
            if now_s - self.open[i].onset_s > MAX_OPEN_NOTE_S {
                let mut n = self.open.swap_remove(i);
                n.dur_s = MAX_OPEN_NOTE_S;
                n.dur_beats = MAX_OPEN_NOTE_S * tempo_bpm / 60.0;
                self.insert_closed(n);
            } else {
                i += 1;
            }
        }
        let keep_from = self.notes.partition_point(|n| n.end_s() < horizon_s - 30.0);
        if keep_from > 0 {
            self.notes.drain(..keep_from);
        }

        // Closed notes plus open ones held up to now, sorted by onset.
        self.scratch.clear();
        let first = self.notes.partition_point(|n| n.onset_s < horizon_s - 8.0);
        self.scratch.extend_from_slice(&self.notes[first..]);
        for n in &self.open {
            let mut n = *n;
            n.dur_s = (now_s - n.onset_s).max(0.0);
            n.dur_beats = (now_beats - n.onset_beats).max(0.0);
            self.scratch.push(n);
        }
        self.scratch.sort_by(|a, b| a.onset_s.total_cmp(&b.onset_s));

        let listen_start = self.listen_start_s.unwrap_or(now_s);
        let window = |k: usize| BarWindow {
            start_s: now_s - (k as f64 + 1.0) * bar_s,
            end_s: now_s - k as f64 * bar_s,
            start_beats: now_beats - (k as f64 + 1.0) * bar_len_beats,
            len_beats: bar_len_beats,
            tempo_bpm,
        };
        let windows: [BarWindow; CONTEXT_MEAN_BARS] = std::array::from_fn(window);
        let num_bars_heard = 1 + (1..CONTEXT_MEAN_BARS).filter(|&k| windows[k].end_s > listen_start + 1e-9).count();
        let hists: [[f32; 12]; CONTEXT_MEAN_BARS] = std::array::from_fn(|k| pitch_class_hist(&self.scratch, &windows[k]));
        // Oldest first, like the bars of a file.
        let mut feats: [Features; CONTEXT_MEAN_BARS] = [[0.0; crate::feel::features::NUM_FEATURES]; CONTEXT_MEAN_BARS];
        for (j, slot) in feats.iter_mut().enumerate().take(num_bars_heard) {
            let k = num_bars_heard - 1 - j;
            let mut key_hist = [0.0f32; 12];
            for h in &hists[k..num_bars_heard] {
                for pc in 0..12 {
                    key_hist[pc] += h[pc];
                }
            }
            *slot = bar_features(&self.scratch, &windows[k], &hists[k], &key_hist);
        }
        let onsets_in = |w: &BarWindow| {
            self.scratch.iter().filter(|n| !n.is_drum() && n.onset_s >= w.start_s && n.onset_s < w.end_s).count()
        };
        let num_recent_notes = windows[..num_bars_heard].iter().map(onsets_in).sum();
        let silent = onsets_in(&windows[0]) + onsets_in(&windows[1]) == 0;
        // A bar line passed: the bar that just ended (the window ending now) joins the long mean.
        let current = feats[num_bars_heard - 1];
        let bar_index = (now_beats / bar_len_beats).floor() as i64;
        let committed = match self.long_bar_index {
            Some(b) if b < bar_index => {
                self.long.push(&current);
                self.long_bar_index = Some(bar_index);
                true
            }
            None => {
                self.long_bar_index = Some(bar_index);
                false
            }
            _ => false,
        };
        // Between bar lines the bar in progress counts as if it ended now.
        let long = if committed { self.long.value_or(&current) } else { self.long.with(&current) };
        LiveContext {
            input: context_vector(&feats[..num_bars_heard], num_bars_heard - 1, &long),
            num_recent_notes,
            num_bars_heard,
            silent,
        }
    }

    /// Folds a raw model answer for `ctx` into the smoothed live value.
    pub fn update(&mut self, ctx: &LiveContext, raw: (f32, f32), now_s: f64, now_beats: f64, bar_len_beats: f64) -> LiveEstimate {
        let dt = self.last_update_s.map(|t| (now_s - t).clamp(0.0, 1.0)).unwrap_or(0.0);
        self.last_update_s = Some(now_s);
        if ctx.silent {
            self.confidence = (self.confidence - SILENT_CONFIDENCE_DECAY_PER_S * dt as f32).max(0.0);
        } else {
            let alpha = if self.smoothed.is_none() { 1.0 } else { 1.0 - (-dt / SMOOTHING_TAU_S).exp() as f32 };
            let (v, a) = self.smoothed.unwrap_or(raw);
            self.smoothed = Some((v + alpha * (raw.0 - v), a + alpha * (raw.1 - a)));
            let c_notes = (ctx.num_recent_notes as f32 / 12.0).min(1.0);
            let c_bars = ctx.num_bars_heard as f32 / CONTEXT_MEAN_BARS as f32;
            self.confidence = c_notes * (0.5 + 0.5 * c_bars);
        }
        let (valence, arousal) = self.smoothed.unwrap_or((0.0, 0.0));
        let bar_len_beats = if bar_len_beats.is_finite() && bar_len_beats > 0.0 { bar_len_beats } else { 4.0 };
        let bar_index = (now_beats / bar_len_beats).floor() as i64;
        let bar_done = match self.last_bar_index.replace(bar_index) {
            Some(prev) if prev != bar_index && self.smoothed.is_some() && !ctx.silent => Some((valence, arousal)),
            _ => None,
        };
        LiveEstimate { valence, arousal, confidence: self.confidence, bar_done }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(on: bool, pitch: u8, t: f64) -> ToWorker {
        ToWorker::Note { on, channel: 0, pitch, velocity: 100, time_s: t, beats: t * 2.0, song_beats: t * 2.0 }
    }

    #[test]
    fn context_matches_offline_features_for_whole_bars() {
        // C major arpeggio in eighths for 4 bars at 120 BPM (2 s per bar).
        let mut live = LiveEstimator::new();
        let mut notes = Vec::new();
        for i in 0..32 {
            let t = i as f64 * 0.25;
            let pitch = [60, 64, 67, 72][i % 4];
            live.on_event(&note(true, pitch, t));
            live.on_event(&note(false, pitch, t + 0.2));
            notes.push(Note { onset_s: t, dur_s: 0.2, onset_beats: t * 2.0, dur_beats: 0.4, pitch, velocity: 100, channel: 0 });
        }
        // The worker looks often; here, once in each bar and at its end.
        for t in [1.0, 2.0, 4.0, 6.0] {
            let _ = live.context(t, t * 2.0, 120.0, 4.0);
        }
        let ctx = live.context(8.0, 16.0, 120.0, 4.0);
        let bars: Vec<BarWindow> = (0..4)
            .map(|b| BarWindow { start_s: b as f64 * 2.0, end_s: b as f64 * 2.0 + 2.0, start_beats: b as f64 * 4.0, len_beats: 4.0, tempo_bpm: 120.0 })
            .collect();
        let offline = crate::feel::features::features_for_bars(&notes, &bars);
        let expected = crate::feel::features::context_vectors(&offline)[3];
        for (i, (a, b)) in ctx.input.iter().zip(expected.iter()).enumerate() {
            assert!((a - b).abs() < 1e-4, "feature {i}: live {a} offline {b}");
        }
        assert_eq!(ctx.num_bars_heard, 4);
        assert_eq!(ctx.num_recent_notes, 32);
        assert!(!ctx.silent);
    }

    #[test]
    fn silence_holds_the_value_and_fades_confidence() {
        let mut live = LiveEstimator::new();
        for i in 0..16 {
            live.on_event(&note(true, 60 + (i % 5) as u8, i as f64 * 0.25));
            live.on_event(&note(false, 60 + (i % 5) as u8, i as f64 * 0.25 + 0.2));
        }
        let ctx = live.context(4.0, 8.0, 120.0, 4.0);
        let e1 = live.update(&ctx, (0.5, -0.5), 4.0, 8.0, 4.0);
        assert_eq!((e1.valence, e1.arousal), (0.5, -0.5));
        assert!(e1.confidence > 0.5);
        let ctx = live.context(20.0, 40.0, 120.0, 4.0);
        assert!(ctx.silent);
        let e2 = live.update(&ctx, (-1.0, 1.0), 20.0, 40.0, 4.0);
        assert_eq!((e2.valence, e2.arousal), (0.5, -0.5));
        assert!(e2.confidence < e1.confidence);
    }

    #[test]
    fn stuck_notes_close_and_history_is_bounded() {
        let mut live = LiveEstimator::new();
        live.on_event(&note(true, 60, 0.0));
        for i in 0..(MAX_LIVE_NOTES + 100) {
            let t = 1.0 + i as f64 * 0.01;
            live.on_event(&note(true, 70, t));
        }
        let _ = live.context(1000.0, 2000.0, 120.0, 4.0);
        assert!(live.num_notes() <= MAX_LIVE_NOTES + 1);
    }
}
