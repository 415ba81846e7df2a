//! Hostile input through `process()` in-process: absurd event streams, broken transports, odd
//! tempos and meters, changing block sizes and sample rates, non-finite audio. For each: no
//! panic, no allocation on the audio thread, every heard event passed through exactly once and in
//! time order, and no subnormal output.
//!
//! Defined behaviour: non-finite samples pass through unchanged (the host's signal is not ours to
//! rewrite) and never reach the estimator (the mono downmix zeroes them); subnormals become signed
//! zeros; a host without transport gets a free-running 120 BPM 4/4 clock; SysEx is not read
//! (the plugin declares no SysEx type) and is dropped by the framework.
//!
//! Thread: test (plays the audio thread)

mod mock_host;

use mock_host::{CountingAlloc, Rig, count_allocs, stereo_buffer};
use nice_plug::midi::{Channel, Key, VoiceID};
use moodfader::Moodfader;
use nice_plug::prelude::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// A tiny deterministic generator (no dependency, no allocation).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n.max(1)
    }
}

/// A random MIDI event of any kind this plugin accepts, at `timing`.
fn random_event(rng: &mut Lcg, timing: u32) -> NoteEvent<()> {
    let channel = rng.below(16) as u8;
    let key = rng.below(128) as u8;
    let value = rng.below(1000) as f32 / 999.0;
    match rng.below(8) {
        0 | 1 => NoteEvent::NoteOn { timing, voice_id: VoiceID::Wildcard, channel: Channel::Number(channel), key: Key::Number(key), velocity: value },
        2 | 3 => NoteEvent::NoteOff { timing, voice_id: VoiceID::Wildcard, channel: Channel::Number(channel), key: Key::Number(key), velocity: value },
        4 => NoteEvent::MidiCC { timing, channel, cc: key, value },
        5 => NoteEvent::MidiPitchBend { timing, channel, value },
        6 => NoteEvent::MidiChannelPressure { timing, channel, pressure: value },
        _ => NoteEvent::MidiProgramChange { timing, channel, program: key },
    }
}

/// Runs `num_blocks` blocks on a fresh plugin; `setup` shapes each block (its length, events and
/// transport). Asserts the invariants listed at the top of this file.
fn run(name: &str, sample_rate: f32, max_block: usize, num_blocks: usize, mut setup: impl FnMut(usize, &mut Rig, &mut Lcg) -> usize) {
    let mut rig = Rig::new(sample_rate, max_block);
    let mut left = std::mem::take(&mut rig.left);
    let mut right = std::mem::take(&mut rig.right);
    let mut rng = Lcg(0x5eed ^ max_block as u64);
    for b in 0..num_blocks {
        rig.ctx.input.clear();
        rig.ctx.output.clear();
        let n = setup(b, &mut rig, &mut rng).clamp(1, max_block);
        for i in 0..n {
            let v = match rng.below(50) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => 1.0e-42,
                4 => -1.0e-39,
                _ => (rng.below(2001) as f32 - 1000.0) / 1000.0,
            };
            left[i] = v;
            right[i] = -v;
        }
        let mut buffer = stereo_buffer(&mut left[..n], &mut right[..n]);
        // The host delivers events in time order and within the block.
        rig.ctx.input.sort_by_key(|e| e.timing());
        for e in rig.ctx.input.iter_mut() {
            let t = e.timing().min(n as u32 - 1);
            e.subtract_timing(e.timing() - t);
        }
        let (_, allocs) = count_allocs(|| rig.process_raw(&mut buffer));
        drop(buffer);
        assert_eq!(allocs, 0, "{name}: block {b} allocated {allocs} times");
        assert_eq!(rig.ctx.output.len(), rig.ctx.input.len(), "{name}: block {b}: every event passes through once");
        for (i, (a, b_)) in rig.ctx.input.iter().zip(rig.ctx.output.iter()).enumerate() {
            assert_eq!(a, b_, "{name}: block {b} event {i} changed on the way through");
        }
        assert!(rig.ctx.output.windows(2).all(|w| w[0].timing() <= w[1].timing()), "{name}: output out of order");
        assert!(left[..n].iter().chain(right[..n].iter()).all(|x| !x.is_subnormal()), "{name}: subnormal output");
    }
    // The worker took the same stream (and the estimator the same clock) without falling over.
    std::thread::sleep(std::time::Duration::from_millis(120));
    let status = rig.plugin.shared().status_text();
    assert!(!status.contains("internal error"), "{name}: worker died: {status}");
    rig.plugin.deactivate();
}

fn playing(rig: &mut Rig, tempo: f64, num: i32, den: i32, pos_beats: f64) {
    let t = &mut rig.ctx.transport;
    t.playing = true;
    t.tempo = Some(tempo);
    t.time_sig_numerator = Some(num);
    t.time_sig_denominator = Some(den);
    t.pos_beats = Some(pos_beats);
    t.pos_samples = None;
    t.pos_seconds = None;
}

#[test]
fn ten_thousand_events_in_one_block() {
    run("10k events", 48_000.0, 4096, 6, |_, rig, rng| {
        playing(rig, 120.0, 4, 4, 0.0);
        for _ in 0..10_000 {
            let t = rng.below(4096);
            let e = random_event(rng, t);
            rig.ctx.input.push(e);
        }
        4096
    });
}

