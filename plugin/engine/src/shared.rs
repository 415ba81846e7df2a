//! What the threads share besides the queues: the atomics that carry the transport clock, the
//! user's controls, the live estimate, status and drop counters, and the piano roll.
//!
//! Thread: any. Each field of [`Shared`] says who writes it and who reads it. The audio thread only
//! touches atomics here, never [`Shared::status_text`] or the roll (behind locks, GUI and worker only).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use atomic_float::{AtomicF32, AtomicF64};

/// Number of per-bar estimates kept for the panel's trail.
pub const TRAIL_LEN: usize = 16;

/// The worker's state as shown in the panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WorkerStatus {
    Stopped = 0,
    Loading = 1,
    Ready = 2,
    Error = 3,
}

impl WorkerStatus {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Loading,
            2 => Self::Ready,
            3 => Self::Error,
            _ => Self::Stopped,
        }
    }
}

/// Values of [`Controls::input_source`].
pub const INPUT_MIDI: u8 = 0;
pub const INPUT_AUDIO: u8 = 1;
pub const INPUT_BOTH: u8 = 2;

/// The user's controls as the worker sees them: copied from the host's parameters by the audio
/// thread once per block (relaxed atomic stores, no allocation), read by the worker whenever it
/// plans or generates. Attribute order is [`crate::Attribute::ALL`].
#[derive(Debug)]
pub struct Controls {
    pub target_valence: AtomicF32,
    pub target_arousal: AtomicF32,
    /// 0 = continue as heard, 1 = fully steered.
    pub steer: AtomicF32,
    /// Fader values in [0, 1].
    pub attribute: [AtomicF32; 8],
    /// Whether each fader follows the valence/arousal target.
    pub attribute_auto: [AtomicBool; 8],
    pub continuation_on: AtomicBool,
    /// 0 on demand, 1 follow, 2 call and response.
    pub trigger_mode: AtomicU8,
    pub num_bars: AtomicU32,
    pub temperature: AtomicF32,
    pub seed: AtomicU32,
    /// Zero-based output MIDI channel.
    pub out_channel: AtomicU8,
    /// 0 MIDI, 1 audio, 2 both ([`INPUT_MIDI`], [`INPUT_AUDIO`], [`INPUT_BOTH`]).
    pub input_source: AtomicU8,
    pub preview: AtomicBool,
    /// Counts "generate now" requests (the button's rising edge, the trigger note). The worker
    /// generates once per increment it sees.
    pub generate_requests: AtomicU32,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            target_valence: AtomicF32::new(0.0),
            target_arousal: AtomicF32::new(0.0),
            steer: AtomicF32::new(0.5),
            attribute: std::array::from_fn(|_| AtomicF32::new(0.5)),
            attribute_auto: std::array::from_fn(|_| AtomicBool::new(true)),
            continuation_on: AtomicBool::new(false),
            trigger_mode: AtomicU8::new(0),
            num_bars: AtomicU32::new(4),
            temperature: AtomicF32::new(1.0),
            seed: AtomicU32::new(1),
            out_channel: AtomicU8::new(0),
            input_source: AtomicU8::new(0),
            preview: AtomicBool::new(false),
            generate_requests: AtomicU32::new(0),
        }
    }
}

/// State shared by the audio thread, the worker and the panel.
#[derive(Debug)]
pub struct Shared {
    // Written by the audio thread once per block; read by the worker.
    /// Listening clock in samples since activation.
    pub now_samples: AtomicU64,
    /// Listening clock in seconds since activation.
    pub now_s: AtomicF64,
    /// Listening clock in quarter notes.
    pub now_beats: AtomicF64,
    /// Host song position in quarter notes (free-running when the host has no transport).
    pub song_beats: AtomicF64,
    pub tempo_bpm: AtomicF64,
    pub sig_num: AtomicU32,
    pub sig_den: AtomicU32,
    pub playing: AtomicBool,
    pub sample_rate_hz: AtomicF64,

    // Written by the audio thread; read by the panel.
    /// Events dropped because the audio → worker queue was full.
    pub num_dropped_to_worker: AtomicU64,
    /// Audio samples dropped because the audio queue was full.
    pub num_dropped_audio_samples: AtomicU64,
    /// Scheduled events dropped because the pending list was full.
    pub num_dropped_pending: AtomicU64,
    /// Scheduled note-ons that arrived after their sample and were not played.
    pub num_late_dropped: AtomicU64,
    /// Output events the host's buffer refused.
    pub num_dropped_output: AtomicU64,

