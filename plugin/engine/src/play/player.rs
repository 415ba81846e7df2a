//! The continuation player, on the worker: decides when to generate (on demand, follow, call and
//! response), on which bars of the host's grid, from which heard notes; runs the model on its
//! own generator thread (so the live estimate keeps its 20 Hz); and feeds the generated notes to
//! the audio thread just in time, on the listening clock's beats.
//!
//! Every decision (whether to generate, from which bar, from which heard notes) is taken at a
//! [`Tick`] from the audio thread's queue, from the events before it in the queue and the tick's
//! clock alone, never from the wall clock: so an offline render decides what a live run decided,
//! and the same heard material, settings and seed give the same notes in both.
//!
//! Thread: worker (the [`GeneratorThread`] runs the model on a thread of its own)

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use crate::feel::live::LiveEstimator;
use crate::listen::notes::{BarWindow, Note};
use crate::play::compose::{ContinueOptions, continue_notes};
use crate::play::continuation::ContinuationModel;
use crate::play::steering::SteerRequest;
use crate::rt::queues::{Scheduled, ScheduledKind, Tick, ToWorker};
use crate::shared::Shared;

/// Bars of heard music the continuation is primed with.
pub const PRIMER_BARS: usize = 8;
/// A generation starts at the next bar line at least this far ahead (else the one after).
pub const START_MARGIN_S: f64 = 0.25;
/// How far ahead of the playhead notes are handed to the audio thread.
pub const LOOKAHEAD_S: f64 = 0.5;

/// A continuation to write.
pub struct Job {
    pub epoch: u64,
    pub heard_notes: Vec<Note>,
    pub heard_bars: Vec<BarWindow>,
    pub future: Vec<BarWindow>,
    pub opts: ContinueOptions,
}

/// What the generator thread reports.
#[derive(Debug)]
pub enum Report {
    Bar { epoch: u64, bar: u32, notes: Vec<Note> },
    Done { epoch: u64, first_bar: Duration, total: Duration, tokens: usize },
    Failed { epoch: u64, message: String },
}

/// The thread that owns the continuation model and runs jobs one at a time.
pub struct GeneratorThread {
    jobs: Option<Sender<Job>>,
    reports: Receiver<Report>,
    /// Jobs or bars of an older epoch are abandoned.
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl GeneratorThread {
    pub fn spawn(mut model: ContinuationModel) -> std::io::Result<Self> {
        let (job_tx, job_rx) = bounded::<Job>(4);
        let (rep_tx, rep_rx) = unbounded::<Report>();
        let epoch = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_epoch, thread_stop) = (epoch.clone(), stop.clone());
        let handle = std::thread::Builder::new().name("moodfader-generator".into()).spawn(move || {
            loop {
                let job = match job_rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) if !thread_stop.load(Ordering::Acquire) => continue,
                    Err(_) => break,
                };
                if job.epoch != thread_epoch.load(Ordering::Acquire) {
                    continue;
                }
                let e = job.epoch;
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    continue_notes(&mut model, &job.heard_notes, &job.heard_bars, &job.future, &job.opts, |bar, notes| {
                        let _ = rep_tx.send(Report::Bar { epoch: e, bar, notes: notes.to_vec() });
                        thread_epoch.load(Ordering::Acquire) == e && !thread_stop.load(Ordering::Acquire)
                    })
                }));
                let report = match result {
                    Ok(Ok(c)) => Report::Done {
                        epoch: e,
                        first_bar: c.generated.first_bar,
                        total: c.generated.total,
                        tokens: c.generated.num_tokens,
                    },
                    Ok(Err(err)) => Report::Failed { epoch: e, message: format!("{err:#}") },
                    Err(_) => Report::Failed { epoch: e, message: "internal error while generating".into() },
                };
                let _ = rep_tx.send(report);
            }
        })?;
        Ok(Self { jobs: Some(job_tx), reports: rep_rx, epoch, stop, handle: Some(handle) })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.jobs = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for GeneratorThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A generated note waiting to be handed to the audio thread.
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    on_beats: f64,
    off_beats: f64,
    channel: u8,
    pitch: u8,
    velocity: u8,
    on_sent: bool,
}

