//! A panic inside the worker is caught: the status says so (the panel shows it), the audio side
//! keeps running without blocking (a full queue only drops and counts), and a new worker — what
//! the next activation starts — comes up ready.
//!
//! Thread: test (plays the audio thread and the host's main thread)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use moodfader_engine::rt::audio_side::{AudioSide, TransportInfo};
use moodfader_engine::rt::queues::{TO_WORKER_CAPACITY, queues};
use moodfader_engine::shared::{Shared, WorkerStatus};
use moodfader_engine::worker::{Worker, WorkerConfig};

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn worker_panic_is_caught_reported_and_recovered_on_reactivation() {
    let shared = Arc::new(Shared::default());
    let (audio_ends, worker_ends) = queues();
    let mut audio = AudioSide::new(audio_ends, shared.clone(), 48_000.0);
    let config = WorkerConfig { panic_after_updates: Some(3), ..WorkerConfig::default() };
    let mut worker = Worker::spawn(config, shared.clone(), worker_ends).unwrap();
    wait_for("the injected panic", || shared.status() == WorkerStatus::Error);
    let text = shared.status_text();
    assert!(text.contains("internal error") && text.contains("injected fault"), "{text}");

    // The audio side does not notice: events beyond the queue's capacity are dropped and counted.
    for _ in 0..3 {
        audio.begin_block(&TransportInfo::NONE, 64);
        for i in 0..TO_WORKER_CAPACITY {
            audio.note(0, i % 2 == 0, 0, 60, 100);
        }
        audio.end_block();
    }
    assert!(shared.num_dropped_to_worker.load(Ordering::Relaxed) > 0);
    worker.stop();

    // Re-activation: fresh queues and a fresh worker.
    let (audio_ends, worker_ends) = queues();
    let _audio = AudioSide::new(audio_ends, shared.clone(), 48_000.0);
    let mut worker = Worker::spawn(WorkerConfig::default(), shared.clone(), worker_ends).unwrap();
    wait_for("the restarted worker", || !matches!(shared.status(), WorkerStatus::Loading | WorkerStatus::Stopped | WorkerStatus::Error));
    assert_eq!(shared.status(), WorkerStatus::Ready, "{}", shared.status_text());
    worker.stop();
}
