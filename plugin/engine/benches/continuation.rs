//! The continuation on one core (budgets: first bar ≤ 50 ms, 8 bars ≤ 300 ms, p99): the demo's
//! last eight bars as primer (prefill included, as when a user presses Generate), one bar and
//! eight bars, over many seeds. Prints p50/p99 and tokens per second besides criterion's figures,
//! and writes them for `cargo xtask bench`'s table.
//!
//! Thread: bench (plays the generator thread)

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use moodfader_engine::listen::midifile::parse_midi;
use moodfader_engine::play::compose::{ContinueOptions, bars_after, continue_notes};
use moodfader_engine::play::continuation::ContinuationModel;
use moodfader_engine::runtime::ensure_runtime;

const DEMO: &[u8] = include_bytes!("../../../assets/demo.mid");

fn bench_continuation(c: &mut Criterion) {
    ensure_runtime(None).expect("ONNX Runtime (run `cargo xtask setup`)");
    let mut model = ContinuationModel::load_default().expect("continuation model");
    // Both models loaded, as in a plugin instance (the memory budget counts them).
    let _emotion = moodfader_engine::feel::emotion::EmotionModel::load_default().expect("emotion model");
    let piece = parse_midi(DEMO).expect("demo");
    let n = piece.bars.len();
    let (bars, notes) = (&piece.bars[n - 8..], &piece.notes[..]);
    let last = *bars.last().unwrap();
    let runs = std::env::var("MOODFADER_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(60usize);
    let mut run = |num_bars: u32, seed: u64| {
        let future = bars_after(&last, num_bars);
        let opts = ContinueOptions { bars: num_bars, seed, ..Default::default() };
        let start = Instant::now();
        let mut first_bar = None;
        let c = continue_notes(&mut model, notes, bars, &future, &opts, |b, _| {
            if b == 0 {
                first_bar = Some(start.elapsed());
            }
            true
        })
        .unwrap();
        (first_bar.unwrap().as_secs_f64() * 1e3, start.elapsed().as_secs_f64() * 1e3, c.generated.num_tokens)
    };
    let mut first = Vec::new();
    let mut eight = Vec::new();
    let (mut tokens, mut seconds) = (0usize, 0.0f64);
    for seed in 0..runs as u64 {
        let (f, total, t) = run(8, seed);
        first.push(f);
        eight.push(total);
        tokens += t;
        seconds += total / 1e3;
    }
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    let (f50, f99, e50, e99) = (pct(&mut first, 0.5), pct(&mut first, 0.99), pct(&mut eight, 0.5), pct(&mut eight, 0.99));
    let tps = tokens as f64 / seconds;
    println!(
        "continuation over {runs} seeds: first bar p50 {f50:.1} ms, p99 {f99:.1} ms (budget 50); 8 bars p50 {e50:.1} ms, p99 {e99:.1} ms (budget 300); {tps:.0} tokens/s"
    );
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("moodfader-bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("continuation.json"),
        format!(
            "{{\"first_bar_p50_ms\": {f50:.3}, \"first_bar_p99_ms\": {f99:.3}, \"eight_bars_p50_ms\": {e50:.3}, \"eight_bars_p99_ms\": {e99:.3}, \"tokens_per_s\": {tps:.1}, \"runs\": {runs}}}"
        ),
    );
    // Peak resident memory of this process: ONNX Runtime, both models, 16-bar continuations.
    for seed in 0..4 {
        let _ = run(16, 500 + seed);
    }
    let peak_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()));
    if let Some(kb) = peak_kb {
        println!("peak resident memory with ONNX Runtime and both models: {:.1} MB (budget 200 MB per instance)", kb as f64 / 1024.0);
        let _ = std::fs::write(dir.join("memory.json"), format!("{{\"peak_rss_mb\": {:.1}}}", kb as f64 / 1024.0));
    }
    let mut seed = 1000;
    let mut g = c.benchmark_group("continuation");
    g.sample_size(10);
    g.bench_function("one_bar", |b| {
        b.iter(|| {
            seed += 1;
            run(1, seed)
        })
    });
    g.bench_function("eight_bars", |b| {
        b.iter(|| {
            seed += 1;
            run(8, seed)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_continuation);
criterion_main!(benches);
