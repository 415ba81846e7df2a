//! The real-time half of the bridge: what `process()` calls. It keeps the listening clock, turns
//! heard events into queue items with times in seconds and beats, pushes mono audio for the
//! transcriber, and plays the worker's scheduled events on their exact sample.
//!
//! Thread: audio. Nothing here allocates, locks, logs, blocks or returns a `Result`: a full queue
//! drops the item and bumps a counter in [`Shared`]. The one exception is an offline render
//! (the host said so): [`AudioSide::sync_with_worker`] then waits for the worker.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::rt::queues::{AudioEnds, MAX_PENDING_EVENTS, Scheduled, ScheduledKind, TICK_BEATS, Tick, ToWorker};
use crate::shared::Shared;

/// Host transport as the engine sees it (the plugin converts its framework's type to this).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransportInfo {
    pub playing: bool,
    pub tempo_bpm: Option<f64>,
    pub sig_num: Option<u32>,
    pub sig_den: Option<u32>,
    /// Song position of the block's first sample, in quarter notes.
    pub pos_beats: Option<f64>,
}

impl TransportInfo {
    /// A host that tells nothing.
    pub const NONE: TransportInfo =
        TransportInfo { playing: false, tempo_bpm: None, sig_num: None, sig_den: None, pos_beats: None };
}

/// An event to send out of the plugin, with its sample offset inside the block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutEvent {
    NoteOn { channel: u8, pitch: u8, velocity: u8 },
    NoteOff { channel: u8, pitch: u8 },
    Control { channel: u8, cc: u8, value: u8 },
}

/// CC numbers of the mood output: valence, arousal.
pub const MOOD_CC_VALENCE: u8 = 20;
pub const MOOD_CC_AROUSAL: u8 = 21;
/// Least time between two mood CC updates.
pub const MOOD_CC_MIN_INTERVAL_S: f64 = 0.1;

const DEFAULT_TEMPO_BPM: f64 = 120.0;
/// Offline, the longest one block waits for the worker; past it the block goes on without
/// (counted in `Shared::num_offline_timeouts`), so a stuck worker cannot hang a render.
pub const OFFLINE_WAIT_LIMIT_S: f64 = 10.0;
/// Most decision points one block sends (a 1/16-beat grid: 64 points are 4 beats).
pub const MAX_TICKS_PER_BLOCK: usize = 64;
/// Highest sample rate taken at face value.
pub const MAX_SAMPLE_RATE_HZ: f64 = 1.0e7;
const MIN_TEMPO_BPM: f64 = 1.0;
const MAX_TEMPO_BPM: f64 = 2000.0;

/// The audio thread's side of the engine. Create on activation (allocates), then call
/// [`begin_block`](Self::begin_block), the event and audio methods, and
/// [`end_block`](Self::end_block) once per `process()`.
pub struct AudioSide {
    ends: AudioEnds,
    shared: Arc<Shared>,
    sample_rate_hz: f64,
    /// Listening clock at the first sample of the current block.
    clock_samples: u64,
    clock_beats: f64,
    song_beats: f64,
    tempo_bpm: f64,
    sig_num: u32,
    sig_den: u32,
    playing: bool,
    block_len: u32,
    pending: [Scheduled; MAX_PENDING_EVENTS],
    num_pending: usize,
    /// Generated notes now sounding, per channel a 128-bit set, so they can all be released.
    sounding: [u128; 16],
    /// The song position jumped at this block's start (loop, relocation).
    jumped: bool,
    last_mood_cc: [u8; 2],
    last_mood_cc_sample: u64,
    mood_cc_sent_once: bool,
    /// Index (on the [`TICK_BEATS`] grid) of the last decision point sent.
    last_tick: i64,
    /// Offline rendering: every block waits for the worker (see [`sync_with_worker`](Self::sync_with_worker)).
    offline: bool,
    worker_thread: Option<std::thread::Thread>,
    sync_seq: u64,
}

