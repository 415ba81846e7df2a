//! Without ONNX Runtime the worker says so in its status text (what the panel shows) and keeps
//! draining the queues, so the audio side never fills up.
//!
//! Thread: test

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use moodfader_engine::rt::audio_side::{AudioSide, TransportInfo};
use moodfader_engine::rt::queues::{TO_WORKER_CAPACITY, queues};
use moodfader_engine::shared::{Shared, WorkerStatus};
use moodfader_engine::worker::{Worker, WorkerConfig};

#[test]
fn missing_runtime_is_reported_and_queues_keep_draining() {
    // SAFETY: the only test in this process, before the worker starts.
    unsafe { std::env::set_var("MOODFADER_ORT_DYLIB", "/nonexistent/libonnxruntime.so.1.31.1") };
    let shared = Arc::new(Shared::default());
    let (audio_ends, worker_ends) = queues();
    let mut audio = AudioSide::new(audio_ends, shared.clone(), 48_000.0);
    let mut worker = Worker::spawn(WorkerConfig::default(), shared.clone(), worker_ends).unwrap();
    let start = Instant::now();
    while matches!(shared.status(), WorkerStatus::Loading | WorkerStatus::Stopped) {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(shared.status(), WorkerStatus::Error);
    let text = shared.status_text();
    assert!(text.contains("/nonexistent/libonnxruntime.so.1.31.1") && text.contains("not found"), "{text}");
    // Far more events than the queue holds, spread over time: none may be dropped.
    for round in 0..4 {
        audio.begin_block(&TransportInfo::NONE, 64);
        for i in 0..TO_WORKER_CAPACITY / 2 {
            audio.note(0, i % 2 == 0, 0, 60, 100);
        }
        audio.end_block();
        std::thread::sleep(Duration::from_millis(100 + round));
    }
    assert_eq!(shared.num_dropped_to_worker.load(Ordering::Relaxed), 0);
    worker.stop();
}