/// The worker's continuation state.
pub struct Player {
    generator: Option<GeneratorThread>,
    epoch: u64,
    busy: bool,
    job_start_beats: f64,
    job_asked: Instant,
    first_bar_seen: bool,
    seen_requests: Option<u32>,
    /// Listening-clock beat up to which bars are generated or being generated.
    generated_until: f64,
    outbox: Vec<Outgoing>,
    last_input_onset: Option<f64>,
    /// Call and response: the player has played since the last answer.
    armed: bool,
    playing: bool,
    cancel_requested: bool,
    last_error: Option<String>,
    /// The audio thread's release epoch last seen.
    release_epoch: u32,
    /// Notes handed over recently (for the piano roll), oldest first; bounded.
    recent: std::collections::VecDeque<Outgoing>,
}

/// Most handed-over notes kept for the piano roll.
const RECENT_NOTES: usize = 512;

impl Player {
    pub fn new(generator: Option<GeneratorThread>) -> Self {
        Self {
            generator,
            epoch: 0,
            busy: false,
            job_start_beats: 0.0,
            job_asked: Instant::now(),
            first_bar_seen: false,
            seen_requests: None,
            generated_until: f64::NEG_INFINITY,
            outbox: Vec::with_capacity(1024),
            last_input_onset: None,
            armed: false,
            playing: false,
            cancel_requested: false,
            last_error: None,
            release_epoch: 0,
            recent: std::collections::VecDeque::with_capacity(RECENT_NOTES),
        }
    }

    pub fn has_model(&self) -> bool {
        self.generator.is_some()
    }

    /// The last generation error, once.
    pub fn take_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    /// Sees every event the estimator sees.
    pub fn on_event(&mut self, ev: &ToWorker) {
        match *ev {
            ToWorker::Note { on: true, velocity, channel, beats, .. }
                if velocity > 0 && channel != crate::listen::notes::DRUM_CHANNEL && beats.is_finite() =>
            {
                self.last_input_onset = Some(beats);
                if beats >= self.generated_until {
                    self.armed = true;
                }
            }
            ToWorker::Transport { playing, jumped, .. } => {
                // A stop, a loop or a relocation: what was planned no longer lines up with the
                // song. Follow mode plans again from the new position at the next tick.
                if (self.playing && !playing) || jumped {
                    self.cancel_requested = true;
                }
                self.playing = playing;
            }
            ToWorker::Reset => {
                self.cancel_requested = true;
                self.last_input_onset = None;
                self.armed = false;
            }
            _ => {}
        }
    }