#[test]
fn orphan_offs_restrikes_and_all_channels() {
    run("orphans", 44_100.0, 256, 400, |b, rig, rng| {
        playing(rig, 96.0, 3, 4, b as f64 * 0.5);
        for ch in 0..16u8 {
            let key = Key::Number(60 + ch);
            let t = rng.below(256);
            // Off with no on, then the same key struck twice before its release.
            rig.ctx.input.push(NoteEvent::NoteOff { timing: t, voice_id: VoiceID::Wildcard, channel: Channel::Number(ch), key, velocity: 0.0 });
            rig.ctx.input.push(NoteEvent::NoteOn { timing: t, voice_id: VoiceID::Wildcard, channel: Channel::Number(ch), key, velocity: 0.8 });
            rig.ctx.input.push(NoteEvent::NoteOn { timing: t, voice_id: VoiceID::Wildcard, channel: Channel::Number(ch), key, velocity: 0.6 });
        }
        256
    });
}

#[test]
fn tempos_and_meters_from_the_edges() {
    let tempos = [20.0, 20.0001, 60.0, 133.33, 400.0, 0.0, -120.0, f64::NAN, f64::INFINITY, 1.0e9];
    let meters = [(1, 4), (15, 8), (7, 8), (5, 4), (3, 16), (0, 4), (4, 0), (-3, 4), (255, 1)];
    let mut k = 0;
    run("tempo/meter", 48_000.0, 512, 600, |b, rig, rng| {
        if b % 20 == 0 {
            k += 1;
        }
        let (num, den) = meters[k % meters.len()];
        playing(rig, tempos[k % tempos.len()], num, den, b as f64);
        for _ in 0..rng.below(24) {
            let t = rng.below(512);
            let e = random_event(rng, t);
            rig.ctx.input.push(e);
        }
        512
    });
}

#[test]
fn jumps_loops_stops_and_no_transport() {
    run("transport", 96_000.0, 1024, 600, |b, rig, rng| {
        match (b / 50) % 4 {
            // Loops: position wraps every 8 beats.
            0 => playing(rig, 140.0, 4, 4, (b as f64 * 0.1) % 8.0),
            // Random relocations.
            1 => playing(rig, 140.0, 4, 4, rng.below(10_000) as f64 * 0.37 - 100.0),
            // Stopped.
            2 => {
                playing(rig, 140.0, 4, 4, 0.0);
                rig.ctx.transport.playing = false;
            }
            // A host that tells nothing at all.
            _ => rig.ctx.transport = Transport::new(96_000.0),
        }
        for _ in 0..rng.below(20) {
            let t = rng.below(1024);
            let e = random_event(rng, t);
            rig.ctx.input.push(e);
        }
        1 + rng.below(1024) as usize
    });
}

#[test]
fn block_size_changes_every_call_and_sample_rate_between_activations() {
    for sample_rate in [22_050.0f32, 44_100.0, 48_000.0, 88_200.0, 96_000.0, 192_000.0] {
        run("block sizes", sample_rate, 4096, 300, |b, rig, rng| {
            playing(rig, 120.0, 4, 4, b as f64 * 0.01);
            let n = [1usize, 2, 3, 64, 127, 511, 512, 1000, 4096][b % 9];
            for _ in 0..rng.below(8) {
                let t = rng.below(n as u32);
            let e = random_event(rng, t);
                rig.ctx.input.push(e);
            }
            n
        });
    }
}

#[test]
fn sample_rate_changes_between_activations_of_one_instance() {
    let max_block = 1024;
    let mut rig = Rig::new(44_100.0, max_block);
    let mut left = std::mem::take(&mut rig.left);
    let mut right = std::mem::take(&mut rig.right);
    let mut rng = Lcg(7);
    for (k, rate) in [44_100.0f32, 96_000.0, 22_050.0, 192_000.0, 48_000.0].into_iter().enumerate() {
        if k > 0 {
            // What a host does when the user changes the project's rate: deactivate, re-activate.
            rig.plugin.deactivate();
            let config = BufferConfig { sample_rate: rate, min_buffer_size: None, max_buffer_size: max_block as u32, process_mode: ProcessMode::Realtime };
            assert!(rig.plugin.activate(&Moodfader::AUDIO_IO_LAYOUTS[0], &config, &mut mock_host::MockActivate));
            rig.plugin.reset();
            rig.ctx.transport = Transport::new(rate);
        }
        for b in 0..50 {
            rig.ctx.input.clear();
            rig.ctx.output.clear();
            playing(&mut rig, 128.0, 4, 4, b as f64 * 0.25);
            for _ in 0..rng.below(16) {
                let t = rng.below(max_block as u32);
                let e = random_event(&mut rng, t);
                rig.ctx.input.push(e);
            }
            rig.ctx.input.sort_by_key(|e| e.timing());
            let mut buffer = stereo_buffer(&mut left, &mut right);
            let (_, allocs) = count_allocs(|| rig.process_raw(&mut buffer));
            drop(buffer);
            assert_eq!(allocs, 0, "{rate} Hz block {b}: allocated");
            assert_eq!(rig.ctx.output.len(), rig.ctx.input.len());
        }
        let sr = rig.plugin.shared().sample_rate_hz.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(sr, rate as f64, "the engine runs at the new rate");
    }
    rig.plugin.deactivate();
}