    // Written by the worker; read by the audio thread (mood CC) and the panel.
    /// Smoothed live valence in [-1, 1].
    pub valence: AtomicF32,
    /// Smoothed live arousal in [-1, 1].
    pub arousal: AtomicF32,
    /// How much the estimate has to go on, in [0, 1] (0: nothing heard yet).
    pub confidence: AtomicF32,
    /// The smoothed live value before the listener's calibration (what a calibration is fit on).
    pub raw_valence: AtomicF32,
    pub raw_arousal: AtomicF32,
    /// The listener's personal calibration (see `calibration.rs`): valence offset and scale,
    /// arousal offset and scale. Written by the panel (and on activation from the saved state);
    /// the worker applies it to everything it publishes.
    pub calibration: [AtomicF32; 4],
    /// Increments on every estimate the worker publishes.
    pub num_estimates: AtomicU64,
    /// Cost of the last estimator update in microseconds.
    pub update_us: AtomicF32,
    pub status: AtomicU8,
    /// Per-bar estimates, newest at `trail_head - 1` (mod [`TRAIL_LEN`]).
    pub trail_valence: [AtomicF32; TRAIL_LEN],
    pub trail_arousal: [AtomicF32; TRAIL_LEN],
    pub trail_head: AtomicU32,
    pub trail_len: AtomicU32,

    // Written by the worker (continuation); read by the panel.
    /// Continuations started and bars delivered.
    pub num_generations: AtomicU64,
    pub num_generated_bars: AtomicU64,
    /// Time from request to first bar ready, and to the whole continuation, of the last one (ms).
    pub gen_first_bar_ms: AtomicF32,
    pub gen_total_ms: AtomicF32,
    /// Generated bars that arrived after their start and were left out.
    pub num_late_bars: AtomicU64,
    /// Scheduled events the worker → audio queue refused.
    pub num_dropped_scheduled: AtomicU64,
    /// Whether the continuation model is loaded.
    pub continuation_ready: AtomicBool,
    /// Bumped by the audio thread on every all-notes-off (transport stop, bypass); the worker
    /// abandons its continuation when it sees it change.
    pub release_epoch: AtomicU32,

    // Offline rendering (the host renders faster than real time: a bounce, a freeze, an export).
    /// Whether the plugin was activated for an offline render (written on activation).
    pub offline: AtomicBool,
    /// Whether the worker thread runs (false once it stopped or died): an offline render stops
    /// waiting for a worker that is gone.
    pub worker_alive: AtomicBool,
    /// The last `ToWorker::Sync` the worker has answered (offline only).
    pub synced_seq: AtomicU64,
    /// Offline blocks that stopped waiting for the worker after [`crate::rt::audio_side::OFFLINE_WAIT_LIMIT_S`].
    pub num_offline_timeouts: AtomicU64,

    /// Written by the audio thread from the host's parameters; read by the worker.
    pub controls: Controls,

    // Written by the worker (audio transcription); read by the panel and the tests.
    /// Whether Basic Pitch is loaded.
    pub transcriber_ready: AtomicBool,
    /// Note-ons the transcriber has handed to the estimator.
    pub num_transcribed_notes: AtomicU64,
    /// How long after it sounded the last transcribed note reached the estimator, and the most
    /// since activation (ms, on the listening clock).
    pub transcribe_latency_ms: AtomicF32,
    pub transcribe_max_latency_ms: AtomicF32,
    /// The transcriber's model time over audio time.
    pub transcribe_rtf: AtomicF32,

    /// Human-readable status ("emotion model ready", or the reason it failed). Written by the
    /// worker, read by the panel. The audio thread never touches it.
    pub status_text: Mutex<String>,
    /// What the panel's piano roll shows: written by the worker about 20 times a second, read by
    /// the panel. The audio thread never touches it.
    pub roll: Mutex<Roll>,
}

/// A note of the piano roll, on the listening clock's beats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollNote {
    pub start_beats: f64,
    pub end_beats: f64,
    pub pitch: u8,
    pub velocity: u8,
}

/// The piano roll: bars heard and bars about to be played around the playhead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roll {
    pub now_beats: f64,
    /// Where the current bar started (listening beats) and how long bars are.
    pub bar_start_beats: f64,
    pub bar_len_beats: f64,
    pub heard: Vec<RollNote>,
    pub generated: Vec<RollNote>,
}

/// Bars of the piano roll before and after the playhead.
pub const ROLL_BARS_BEFORE: f64 = 4.0;
pub const ROLL_BARS_AFTER: f64 = 4.0;

