//! The continuation player's trigger modes, on a simulated host clock (240 BPM, 4/4: a bar per
//! second) with the real model on its generator thread. The clock stands still while a
//! generation runs, so these tests check the logic; the real-time timing is checked through the
//! CLAP host in `tests/tests/continuation.rs`.
//! * on demand: one continuation per request, from the next bar line, of the asked length;
//! * follow: continuations keep coming back to back while the transport plays;
//! * call and response: one answer after a bar of silence, and another only after the player
//!   plays again;
//! * switched off: requests do nothing, and are not replayed when it is switched on;
//! * transport stop: what was handed over is released at once and nothing more comes.
//!
//! Thread: test (plays the worker)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use moodfader_engine::feel::live::LiveEstimator;
use moodfader_engine::play::continuation::ContinuationModel;
use moodfader_engine::play::player::{GeneratorThread, Player};
use moodfader_engine::rt::queues::{Scheduled, ScheduledKind, Tick, ToWorker, queues};
use moodfader_engine::runtime::ensure_runtime;
use moodfader_engine::shared::Shared;

const BPM: f64 = 240.0;
const BAR: f64 = 4.0;

struct Sim {
    shared: Arc<Shared>,
    live: LiveEstimator,
    player: Player,
    to_audio: rtrb::Producer<Scheduled>,
    from_worker: rtrb::Consumer<Scheduled>,
    out: Vec<Scheduled>,
    beats: f64,
    /// Listening beats minus song beats (changes on a loop).
    song_offset: f64,
}

impl Sim {
    fn new(mode: u8, bars: u32) -> Sim {
        ensure_runtime(None).expect("ONNX Runtime (run `cargo xtask setup`)");
        let model = ContinuationModel::load_default().expect("continuation model");
        let (audio, worker) = queues();
        let shared = Arc::new(Shared::default());
        shared.tempo_bpm.store(BPM, Ordering::Relaxed);
        shared.playing.store(true, Ordering::Relaxed);
        let c = &shared.controls;
        c.continuation_on.store(true, Ordering::Relaxed);
        c.trigger_mode.store(mode, Ordering::Relaxed);
        c.num_bars.store(bars, Ordering::Relaxed);
        let mut sim = Sim {
            shared,
            live: LiveEstimator::new(),
            player: Player::new(Some(GeneratorThread::spawn(model).unwrap())),
            to_audio: worker.to_audio,
            from_worker: audio.from_worker,
            out: Vec::new(),
            beats: 0.0,
            song_offset: 0.0,
        };
        sim.event(ToWorker::Transport { playing: true, tempo_bpm: BPM, sig_num: 4, sig_den: 4, song_beats: 0.0, time_s: 0.0, jumped: false });
        sim
    }

    fn event(&mut self, ev: ToWorker) {
        self.live.on_event(&ev);
        self.player.on_event(&ev);
    }

    /// Plays eighth-note arpeggio notes from the current beat for `bars` bars, advancing time.
    fn play(&mut self, bars: f64) {
        let end = self.beats + bars * BAR;
        let mut k = 0;
        while self.beats < end {
            let pitch = [60u8, 64, 67, 72][k % 4];
            k += 1;
            let (t, b) = (self.beats * 60.0 / BPM, self.beats);
            self.event(ToWorker::Note { on: true, channel: 0, pitch, velocity: 90, time_s: t, beats: b, song_beats: b });
            self.advance(0.45);
            let (t, b) = (self.beats * 60.0 / BPM, self.beats);
            self.event(ToWorker::Note { on: false, channel: 0, pitch, velocity: 0, time_s: t, beats: b, song_beats: b });
            self.advance(0.05);
        }
    }

