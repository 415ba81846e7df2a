//! `process()` per 64-frame block at 48 kHz with 16 MIDI events (product.md budget: median
//! ≤ 2 µs, zero allocations), called in-process through the `Plugin` trait; and the cost of
//! instantiating the plugin as a host scan does (budget ≤ 20 ms).
//!
//! Thread: bench (plays the audio thread)

#[path = "../tests/mock_host/mod.rs"]
mod mock_host;

use criterion::{Criterion, criterion_group, criterion_main};
use mock_host::{CountingAlloc, Rig, count_allocs, stereo_buffer};
use nice_plug::prelude::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const BLOCK: usize = 64;
const NUM_EVENTS: usize = 16;

fn bench_process(c: &mut Criterion) {
    let mut rig = Rig::new(48_000.0, BLOCK);
    let mut left = std::mem::take(&mut rig.left);
    let mut right = std::mem::take(&mut rig.right);
    let mut block_index = 0usize;
    let mut total_allocs = 0u64;
    let mut num_calls = 0u64;
    let mut run = |rig: &mut Rig, buffer: &mut Buffer<'_>| {
        rig.ctx.input.clear();
        rig.ctx.output.clear();
        for k in 0..NUM_EVENTS {
            rig.note((k * BLOCK / NUM_EVENTS) as u32, (block_index + k).is_multiple_of(2), 48 + (k as u8 * 3) % 36, 100);
        }
        block_index += 1;
        let (status, n) = count_allocs(|| rig.process(BLOCK, buffer));
        total_allocs += n;
        num_calls += 1;
        status
    };
    let mut buffer = stereo_buffer(&mut left, &mut right);
    c.bench_function("process_64_frames_48k_16_events", |b| b.iter(|| run(&mut rig, &mut buffer)));
    println!("process(): {total_allocs} allocations in {num_calls} calls (budget: 0)");
    // For `cargo xtask bench`'s summary table.
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("moodfader-bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("process_allocs.json"), format!("{{\"allocations\": {total_allocs}, \"calls\": {num_calls}}}"));
    assert_eq!(total_allocs, 0, "process() allocated");
}

/// What a host scan costs the plugin: construct it and list its parameters (budget ≤ 20 ms,
/// nothing loaded: no runtime, no model, no thread).
fn bench_instantiate(c: &mut Criterion) {
    c.bench_function("instantiate_and_list_params", |b| {
        b.iter(|| {
            let plugin = moodfader::Moodfader::default();
            let params = nice_plug::prelude::Plugin::params(&plugin);
            std::hint::black_box(params.param_map().len())
        })
    });
}

criterion_group!(benches, bench_process, bench_instantiate);
criterion_main!(benches);