impl Default for Shared {
    fn default() -> Self {
        Self {
            now_samples: AtomicU64::new(0),
            now_s: AtomicF64::new(0.0),
            now_beats: AtomicF64::new(0.0),
            song_beats: AtomicF64::new(0.0),
            tempo_bpm: AtomicF64::new(120.0),
            sig_num: AtomicU32::new(4),
            sig_den: AtomicU32::new(4),
            playing: AtomicBool::new(false),
            sample_rate_hz: AtomicF64::new(48_000.0),
            num_dropped_to_worker: AtomicU64::new(0),
            num_dropped_audio_samples: AtomicU64::new(0),
            num_dropped_pending: AtomicU64::new(0),
            num_late_dropped: AtomicU64::new(0),
            num_dropped_output: AtomicU64::new(0),
            valence: AtomicF32::new(0.0),
            arousal: AtomicF32::new(0.0),
            confidence: AtomicF32::new(0.0),
            raw_valence: AtomicF32::new(0.0),
            raw_arousal: AtomicF32::new(0.0),
            calibration: [AtomicF32::new(0.0), AtomicF32::new(1.0), AtomicF32::new(0.0), AtomicF32::new(1.0)],
            num_estimates: AtomicU64::new(0),
            update_us: AtomicF32::new(0.0),
            status: AtomicU8::new(WorkerStatus::Stopped as u8),
            trail_valence: std::array::from_fn(|_| AtomicF32::new(0.0)),
            trail_arousal: std::array::from_fn(|_| AtomicF32::new(0.0)),
            trail_head: AtomicU32::new(0),
            trail_len: AtomicU32::new(0),
            num_generations: AtomicU64::new(0),
            num_generated_bars: AtomicU64::new(0),
            gen_first_bar_ms: AtomicF32::new(0.0),
            gen_total_ms: AtomicF32::new(0.0),
            num_late_bars: AtomicU64::new(0),
            num_dropped_scheduled: AtomicU64::new(0),
            continuation_ready: AtomicBool::new(false),
            release_epoch: AtomicU32::new(0),
            offline: AtomicBool::new(false),
            worker_alive: AtomicBool::new(false),
            synced_seq: AtomicU64::new(0),
            num_offline_timeouts: AtomicU64::new(0),
            transcriber_ready: AtomicBool::new(false),
            num_transcribed_notes: AtomicU64::new(0),
            transcribe_latency_ms: AtomicF32::new(0.0),
            transcribe_max_latency_ms: AtomicF32::new(0.0),
            transcribe_rtf: AtomicF32::new(0.0),
            controls: Controls::default(),
            status_text: Mutex::new(String::from("not active")),
            roll: Mutex::new(Roll::default()),
        }
    }
}

impl Shared {
    pub fn status(&self) -> WorkerStatus {
        WorkerStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Worker/GUI only: sets the status and its text.
    pub fn set_status(&self, status: WorkerStatus, text: impl Into<String>) {
        if let Ok(mut t) = self.status_text.lock() {
            *t = text.into();
        }
        self.status.store(status as u8, Ordering::Release);
    }

    /// GUI only: a copy of the piano roll.
    pub fn roll(&self) -> Roll {
        self.roll.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// GUI/worker only: a copy of the status text.
    pub fn status_text(&self) -> String {
        self.status_text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The listener's calibration now in force.
    pub fn calibration(&self) -> crate::feel::calibration::Calibration {
        let c = |i: usize| self.calibration[i].load(Ordering::Relaxed);
        crate::feel::calibration::Calibration { valence: (c(0), c(1)), arousal: (c(2), c(3)) }
    }

    /// Panel / activation: puts a calibration in force.
    pub fn set_calibration(&self, cal: &crate::feel::calibration::Calibration) {
        for (i, v) in [cal.valence.0, cal.valence.1, cal.arousal.0, cal.arousal.1].into_iter().enumerate() {
            self.calibration[i].store(if v.is_finite() { v } else if i % 2 == 0 { 0.0 } else { 1.0 }, Ordering::Relaxed);
        }
    }

    /// Worker only: publishes a new smoothed estimate (before calibration; the listener's
    /// calibration is applied here).
    pub fn publish_estimate(&self, valence: f32, arousal: f32, confidence: f32) {
        self.raw_valence.store(valence, Ordering::Relaxed);
        self.raw_arousal.store(arousal, Ordering::Relaxed);
        let (valence, arousal) = self.calibration().apply((valence, arousal));
        self.valence.store(valence, Ordering::Relaxed);
        self.arousal.store(arousal, Ordering::Relaxed);
        self.confidence.store(confidence, Ordering::Relaxed);
        self.num_estimates.fetch_add(1, Ordering::Release);
    }

    /// Worker only: appends a per-bar estimate (before calibration) to the trail.
    pub fn push_trail(&self, valence: f32, arousal: f32) {
        let (valence, arousal) = self.calibration().apply((valence, arousal));
        let head = self.trail_head.load(Ordering::Relaxed) as usize % TRAIL_LEN;
        self.trail_valence[head].store(valence, Ordering::Relaxed);
        self.trail_arousal[head].store(arousal, Ordering::Relaxed);
        self.trail_head.store(((head + 1) % TRAIL_LEN) as u32, Ordering::Release);
        let len = self.trail_len.load(Ordering::Relaxed);
        self.trail_len.store((len + 1).min(TRAIL_LEN as u32), Ordering::Release);
    }

    /// GUI only: the trail, oldest first.
    pub fn trail(&self) -> Vec<(f32, f32)> {
        let head = self.trail_head.load(Ordering::Acquire) as usize;
        let len = self.trail_len.load(Ordering::Acquire) as usize;
        (0..len)
            .map(|i| {
                let idx = (head + TRAIL_LEN - len + i) % TRAIL_LEN;
                (self.trail_valence[idx].load(Ordering::Relaxed), self.trail_arousal[idx].load(Ordering::Relaxed))
            })
            .collect()
    }
}
