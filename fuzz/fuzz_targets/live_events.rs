//! Fuzz target `live_events`: random event streams with random timing through the real-time half
//! of the bridge (`audio_side::AudioSide`, as `process()` drives it) and on into the live
//! estimator (`live::LiveEstimator`, as the worker drives it), without ONNX Runtime: the model's
//! answer is a fixed stand-in. The input is decoded with `arbitrary` into a sample rate and a list
//! of operations; transports may carry NaN, infinite, negative or absurd tempos, meters and song
//! positions. After each `Estimate` operation and at the end, the context vector must be finite
//! and the smoothed estimate finite and within [-1, 1].
//!
//! Thread: test
#![no_main]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moodfader_engine::Shared;
use moodfader_engine::feel::live::LiveEstimator;
use moodfader_engine::listen::notes::BarWindow;
use moodfader_engine::rt::audio_side::{AudioSide, TransportInfo};
use moodfader_engine::rt::queues::{Scheduled, ScheduledKind, WorkerEnds, queues};

/// Stand-in for the emotion model's raw answer.
const RAW: (f32, f32) = (0.1, -0.2);

#[derive(Arbitrary, Debug)]
enum SampleRate {
    /// One of the usual host rates.
    Common(u8),
    /// Anything, NaN and subnormals included.
    Raw(f64),
}

#[derive(Arbitrary, Debug)]
enum Value {
    /// Anything, NaN, infinities and negatives included.
    Raw(f64),
    /// A plausible value (tempo in BPM, or a song position in 1/16 beats).
    Plain(i16),
}

