//! The live value over a synthetic change of material, through the real model: how fast it
//! follows (bars until it has covered half of the way to the new steady value) and how much it
//! jitters on a steady passage. Both are printed as measured numbers and asserted with margins.
//!
//! Measured with the first model (linear over [f(t), f(t-1), mean of 4 bars]): half-way after
//! 2.15 bars, steady std 0.007. With feature spec 3 (the long mean added to the context): half-way
//! after 1.30 bars, steady std 0.011. Feature spec 5 (the long mean starts again at a new
//! section) with smoothing of 0.15 s instead of 0.25 s: half-way after 0.95 bars, steady std
//! 0.012. The product's goal (the estimator issue) is to follow within one bar: asserted.
//!
//! Thread: test (plays the worker)

use moodfader_engine::feel::emotion::EmotionModel;
use moodfader_engine::feel::live::LiveEstimator;
use moodfader_engine::rt::queues::ToWorker;
use moodfader_engine::runtime::ensure_runtime;

const TEMPO_BPM: f64 = 120.0;
const BAR_S: f64 = 2.0;
const TICK_S: f64 = 0.05;
/// Most bars the live value may take to cover half the way to new material's level.
const MAX_FOLLOW_BARS: f64 = 1.0;
/// Most spread (std) of the live value over a steady passage.
const MAX_STEADY_STD: f32 = 0.05;

/// Notes of a calm passage (bars `from..to`): soft, low, sustained half-note chords.
fn calm(from: usize, to: usize, out: &mut Vec<(f64, bool, u8, u8)>) {
    for bar in from..to {
        for half in 0..2 {
            let t = bar as f64 * BAR_S + half as f64 * 1.0;
            for p in [48u8, 55, 64] {
                out.push((t, true, p, 40));
                out.push((t + 0.98, false, p, 0));
            }
        }
    }
}

/// Notes of an energetic passage: loud, high, staccato sixteenths with accents.
fn energetic(from: usize, to: usize, out: &mut Vec<(f64, bool, u8, u8)>) {
    for bar in from..to {
        for k in 0..16 {
            let t = bar as f64 * BAR_S + k as f64 * 0.125;
            let p = [72u8, 76, 79, 84, 79, 76, 74, 77][k % 8];
            out.push((t, true, p, if k % 4 == 0 { 127 } else { 110 }));
            out.push((t + 0.06, false, p, 0));
        }
    }
}

/// Feeds the events in time order and runs the estimator every tick; returns (time, arousal).
fn run(events: &mut [(f64, bool, u8, u8)], end_s: f64, model: &mut EmotionModel) -> Vec<(f64, f32, f32)> {
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut live = LiveEstimator::new();
    let mut next = 0;
    let mut out = Vec::new();
    let mut t = TICK_S;
    while t < end_s {
        while next < events.len() && events[next].0 <= t {
            let (time_s, on, pitch, velocity) = events[next];
            let beats = time_s * TEMPO_BPM / 60.0;
            live.on_event(&ToWorker::Note { on, channel: 0, pitch, velocity, time_s, beats, song_beats: beats });
            next += 1;
        }
        let beats = t * TEMPO_BPM / 60.0;
        let ctx = live.context(t, beats, TEMPO_BPM, 4.0);
        let raw = model.predict(&[ctx.input]).unwrap()[0];
        let est = live.update(&ctx, raw, t, beats, 4.0);
        assert!(est.valence.is_finite() && est.arousal.is_finite());
        out.push((t, est.valence, est.arousal));
        t += TICK_S;
    }
    out
}

fn std_dev(x: &[f32]) -> f32 {
    let m = x.iter().sum::<f32>() / x.len() as f32;
    (x.iter().map(|v| (v - m).powi(2)).sum::<f32>() / x.len() as f32).sqrt()
}

#[test]
fn follows_a_change_of_material_and_holds_steady() {
    ensure_runtime(None).expect("ONNX Runtime (run `cargo xtask setup`)");
    let mut model = EmotionModel::load_default().unwrap();
    let change_bar = 8;
    let mut events = Vec::new();
    calm(0, change_bar, &mut events);
    energetic(change_bar, 16, &mut events);
    let trace = run(&mut events, 16.0 * BAR_S, &mut model);
    let arousal_in = |from_bar: f64, to_bar: f64| -> Vec<f32> {
        trace.iter().filter(|(t, _, _)| *t >= from_bar * BAR_S && *t < to_bar * BAR_S).map(|x| x.2).collect()
    };
    let steady_calm = arousal_in(5.0, 8.0);
    let steady_energetic = arousal_in(13.0, 16.0);
    let (a0, a1) = (
        steady_calm.iter().sum::<f32>() / steady_calm.len() as f32,
        steady_energetic.iter().sum::<f32>() / steady_energetic.len() as f32,
    );
    assert!(a1 > a0 + 0.3, "energetic material reads more aroused: calm {a0:.2}, energetic {a1:.2}");
    let half_way = (a0 + a1) / 2.0;
    let crossed_s = trace
        .iter()
        .find(|(t, _, a)| *t >= change_bar as f64 * BAR_S && *a >= half_way)
        .map(|(t, _, _)| t - change_bar as f64 * BAR_S)
        .expect("the live value reaches the new level");
    let jitter = std_dev(&steady_calm).max(std_dev(&steady_energetic));
    eprintln!(
        "live arousal: calm {a0:+.3}, energetic {a1:+.3}; half-way after {:.2} bars; steady jitter (std) {jitter:.4}",
        crossed_s / BAR_S
    );
    assert!(crossed_s <= MAX_FOLLOW_BARS * BAR_S, "follows within {MAX_FOLLOW_BARS} bars: took {:.2}", crossed_s / BAR_S);
    assert!(jitter <= MAX_STEADY_STD, "steady passages do not jitter: std {jitter:.4}");
}
