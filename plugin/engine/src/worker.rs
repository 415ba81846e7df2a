//! The worker thread: started at activation, it loads ONNX Runtime and the models (never while a
//! host scans), drains the audio thread's queues, runs the live estimator at least 10 times a
//! second, transcribes the track's audio with Basic Pitch when the input source asks for it
//! (the transcribed notes join the MIDI ones in the same estimator), and publishes the estimate
//! and its status through [`Shared`].
//!
//! Thread: worker (spawned and joined from the host's main thread)

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::feel::emotion::{EmotionModel, ModelOrigin};
use crate::feel::live::LiveEstimator;
use crate::listen::notes::BarWindow;
use crate::listen::transcribe::{BasicPitch, NoteParams, StreamEvent, StreamingTranscriber};
use crate::play::continuation::ContinuationModel;
use crate::play::player::{GeneratorThread, Player};
use crate::rt::queues::{ToWorker, WorkerEnds};
use crate::runtime::{EmbeddedRuntime, ensure_runtime};
use crate::shared::{INPUT_AUDIO, INPUT_BOTH, Shared, WorkerStatus};

/// Time between two estimator updates (20 Hz; the product asks for at least 10 Hz).
pub const UPDATE_INTERVAL_MS: u64 = 50;
/// Longest the worker sleeps between two looks at its queues.
pub const POLL_INTERVAL_MS: u64 = 5;

#[derive(Clone, Copy, Default)]
pub struct WorkerConfig {
    /// Runtime library carried by the plugin binary, if any.
    pub embedded_runtime: Option<EmbeddedRuntime>,
    /// Fault injection for tests: panic inside the loop after this many estimator updates.
    #[doc(hidden)]
    pub panic_after_updates: Option<u32>,
}

/// Owns the worker thread; dropping it stops and joins the thread.
pub struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker. Allocates and spawns a thread: call from `activate()`, never from
    /// `process()`.
    pub fn spawn(config: WorkerConfig, shared: Arc<Shared>, ends: WorkerEnds) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        shared.set_status(WorkerStatus::Loading, "starting");
        shared.worker_alive.store(true, Ordering::Release);
        let alive = shared.clone();
        let handle = std::thread::Builder::new().name("moodfader-worker".into()).spawn(move || {
            let shared_for_panic = shared.clone();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(config, &shared, ends, &thread_stop)));
            if let Err(panic) = result {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                shared_for_panic.set_status(
                    WorkerStatus::Error,
                    format!("worker stopped after an internal error ({msg}); audio and MIDI still pass through; re-activate to restart"),
                );
            }
            shared_for_panic.worker_alive.store(false, Ordering::Release);
        });
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                alive.worker_alive.store(false, Ordering::Release);
                return Err(e);
            }
        };
        Ok(Self { stop, handle: Some(handle) })
    }

    /// The thread, to wake it (an offline render wakes it at every block).
    pub fn thread(&self) -> Option<std::thread::Thread> {
        self.handle.as_ref().map(|h| h.thread().clone())
    }

    /// Stops and joins the thread. Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn load_model(config: &WorkerConfig) -> anyhow::Result<(EmotionModel, std::path::PathBuf)> {
    let path = ensure_runtime(config.embedded_runtime)?;
    let model = EmotionModel::load_default()?;
    Ok((model, path))
}