    /// Advances the clock by `beats`, ticking the player every 10 ms of host time; the clock
    /// stands still while a generation runs.
    fn advance(&mut self, beats: f64) {
        let end = self.beats + beats;
        let step = 0.01 * BPM / 60.0;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.publish();
            let tick = self.tick();
            self.player.decide(&self.shared, &self.live, &tick, &mut self.to_audio);
            self.player.tick(&self.shared, &mut self.to_audio);
            while let Ok(e) = self.from_worker.pop() {
                self.out.push(e);
            }
            if self.player.is_busy() {
                assert!(Instant::now() < deadline, "generation did not finish");
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            if self.beats >= end - 1e-9 {
                break;
            }
            self.beats = (self.beats + step).min(end);
        }
    }

    fn publish(&self) {
        let s = &self.shared;
        s.now_beats.store(self.beats, Ordering::Relaxed);
        s.song_beats.store(self.beats - self.song_offset, Ordering::Relaxed);
        s.now_s.store(self.beats * 60.0 / BPM, Ordering::Relaxed);
    }

    /// The decision point the audio thread would send now.
    fn tick(&self) -> Tick {
        Tick {
            time_s: self.beats * 60.0 / BPM,
            beats: self.beats,
            song_beats: self.beats - self.song_offset,
            playing: self.shared.playing.load(Ordering::Relaxed),
            tempo_bpm: BPM,
            sig_num: 4,
            sig_den: 4,
            requests: self.shared.controls.generate_requests.load(Ordering::Acquire),
        }
    }

    fn generations(&self) -> u64 {
        self.shared.num_generations.load(Ordering::Relaxed)
    }

    fn note_ons(&self) -> Vec<f64> {
        self.out.iter().filter(|e| e.kind == ScheduledKind::NoteOn).map(|e| e.at_beats).collect()
    }

    fn request(&self) {
        self.shared.controls.generate_requests.fetch_add(1, Ordering::AcqRel);
    }
}

#[test]
fn on_demand_plays_one_continuation_per_request() {
    let mut s = Sim::new(0, 2);
    s.play(2.0);
    s.advance(0.3);
    assert_eq!(s.generations(), 0, "nothing before a request");
    let asked_at = s.beats;
    s.request();
    s.advance(3.0 * BAR);
    assert_eq!(s.generations(), 1);
    let ons = s.note_ons();
    assert!(!ons.is_empty(), "the continuation has notes");
    let start = (asked_at / BAR).ceil() * BAR;
    assert!(ons.iter().all(|&b| b >= start - 1e-9 && b < start + 2.0 * BAR + BAR), "note-ons {ons:?} outside the bars after {start}");
    // Every note-on has its note-off.
    let offs = s.out.iter().filter(|e| e.kind == ScheduledKind::NoteOff).count();
    assert_eq!(offs, ons.len());
    // The piano roll sees the continuation's notes.
    let mut roll = Vec::new();
    s.player.planned_notes(start, &mut roll);
    assert_eq!(roll.len(), ons.len(), "the roll shows every generated note");
    s.request();
    s.advance(3.0 * BAR);
    assert_eq!(s.generations(), 2, "a second request, a second continuation");
}

#[test]
fn follow_keeps_the_next_bars_generated() {
    let mut s = Sim::new(1, 2);
    s.play(2.0);
    s.advance(6.0 * BAR);
    let n = s.generations();
    assert!(n >= 3, "follow started only {n} continuations in 6 bars");
    // Back to back: a note-on in (nearly) every bar from the first continuation on.
    let ons = s.note_ons();
    let first_bar = (ons[0] / BAR).floor() as i64;
    let last_bar = (s.beats / BAR).floor() as i64 - 1;
    let covered = (first_bar..=last_bar).filter(|&b| ons.iter().any(|&o| (o / BAR).floor() as i64 == b)).count();
    assert!(covered as i64 >= (last_bar - first_bar + 1) - 1, "bars with notes: {covered} of {}", last_bar - first_bar + 1);
}

