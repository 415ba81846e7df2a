//! `process()` called in-process through the `Plugin` trait, counting every allocation the audio
//! thread makes, across block sizes and sample rates, with MIDI in and out and a running
//! transport. (The clack-host tests cover the same through a real CLAP host with nice-plug's
//! `assert_process_allocs`.) The track's audio goes into the worker's queue in every block
//! whatever the input source (the worker decides whether to transcribe it), so audio input is
//! on in every case here, NaN samples included.
//!
//! Thread: test (plays the audio thread)

mod mock_host;

use mock_host::{CountingAlloc, Rig, count_allocs, stereo_buffer};
use nice_plug::prelude::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn the_counter_sees_allocations() {
    let (v, n) = count_allocs(|| vec![1u8; 10]);
    assert_eq!(v.len(), 10);
    assert!(n >= 1, "counting allocator is not counting");
}

#[test]
fn process_never_allocates() {
    for sample_rate in [44_100.0f32, 48_000.0, 96_000.0] {
        for block in [1usize, 64, 511, 4096] {
            let mut rig = Rig::new(sample_rate, block);
            let mut left = std::mem::take(&mut rig.left);
            let mut right = std::mem::take(&mut rig.right);
            let mut buffer = stereo_buffer(&mut left, &mut right);
            let num_blocks = (sample_rate as usize * 4 / block).clamp(50, 4000);
            let mut total_allocs = 0;
            for b in 0..num_blocks {
                rig.ctx.input.clear();
                rig.ctx.output.clear();
                for k in 0..(block.min(16)) {
                    let t = (k * block / block.clamp(1, 16)) as u32;
                    rig.note(t, (b + k) % 2 == 0, 48 + ((b * 7 + k * 5) % 36) as u8, 90);
                }
                {
                    let chans = buffer.as_slice();
                    let (l, r) = chans.split_at_mut(1);
                    for (i, (x, y)) in l[0].iter_mut().zip(r[0].iter_mut()).enumerate() {
                        let v = ((b * block + i) as f32 * 0.01).sin();
                        *x = v;
                        *y = if i % 97 == 0 { f32::NAN } else { -v };
                    }
                }
                let ((), n) = count_allocs(|| {
                    rig.process(block, &mut buffer);
                });
                total_allocs += n;
                assert_eq!(rig.ctx.output.len(), rig.ctx.input.len(), "every heard note passes through");
            }
            assert_eq!(total_allocs, 0, "{sample_rate} Hz, block {block}: process() allocated {total_allocs} times");
            // Thru: every note went out.
            rig.plugin.deactivate();
        }
    }
}