fn run(config: WorkerConfig, shared: &Shared, mut ends: WorkerEnds, stop: &AtomicBool) {
    shared.set_status(WorkerStatus::Loading, "loading ONNX Runtime and the emotion model");
    let mut model = match load_model(&config) {
        Ok((m, path)) => {
            let origin = match &m.origin {
                ModelOrigin::Embedded => "built-in".to_string(),
                ModelOrigin::File(p) => p.display().to_string(),
            };
            shared.set_status(
                WorkerStatus::Ready,
                format!("emotion model ready ({origin}); ONNX Runtime {}", path.display()),
            );
            Some(m)
        }
        Err(e) => {
            shared.set_status(WorkerStatus::Error, format!("no mood readout: {e:#}"));
            None
        }
    };

    // The continuation model is optional: without it the readout still works.
    let generator = if ensure_runtime(config.embedded_runtime).is_ok() {
        match ContinuationModel::load_default() {
            Ok(m) => match GeneratorThread::spawn(m) {
                Ok(g) => Some(g),
                Err(e) => {
                    append_status(shared, &format!("continuation unavailable: generator thread cannot start ({e})"));
                    None
                }
            },
            Err(e) => {
                append_status(shared, &format!("continuation unavailable: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    shared.continuation_ready.store(generator.is_some(), Ordering::Release);
    if generator.is_some() {
        append_status(shared, "continuation model ready");
    }
    let mut player = Player::new(generator);

    // Basic Pitch is optional too: without it MIDI input still works.
    let mut basic_pitch = if ensure_runtime(config.embedded_runtime).is_ok() {
        match BasicPitch::load_default(config.embedded_runtime) {
            Ok(m) => Some(m),
            Err(e) => {
                append_status(shared, &format!("audio transcription unavailable: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    shared.transcriber_ready.store(basic_pitch.is_some(), Ordering::Release);
    let mut audio_in = AudioIn::default();
    // Arousal from audio cues while the input is audio (see audio_cues.rs); without the map the
    // model's own reading is used.
    let cue_map = match crate::listen::audio_cues::CueMap::embedded() {
        Ok(m) => Some(m),
        Err(e) => {
            append_status(shared, &format!("audio transcription without audio cues: {e:#}"));
            None
        }
    };

    let mut live = LiveEstimator::new();
    let mut roll_scratch = Vec::with_capacity(256);
    let mut num_updates = 0u32;
    let mut raw_out = Vec::with_capacity(1);
    let mut last_update = Instant::now() - Duration::from_millis(UPDATE_INTERVAL_MS);
    // Offline, estimates follow the listening clock (every UPDATE_INTERVAL_MS of the music)
    // instead of the wall clock, which runs at another speed.
    let mut last_update_s = f64::NEG_INFINITY;
    if shared.offline.load(Ordering::Acquire) {
        append_status(shared, "rendering offline");
    }
    while !stop.load(Ordering::Acquire) {
        let source = shared.controls.input_source.load(Ordering::Relaxed);
        let offline = shared.offline.load(Ordering::Relaxed);
        let mut synced = None;
        while let Ok(ev) = ends.from_audio.pop() {
            // With audio as the only source, MIDI notes pass through but are not heard.
            if !(source == INPUT_AUDIO && matches!(ev, ToWorker::Note { .. })) {
                live.on_event(&ev);
                player.on_event(&ev);
            }
            match ev {
                ToWorker::Reset => audio_in.reset(),
                ToWorker::Tick(t) => player.decide(shared, &live, &t, &mut ends.to_audio),
                ToWorker::Sync { seq } => {
                    // The audio thread waits for this one; nothing comes after it.
                    synced = Some(seq);
                    break;
                }
                _ => {}
            }
        }
        let transcribe = basic_pitch.is_some() && (source == INPUT_AUDIO || source == INPUT_BOTH);
        if let Err(e) = audio_in.drain(shared, &mut ends.audio, basic_pitch.as_mut().filter(|_| transcribe), &mut live, &mut player) {
            append_status(shared, &format!("audio transcription stopped: {e:#}"));
            basic_pitch = None;
            shared.transcriber_ready.store(false, Ordering::Release);
        }
        if synced.is_some() {
            // Offline: every bar of a continuation planned so far is in before the block plays.
            player.finish_generation(shared, &mut ends.to_audio, Duration::from_secs_f64(crate::rt::audio_side::OFFLINE_WAIT_LIMIT_S * 0.5));
        } else {
            player.tick(shared, &mut ends.to_audio);
        }
        if let Some(e) = player.take_error() {
            append_status(shared, &format!("last continuation failed: {e}"));
        }
        let now_s = shared.now_s.load(Ordering::Relaxed);
        let due = if offline {
            now_s - last_update_s >= UPDATE_INTERVAL_MS as f64 * 1e-3
        } else {
            last_update.elapsed() >= Duration::from_millis(UPDATE_INTERVAL_MS)
        };
        if due {
            last_update = Instant::now();
            last_update_s = now_s;
            num_updates += 1;
            if config.panic_after_updates.is_some_and(|n| num_updates > n) {
                panic!("injected fault after {n} updates", n = num_updates - 1);
            }
            if let Some(m) = model.as_mut() {
                let started = Instant::now();
                let now_s = shared.now_s.load(Ordering::Relaxed);
                let now_beats = shared.now_beats.load(Ordering::Relaxed);
                let tempo = shared.tempo_bpm.load(Ordering::Relaxed);
                let bar_len = BarWindow::len_beats_for_meter(
                    shared.sig_num.load(Ordering::Relaxed),
                    shared.sig_den.load(Ordering::Relaxed),
                );
                if live.num_notes() > 0 {
                    let ctx = live.context(now_s, now_beats, tempo, bar_len);
                    match m.predict_into(std::slice::from_ref(&ctx.input), &mut raw_out) {
                        Ok(()) if raw_out.len() == 1 => {
                            let mut reading = raw_out[0];
                            if let (Some(map), Some(t)) = (cue_map.as_ref(), audio_in.transcriber.as_mut()) {
                                let bar_s = bar_len * 60.0 / if tempo.is_finite() && tempo > 0.0 { tempo } else { 120.0 };
                                let cues = t.bar_cues(now_s, bar_s);
                                reading.1 = map.arousal(reading.0, reading.1, &cues);
                            }
                            let est = live.update(&ctx, reading, now_s, now_beats, bar_len);
                            shared.publish_estimate(est.valence, est.arousal, est.confidence);
                            if let Some((v, a)) = est.bar_done {
                                shared.push_trail(v, a);
                            }
                        }
                        Ok(()) => {}
                        Err(e) => {
                            shared.set_status(WorkerStatus::Error, format!("emotion model failed while running: {e:#}"));
                            model = None;
                        }
                    }
                }
                shared.update_us.store(started.elapsed().as_secs_f32() * 1e6, Ordering::Relaxed);
            }
            publish_roll(shared, &live, &player, &mut roll_scratch);
        }
        if let Some(seq) = synced {
            shared.synced_seq.store(seq, Ordering::Release);
        }
        // Offline, the audio thread unparks this thread at every block.
        std::thread::park_timeout(Duration::from_millis(POLL_INTERVAL_MS));
    }
    drop(player);
    shared.continuation_ready.store(false, Ordering::Release);
    shared.transcriber_ready.store(false, Ordering::Release);
    shared.set_status(WorkerStatus::Stopped, "not active");
}

/// The track's audio on the worker: counts every sample (so a sample's time on the listening
/// clock is known when transcription starts) and feeds the streaming transcriber while the input
/// source asks for audio.
#[derive(Default)]
struct AudioIn {
    /// Samples taken from the queue since activation (or the last reset).
    num_samples: u64,
    transcriber: Option<StreamingTranscriber>,
    events: Vec<StreamEvent>,
}

impl AudioIn {
    fn reset(&mut self) {
        self.transcriber = None;
        self.events.clear();
    }

    fn drain(
        &mut self,
        shared: &Shared,
        audio: &mut rtrb::Consumer<f32>,
        model: Option<&mut BasicPitch>,
        live: &mut LiveEstimator,
        player: &mut Player,
    ) -> anyhow::Result<()> {
        let n = audio.slots();
        let rate = shared.sample_rate_hz.load(Ordering::Relaxed);
        let Some(model) = model else {
            // Not transcribing: close what the transcriber left open, then just count.
            if let Some(mut t) = self.transcriber.take() {
                self.events.clear();
                t.finish(&mut self.events);
                self.deliver(shared, live, player);
            }
            if n > 0 && let Ok(chunk) = audio.read_chunk(n) {
                chunk.commit_all();
            }
            self.num_samples += n as u64;
            return Ok(());
        };
        if self.transcriber.is_none() {
            let start_s = self.num_samples as f64 / rate;
            self.transcriber = Some(StreamingTranscriber::new(rate.round() as u32, start_s, NoteParams::default())?);
        }
        let Some(t) = self.transcriber.as_mut() else { return Ok(()) };
        self.events.clear();
        if n > 0 && let Ok(chunk) = audio.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            t.push(model, a, &mut self.events)?;
            t.push(model, b, &mut self.events)?;
            chunk.commit_all();
        }
        self.num_samples += n as u64;
        shared.transcribe_rtf.store(t.real_time_factor() as f32, Ordering::Relaxed);
        self.deliver(shared, live, player);
        Ok(())
    }

    /// Hands transcribed notes to the estimator (and the player) as heard notes on channel 1,
    /// with beats placed back from now at the current tempo.
    fn deliver(&mut self, shared: &Shared, live: &mut LiveEstimator, player: &mut Player) {
        if self.events.is_empty() {
            return;
        }
        let now_s = shared.now_s.load(Ordering::Relaxed);
        let now_beats = shared.now_beats.load(Ordering::Relaxed);
        let song_beats = shared.song_beats.load(Ordering::Relaxed);
        let tempo = shared.tempo_bpm.load(Ordering::Relaxed);
        let beats_per_s = if tempo.is_finite() && tempo > 0.0 { tempo / 60.0 } else { 2.0 };
        for e in &self.events {
            let back = (now_s - e.time_s) * beats_per_s;
            let ev = ToWorker::Note {
                on: e.on,
                channel: 0,
                pitch: e.pitch,
                velocity: e.velocity,
                time_s: e.time_s,
                beats: now_beats - back,
                song_beats: song_beats - back,
            };
            live.on_event(&ev);
            player.on_event(&ev);
            if e.on {
                let latency_ms = ((now_s - e.time_s) * 1000.0) as f32;
                shared.transcribe_latency_ms.store(latency_ms, Ordering::Relaxed);
                if latency_ms > shared.transcribe_max_latency_ms.load(Ordering::Relaxed) {
                    shared.transcribe_max_latency_ms.store(latency_ms, Ordering::Relaxed);
                }
                shared.num_transcribed_notes.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.events.clear();
    }
}

/// Copies the bars around the playhead into the panel's piano roll.
fn publish_roll(shared: &Shared, live: &LiveEstimator, player: &Player, scratch: &mut Vec<crate::shared::RollNote>) {
    use crate::shared::{ROLL_BARS_AFTER, ROLL_BARS_BEFORE, RollNote};
    let now_beats = shared.now_beats.load(Ordering::Relaxed);
    let now_s = shared.now_s.load(Ordering::Relaxed);
    let bar_len = BarWindow::len_beats_for_meter(shared.sig_num.load(Ordering::Relaxed), shared.sig_den.load(Ordering::Relaxed));
    let bar_start = if shared.playing.load(Ordering::Relaxed) {
        now_beats - shared.song_beats.load(Ordering::Relaxed).rem_euclid(bar_len)
    } else {
        (now_beats / bar_len).floor() * bar_len
    };
    let from = bar_start - ROLL_BARS_BEFORE * bar_len;
    scratch.clear();
    player.planned_notes(from, scratch);
    let heard = live.notes_between(from, now_beats + 1e-9, now_s, now_beats);
    if let Ok(mut roll) = shared.roll.lock() {
        roll.now_beats = now_beats;
        roll.bar_start_beats = bar_start;
        roll.bar_len_beats = bar_len;
        roll.heard.clear();
        roll.heard.extend(heard.iter().map(|n| RollNote { start_beats: n.onset_beats, end_beats: n.onset_beats + n.dur_beats, pitch: n.pitch, velocity: n.velocity }));
        roll.generated.clear();
        let until = bar_start + (ROLL_BARS_AFTER + 1.0) * bar_len;
        roll.generated.extend(scratch.iter().filter(|n| n.start_beats < until));
    }
}

/// Which clause of the status text a message replaces: one about the continuation, one about
/// audio transcription, or none (kept).
fn clause_key(clause: &str) -> Option<&'static str> {
    if clause.starts_with("continuation") || clause.starts_with("last continuation") {
        Some("continuation")
    } else if clause.starts_with("audio transcription") {
        Some("audio")
    } else {
        None
    }
}

/// Adds a clause to the status text, keeping the status itself and replacing an earlier clause
/// on the same subject rather than piling them up.
fn append_status(shared: &Shared, clause: &str) {
    let status = shared.status();
    let text = shared.status_text();
    let key = clause_key(clause);
    let mut parts: Vec<&str> = text.split("; ").filter(|c| key.is_none() || clause_key(c) != key).collect();
    parts.push(clause);
    shared.set_status(status, parts.join("; "));
}
