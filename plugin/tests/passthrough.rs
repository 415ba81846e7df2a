//! Audio through `process()` in-process: every sample comes out bit for bit, except subnormals,
//! which come out as zeros of their sign (clap-validator's fuzzer flags subnormal output).
//!
//! Thread: test (plays the audio thread)

mod mock_host;

use mock_host::{Rig, stereo_buffer};

#[test]
fn audio_passes_bit_exact_and_subnormals_flush() {
    let block = 64;
    let mut rig = Rig::new(48_000.0, block);
    let mut left = std::mem::take(&mut rig.left);
    let mut right = std::mem::take(&mut rig.right);
    let input: Vec<f32> = (0..block)
        .map(|i| match i % 8 {
            0 => 1.0e-40,
            1 => -3.0e-39,
            2 => -0.0,
            3 => f32::MIN_POSITIVE,
            4 => 1.0,
            5 => -0.25,
            6 => f32::NAN,
            _ => i as f32 * 1e-3,
        })
        .collect();
    left.copy_from_slice(&input);
    right.copy_from_slice(&input);
    // As a host would: set "bars" to its maximum before this block.
    let params = nice_plug::prelude::Plugin::params(&rig.plugin);
    let (_, bars, _) = params.param_map().into_iter().find(|(id, _, _)| id == "bars").unwrap();
    // SAFETY: the pointer targets the plugin's live parameter object.
    unsafe { bars._internal_set_normalized_value(1.0) };
    let mut buffer = stereo_buffer(&mut left, &mut right);
    rig.process(block, &mut buffer);
    drop(buffer);
    // The worker sees the parameters through atomics published every block.
    let c = &rig.plugin.shared().controls;
    assert_eq!(c.num_bars.load(std::sync::atomic::Ordering::Relaxed), 16);
    assert!(c.attribute_auto.iter().all(|a| a.load(std::sync::atomic::Ordering::Relaxed)));
    for (ch, out) in [&left, &right].into_iter().enumerate() {
        for (i, (&x, &y)) in input.iter().zip(out.iter()).enumerate() {
            let want = if x.is_subnormal() { 0.0f32.copysign(x) } else { x };
            assert_eq!(y.to_bits(), want.to_bits(), "channel {ch} sample {i}: in {x:e}, out {y:e}");
            assert!(!y.is_subnormal());
        }
    }
}
