//! Audio input end to end, in real time: the audio side pushes the track's audio, the worker
//! transcribes it with Basic Pitch and the notes reach the same estimator as MIDI. Measures how
//! long after a note sounds it reaches the estimator (the bar: at most 1.5 s), on the
//! listening clock with the model's real run time included.
//!
//! Needs ONNX Runtime and `nmp.onnx` (`cargo xtask setup`).
//!
//! Thread: test (plays the audio thread and the panel)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use moodfader_engine::Note;
use moodfader_engine::rt::audio_side::{AudioSide, TransportInfo};
use moodfader_engine::rt::queues::queues;
use moodfader_engine::rt::synth::render_notes;
use moodfader_engine::shared::{INPUT_AUDIO, INPUT_MIDI, Shared, WorkerStatus};
use moodfader_engine::worker::{Worker, WorkerConfig};

const RATE_HZ: u32 = 48_000;
const BLOCK: usize = 480;
const MAX_LATENCY_MS: f32 = 1500.0;
/// A pitch sent only as MIDI while the input is audio: the estimator must not hear it.
const MIDI_ONLY_PITCH: u8 = 100;

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Eight seconds at 120 BPM: a triad each bar and a quarter-note melody over it.
fn passage() -> Vec<Note> {
    let mut notes = Vec::new();
    let mut add = |t: f64, d: f64, pitch: u8, velocity: u8| {
        notes.push(Note { onset_s: t, dur_s: d, onset_beats: t * 2.0, dur_beats: d * 2.0, pitch, velocity, channel: 0 })
    };
    let chords = [[48u8, 55, 64], [45, 52, 60], [41, 48, 57], [43, 50, 59]];
    let melody = [72u8, 74, 76, 79, 77, 76, 74, 72];
    for bar in 0..4 {
        let t = bar as f64 * 2.0;
        for p in chords[bar] {
            add(t, 1.9, p, 80);
        }
        for q in 0..4 {
            add(t + q as f64 * 0.5, 0.45, melody[(bar * 4 + q) % 8], 100);
        }
    }
    notes
}

#[test]
fn audio_notes_reach_the_estimator_in_time() {
    let shared = Arc::new(Shared::default());
    let (audio_ends, worker_ends) = queues();
    let mut audio = AudioSide::new(audio_ends, shared.clone(), RATE_HZ as f64);
    let mut worker = Worker::spawn(WorkerConfig::default(), shared.clone(), worker_ends).unwrap();
    wait_for("the worker to load", Duration::from_secs(30), || {
        !matches!(shared.status(), WorkerStatus::Loading | WorkerStatus::Stopped)
    });
    assert_eq!(shared.status(), WorkerStatus::Ready, "{}", shared.status_text());
    // The emotion model comes first; the continuation model and Basic Pitch load after it.
    wait_for("Basic Pitch to load", Duration::from_secs(30), || shared.transcriber_ready.load(Ordering::Acquire));
    shared.controls.input_source.store(INPUT_AUDIO, Ordering::Relaxed);

    let notes = passage();
    let mut samples = render_notes(&notes, RATE_HZ);
    samples.resize(samples.len() + RATE_HZ as usize * 2, 0.0);
    let transport = TransportInfo { playing: true, tempo_bpm: Some(120.0), sig_num: Some(4), sig_den: Some(4), pos_beats: None };
    let started = Instant::now();
    let mut first_heard_s = None;
    for (b, chunk) in samples.chunks(BLOCK).enumerate() {
        audio.begin_block(&transport, chunk.len() as u32);
        if b == 100 {
            audio.note(0, true, 0, MIDI_ONLY_PITCH, 100);
        }
        if b == 150 {
            audio.note(0, false, 0, MIDI_ONLY_PITCH, 0);
        }
        let mut left = chunk.to_vec();
        let mut right = chunk.to_vec();
        audio.push_audio(&[&mut left, &mut right]);
        audio.end_block();
        let t_s = (b * BLOCK) as f64 / RATE_HZ as f64;
        if first_heard_s.is_none() && shared.num_transcribed_notes.load(Ordering::Relaxed) > 0 {
            first_heard_s = Some(t_s);
        }
        // Real time: the block's end may not come before its time.
        let due = Duration::from_secs_f64(((b + 1) * BLOCK) as f64 / RATE_HZ as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let num_heard = shared.num_transcribed_notes.load(Ordering::Relaxed);
    let max_latency = shared.transcribe_max_latency_ms.load(Ordering::Relaxed);
    let rtf = shared.transcribe_rtf.load(Ordering::Relaxed);
    println!(
        "{num_heard} notes transcribed of {}; first reached the estimator at {:.2} s (first note at 0.00 s); latency max {max_latency:.0} ms; real-time factor {rtf:.3}",
        notes.len(),
        first_heard_s.unwrap_or(f64::NAN)
    );
    assert!(num_heard as usize * 10 >= notes.len() * 8, "{num_heard} of {} notes", notes.len());
    assert!(max_latency > 0.0 && max_latency <= MAX_LATENCY_MS, "max latency {max_latency} ms");
    assert!(first_heard_s.is_some_and(|t| t * 1000.0 <= MAX_LATENCY_MS as f64 + 50.0), "first note heard at {first_heard_s:?}");
    wait_for("an estimate", Duration::from_secs(5), || shared.num_estimates.load(Ordering::Acquire) > 0);
    assert!(shared.valence.load(Ordering::Relaxed).is_finite() && shared.arousal.load(Ordering::Relaxed).is_finite());
    let roll = shared.roll();
    assert!(roll.heard.iter().any(|n| n.pitch == 72 || n.pitch == 64), "transcribed notes in the roll: {:?}", roll.heard);
    assert!(roll.heard.iter().all(|n| n.pitch != MIDI_ONLY_PITCH), "MIDI is not heard while the input is audio");

    // Back to MIDI: audio keeps coming but nothing more is transcribed.
    shared.controls.input_source.store(INPUT_MIDI, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    let before = shared.num_transcribed_notes.load(Ordering::Relaxed);
    for chunk in samples.chunks(BLOCK).take(400) {
        audio.begin_block(&transport, chunk.len() as u32);
        let mut left = chunk.to_vec();
        audio.push_audio(&[&mut left]);
        audio.end_block();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(shared.num_transcribed_notes.load(Ordering::Relaxed), before);
    worker.stop();
    assert!(!shared.transcriber_ready.load(Ordering::Relaxed));
}
