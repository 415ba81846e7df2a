//! Deterministic test material and checks shared by the integration tests: a non-trivial stereo
//! test signal, a musical note/CC stream (chords, melody, sustain, plus events pinned to the
//! first and last sample of blocks), a block partition, a runner that feeds it all through a
//! [`ClapTestHost`], and the checks: bit-exact audio passthrough and sample-exact MIDI thru.
//!
//! Thread: main (drives a [`ClapTestHost`]).

use crate::events::{InEvent, OutEvent};
use crate::guard::{breadcrumb, set_phase};
use crate::host::{ClapTestHost, OUTPUT_SENTINEL, TransportSettings};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// CC numbers the plugin uses for its mood estimate.
pub const CC_VALENCE: u8 = 20;
pub const CC_AROUSAL: u8 = 21;

/// Small deterministic PRNG (64-bit LCG, top bits) so the tests need no `rand`.
#[derive(Clone, Debug)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo + 1) as u64;
        lo + (u64::from(self.next_u32()) % span) as i64
    }

    /// Uniform in `[-1, 1)`.
    pub fn bipolar(&mut self) -> f32 {
        (f64::from(self.next_u32()) / f64::from(u32::MAX) * 2.0 - 1.0) as f32
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u32() >> 24) as u8).collect()
    }
}

/// Samples per beat at this rate and tempo.
pub fn samples_per_beat(sample_rate: f64, tempo_bpm: f64) -> f64 {
    sample_rate * 60.0 / tempo_bpm
}

/// A non-trivial stereo signal: two sines per channel at unrelated frequencies, noise, and every
/// 997th/1009th sample replaced by an edge value (signed zero, subnormals, full scale, tiny).
/// The passthrough must reproduce all of it bit for bit, `-0.0` included, except subnormals,
/// which must come out as zeros of their sign.
pub fn test_signal(frames: usize, sample_rate: f64, seed: u64) -> [Vec<f32>; 2] {
    const SPECIAL: [f32; 8] = [
        -0.0,
        1.0e-40,  // subnormal
        -3.0e-39, // subnormal
        f32::MIN_POSITIVE,
        1.0,
        -1.0,
        0.999_999_94,
        1.0e-30,
    ];
    let mut rng = Lcg::new(seed);
    let mut left = Vec::with_capacity(frames);
    let mut right = Vec::with_capacity(frames);
    let tau = std::f64::consts::TAU;
    for n in 0..frames {
        let t = n as f64 / sample_rate;
        let l = 0.45 * (tau * 220.5 * t).sin() + 0.2 * (tau * 3_001.7 * t).sin();
        let r = 0.4 * (tau * 331.3 * t + 0.7).sin() + 0.15 * (tau * 5_123.9 * t).sin();
        let mut l = l as f32 + 0.05 * rng.bipolar();
        let mut r = r as f32 + 0.05 * rng.bipolar();
        if n % 997 == 13 {
            l = SPECIAL[(n / 997) % SPECIAL.len()];
        }
        if n % 1009 == 501 {
            r = SPECIAL[(n / 1009 + 3) % SPECIAL.len()];
        }
        left.push(l);
        right.push(r);
    }
    [left, right]
}

/// Splits `total` frames into blocks of at most `max_block`. With `vary`, about one block in
/// four gets a random shorter length (hosts do send short blocks, e.g. around loop points).
pub fn block_partition(
    total: usize,
    max_block: usize,
    vary: bool,
    seed: u64,
) -> Vec<(usize, usize)> {
    let mut rng = Lcg::new(seed);
    let mut blocks = Vec::new();
    let mut start = 0;
    while start < total {
        let mut len = max_block;
        if vary && max_block > 1 && rng.range(0, 3) == 0 {
            len = rng.range(1, max_block as i64) as usize;
        }
        let len = len.min(total - start);
        blocks.push((start, len));
        start += len;
    }
    blocks
}

/// An input event at an absolute sample position (its `time` is set when split into blocks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedEvent {
    pub at: u64,
    pub event: InEvent,
}

/// Velocities that survive CLAP f64 -> nice-plug f32 -> f64 and a MIDI 7-bit round trip exactly.
fn velocity(k: u8) -> f64 {
    f64::from(f32::from(k) / 127.0)
}