    /// Abandons the running job and every note not yet handed over; notes already sounding are
    /// released now.
    fn cancel(&mut self, now_beats: f64, to_audio: &mut rtrb::Producer<Scheduled>, shared: &Shared) {
        self.epoch += 1;
        if let Some(g) = &self.generator {
            g.epoch.store(self.epoch, Ordering::Release);
        }
        self.busy = false;
        for r in self.recent.iter_mut() {
            r.off_beats = r.off_beats.min(now_beats);
        }
        for o in self.outbox.drain(..).filter(|o| o.on_sent) {
            let off = Scheduled {
                at_beats: now_beats,
                kind: ScheduledKind::NoteOff,
                channel: o.channel,
                data1: o.pitch,
                data2: 0,
                epoch: self.release_epoch,
            };
            if to_audio.push(off).is_err() {
                shared.num_dropped_scheduled.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.generated_until = f64::NEG_INFINITY;
    }

    /// One look at the world between decision points: abandon what a stop or a switch-off
    /// cancelled, collect finished bars, and hand due notes to the audio thread.
    pub fn tick(&mut self, shared: &Shared, to_audio: &mut rtrb::Producer<Scheduled>) {
        let now_beats = shared.now_beats.load(Ordering::Relaxed);
        let tempo = shared.tempo_bpm.load(Ordering::Relaxed).clamp(1.0, 2000.0);
        let beats_per_s = tempo / 60.0;
        self.apply_cancel(shared, now_beats, to_audio);
        if (self.generator.is_none() || !shared.controls.continuation_on.load(Ordering::Relaxed))
            && (self.busy || !self.outbox.is_empty())
        {
            // Switched off: stop what is playing now.
            self.cancel(now_beats, to_audio, shared);
        }
        self.collect(shared, now_beats);
        self.flush(shared, now_beats + LOOKAHEAD_S * beats_per_s, to_audio);
    }

    /// A decision point from the audio thread's queue: everything heard before it has been seen
    /// (by `live` and [`on_event`](Self::on_event)); decide from that and `tick`'s clock.
    pub fn decide(&mut self, shared: &Shared, live: &LiveEstimator, tick: &Tick, to_audio: &mut rtrb::Producer<Scheduled>) {
        self.apply_cancel(shared, tick.beats, to_audio);
        self.collect(shared, shared.now_beats.load(Ordering::Relaxed));
        self.maybe_start(shared, live, tick);
    }

    /// Offline rendering: waits (at most `limit`) until the running generation has handed over
    /// every bar, then hands the audio thread every note due before `LOOKAHEAD_S` from now. After
    /// it, a block plays what a live run would have had in time.
    pub fn finish_generation(&mut self, shared: &Shared, to_audio: &mut rtrb::Producer<Scheduled>, limit: Duration) {
        let now_beats = shared.now_beats.load(Ordering::Relaxed);
        let deadline = Instant::now() + limit;
        while self.busy {
            let Some(g) = &self.generator else { break };
            let left = deadline.saturating_duration_since(Instant::now());
            match g.reports.recv_timeout(left) {
                Ok(r) => self.on_report(r, shared, now_beats),
                Err(_) => break,
            }
        }
        self.tick(shared, to_audio);
    }

    /// A stop, a loop, a reset or a release by the audio thread (stop, bypass) abandons the
    /// continuation.
    fn apply_cancel(&mut self, shared: &Shared, now_beats: f64, to_audio: &mut rtrb::Producer<Scheduled>) {
        let epoch = shared.release_epoch.load(Ordering::Acquire);
        if epoch != self.release_epoch {
            self.release_epoch = epoch;
            self.cancel_requested = true;
        }
        if std::mem::take(&mut self.cancel_requested) {
            self.cancel(now_beats, to_audio, shared);
        }
    }

    fn collect(&mut self, shared: &Shared, now_beats: f64) {
        while let Some(r) = self.generator.as_ref().and_then(|g| g.reports.try_recv().ok()) {
            self.on_report(r, shared, now_beats);
        }
    }

    fn on_report(&mut self, r: Report, shared: &Shared, now_beats: f64) {
        match r {
            Report::Bar { epoch, notes, .. } if epoch == self.epoch => {
                if !self.first_bar_seen {
                    self.first_bar_seen = true;
                    shared.gen_first_bar_ms.store(self.job_asked.elapsed().as_secs_f32() * 1e3, Ordering::Relaxed);
                }
                shared.num_generated_bars.fetch_add(1, Ordering::Relaxed);
                // A bar whose first note is already due is late: drop it, never play out of time.
                if notes.first().is_some_and(|n| n.onset_beats < now_beats) {
                    shared.num_late_bars.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                for n in notes {
                    let o = Outgoing {
                        on_beats: n.onset_beats,
                        off_beats: n.onset_beats + n.dur_beats.max(1e-3),
                        channel: n.channel & 15,
                        pitch: n.pitch & 127,
                        velocity: n.velocity.clamp(1, 127),
                        on_sent: false,
                    };
                    push_without_overlap(&mut self.outbox, o);
                }
            }
            Report::Done { epoch, total, .. } if epoch == self.epoch => {
                self.busy = false;
                shared.gen_total_ms.store(total.as_secs_f32() * 1e3, Ordering::Relaxed);
            }
            Report::Failed { epoch, message } if epoch == self.epoch => {
                self.busy = false;
                self.last_error = Some(message);
            }
            _ => {}
        }
    }

    fn maybe_start(&mut self, shared: &Shared, live: &LiveEstimator, tick: &Tick) {
        let c = &shared.controls;
        let requests = tick.requests;
        let seen = *self.seen_requests.get_or_insert(requests);
        if self.generator.is_none() || !c.continuation_on.load(Ordering::Relaxed) {
            self.seen_requests = Some(requests);
            // Switched off: stop what is playing.
            if self.busy || !self.outbox.is_empty() {
                self.cancel_requested = true;
            }
            return;
        }
        if self.busy {
            return;
        }
        let now_beats = tick.beats;
        let beats_per_s = tick.beats_per_s();
        let bar_len = BarWindow::len_beats_for_meter(tick.sig_num as u32, tick.sig_den as u32);
        let playing = tick.playing;
        // The bar grid: the host's bars while playing, the listening clock's otherwise.
        let next_line = if playing {
            now_beats + (bar_len - tick.song_beats.rem_euclid(bar_len))
        } else {
            (now_beats / bar_len).floor() * bar_len + bar_len
        };
        let margin = START_MARGIN_S * beats_per_s;
        let next_line = if next_line - now_beats < margin { next_line + bar_len } else { next_line };
        let bars = c.num_bars.load(Ordering::Relaxed).clamp(1, 16);
        let start = match c.trigger_mode.load(Ordering::Relaxed) {
            0 => (requests != seen).then_some(next_line),
            1 => (playing && self.generated_until < now_beats + bar_len).then(|| next_line.max(self.generated_until)),
            _ => {
                let gap = self.last_input_onset.is_some_and(|t| now_beats - t >= bar_len);
                (self.armed && gap).then_some(next_line)
            }
        };
        self.seen_requests = Some(requests);
        let Some(start) = start else { return };
        self.armed = false;
        self.start(shared, live, tick, start, bar_len, bars);
    }

    fn start(&mut self, shared: &Shared, live: &LiveEstimator, tick: &Tick, start: f64, bar_len: f64, bars: u32) {
        let Some(g) = &self.generator else { return };
        let c = &shared.controls;
        // The primer is what was heard before the tick, as it stood there.
        let (now_s, now_beats) = (tick.time_s, tick.beats);
        let beats_per_s = tick.beats_per_s();
        let tempo = beats_per_s * 60.0;
        let window = |start_beats: f64| {
            let start_s = now_s + (start_beats - now_beats) / beats_per_s;
            BarWindow { start_s, end_s: start_s + bar_len / beats_per_s, start_beats, len_beats: bar_len, tempo_bpm: tempo }
        };
        let primer_from = start - PRIMER_BARS as f64 * bar_len;
        let heard_notes = live.notes_between(primer_from, start.min(now_beats), now_s, now_beats);
        // Leading bars with nothing heard are left out of the primer.
        let first_bar = heard_notes.first().map_or(PRIMER_BARS, |n| (((n.onset_beats - primer_from) / bar_len).floor().max(0.0)) as usize);
        let heard_bars: Vec<BarWindow> = (first_bar.min(PRIMER_BARS)..PRIMER_BARS).map(|k| window(primer_from + k as f64 * bar_len)).collect();
        let future: Vec<BarWindow> = (0..bars).map(|k| window(start + k as f64 * bar_len)).collect();
        let manual = std::array::from_fn(|i| {
            (!c.attribute_auto[i].load(Ordering::Relaxed)).then(|| c.attribute[i].load(Ordering::Relaxed))
        });
        let opts = ContinueOptions {
            bars,
            steer: SteerRequest {
                target_valence: c.target_valence.load(Ordering::Relaxed),
                target_arousal: c.target_arousal.load(Ordering::Relaxed),
                steer: c.steer.load(Ordering::Relaxed),
                manual,
            },
            temperature: c.temperature.load(Ordering::Relaxed),
            seed: c.seed.load(Ordering::Relaxed) as u64,
            channel: c.out_channel.load(Ordering::Relaxed) & 15,
            ..ContinueOptions::default()
        };
        let job = Job { epoch: self.epoch, heard_notes, heard_bars, future, opts };
        if let Some(tx) = &g.jobs
            && tx.try_send(job).is_ok()
        {
            self.busy = true;
            self.first_bar_seen = false;
            self.job_asked = Instant::now();
            self.job_start_beats = start;
            self.generated_until = start + bars as f64 * bar_len;
            shared.num_generations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands the audio thread every note-on and note-off due before `horizon`.
    fn flush(&mut self, shared: &Shared, horizon: f64, to_audio: &mut rtrb::Producer<Scheduled>) {
        let mut i = 0;
        while i < self.outbox.len() {
            let o = &mut self.outbox[i];
            if !o.on_sent && o.on_beats < horizon {
                let on = Scheduled {
                    at_beats: o.on_beats,
                    kind: ScheduledKind::NoteOn,
                    channel: o.channel,
                    data1: o.pitch,
                    data2: o.velocity,
                    epoch: self.release_epoch,
                };
                if to_audio.push(on).is_err() {
                    shared.num_dropped_scheduled.fetch_add(1, Ordering::Relaxed);
                    self.outbox.swap_remove(i);
                    continue;
                }
                o.on_sent = true;
            }
            if o.on_sent && o.off_beats < horizon {
                let off = Scheduled {
                    at_beats: o.off_beats,
                    kind: ScheduledKind::NoteOff,
                    channel: o.channel,
                    data1: o.pitch,
                    data2: 0,
                    epoch: self.release_epoch,
                };
                if to_audio.push(off).is_err() {
                    // Keep it: a note-off must never be lost.
                    i += 1;
                    continue;
                }
                let done = self.outbox.swap_remove(i);
                if self.recent.len() == RECENT_NOTES {
                    self.recent.pop_front();
                }
                self.recent.push_back(done);
                continue;
            }
            i += 1;
        }
    }

    /// Generated notes still waiting to be handed over (for tests and the panel).
    pub fn num_waiting(&self) -> usize {
        self.outbox.len()
    }

    /// Generated notes of the current continuation (handed over or waiting) that end after
    /// `from_beats`, for the piano roll.
    pub fn planned_notes(&self, from_beats: f64, out: &mut Vec<crate::shared::RollNote>) {
        out.extend(
            self.recent
                .iter()
                .chain(self.outbox.iter())
                .filter(|o| o.off_beats >= from_beats)
                .map(|o| crate::shared::RollNote { start_beats: o.on_beats, end_beats: o.off_beats, pitch: o.pitch, velocity: o.velocity }),
        );
    }

    pub fn is_busy(&self) -> bool {
        self.busy
    }
}

/// Queues `o` so that no two notes of one pitch and channel overlap (a new job may start a pitch
/// the previous one still holds): of two overlapping notes the earlier one ends where the later
/// one starts, and `o` is dropped when one of the same pitch starts at the same beat.
fn push_without_overlap(outbox: &mut Vec<Outgoing>, mut o: Outgoing) {
    for w in outbox.iter_mut().filter(|w| w.channel == o.channel && w.pitch == o.pitch) {
        if (w.on_beats - o.on_beats).abs() < 1e-9 {
            return;
        }
        if w.on_beats < o.on_beats && w.off_beats > o.on_beats {
            w.off_beats = o.on_beats;
        } else if o.on_beats < w.on_beats && o.off_beats > w.on_beats {
            o.off_beats = w.on_beats;
        }
    }
    outbox.push(o);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(on: f64, off: f64, pitch: u8) -> Outgoing {
        Outgoing { on_beats: on, off_beats: off, channel: 0, pitch, velocity: 100, on_sent: false }
    }

    #[test]
    fn a_pitch_never_overlaps_itself_across_jobs() {
        let mut out = vec![note(0.0, 4.0, 60), note(0.0, 4.0, 64)];
        push_without_overlap(&mut out, note(1.0, 2.0, 60)); // the held C ends where the new one starts
        push_without_overlap(&mut out, note(0.0, 1.0, 64)); // same pitch, same beat: dropped
        push_without_overlap(&mut out, note(-1.0, 3.0, 67)); // another pitch: untouched
        push_without_overlap(&mut out, note(-2.0, 0.5, 64)); // ends where the waiting E starts
        let got: Vec<(f64, f64, u8)> = out.iter().map(|o| (o.on_beats, o.off_beats, o.pitch)).collect();
        assert_eq!(got, vec![(0.0, 1.0, 60), (0.0, 4.0, 64), (1.0, 2.0, 60), (-1.0, 3.0, 67), (-2.0, 0.0, 64)]);
    }
}
