//! The queues between the audio thread and the worker: the item types that cross them, their
//! fixed capacities, and the ring buffers' ends (`rtrb`). A full queue drops the item and the
//! sender counts it; nothing here blocks.
//!
//! Thread: any. The audio thread holds [`AudioEnds`], the worker [`WorkerEnds`]; the items are
//! `Copy` and never allocate.

/// Capacity of the audio → worker event queue (notes, controllers, transport changes).
pub const TO_WORKER_CAPACITY: usize = 8192;
/// Capacity of the audio → worker mono audio queue, in samples (about 2.7 s at 192 kHz).
pub const AUDIO_QUEUE_CAPACITY_SAMPLES: usize = 1 << 19;
/// Capacity of the worker → audio queue of scheduled MIDI events.
pub const FROM_WORKER_CAPACITY: usize = 4096;
/// Number of scheduled events the audio thread holds while waiting for their sample.
pub const MAX_PENDING_EVENTS: usize = 1024;

/// An event heard on the audio thread, sent to the worker. Times are on the monotonic listening
/// clock (never jumps on loops or relocation): `time_s` in seconds since activation and `beats` in
/// quarter notes integrated over the host tempo; `song_beats` is the host's song position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ToWorker {
    Note { on: bool, channel: u8, pitch: u8, velocity: u8, time_s: f64, beats: f64, song_beats: f64 },
    Control { channel: u8, cc: u8, value: u8, time_s: f64 },
    /// Sent when play state, tempo or meter change, or the song position jumps (`jumped`: a loop
    /// or a relocation, not the song moving on by itself).
    Transport { playing: bool, tempo_bpm: f64, sig_num: u8, sig_den: u8, song_beats: f64, time_s: f64, jumped: bool },
    /// The host reset the plugin (or re-activated it): forget what was heard.
    Reset,
    /// A point where the continuation player decides (see [`TICK_BEATS`]): the last grid point
    /// of the listening clock at or before the block that sends it, so every heard event before
    /// it is already in the queue. The player decides from the queue's order and these clocks
    /// alone, so a render offline makes the decisions a live run made.
    Tick(Tick),
    /// Offline rendering only: the audio thread waits until the worker has handled everything
    /// before this and stored `seq` in [`crate::shared::Shared::synced_seq`].
    Sync { seq: u64 },
}

/// The player's decision points lie on this grid of the listening clock (quarter notes).
pub const TICK_BEATS: f64 = 1.0 / 16.0;

/// The listening clock and the host transport at a decision point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    pub time_s: f64,
    pub beats: f64,
    pub song_beats: f64,
    pub playing: bool,
    pub tempo_bpm: f64,
    pub sig_num: u8,
    pub sig_den: u8,
    /// [`crate::shared::Controls::generate_requests`] as the audio thread read it.
    pub requests: u32,
}

impl Tick {
    /// The tempo at the point in beats per second (a tempo out of 1..2000 BPM is clamped).
    pub fn beats_per_s(&self) -> f64 {
        self.tempo_bpm.clamp(1.0, 2000.0) / 60.0
    }
}

/// What a scheduled output event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledKind {
    NoteOn,
    NoteOff,
    Control,
}

/// A MIDI event the worker wants played at an exact beat of the listening clock (quarter notes
/// integrated over the host tempo): the audio thread turns it into a sample offset with the
/// tempo of the block it falls in, so a tempo change moves it with the music.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduled {
    pub at_beats: f64,
    pub kind: ScheduledKind,
    pub channel: u8,
    /// Note number or controller number.
    pub data1: u8,
    /// Velocity or controller value.
    pub data2: u8,
    /// [`Shared::release_epoch`] when the worker handed it over: a note-on from before the last
    /// release (transport stop, bypass) is dropped, so nothing starts after a stop.
    pub epoch: u32,
}

/// The three queue pairs' ends, created together at activation.
pub struct AudioEnds {
    pub to_worker: rtrb::Producer<ToWorker>,
    pub audio: rtrb::Producer<f32>,
    pub from_worker: rtrb::Consumer<Scheduled>,
}

pub struct WorkerEnds {
    pub from_audio: rtrb::Consumer<ToWorker>,
    pub audio: rtrb::Consumer<f32>,
    pub to_audio: rtrb::Producer<Scheduled>,
}

/// Creates the queues with their fixed capacities. Allocates: call on activation, never in process().
pub fn queues() -> (AudioEnds, WorkerEnds) {
    let (to_worker, from_audio) = rtrb::RingBuffer::new(TO_WORKER_CAPACITY);
    let (audio_p, audio_c) = rtrb::RingBuffer::new(AUDIO_QUEUE_CAPACITY_SAMPLES);
    let (to_audio, from_worker) = rtrb::RingBuffer::new(FROM_WORKER_CAPACITY);
    (
        AudioEnds { to_worker, audio: audio_p, from_worker },
        WorkerEnds { from_audio, audio: audio_c, to_audio },
    )
}
