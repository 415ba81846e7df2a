//! A missing or corrupt Basic Pitch model: the worker still estimates from MIDI, keeps the
//! continuation, and its status text (the panel's status line) says why audio is not heard.
//!
//! Thread: test (plays the audio thread and the panel)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use moodfader_engine::rt::audio_side::{AudioSide, TransportInfo};
use moodfader_engine::rt::queues::queues;
use moodfader_engine::shared::{INPUT_BOTH, Shared, WorkerStatus};
use moodfader_engine::worker::{Worker, WorkerConfig};

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start() -> (Worker, Box<AudioSide>, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    let (audio_ends, worker_ends) = queues();
    let audio = AudioSide::new(audio_ends, shared.clone(), 48_000.0);
    let worker = Worker::spawn(WorkerConfig::default(), shared.clone(), worker_ends).unwrap();
    wait_for("the worker to load everything", Duration::from_secs(30), || shared.status_text().contains("audio transcription"));
    (worker, audio, shared)
}

#[test]
fn missing_or_corrupt_basic_pitch_is_reported_and_midi_still_heard() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nmp.onnx");
    // SAFETY: the only test in this process; the worker reads the variable while loading, which
    // `start` waits for before the next change.
    unsafe { std::env::set_var("MOODFADER_BASIC_PITCH", &missing) };
    let (mut w, mut audio, shared) = start();
    let text = shared.status_text();
    assert_eq!(shared.status(), WorkerStatus::Ready, "{text}");
    assert!(text.contains("audio transcription unavailable") && text.contains("missing"), "{text}");
    assert!(text.contains("emotion model ready"), "{text}");
    assert_eq!(text.contains("continuation"), shared.continuation_ready.load(Ordering::Relaxed), "{text}");
    assert!(!shared.transcriber_ready.load(Ordering::Relaxed));
    // Input on both: MIDI is still heard and estimated; audio is counted and dropped.
    shared.controls.input_source.store(INPUT_BOTH, Ordering::Relaxed);
    let transport = TransportInfo { playing: true, tempo_bpm: Some(120.0), sig_num: Some(4), sig_den: Some(4), pos_beats: None };
    for b in 0..300u32 {
        audio.begin_block(&transport, 480);
        if b % 25 == 0 {
            audio.note(0, true, 0, 60 + (b / 25 % 8) as u8, 90);
        }
        if b % 25 == 20 {
            audio.note(0, false, 0, 60 + (b / 25 % 8) as u8, 0);
        }
        let mut buf = vec![0.1f32; 480];
        audio.push_audio(&[&mut buf]);
        audio.end_block();
        if b % 20 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    wait_for("an estimate", Duration::from_secs(5), || shared.num_estimates.load(Ordering::Acquire) > 0);
    assert_eq!(shared.num_transcribed_notes.load(Ordering::Relaxed), 0);
    assert_eq!(shared.num_dropped_audio_samples.load(Ordering::Relaxed), 0);
    w.stop();

    std::fs::write(&missing, vec![0u8; 1000]).unwrap();
    let (mut w, _audio, shared) = start();
    let text = shared.status_text();
    assert!(text.contains("audio transcription unavailable") && text.contains("corrupt"), "{text}");
    w.stop();
    // SAFETY: as above.
    unsafe { std::env::remove_var("MOODFADER_BASIC_PITCH") };
}