/// A deterministic 4/4 musical stream over `total` frames at `tempo_bpm`:
/// * a C–Am–F–G chord per bar on channel 1 (MIDI ch 1 = 0), all three notes on the same sample;
///   the previous chord's note-offs land on the same sample as the next chord's note-ons (so a
///   repeated key gets off+on at one sample, order must be kept);
/// * an eighth-note melody on channels 2..4 with ±300-sample jitter and varied velocities;
/// * CC 1 every beat (ch 1), CC 64 sustain down/up each bar (ch 3), CC 7 on off-beats (ch 2);
/// * for ~24 blocks spread over the run: a note-on (ch 10) at offset 0 of the block, and a CC 74
///   plus the note-off at the block's last sample (all three on one sample for 1-frame blocks).
///
/// Never uses CC 20/21. Sorted by `at` (stable: same-sample events keep this order).
pub fn music_events(
    sample_rate: f64,
    tempo_bpm: f64,
    total: usize,
    blocks: &[(usize, usize)],
    seed: u64,
) -> Vec<TimedEvent> {
    let mut rng = Lcg::new(seed);
    let spb = samples_per_beat(sample_rate, tempo_bpm);
    let at = |beats: f64| (beats * spb).round() as i64;
    let mut out: Vec<(i64, InEvent)> = Vec::new();
    let progression: [[u8; 3]; 4] = [[60, 64, 67], [57, 60, 64], [53, 57, 60], [55, 59, 62]];
    let melody: [u8; 8] = [72, 74, 76, 79, 77, 76, 74, 71];
    let bars = (total as f64 / (4.0 * spb)).ceil() as usize + 1;

    for bar in 0..bars {
        let bar_beat = (bar * 4) as f64;
        let t0 = at(bar_beat);
        if bar > 0 {
            for &key in &progression[(bar - 1) % 4] {
                out.push((
                    t0,
                    InEvent::NoteOff {
                        time: 0,
                        channel: 0,
                        key,
                        velocity: velocity(64),
                    },
                ));
            }
        }
        for (i, &key) in progression[bar % 4].iter().enumerate() {
            let v = velocity(70 + 10 * i as u8);
            out.push((
                t0,
                InEvent::NoteOn {
                    time: 0,
                    channel: 0,
                    key,
                    velocity: v,
                },
            ));
        }
        for step in 0..8 {
            let on = (at(bar_beat + step as f64 * 0.5) + rng.range(-300, 300)).max(0);
            let off = on + at(0.35) + rng.range(-100, 100);
            let channel = 1 + (step % 3) as u8;
            let key = melody[(bar + step) % 8] + (bar % 2) as u8 * 12;
            let v = velocity(rng.range(1, 127) as u8);
            out.push((
                on,
                InEvent::NoteOn {
                    time: 0,
                    channel,
                    key,
                    velocity: v,
                },
            ));
            out.push((
                off,
                InEvent::NoteOff {
                    time: 0,
                    channel,
                    key,
                    velocity: velocity(rng.range(0, 127) as u8),
                },
            ));
        }
        for beat in 0..4 {
            let value = ((bar * 4 + beat) * 9 % 128) as u8;
            out.push((at(bar_beat + beat as f64), InEvent::cc(0, 0, 1, value)));
            let jitter = rng.range(0, 200);
            out.push((
                at(bar_beat + beat as f64 + 0.5) + jitter,
                InEvent::cc(0, 1, 7, 100 + beat as u8),
            ));
        }
        out.push((at(bar_beat + 0.5), InEvent::cc(0, 2, 64, 127)));
        out.push((at(bar_beat + 3.5), InEvent::cc(0, 2, 64, 0)));
    }

    // Events pinned to block edges.
    let step = (blocks.len() / 24).max(1);
    let mut pinned: Vec<usize> = (0..blocks.len()).step_by(step).collect();
    if let Some(last) = blocks.len().checked_sub(1)
        && pinned.last() != Some(&last)
    {
        pinned.push(last);
    }
    for (n, &b) in pinned.iter().enumerate() {
        let (start, len) = blocks[b];
        let key = 36 + (n % 12) as u8;
        let first = start as i64;
        let last = (start + len - 1) as i64;
        out.push((
            first,
            InEvent::NoteOn {
                time: 0,
                channel: 9,
                key,
                velocity: velocity(100),
            },
        ));
        out.push((last, InEvent::cc(0, 9, 74, (n % 128) as u8)));
        out.push((
            last,
            InEvent::NoteOff {
                time: 0,
                channel: 9,
                key,
                velocity: velocity(0),
            },
        ));
    }

    let mut events: Vec<TimedEvent> = out
        .into_iter()
        .filter(|&(t, _)| t >= 0 && (t as usize) < total)
        .map(|(t, event)| TimedEvent {
            at: t as u64,
            event,
        })
        .collect();
    events.sort_by_key(|e| e.at);
    events
}

