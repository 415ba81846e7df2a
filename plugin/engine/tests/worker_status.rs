//! The worker end to end through the real queues: it loads the runtime and the model after
//! spawning, publishes estimates for notes fed by the audio side, reports a missing or corrupt
//! model in its status text (what the panel shows), and stops cleanly.
//!
//! One test function: the scenarios share process-wide environment variables.
//!
//! Thread: test (plays the audio thread and the panel)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use moodfader_engine::rt::audio_side::{AudioSide, TransportInfo};
use moodfader_engine::rt::queues::queues;
use moodfader_engine::shared::{Shared, WorkerStatus};
use moodfader_engine::worker::{Worker, WorkerConfig};

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Spawns a worker with the current environment and waits until it has finished loading.
fn start() -> (Worker, Box<AudioSide>, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    let (audio_ends, worker_ends) = queues();
    let audio = AudioSide::new(audio_ends, shared.clone(), 48_000.0);
    let worker = Worker::spawn(WorkerConfig::default(), shared.clone(), worker_ends).unwrap();
    wait_for("the worker to load", Duration::from_secs(20), || {
        !matches!(shared.status(), WorkerStatus::Loading | WorkerStatus::Stopped)
    });
    (worker, audio, shared)
}

#[test]
fn worker_reports_status_and_estimates() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this process; the worker threads read the variable only while
    // loading, which `start` waits for before the next change.
    unsafe { std::env::set_var("MOODFADER_MODEL_DIR", dir.path()) };
    let (mut w, _audio, shared) = start();
    assert_eq!(shared.status(), WorkerStatus::Error);
    let text = shared.status_text();
    assert!(text.contains("emotion_va.onnx") && text.contains("missing"), "status says what is missing: {text}");
    w.stop();

    std::fs::write(dir.path().join("emotion_va.onnx"), vec![7u8; 4096]).unwrap();
    std::fs::write(dir.path().join("emotion_va.json"), moodfader_engine::feel::emotion::EMBEDDED_MANIFEST).unwrap();
    let (mut w, _audio, shared) = start();
    assert_eq!(shared.status(), WorkerStatus::Error);
    let text = shared.status_text();
    assert!(text.contains("corrupt"), "status says the model is corrupt: {text}");
    w.stop();

    // SAFETY: as above.
    unsafe { std::env::remove_var("MOODFADER_MODEL_DIR") };
    let (mut w, mut audio, shared) = start();
    assert_eq!(shared.status(), WorkerStatus::Ready, "{}", shared.status_text());
    // Two bars of quarter-note triads at 120 BPM, fed block by block in (faster than) real time.
    let transport = TransportInfo { playing: true, tempo_bpm: Some(120.0), sig_num: Some(4), sig_den: Some(4), pos_beats: None };
    let block = 480u32;
    for b in 0..400u32 {
        audio.begin_block(&transport, block);
        if b % 50 == 0 {
            for p in [60, 64, 67] {
                audio.note(0, true, 0, p, 100);
            }
        }
        if b % 50 == 40 {
            for p in [60, 64, 67] {
                audio.note(0, false, 0, p, 0);
            }
        }
        audio.end_block();
        if b % 20 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    wait_for("an estimate", Duration::from_secs(5), || shared.num_estimates.load(Ordering::Acquire) > 0);
    let (v, a) = (shared.valence.load(Ordering::Relaxed), shared.arousal.load(Ordering::Relaxed));
    assert!(v.is_finite() && a.is_finite() && v.abs() <= 1.0 && a.abs() <= 1.0);
    assert!(shared.confidence.load(Ordering::Relaxed) > 0.0);
    let started = Instant::now();
    w.stop();
    assert!(started.elapsed() < Duration::from_secs(1), "stop is prompt");
    assert_eq!(shared.status(), WorkerStatus::Stopped);
}