impl AudioSide {
    /// Allocates; call from `activate()` only.
    pub fn new(ends: AudioEnds, shared: Arc<Shared>, sample_rate_hz: f64) -> Box<Self> {
        // A rate no audio interface runs at (NaN, ≤ 0, above 10 MHz) falls back to 48 kHz.
        let sample_rate_hz =
            if sample_rate_hz.is_finite() && sample_rate_hz > 0.0 && sample_rate_hz <= MAX_SAMPLE_RATE_HZ { sample_rate_hz } else { 48_000.0 };
        shared.sample_rate_hz.store(sample_rate_hz, Ordering::Relaxed);
        Box::new(Self {
            ends,
            shared,
            sample_rate_hz,
            clock_samples: 0,
            clock_beats: 0.0,
            song_beats: 0.0,
            tempo_bpm: DEFAULT_TEMPO_BPM,
            sig_num: 4,
            sig_den: 4,
            playing: false,
            block_len: 0,
            pending: [Scheduled { at_beats: 0.0, kind: ScheduledKind::NoteOff, channel: 0, data1: 0, data2: 0, epoch: 0 };
                MAX_PENDING_EVENTS],
            num_pending: 0,
            sounding: [0; 16],
            jumped: false,
            last_mood_cc: [255; 2],
            last_mood_cc_sample: 0,
            mood_cc_sent_once: false,
            last_tick: i64::MIN,
            offline: false,
            worker_thread: None,
            sync_seq: 0,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Offline rendering (the host said so on activation): each block waits for the worker,
    /// woken through `worker`. Call from `activate()`, after `Shared::offline` was set for the
    /// worker to read.
    pub fn set_offline(&mut self, offline: bool, worker: Option<std::thread::Thread>) {
        self.offline = offline;
        self.worker_thread = worker;
    }

    /// Offline only (in real time it returns at once): waits until the worker has handled every
    /// event sent so far, so that what it plans from them (estimates, generated bars due soon)
    /// is in the queues before this block plays. Gives up after [`OFFLINE_WAIT_LIMIT_S`], or at
    /// once when the worker is gone. Waiting is allowed here only because the host renders
    /// offline; call it after [`begin_block`](Self::begin_block).
    pub fn sync_with_worker(&mut self) {
        if !self.offline {
            return;
        }
        self.sync_seq += 1;
        let seq = self.sync_seq;
        if self.ends.to_worker.push(ToWorker::Sync { seq }).is_err() {
            self.shared.num_dropped_to_worker.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(t) = &self.worker_thread {
            t.unpark();
        }
        let started = std::time::Instant::now();
        let mut spins = 0u32;
        while self.shared.synced_seq.load(Ordering::Acquire) < seq {
            if !self.shared.worker_alive.load(Ordering::Acquire) {
                return;
            }
            if started.elapsed().as_secs_f64() > OFFLINE_WAIT_LIMIT_S {
                self.shared.num_offline_timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
        }
    }

    pub fn sample_rate_hz(&self) -> f64 {
        self.sample_rate_hz
    }

    /// Listening clock (samples since activation) of the current block's first sample.
    pub fn clock_samples(&self) -> u64 {
        self.clock_samples
    }

    /// Whether the host's song position jumped at this block's start (a loop or a relocation).
    pub fn jumped(&self) -> bool {
        self.jumped
    }

    /// Listening clock (quarter notes) of the current block's first sample.
    pub fn clock_beats(&self) -> f64 {
        self.clock_beats
    }

    fn send(&mut self, ev: ToWorker) {
        if self.ends.to_worker.push(ev).is_err() {
            self.shared.num_dropped_to_worker.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forget everything heard (host reset). Real-time safe.
    pub fn reset(&mut self) {
        self.send(ToWorker::Reset);
    }

    /// Starts a block of `num_samples` with the host's transport.
    pub fn begin_block(&mut self, transport: &TransportInfo, num_samples: u32) {
        self.block_len = num_samples;
        let tempo = transport
            .tempo_bpm
            .filter(|t| t.is_finite())
            .map(|t| t.clamp(MIN_TEMPO_BPM, MAX_TEMPO_BPM))
            .unwrap_or(self.tempo_bpm);
        let num = transport.sig_num.filter(|n| (1..=64).contains(n)).unwrap_or(self.sig_num);
        let den = transport.sig_den.filter(|d| (1..=64).contains(d)).unwrap_or(self.sig_den);
        let expected_song = self.song_beats;
        let song = transport.pos_beats.filter(|b| b.is_finite()).unwrap_or(expected_song);
        let jumped = (song - expected_song).abs() > 1e-3;
        self.jumped = jumped;
        let changed = transport.playing != self.playing
            || (tempo - self.tempo_bpm).abs() > 1e-6
            || num != self.sig_num
            || den != self.sig_den
            || jumped;
        self.tempo_bpm = tempo;
        self.sig_num = num;
        self.sig_den = den;
        self.song_beats = song;
        self.playing = transport.playing;
        if changed {
            let time_s = self.seconds_at(0);
            self.send(ToWorker::Transport {
                playing: self.playing,
                tempo_bpm: tempo,
                sig_num: num.min(255) as u8,
                sig_den: den.min(255) as u8,
                song_beats: song,
                time_s,
                jumped,
            });
        }
        let s = &self.shared;
        s.now_samples.store(self.clock_samples, Ordering::Relaxed);
        s.now_s.store(self.seconds_at(0), Ordering::Relaxed);
        s.now_beats.store(self.clock_beats, Ordering::Relaxed);
        s.song_beats.store(song, Ordering::Relaxed);
        s.tempo_bpm.store(tempo, Ordering::Relaxed);
        s.sig_num.store(num, Ordering::Relaxed);
        s.sig_den.store(den, Ordering::Relaxed);
        s.playing.store(self.playing, Ordering::Release);
        self.send_tick();
    }

    /// Sends the player's decision points: one for every point of the [`TICK_BEATS`] grid this
    /// block starts on or after that was not sent yet, with the clocks as they were there (a
    /// long block, or a jump of the clock, sends at most [`MAX_TICKS_PER_BLOCK`], the latest).
    /// Every event heard before a point was sent in an earlier block, so it is ahead of the
    /// tick in the queue; the points do not depend on the block size.
    fn send_tick(&mut self) {
        let index = (self.clock_beats / TICK_BEATS).floor();
        if !index.is_finite() || index.abs() > 1e15 {
            return;
        }
        let index = index as i64;
        if index <= self.last_tick {
            return;
        }
        // The first block sends its own point only.
        let first = if self.last_tick == i64::MIN {
            index
        } else {
            (self.last_tick + 1).max(index - (MAX_TICKS_PER_BLOCK as i64 - 1))
        };
        self.last_tick = index;
        let requests = self.shared.controls.generate_requests.load(Ordering::Acquire);
        let seconds_now = self.seconds_at(0);
        for i in first..=index {
            let beats = i as f64 * TICK_BEATS;
            let back_beats = self.clock_beats - beats;
            let tick = Tick {
                time_s: seconds_now - back_beats * 60.0 / self.tempo_bpm,
                beats,
                song_beats: self.song_beats - if self.playing { back_beats } else { 0.0 },
                playing: self.playing,
                tempo_bpm: self.tempo_bpm,
                sig_num: self.sig_num.min(255) as u8,
                sig_den: self.sig_den.min(255) as u8,
                requests,
            };
            self.send(ToWorker::Tick(tick));
        }
    }

    fn seconds_at(&self, timing: u32) -> f64 {
        (self.clock_samples + timing as u64) as f64 / self.sample_rate_hz
    }

    fn beats_after(&self, timing: u32) -> f64 {
        timing as f64 / self.sample_rate_hz * self.tempo_bpm / 60.0
    }

    /// A heard note on (velocity > 0) or off at sample `timing` of this block.
    pub fn note(&mut self, timing: u32, on: bool, channel: u8, pitch: u8, velocity: u8) {
        let timing = timing.min(self.block_len.saturating_sub(1));
        let ev = ToWorker::Note {
            on,
            channel: channel & 15,
            pitch: pitch & 127,
            velocity: velocity & 127,
            time_s: self.seconds_at(timing),
            beats: self.clock_beats + self.beats_after(timing),
            song_beats: self.song_beats + self.beats_after(timing),
        };
        self.send(ev);
    }

    /// A heard controller change.
    pub fn control(&mut self, timing: u32, channel: u8, cc: u8, value: u8) {
        let time_s = self.seconds_at(timing.min(self.block_len.saturating_sub(1)));
        self.send(ToWorker::Control { channel: channel & 15, cc: cc & 127, value: value & 127, time_s });
    }

    /// Pushes the mono downmix of `channels` (non-finite samples become 0) for the transcriber.
    pub fn push_audio(&mut self, channels: &[&mut [f32]]) {
        let num_channels = channels.len();
        if num_channels == 0 {
            return;
        }
        let num_samples = channels.iter().map(|c| c.len()).min().unwrap_or(0);
        let free = self.ends.audio.slots();
        let n = num_samples.min(free);
        if n < num_samples {
            self.shared.num_dropped_audio_samples.fetch_add((num_samples - n) as u64, Ordering::Relaxed);
        }
        if n == 0 {
            return;
        }
        let scale = 1.0 / num_channels as f32;
        if let Ok(mut chunk) = self.ends.audio.write_chunk_uninit(n) {
            let (a, b) = chunk.as_mut_slices();
            for (i, slot) in a.iter_mut().chain(b.iter_mut()).enumerate() {
                let mut sum = 0.0f32;
                for c in channels {
                    let v = c[i];
                    sum += if v.is_finite() { v } else { 0.0 };
                }
                slot.write(sum * scale);
            }
            // SAFETY: every slot of both slices was written just above.
            unsafe { chunk.commit_all() };
        }
    }

    /// Calls `emit(timing, event)` for every scheduled event due in this block, in time order,
    /// and for the mood CCs when `mood_cc_channel` is `Some`. Late note-ons are dropped and
    /// counted; late note-offs still play at the block start so nothing hangs.
    pub fn due_events(&mut self, mood_cc_channel: Option<u8>, mut emit: impl FnMut(u32, OutEvent)) {
        // Take everything the worker has sent into the pending list; note-ons handed over before
        // the last release are stale.
        let epoch = self.shared.release_epoch.load(Ordering::Relaxed);
        while let Ok(ev) = self.ends.from_worker.pop() {
            if ev.kind == ScheduledKind::NoteOn && ev.epoch != epoch {
                continue;
            }
            if self.num_pending < MAX_PENDING_EVENTS {
                self.pending[self.num_pending] = ev;
                self.num_pending += 1;
            } else {
                self.shared.num_dropped_pending.fetch_add(1, Ordering::Relaxed);
            }
        }
        let block_start = self.clock_samples;
        // The block spans [clock_beats, block_end_beats) at this block's tempo.
        let beats_per_sample = self.tempo_bpm / 60.0 / self.sample_rate_hz;
        let block_end_beats = self.clock_beats + self.beats_after(self.block_len);
        // Half a sample of tolerance, so an event computed on the same grid is not "late".
        let tolerance = 0.5 * beats_per_sample;
        loop {
            // Earliest due event; ties keep note-offs first. NaN times are due now.
            let mut best: Option<usize> = None;
            for i in 0..self.num_pending {
                let e = &self.pending[i];
                if e.at_beats >= block_end_beats - tolerance {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some(b) => {
                        let pb = &self.pending[b];
                        // At one time: note-offs first, then by channel and key, so the order
                        // does not depend on when the worker handed them over (live or offline).
                        let rank = |x: &Scheduled| (x.kind != ScheduledKind::NoteOff, x.channel, x.data1);
                        e.at_beats.total_cmp(&pb.at_beats).then_with(|| rank(e).cmp(&rank(pb))).is_lt()
                    }
                };
                if better {
                    best = Some(i);
                }
            }
            let Some(i) = best else { break };
            let ev = self.pending[i];
            self.num_pending -= 1;
            self.pending[i] = self.pending[self.num_pending];
            let offset = (ev.at_beats - self.clock_beats) / beats_per_sample;
            let late = offset.is_nan() || offset <= -0.5;
            let timing = if late { 0 } else { (offset.round().max(0.0) as u32).min(self.block_len.saturating_sub(1)) };
            let ch = ev.channel & 15;
            match ev.kind {
                ScheduledKind::NoteOn if late => {
                    self.shared.num_late_dropped.fetch_add(1, Ordering::Relaxed);
                }
                ScheduledKind::NoteOn => {
                    self.sounding[ch as usize] |= 1u128 << (ev.data1 & 127);
                    emit(timing, OutEvent::NoteOn { channel: ch, pitch: ev.data1 & 127, velocity: ev.data2.clamp(1, 127) });
                }
                ScheduledKind::NoteOff => {
                    let bit = 1u128 << (ev.data1 & 127);
                    if self.sounding[ch as usize] & bit != 0 {
                        self.sounding[ch as usize] &= !bit;
                        emit(timing, OutEvent::NoteOff { channel: ch, pitch: ev.data1 & 127 });
                    }
                }
                ScheduledKind::Control => {
                    emit(timing, OutEvent::Control { channel: ch, cc: ev.data1 & 127, value: ev.data2 & 127 })
                }
            }
        }

        if let Some(ch) = mood_cc_channel {
            let min_gap = (MOOD_CC_MIN_INTERVAL_S * self.sample_rate_hz) as u64;
            if self.shared.num_estimates.load(Ordering::Acquire) > 0
                && (!self.mood_cc_sent_once || block_start >= self.last_mood_cc_sample.saturating_add(min_gap))
            {
                let v = self.shared.valence.load(Ordering::Relaxed);
                let a = self.shared.arousal.load(Ordering::Relaxed);
                let q = [to_cc(v), to_cc(a)];
                let ccs = [MOOD_CC_VALENCE, MOOD_CC_AROUSAL];
                let mut sent = false;
                for k in 0..2 {
                    if q[k] != self.last_mood_cc[k] {
                        emit(0, OutEvent::Control { channel: ch & 15, cc: ccs[k], value: q[k] });
                        self.last_mood_cc[k] = q[k];
                        sent = true;
                    }
                }
                if sent {
                    self.last_mood_cc_sample = block_start;
                    self.mood_cc_sent_once = true;
                }
            }
        } else {
            self.last_mood_cc = [255; 2];
        }
    }

    /// Releases every generated note still sounding (transport stop, bypass, deactivation).
    pub fn all_notes_off(&mut self, mut emit: impl FnMut(u32, OutEvent)) {
        for ch in 0..16u8 {
            let mut bits = self.sounding[ch as usize];
            while bits != 0 {
                let pitch = bits.trailing_zeros() as u8;
                bits &= !(1u128 << pitch);
                emit(0, OutEvent::NoteOff { channel: ch, pitch });
            }
            self.sounding[ch as usize] = 0;
        }
        // Pending note-ons would start notes after the stop: drop them, keep nothing, and tell
        // the worker (whatever it hands over from before this moment is stale).
        self.num_pending = 0;
        self.shared.release_epoch.fetch_add(1, Ordering::AcqRel);
        while self.ends.from_worker.pop().is_ok() {}
    }

    /// Advances the listening clock past this block.
    pub fn end_block(&mut self) {
        let n = self.block_len;
        self.clock_beats += self.beats_after(n);
        self.song_beats += if self.playing { self.beats_after(n) } else { 0.0 };
        self.clock_samples += n as u64;
    }
}

fn to_cc(x: f32) -> u8 {
    let x = if x.is_finite() { x.clamp(-1.0, 1.0) } else { 0.0 };
    ((x + 1.0) * 0.5 * 127.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::queues::queues;

    fn side() -> (Box<AudioSide>, crate::rt::queues::WorkerEnds) {
        let (a, w) = queues();
        (AudioSide::new(a, Arc::new(Shared::default()), 48_000.0), w)
    }

    fn playing_at(beats: f64) -> TransportInfo {
        TransportInfo { playing: true, tempo_bpm: Some(120.0), sig_num: Some(4), sig_den: Some(4), pos_beats: Some(beats) }
    }

    #[test]
    fn note_times_are_sample_accurate_in_seconds_and_beats() {
        let (mut s, mut w) = side();
        s.begin_block(&playing_at(0.0), 480);
        s.end_block();
        s.begin_block(&playing_at(0.02), 480);
        s.note(240, true, 0, 60, 100);
        let mut found = None;
        while let Ok(ev) = w.from_audio.pop() {
            if let ToWorker::Note { time_s, beats, song_beats, .. } = ev {
                found = Some((time_s, beats, song_beats));
            }
        }
        let (t, b, sb) = found.unwrap();
        assert!((t - 720.0 / 48_000.0).abs() < 1e-12);
        assert!((b - 720.0 / 48_000.0 * 2.0).abs() < 1e-12);
        assert!((sb - (0.02 + 240.0 / 48_000.0 * 2.0)).abs() < 1e-12);
    }

    /// The listening-clock beat of sample `n` at 120 BPM and 48 kHz.
    fn beat_of(n: u64) -> f64 {
        n as f64 / 24_000.0
    }

    #[test]
    fn scheduled_beats_follow_a_tempo_change() {
        let (mut s, mut w) = side();
        let at_tempo = |bpm: f64| TransportInfo { tempo_bpm: Some(bpm), ..TransportInfo::NONE };
        // Beat 1.0: at 120 BPM that is sample 24 000; the tempo halves after 12 000 samples
        // (beat 0.5), so the event lands 24 000 samples later, at sample 36 000.
        w.to_audio.push(Scheduled { at_beats: 1.0, kind: ScheduledKind::NoteOn, channel: 0, data1: 60, data2: 100, epoch: 0 }).unwrap();
        let mut seen = None;
        for block in 0..100u64 {
            s.begin_block(&at_tempo(if block < 24 { 120.0 } else { 60.0 }), 500);
            s.due_events(None, |t, _| seen = Some(block * 500 + t as u64));
            s.end_block();
        }
        assert_eq!(seen, Some(36_000));
    }

    #[test]
    fn scheduled_events_play_on_their_sample_and_late_ones_drop() {
        let (mut s, mut w) = side();
        w.to_audio.push(Scheduled { at_beats: beat_of(100), kind: ScheduledKind::NoteOn, channel: 2, data1: 64, data2: 90, epoch: 0 }).unwrap();
        w.to_audio.push(Scheduled { at_beats: beat_of(700), kind: ScheduledKind::NoteOff, channel: 2, data1: 64, data2: 0, epoch: 0 }).unwrap();
        let mut out = Vec::new();
        s.begin_block(&TransportInfo::NONE, 512);
        s.due_events(None, |t, e| out.push((t, e)));
        s.end_block();
        assert_eq!(out, vec![(100, OutEvent::NoteOn { channel: 2, pitch: 64, velocity: 90 })]);
        out.clear();
        // A note-on that is already late when it arrives is dropped and counted.
        w.to_audio.push(Scheduled { at_beats: beat_of(10), kind: ScheduledKind::NoteOn, channel: 0, data1: 1, data2: 1, epoch: 0 }).unwrap();
        s.begin_block(&TransportInfo::NONE, 512);
        s.due_events(None, |t, e| out.push((t, e)));
        s.end_block();
        assert_eq!(out, vec![(700 - 512, OutEvent::NoteOff { channel: 2, pitch: 64 })]);
        assert_eq!(s.shared().num_late_dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn absurd_sample_rates_fall_back_and_mood_cc_does_not_overflow() {
        // Found by fuzzing: at ~1.8e20 Hz the rate-limit sum overflowed.
        for rate in [1.8e20, f64::INFINITY, f64::NAN, -48_000.0, 0.0] {
            let (a, _w) = queues();
            let mut s = AudioSide::new(a, Arc::new(Shared::default()), rate);
            assert_eq!(s.sample_rate_hz(), 48_000.0);
            s.shared().publish_estimate(0.5, 0.5, 1.0);
            for k in 0..5 {
                s.shared().publish_estimate(k as f32 * 0.1, 0.0, 1.0);
                s.begin_block(&TransportInfo::NONE, 4096);
                s.due_events(Some(0), |_, _| {});
                s.end_block();
            }
        }
    }

    #[test]
    fn all_notes_off_releases_sounding_notes() {
        let (mut s, mut w) = side();
        for p in [60, 64, 67] {
            w.to_audio.push(Scheduled { at_beats: 0.0, kind: ScheduledKind::NoteOn, channel: 0, data1: p, data2: 80, epoch: 0 }).unwrap();
        }
        s.begin_block(&TransportInfo::NONE, 64);
        s.due_events(None, |_, _| {});
        let mut offs = Vec::new();
        s.all_notes_off(|_, e| offs.push(e));
        assert_eq!(offs.len(), 3);
        let mut again = Vec::new();
        s.all_notes_off(|_, e| again.push(e));
        assert!(again.is_empty());
        // A note-on the worker handed over before the release (old epoch) never starts.
        assert_eq!(s.shared().release_epoch.load(Ordering::Relaxed), 2);
        w.to_audio.push(Scheduled { at_beats: 0.0, kind: ScheduledKind::NoteOn, channel: 0, data1: 60, data2: 80, epoch: 1 }).unwrap();
        s.due_events(None, |_, e| again.push(e));
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let (mut s, _w) = side();
        s.begin_block(&TransportInfo::NONE, 64);
        // The block's transport and decision point are in the queue already.
        let sent = crate::rt::queues::TO_WORKER_CAPACITY - s.ends.to_worker.slots();
        assert!(sent >= 1);
        for _ in 0..crate::rt::queues::TO_WORKER_CAPACITY + 10 {
            s.note(0, true, 0, 60, 100);
        }
        assert_eq!(s.shared().num_dropped_to_worker.load(Ordering::Relaxed), 10 + sent as u64);
    }

    fn ticks(w: &mut crate::rt::queues::WorkerEnds) -> Vec<Tick> {
        let mut out = Vec::new();
        while let Ok(ev) = w.from_audio.pop() {
            if let ToWorker::Tick(t) = ev {
                out.push(t);
            }
        }
        out
    }

    /// Decision points lie on the 1/16-beat grid of the listening clock whatever the block
    /// size, each with the clocks as they were at it.
    #[test]
    fn decision_points_do_not_depend_on_the_block_size() {
        let run = |block: u32| {
            let (mut s, mut w) = side();
            let mut all = Vec::new();
            for _ in 0..(48_000 / block) {
                s.begin_block(&TransportInfo::NONE, block);
                s.end_block();
                all.extend(ticks(&mut w));
            }
            all
        };
        let (small, large) = (run(64), run(4000));
        // 1 s at 120 BPM: 2 beats, 32 points (the last block of 4000 ends at 0.9167 s).
        assert_eq!(small.len(), 32);
        assert!(large.len() >= 29);
        for (a, b) in small.iter().zip(&large) {
            assert_eq!(a.beats, b.beats, "same points");
            assert!((a.time_s - b.time_s).abs() < 1e-9 && (a.song_beats - b.song_beats).abs() < 1e-9, "same clocks");
        }
        for (k, t) in small.iter().enumerate() {
            assert!((t.beats - k as f64 * TICK_BEATS).abs() < 1e-12);
            assert!((t.time_s - t.beats * 0.5).abs() < 1e-9, "clock back-computed to the point");
        }
    }

    #[test]
    fn a_jump_of_the_clock_sends_at_most_a_block_of_points() {
        let (mut s, mut w) = side();
        s.begin_block(&TransportInfo::NONE, 64);
        s.end_block();
        ticks(&mut w);
        // 10 s in one block: 320 points crossed, only the latest MAX_TICKS_PER_BLOCK sent.
        s.begin_block(&TransportInfo::NONE, 480_000);
        s.end_block();
        s.begin_block(&TransportInfo::NONE, 64);
        let t = ticks(&mut w);
        assert_eq!(t.len(), MAX_TICKS_PER_BLOCK);
        assert!((t.last().unwrap().beats - 20.0).abs() < 1e-9);
    }

    /// In real time the audio thread never waits: nothing is sent and it returns at once.
    #[test]
    fn sync_is_a_no_op_in_real_time() {
        let (mut s, mut w) = side();
        s.sync_with_worker();
        assert!(w.from_audio.pop().is_err());
    }

    /// Offline, a block waits for the worker, and stops waiting when the worker is gone.
    #[test]
    fn offline_sync_waits_for_the_worker_and_not_for_a_dead_one() {
        let (mut s, mut w) = side();
        let shared = s.shared().clone();
        shared.worker_alive.store(true, Ordering::Release);
        let answer = std::thread::spawn(move || {
            loop {
                if let Ok(ToWorker::Sync { seq }) = w.from_audio.pop() {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    shared.synced_seq.store(seq, Ordering::Release);
                    return w;
                }
                std::thread::yield_now();
            }
        });
        s.set_offline(true, None);
        let t0 = std::time::Instant::now();
        s.sync_with_worker();
        assert!(t0.elapsed() >= std::time::Duration::from_millis(30), "waited for the answer");
        assert_eq!(s.shared().synced_seq.load(Ordering::Acquire), 1);
        let _w = answer.join().unwrap();
        s.shared().worker_alive.store(false, Ordering::Release);
        let t0 = std::time::Instant::now();
        s.sync_with_worker();
        assert!(t0.elapsed() < std::time::Duration::from_secs(1), "a dead worker is not waited for");
        assert_eq!(s.shared().num_offline_timeouts.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn mood_cc_follows_the_estimate_and_is_rate_limited() {
        let (mut s, _w) = side();
        s.shared().publish_estimate(1.0, -1.0, 1.0);
        let mut out = Vec::new();
        s.begin_block(&TransportInfo::NONE, 64);
        s.due_events(Some(3), |t, e| out.push((t, e)));
        s.end_block();
        assert_eq!(out, vec![
            (0, OutEvent::Control { channel: 3, cc: MOOD_CC_VALENCE, value: 127 }),
            (0, OutEvent::Control { channel: 3, cc: MOOD_CC_AROUSAL, value: 0 }),
        ]);
        out.clear();
        s.shared().publish_estimate(0.0, -1.0, 1.0);
        s.begin_block(&TransportInfo::NONE, 64);
        s.due_events(Some(3), |t, e| out.push((t, e)));
        s.end_block();
        assert!(out.is_empty(), "rate limit");
        for _ in 0..100 {
            s.begin_block(&TransportInfo::NONE, 64);
            s.due_events(Some(3), |t, e| out.push((t, e)));
            s.end_block();
        }
        assert_eq!(out, vec![(0, OutEvent::Control { channel: 3, cc: MOOD_CC_VALENCE, value: 64 })]);
    }
}