impl Value {
    fn get(&self, plain_scale: f64) -> f64 {
        match *self {
            Value::Raw(v) => v,
            Value::Plain(v) => v as f64 * plain_scale,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Transport {
    playing: bool,
    tempo_bpm: Option<Value>,
    sig_num: Option<u32>,
    sig_den: Option<u32>,
    pos_beats: Option<Value>,
}

#[derive(Arbitrary, Debug)]
enum When {
    /// Relative to the current block's first beat, in 1/1000 beat.
    Relative(i32),
    /// Any beat, NaN and infinities included.
    Absolute(f64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// `begin_block` with `1 + n % 8192` samples.
    BeginBlock { transport: Transport, n: u16 },
    Note { timing: u32, on: bool, channel: u8, pitch: u8, velocity: u8 },
    Control { timing: u32, channel: u8, cc: u8, value: u8 },
    /// `push_audio` with `num_channels % 5` channels of `len` (+ per-channel jitter) samples
    /// cycling through `values`.
    PushAudio { num_channels: u8, len: u16, jitter: [u8; 4], values: Vec<f32> },
    DueEvents { mood_cc_channel: Option<u8> },
    AllNotesOff,
    EndBlock,
    Reset,
    /// The worker schedules an output event.
    Schedule { when: When, kind: u8, channel: u8, data1: u8, data2: u8 },
    /// One worker update: drain the queues into the estimator, build the context, update.
    Estimate,
}

#[derive(Arbitrary, Debug)]
struct Input {
    sample_rate: SampleRate,
    ops: Vec<Op>,
}

struct World {
    side: Box<AudioSide>,
    worker: WorkerEnds,
    shared: Arc<Shared>,
    live: LiveEstimator,
}

impl World {
    /// What the worker does every update (`worker::run`), minus the model.
    fn estimate(&mut self) {
        while let Ok(ev) = self.worker.from_audio.pop() {
            self.live.on_event(&ev);
        }
        let n = self.worker.audio.slots();
        if n > 0 {
            if let Ok(chunk) = self.worker.audio.read_chunk(n) {
                chunk.commit_all();
            }
        }
        let s = &self.shared;
        let now_s = s.now_s.load(Ordering::Relaxed);
        let now_beats = s.now_beats.load(Ordering::Relaxed);
        let tempo = s.tempo_bpm.load(Ordering::Relaxed);
        let bar_len = BarWindow::len_beats_for_meter(s.sig_num.load(Ordering::Relaxed), s.sig_den.load(Ordering::Relaxed));
        let clock = format!("now_s {now_s}, now_beats {now_beats}, tempo {tempo}, bar_len {bar_len}");
        let ctx = self.live.context(now_s, now_beats, tempo, bar_len);
        for (i, v) in ctx.input.iter().enumerate() {
            assert!(v.is_finite(), "context input {i} = {v} ({clock})");
        }
        assert!((1..=4).contains(&ctx.num_bars_heard), "num_bars_heard {}", ctx.num_bars_heard);
        let est = self.live.update(&ctx, RAW, now_s, now_beats, bar_len);
        let in_range = |x: f32| x.is_finite() && (-1.0..=1.0).contains(&x);
        assert!(in_range(est.valence) && in_range(est.arousal), "estimate {est:?} ({clock})");
        assert!(est.confidence.is_finite() && (0.0..=1.0).contains(&est.confidence), "confidence {est:?} ({clock})");
        if let Some((v, a)) = est.bar_done {
            assert!(in_range(v) && in_range(a), "bar_done {est:?} ({clock})");
        }
        s.publish_estimate(est.valence, est.arousal, est.confidence);
        if let Some((v, a)) = est.bar_done {
            s.push_trail(v, a);
        }
    }
}

fuzz_target!(|input: Input| {
    let sample_rate = match input.sample_rate {
        SampleRate::Common(i) => [44_100.0, 48_000.0, 88_200.0, 96_000.0, 192_000.0, 22_050.0, 8_000.0, 384_000.0]
            [i as usize % 8],
        SampleRate::Raw(v) => v,
    };
    let (audio_ends, worker) = queues();
    let shared = Arc::new(Shared::default());
    let side = AudioSide::new(audio_ends, shared.clone(), sample_rate);
    let mut w = World { side, worker, shared, live: LiveEstimator::new() };
    let mut buffers: Vec<Vec<f32>> = Vec::new();

    for op in &input.ops {
        match op {
            Op::BeginBlock { transport: t, n } => {
                let info = TransportInfo {
                    playing: t.playing,
                    tempo_bpm: t.tempo_bpm.as_ref().map(|v| v.get(1.0)),
                    sig_num: t.sig_num,
                    sig_den: t.sig_den,
                    pos_beats: t.pos_beats.as_ref().map(|v| v.get(1.0 / 16.0)),
                };
                w.side.begin_block(&info, 1 + (*n as u32) % 8192);
            }
            &Op::Note { timing, on, channel, pitch, velocity } => w.side.note(timing, on, channel, pitch, velocity),
            &Op::Control { timing, channel, cc, value } => w.side.control(timing, channel, cc, value),
            Op::PushAudio { num_channels, len, jitter, values } => {
                let num_channels = (*num_channels % 5) as usize;
                buffers.resize_with(num_channels, Vec::new);
                for (c, buf) in buffers.iter_mut().enumerate() {
                    let len = (*len as usize % 8193) + jitter[c % 4] as usize % 4;
                    buf.clear();
                    buf.extend((0..len).map(|i| if values.is_empty() { 0.0 } else { values[(i + c) % values.len()] }));
                }
                let refs: Vec<&mut [f32]> = buffers.iter_mut().map(|b| b.as_mut_slice()).collect();
                w.side.push_audio(&refs);
            }
            Op::DueEvents { mood_cc_channel } => w.side.due_events(*mood_cc_channel, |_, _| {}),
            Op::AllNotesOff => w.side.all_notes_off(|_, _| {}),
            Op::EndBlock => w.side.end_block(),
            Op::Reset => w.side.reset(),
            &Op::Schedule { ref when, kind, channel, data1, data2 } => {
                let at_beats = match *when {
                    When::Relative(d) => w.side.clock_beats() + d as f64 / 1000.0,
                    When::Absolute(a) => a,
                };
                let kind = [ScheduledKind::NoteOn, ScheduledKind::NoteOff, ScheduledKind::Control][kind as usize % 3];
                let _ = w.worker.to_audio.push(Scheduled { at_beats, kind, channel, data1, data2, epoch: 0 });
            }
            Op::Estimate => w.estimate(),
        }
    }
    w.estimate();
});
