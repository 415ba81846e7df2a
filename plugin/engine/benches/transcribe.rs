//! Basic Pitch live: the streaming transcriber over 30 s of rendered piano at 48 kHz (resampling,
//! a model run every 64 frames, the decoder), on one core. Prints the real-time factor (model
//! and decoding time over audio time; budget ≤ 0.05, product.md) and writes it for `cargo xtask bench`'s
//! table; criterion then times one streaming hop (0.74 s of audio).
//!
//! Thread: bench (plays the worker)

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use moodfader_engine::Note;
use moodfader_engine::listen::transcribe::{BasicPitch, FFT_HOP, MODEL_SAMPLE_RATE_HZ, NoteParams, STREAM_HOP_FRAMES, StreamingTranscriber};
use moodfader_engine::rt::synth::render_notes;
use moodfader_engine::runtime::ensure_runtime;

const RATE_HZ: u32 = 48_000;

fn audio(seconds: usize) -> Vec<f32> {
    let mut notes = Vec::new();
    for i in 0..seconds * 4 {
        let t = i as f64 * 0.25;
        for (v, p) in [(0u8, 48u8), (1, 60), (2, 64), (3, 67 + (i % 5) as u8)] {
            if v < 3 && i % 4 != 0 {
                continue;
            }
            notes.push(Note { onset_s: t, dur_s: if v < 3 { 0.95 } else { 0.22 }, onset_beats: t * 2.0, dur_beats: 0.4, pitch: p, velocity: 90, channel: 0 });
        }
    }
    render_notes(&notes, RATE_HZ)
}

fn bench_stream(c: &mut Criterion) {
    ensure_runtime(None).expect("ONNX Runtime (run `cargo xtask setup`)");
    let mut model = BasicPitch::load_default(None).expect("Basic Pitch's nmp.onnx (run `cargo xtask setup`)");
    let samples = audio(30);
    let mut st = StreamingTranscriber::new(RATE_HZ, 0.0, NoteParams::default()).unwrap();
    let mut events = Vec::new();
    let start = Instant::now();
    for chunk in samples.chunks(512) {
        st.push(&mut model, chunk, &mut events).unwrap();
    }
    let total_s = start.elapsed().as_secs_f64();
    let audio_s = samples.len() as f64 / RATE_HZ as f64;
    let rtf = total_s / audio_s;
    println!(
        "transcribe_stream: {audio_s:.1} s of audio in {total_s:.2} s: real-time factor {rtf:.4} (model alone {:.4}, {} runs; budget ≤ 0.05), {} events",
        st.real_time_factor(),
        st.num_runs,
        events.len()
    );
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("moodfader-bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("transcribe.json"), format!("{{\"rtf\": {rtf:.5}, \"model_rtf\": {:.5}}}", st.real_time_factor()));

    // One hop of audio at the host rate.
    let hop = STREAM_HOP_FRAMES * FFT_HOP * RATE_HZ as usize / MODEL_SAMPLE_RATE_HZ as usize;
    let mut st = StreamingTranscriber::new(RATE_HZ, 0.0, NoteParams::default()).unwrap();
    let mut at = 0usize;
    c.bench_function("transcribe_stream_hop", |b| {
        b.iter(|| {
            events.clear();
            let end = (at + hop).min(samples.len());
            st.push(&mut model, &samples[at..end], &mut events).unwrap();
            at = if end >= samples.len() { 0 } else { end };
        })
    });
}

criterion_group!(benches, bench_stream);
criterion_main!(benches);