/// How fast to feed blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// As fast as possible.
    Fast,
    /// Never ahead of wall-clock time (a block starting at second `s` of audio is processed no
    /// earlier than `s` seconds after the run began), like a live audio device.
    RealTime,
}

/// Everything fed to the plugin in one run: signal, block partition and events, all derived
/// deterministically from the arguments of [`Material::new`].
#[derive(Clone, Debug)]
pub struct Material {
    pub sample_rate: f64,
    pub tempo_bpm: f64,
    pub signal: [Vec<f32>; 2],
    pub blocks: Vec<(usize, usize)>,
    pub events: Vec<TimedEvent>,
}

impl Material {
    /// `frames` of [`test_signal`], [`block_partition`] and [`music_events`] (4/4).
    pub fn new(
        sample_rate: f64,
        tempo_bpm: f64,
        frames: usize,
        max_block: usize,
        vary_blocks: bool,
        seed: u64,
    ) -> Self {
        let signal = test_signal(frames, sample_rate, seed);
        let blocks = block_partition(frames, max_block, vary_blocks, seed);
        let events = music_events(sample_rate, tempo_bpm, frames, &blocks, seed);
        Material {
            sample_rate,
            tempo_bpm,
            signal,
            blocks,
            events,
        }
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, Default)]
pub struct RunOutput {
    /// Output audio for the frames actually processed.
    pub audio: [Vec<f32>; 2],
    /// Output events with their absolute sample position.
    pub events: Vec<(u64, OutEvent)>,
    /// Number of frames processed.
    pub frames: usize,
    /// Number of `process()` calls.
    pub blocks: usize,
    /// Output events whose `time` was >= their block's length: `(block start, block len, event)`.
    pub bad_times: Vec<(usize, usize, OutEvent)>,
    /// Wall-clock duration of the run.
    pub wall: Duration,
}

impl RunOutput {
    /// Mood CCs (controller 20 or 21) seen: `(absolute sample, channel, cc, value)`.
    pub fn mood_ccs(&self) -> Vec<(u64, u8, u8, u8)> {
        self.events
            .iter()
            .filter_map(|&(at, e)| e.as_cc().map(|(ch, cc, v)| (at, ch, cc, v)))
            .filter(|&(_, _, cc, _)| cc == CC_VALENCE || cc == CC_AROUSAL)
            .collect()
    }
}