#[test]
fn follow_replans_on_the_new_grid_after_a_loop() {
    let mut s = Sim::new(1, 2);
    s.play(2.0);
    s.advance(2.5 * BAR);
    assert!(s.generations() >= 1);
    // The host loops back to song beat 1.0 (mid-bar): the song grid moves by a non-whole bar.
    let song_now = 1.0;
    s.song_offset = s.beats - song_now;
    let t = s.beats * 60.0 / BPM;
    s.event(ToWorker::Transport { playing: true, tempo_bpm: BPM, sig_num: 4, sig_den: 4, song_beats: song_now, time_s: t, jumped: true });
    let looped_at = s.beats;
    let handed = s.out.len();
    s.advance(4.0 * BAR);
    let after: Vec<f64> = s.out[handed..].iter().filter(|e| e.kind == ScheduledKind::NoteOn).map(|e| e.at_beats).collect();
    assert!(!after.is_empty(), "follow goes on after the loop");
    // Every new note-on lies on the new song grid's 1/12 beats, from its next bar line on.
    let next_line = looped_at + (BAR - song_now);
    for b in &after {
        assert!(*b >= next_line - 1e-9, "note-on at {b} before the new grid's bar line {next_line}");
        let steps = (b - s.song_offset) * 12.0;
        assert!((steps - steps.round()).abs() < 1e-6, "note-on at song beat {} is off the grid", b - s.song_offset);
    }
}

#[test]
fn call_and_response_answers_after_a_bar_of_silence() {
    let mut s = Sim::new(2, 1);
    s.play(2.0);
    s.advance(0.5 * BAR);
    assert_eq!(s.generations(), 0, "no answer while the gap is shorter than a bar");
    s.advance(4.0 * BAR);
    assert_eq!(s.generations(), 1, "one answer after the gap");
    s.advance(3.0 * BAR);
    assert_eq!(s.generations(), 1, "silence alone does not ask again");
    s.play(1.0);
    s.advance(3.0 * BAR);
    assert_eq!(s.generations(), 2, "a new phrase, a new answer");
}

#[test]
fn switched_off_ignores_requests_and_does_not_replay_them() {
    let mut s = Sim::new(0, 1);
    s.shared.controls.continuation_on.store(false, Ordering::Relaxed);
    s.play(1.0);
    s.request();
    s.advance(2.0 * BAR);
    assert_eq!(s.generations(), 0);
    s.shared.controls.continuation_on.store(true, Ordering::Relaxed);
    s.advance(2.0 * BAR);
    assert_eq!(s.generations(), 0, "a request made while off is not played later");
}

#[test]
fn transport_stop_releases_and_stops() {
    let mut s = Sim::new(0, 16);
    s.play(2.0);
    s.request();
    // Run until some notes were handed over, then stop.
    for _ in 0..40 {
        s.advance(0.25 * BAR);
        if s.note_ons().len() >= 3 {
            break;
        }
    }
    assert!(s.note_ons().len() >= 3, "notes before the stop");
    s.shared.playing.store(false, Ordering::Relaxed);
    let t = s.beats * 60.0 / BPM;
    s.event(ToWorker::Transport { playing: false, tempo_bpm: BPM, sig_num: 4, sig_den: 4, song_beats: s.beats, time_s: t, jumped: false });
    let stopped = s.beats;
    s.advance(0.05);
    let handed = s.out.len();
    s.advance(4.0 * BAR);
    assert_eq!(s.player.num_waiting(), 0, "nothing waits after the stop");
    assert!(s.out[handed..].iter().all(|e| e.kind == ScheduledKind::NoteOff), "only note-offs after the stop");
    // Every note handed over gets its note-off (its own, or the release at the stop).
    let mut balance = std::collections::HashMap::new();
    for e in &s.out {
        *balance.entry(e.data1).or_insert(0i32) += if e.kind == ScheduledKind::NoteOn { 1 } else { -1 };
    }
    assert!(balance.values().all(|&c| c <= 0), "note-ons without a note-off: {balance:?}");
    let _ = stopped;
}
