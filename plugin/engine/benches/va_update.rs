//! The worker's valence/arousal update: build the live context from the heard notes and run the
//! emotion model through ONNX Runtime (budget: p99 ≤ 1 ms on one core). Prints p50/p99 over
//! 2000 updates besides criterion's own figures.
//!
//! Thread: bench (plays the worker)

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use moodfader_engine::feel::emotion::EmotionModel;
use moodfader_engine::feel::live::LiveEstimator;
use moodfader_engine::rt::queues::ToWorker;
use moodfader_engine::runtime::ensure_runtime;

/// A live estimator that has heard `bars` bars of a busy four-voice texture at 120 BPM.
fn heard(bars: usize) -> LiveEstimator {
    let mut live = LiveEstimator::new();
    for i in 0..bars * 16 {
        let t = i as f64 * 0.125;
        for v in 0..4u8 {
            let pitch = 48 + v * 7 + (i % 5) as u8;
            live.on_event(&ToWorker::Note { on: true, channel: 0, pitch, velocity: 80 + v * 10, time_s: t, beats: t * 2.0, song_beats: t * 2.0 });
            live.on_event(&ToWorker::Note { on: false, channel: 0, pitch, velocity: 0, time_s: t + 0.1, beats: t * 2.0 + 0.2, song_beats: t * 2.0 + 0.2 });
        }
    }
    live
}

fn bench_update(c: &mut Criterion) {
    ensure_runtime(None).expect("ONNX Runtime (run `cargo xtask setup`)");
    let mut model = EmotionModel::load_default().expect("emotion model");
    let mut live = heard(8);
    let now_s = 8.0 * 2.0;
    let mut out = Vec::with_capacity(1);
    let mut update = |live: &mut LiveEstimator, model: &mut EmotionModel, k: usize| {
        let t = now_s + k as f64 * 1e-3;
        let ctx = live.context(t, t * 2.0, 120.0, 4.0);
        model.predict_into(std::slice::from_ref(&ctx.input), &mut out).unwrap();
        live.update(&ctx, out[0], t, t * 2.0, 4.0)
    };
    let mut times_us: Vec<f64> = (0..2000)
        .map(|k| {
            let start = Instant::now();
            std::hint::black_box(update(&mut live, &mut model, k));
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times_us.sort_by(f64::total_cmp);
    let p = |q: f64| times_us[((times_us.len() - 1) as f64 * q) as usize];
    println!("va_update over 2000 updates: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (budget p99 ≤ 1000 µs)", p(0.5), p(0.99), p(1.0));
    // For `cargo xtask bench`'s summary table.
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("moodfader-bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("va_update.json"),
        format!("{{\"p50_us\": {:.3}, \"p99_us\": {:.3}, \"max_us\": {:.3}}}", p(0.5), p(0.99), p(1.0)),
    );
    let mut k = 0;
    c.bench_function("va_update", |b| {
        b.iter(|| {
            k += 1;
            update(&mut live, &mut model, k % 1000)
        })
    });
}

criterion_group!(benches, bench_update);
criterion_main!(benches);