/// Feeds `material` through `host` block by block, with a running 4/4 transport. After each
/// block `stop(&output_so_far)` may end the run early. `host` must be active.
pub fn run(
    host: &mut ClapTestHost,
    material: &Material,
    pacing: Pacing,
    mut stop: impl FnMut(&RunOutput) -> bool,
) -> Result<RunOutput> {
    let Material {
        sample_rate,
        tempo_bpm,
        signal,
        blocks,
        events,
    } = material;
    let (sample_rate, tempo_bpm) = (*sample_rate, *tempo_bpm);
    host.set_transport(TransportSettings {
        playing: true,
        tempo_bpm,
        time_sig_num: 4,
        time_sig_den: 4,
    });
    set_phase("processing", None);
    let mut out = RunOutput {
        audio: [
            Vec::with_capacity(signal[0].len()),
            Vec::with_capacity(signal[1].len()),
        ],
        ..RunOutput::default()
    };
    let start = Instant::now();
    let mut next_event = 0;
    let mut block_events: Vec<InEvent> = Vec::with_capacity(64);
    for &(block_start, len) in blocks {
        if pacing == Pacing::RealTime {
            let due = Duration::from_secs_f64(block_start as f64 / sample_rate);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        block_events.clear();
        let end = (block_start + len) as u64;
        while next_event < events.len() && events[next_event].at < end {
            let e = events[next_event];
            if e.at < block_start as u64 {
                bail!("event {e:?} precedes block {block_start} (events not sorted?)");
            }
            block_events.push(e.event.with_time((e.at - block_start as u64) as u32));
            next_event += 1;
        }
        let range = block_start..block_start + len;
        let result = host.process(
            [&signal[0][range.clone()], &signal[1][range]],
            &block_events,
        )?;
        out.audio[0].extend_from_slice(&result.audio[0]);
        out.audio[1].extend_from_slice(&result.audio[1]);
        for e in result.events {
            if e.time() as usize >= len {
                out.bad_times.push((block_start, len, e));
            }
            out.events
                .push((block_start as u64 + u64::from(e.time()), e));
        }
        out.frames += len;
        out.blocks += 1;
        out.wall = start.elapsed();
        if stop(&out) {
            break;
        }
    }
    out.wall = start.elapsed();
    Ok(out)
}

/// What the plugin promises for a passed-through sample: the input bit for bit, except that a
/// subnormal becomes a zero of the same sign (denormal input must not make denormal output).
pub fn expected_passthrough(x: f32) -> f32 {
    if x.is_subnormal() { 0.0f32.copysign(x) } else { x }
}

/// Checks the output audio equals [`expected_passthrough`] of the input, bit for bit, over the
/// processed frames.
pub fn check_audio_bit_exact(input: &[Vec<f32>; 2], out: &RunOutput) -> Result<(), String> {
    let mut report = String::new();
    for (ch, (got, input)) in out.audio.iter().zip(input).enumerate() {
        let want: Vec<f32> = input[..out.frames].iter().map(|&x| expected_passthrough(x)).collect();
        if got.len() != want.len() {
            let _ = writeln!(
                report,
                "channel {ch}: {} output samples for {} input",
                got.len(),
                want.len()
            );
            continue;
        }
        let bad: Vec<usize> = (0..want.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .collect();
        if let Some(&first) = bad.first() {
            let note = if got[first] == OUTPUT_SENTINEL {
                " (untouched host sentinel: the plugin did not write this sample)"
            } else if input[first].is_subnormal() || want[first] == 0.0 {
                " (input was subnormal or signed zero: subnormals must become a signed zero, zeros stay as they are)"
            } else {
                ""
            };
            let _ = writeln!(
                report,
                "channel {ch}: {} of {} samples differ; first at sample {first}: expected {:e} \
                 (0x{:08x}), got {:e} (0x{:08x}){note}",
                bad.len(),
                want.len(),
                want[first],
                want[first].to_bits(),
                got[first],
                got[first].to_bits(),
            );
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// Canonical form of a note/CC event for thru comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Canon {
    NoteOn {
        channel: i16,
        key: i16,
        velocity: f64,
    },
    NoteOff {
        channel: i16,
        key: i16,
        velocity: f64,
    },
    Cc {
        channel: i16,
        cc: u8,
        value: u8,
    },
    OtherMidi {
        data: [u8; 3],
    },
}

impl Canon {
    /// Events in the same group at the same sample must keep their relative order.
    fn group(&self) -> (u8, i16, i16) {
        match *self {
            Canon::NoteOn { channel, key, .. } | Canon::NoteOff { channel, key, .. } => {
                (0, channel, key)
            }
            Canon::Cc { channel, cc, .. } => (1, channel, i16::from(cc)),
            Canon::OtherMidi { data } => (2, i16::from(data[0]), i16::from(data[1])),
        }
    }

    fn from_midi(data: [u8; 3]) -> Canon {
        let channel = i16::from(data[0] & 0x0F);
        match data[0] & 0xF0 {
            0x90 if data[2] > 0 => Canon::NoteOn {
                channel,
                key: i16::from(data[1]),
                velocity: f64::from(f32::from(data[2]) / 127.0),
            },
            0x80 | 0x90 => Canon::NoteOff {
                channel,
                key: i16::from(data[1]),
                velocity: f64::from(f32::from(data[2]) / 127.0),
            },
            0xB0 => Canon::Cc {
                channel,
                cc: data[1],
                value: data[2],
            },
            _ => Canon::OtherMidi { data },
        }
    }
}

fn canonical(mut list: Vec<(u64, Canon)>) -> Vec<(u64, Canon)> {
    list.sort_by_key(|&(at, c)| (at, c.group()));
    list
}

/// Checks every sent note on/off and MIDI CC came back at exactly the same absolute sample with
/// the same channel, key/controller and velocity/value, nothing was lost and nothing extra was
/// added (apart from CCs for which `ignore_cc(channel, cc)` is true, e.g. the mood CCs).
/// Events at the same sample may be reordered across keys, but not within one key/controller.
/// Notes may come back as CLAP note events or as MIDI note messages.
pub fn check_thru(
    sent: &[TimedEvent],
    out: &RunOutput,
    ignore_cc: impl Fn(u8, u8) -> bool,
) -> Result<(), String> {
    let frames = out.frames as u64;
    let want: Vec<(u64, Canon)> = sent
        .iter()
        .filter(|e| e.at < frames)
        .filter_map(|e| {
            let c = match e.event {
                InEvent::NoteOn {
                    channel,
                    key,
                    velocity,
                    ..
                } => Canon::NoteOn {
                    channel: i16::from(channel),
                    key: i16::from(key),
                    velocity,
                },
                InEvent::NoteOff {
                    channel,
                    key,
                    velocity,
                    ..
                } => Canon::NoteOff {
                    channel: i16::from(channel),
                    key: i16::from(key),
                    velocity,
                },
                InEvent::Midi { data, .. } => Canon::from_midi(data),
                InEvent::Param { .. } => return None,
            };
            Some((e.at, c))
        })
        .collect();
    let mut ports = Vec::new();
    let got: Vec<(u64, Canon)> = out
        .events
        .iter()
        .filter_map(|&(at, e)| {
            let c = match e {
                OutEvent::NoteOn {
                    port,
                    channel,
                    key,
                    velocity,
                    ..
                } => {
                    ports.push(port);
                    Canon::NoteOn {
                        channel,
                        key,
                        velocity,
                    }
                }
                OutEvent::NoteOff {
                    port,
                    channel,
                    key,
                    velocity,
                    ..
                } => {
                    ports.push(port);
                    Canon::NoteOff {
                        channel,
                        key,
                        velocity,
                    }
                }
                OutEvent::Midi { data, port, .. } => {
                    if data[0] & 0xF0 == 0xB0 && ignore_cc(data[0] & 0x0F, data[1]) {
                        return None;
                    }
                    ports.push(port as i16);
                    Canon::from_midi(data)
                }
                OutEvent::ParamValue { .. } | OutEvent::Other { .. } => return None,
            };
            Some((at, c))
        })
        .collect();
    let want = canonical(want);
    let got = canonical(got);

    let mut report = String::new();
    if !out.bad_times.is_empty() {
        let _ = writeln!(
            report,
            "{} output events had time >= block length; first: block at {} len {}: {:?}",
            out.bad_times.len(),
            out.bad_times[0].0,
            out.bad_times[0].1,
            out.bad_times[0].2
        );
    }
    if let Some(p) = ports.iter().find(|&&p| p != 0) {
        let _ = writeln!(report, "output note event on port {p}, expected port 0");
    }
    let count = |l: &[(u64, Canon)], f: fn(&Canon) -> bool| l.iter().filter(|(_, c)| f(c)).count();
    type Kind = (&'static str, fn(&Canon) -> bool);
    let kinds: [Kind; 4] = [
        ("note-on", |c| matches!(c, Canon::NoteOn { .. })),
        ("note-off", |c| matches!(c, Canon::NoteOff { .. })),
        ("CC", |c| matches!(c, Canon::Cc { .. })),
        ("other MIDI", |c| matches!(c, Canon::OtherMidi { .. })),
    ];
    for (name, f) in kinds {
        let (w, g) = (count(&want, f), count(&got, f));
        if w != g {
            let _ = writeln!(report, "{name} count: sent {w}, got back {g}");
        }
    }
    if let Some(i) = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i)) {
        let lo = i.saturating_sub(2);
        let _ = writeln!(
            report,
            "first difference at canonical index {i} (absolute sample, event):"
        );
        for j in lo..(i + 3) {
            let mark = if want.get(j) == got.get(j) {
                "  "
            } else {
                "!!"
            };
            let _ = writeln!(report, "  {mark} [{j}] sent {:?}", want.get(j));
            let _ = writeln!(report, "  {mark} [{j}] got  {:?}", got.get(j));
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// Largest number of events from `times` (absolute samples) inside any window of `window`
/// samples.
pub fn max_in_window(times: &[u64], window: u64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// The degraded-runtime scenario shared by `missing_runtime`, `missing_model` and
/// `corrupt_model`: whatever is broken about the ONNX runtime or model (already arranged by the
/// caller through env vars), the plugin must load, activate at 48 kHz / 512, pass audio and MIDI
/// thru untouched, and send no mood CC (20/21) within 2 s of real-time processing with
/// `mood_cc` on. Then it must shut down within 10 s per step.
pub fn degraded_runtime_scenario(label: &str) {
    const SR: f64 = 48_000.0;
    const BLOCK: usize = 512;
    const TEMPO: f64 = 120.0;
    breadcrumb(&format!(
        "{label}: 48 kHz / 512, mood_cc on, 2.5 s real time"
    ));
    let mut host = ClapTestHost::load();
    let (audio_in, audio_out) = host.audio_ports();
    assert_eq!(
        (audio_in.as_slice(), audio_out.as_slice()),
        (&[2u32][..], &[2u32][..]),
        "{label}: expected one stereo audio input and one stereo output port"
    );
    let mood_cc = host.param_id("mood_cc");
    if let Err(e) = host.activate(SR, 1, BLOCK as u32) {
        panic!(
            "{label}: the plugin must still activate without a usable runtime/model, but: {e:#}"
        );
    }
    host.set_param(mood_cc, 1.0);

    let m = Material::new(SR, TEMPO, (2.5 * SR) as usize, BLOCK, false, 7);
    let out = run(&mut host, &m, Pacing::RealTime, |_| false)
        .unwrap_or_else(|e| panic!("{label}: processing failed: {e:#}"));
    assert!(
        out.wall >= Duration::from_secs(2),
        "{label}: run lasted only {:?} of wall time",
        out.wall
    );

    let mut failures = Vec::new();
    if let Err(e) = check_audio_bit_exact(&m.signal, &out) {
        failures.push(format!("audio passthrough is not bit-exact:\n{e}"));
    }
    if let Err(e) = check_thru(&m.events, &out, |_, cc| {
        cc == CC_VALENCE || cc == CC_AROUSAL
    }) {
        failures.push(format!("MIDI thru is not sample-exact:\n{e}"));
    }
    let ccs = out.mood_ccs();
    if !ccs.is_empty() {
        failures.push(format!(
            "expected no mood CC 20/21 with a broken runtime/model, got {} (first: sample {}, \
             channel {}, CC {} = {}) within {:.2} s",
            ccs.len(),
            ccs[0].0,
            ccs[0].1 + 1,
            ccs[0].2,
            ccs[0].3,
            out.wall.as_secs_f64()
        ));
    }
    host.shutdown();
    assert!(failures.is_empty(), "{label}:\n{}", failures.join("\n"));
}

/// Runs [`degraded_runtime_scenario`] in a process whose plugin sees `vars` and a fresh
/// `XDG_CACHE_HOME` (returned, so the caller can look inside). Call once per test process,
/// before anything loads the plugin: it sets environment variables.
pub fn run_degraded(name: &str, label: &str, vars: &[(&str, &std::ffi::OsStr)]) -> tempfile::TempDir {
    crate::clap_path(); // fail loudly first if the plugin is not built
    let cache = tempfile::Builder::new()
        .prefix("moodfader-test-cache-")
        .tempdir()
        .expect("creating a temp dir");
    // SAFETY: each degraded-mode test is the only test in its process and sets these before the
    // plugin is loaded; nothing else reads the environment concurrently.
    unsafe {
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        std::env::set_var("XDG_CACHE_HOME", cache.path());
    }
    let label = label.to_string();
    crate::guard::run_guarded(name, std::time::Duration::from_secs(120), move || {
        degraded_runtime_scenario(&label);
    });
    cache
}
