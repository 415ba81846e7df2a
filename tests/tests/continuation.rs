//! The continuation, through the real `moodfader.clap` in a clack host, in real time:
//! * `generate_on_demand_lands_on_the_grid`: play two bars, press Generate, and the generated
//!   notes arrive on the output channel, on the 1/12-beat grid of the host's bars (within one
//!   sample), starting at a bar line after the press, inside the asked bars, every note-on
//!   followed by its note-off;
//!   with "Preview" on, the built-in voice plays them into the (silent) audio input: silence
//!   until the first note, sound right after it, never above full scale;
//! * `transport_stop_silences_the_continuation`: a long continuation is cut by a transport
//!   stop: every sounding note is released and nothing starts after the stop.
//!
//! * `offline_render_plays_the_live_continuation`: a Follow-mode session (a primer, then the
//!   continuation over silence, preview voice on) played in real time and rendered offline
//!   (CLAP's render extension, as fast as the plugin goes) gives the same generated notes
//!   (sample, key, velocity, release) and the same preview audio.
//!
//! All run at 240 BPM (a bar per second) so they take a few seconds of wall time.
//!
//! Thread: test threads; each body runs on its own guarded thread (the CLAP main thread).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use moodfader_tests::events::{InEvent, OutEvent};
use moodfader_tests::guard::{breadcrumb, run_guarded};
use moodfader_tests::host::TransportSettings;
use moodfader_tests::{ClapTestHost, PLUGIN_ID, clap_path};

static SERIAL: Mutex<()> = Mutex::new(());

const SR: f64 = 48_000.0;
const BLOCK: usize = 480;
const TEMPO: f64 = 240.0;
const SAMPLES_PER_BEAT: f64 = SR * 60.0 / TEMPO;
const SAMPLES_PER_BAR: u64 = (4.0 * SAMPLES_PER_BEAT) as u64;

fn fresh_cache_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("moodfader-test-cache-").tempdir().expect("temp dir");
    // SAFETY: the tests of this file run one at a time under SERIAL and no plugin is loaded yet.
    unsafe { std::env::set_var("XDG_CACHE_HOME", dir.path()) };
    dir
}

/// A note heard or played, with absolute sample times.
#[derive(Debug, Clone, Copy)]
#[derive(PartialEq)]
struct Played {
    on: u64,
    off: Option<u64>,
    key: i16,
    channel: i16,
    velocity: f64,
}

/// Drives the host block by block in real time and collects the generated notes.
struct Session {
    host: ClapTestHost,
    pos: u64,
    started: Instant,
    notes: Vec<Played>,
    silent: Vec<f32>,
    /// Left output channel, every sample.
    audio: Vec<f32>,
    /// Blocks come at the pace of real time (else as fast as the plugin answers: a bounce).
    paced: bool,
}

impl Session {
    fn new() -> Self {
        Self::with_render(false)
    }

    /// A session rendered offline (`offline`: told through CLAP's render extension before
    /// activation, blocks as fast as they return) or played in real time.
    fn with_render(offline: bool) -> Self {
        let path = clap_path();
        let mut host = ClapTestHost::load_from(&path, PLUGIN_ID).unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
        if offline {
            host.set_render_offline(true).unwrap_or_else(|e| panic!("render mode: {e:#}"));
        }
        host.activate(SR, 1, BLOCK as u32).unwrap_or_else(|e| panic!("activate: {e:#}"));
        host.set_transport(TransportSettings { playing: true, tempo_bpm: TEMPO, time_sig_num: 4, time_sig_den: 4 });
        let ids = ["cont_on", "thru", "bars"].map(|id| host.param_id(id));
        host.set_param(ids[0], 1.0);
        host.set_param(ids[1], 0.0); // only generated notes come out
        let two = host.param_text_to_value(ids[2], "2").expect("bars accepts '2'");
        host.set_param(ids[2], two);
        Self {
            host,
            pos: 0,
            started: Instant::now(),
            notes: Vec::new(),
            silent: vec![0.0; BLOCK],
            audio: Vec::new(),
            paced: !offline,
        }
    }

    fn set_bars(&mut self, bars: u32) {
        let id = self.host.param_id("bars");
        let v = self.host.param_text_to_value(id, &bars.to_string()).expect("bars text");
        self.host.set_param(id, v);
    }

    fn press_generate(&mut self) {
        let id = self.host.param_id("gen");
        self.host.set_param(id, 1.0);
        self.block(&[]);
        self.host.set_param(id, 0.0);
    }

    /// One block in real time.
    fn block(&mut self, events: &[InEvent]) {
        let due = Duration::from_secs_f64(self.pos as f64 / SR);
        if self.paced
            && let Some(wait) = due.checked_sub(self.started.elapsed())
        {
            std::thread::sleep(wait);
        }
        let out = self.host.process([&self.silent, &self.silent], events).unwrap_or_else(|e| panic!("process: {e:#}"));
        self.audio.extend_from_slice(&out.audio[0]);
        for ev in out.events {
            match ev {
                OutEvent::NoteOn { time, key, channel, velocity, .. } => {
                    self.notes.push(Played { on: self.pos + time as u64, off: None, key, channel, velocity })
                }
                OutEvent::NoteOff { time, key, channel, .. } => {
                    if let Some(n) = self.notes.iter_mut().rev().find(|n| n.key == key && n.channel == channel && n.off.is_none()) {
                        n.off = Some(self.pos + time as u64);
                    }
                }
                _ => {}
            }
        }
        self.pos += BLOCK as u64;
    }

    /// Plays `bars` bars of a C major arpeggio in eighths, from the current position.
    fn play_primer(&mut self, bars: u64) {
        let eighth = (SAMPLES_PER_BEAT / 2.0) as u64;
        let origin = self.pos;
        let end = self.pos + bars * SAMPLES_PER_BAR;
        let pitches = [60u8, 64, 67, 72, 67, 64, 62, 59];
        while self.pos < end {
            let (s, e) = (self.pos - origin, self.pos - origin + BLOCK as u64);
            let mut evs = Vec::new();
            for n in (s / eighth).saturating_sub(1)..=e / eighth {
                let (on, off) = (n * eighth, n * eighth + eighth * 9 / 10);
                let key = pitches[(n % 8) as usize];
                if (s..e).contains(&off) {
                    evs.push(InEvent::NoteOff { time: (off - s) as u32, channel: 0, key, velocity: 0.0 });
                }
                if (s..e).contains(&on) && on < bars * SAMPLES_PER_BAR {
                    evs.push(InEvent::NoteOn { time: (on - s) as u32, channel: 0, key, velocity: 0.7 });
                }
            }
            self.block(&evs);
        }
    }
}

#[test]
fn generate_on_demand_lands_on_the_grid() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _cache = fresh_cache_dir();
    run_guarded("continuation-grid", Duration::from_secs(120), || {
        let mut s = Session::new();
        let preview = s.host.param_id("preview");
        s.host.set_param(preview, 1.0);
        // Let the worker load the models (it starts at activation).
        while s.started.elapsed() < Duration::from_secs(1) {
            s.block(&[]);
        }
        s.play_primer(2);
        let pressed_at = s.pos;
        breadcrumb(&format!("continuation: Generate pressed at sample {pressed_at}"));
        s.press_generate();
        let first_line = pressed_at.div_ceil(SAMPLES_PER_BAR) * SAMPLES_PER_BAR;
        // Two bars asked; allow for the next bar line being skipped (start margin) and the tail.
        let until = first_line + 4 * SAMPLES_PER_BAR;
        while s.pos < until {
            s.block(&[]);
        }
        let mut failures = Vec::new();
        if s.notes.is_empty() {
            failures.push(format!("no generated note arrived within 4 bars of pressing Generate (sample {pressed_at})"));
        }
        let start = s.notes.iter().map(|n| n.on).min().unwrap_or(0);
        let start_line = start / SAMPLES_PER_BAR * SAMPLES_PER_BAR;
        if !s.notes.is_empty() && start_line < pressed_at {
            failures.push(format!("first note at sample {start}, in a bar that began before Generate was pressed ({pressed_at})"));
        }
        let step = SAMPLES_PER_BEAT / 12.0;
        for n in &s.notes {
            let grid = (n.on as f64 / step).round() * step;
            if (n.on as f64 - grid).abs() > 1.0 {
                failures.push(format!("note-on at sample {} is {:.1} samples off the 1/12-beat grid", n.on, n.on as f64 - grid));
            }
            if n.on >= start_line + 2 * SAMPLES_PER_BAR {
                failures.push(format!("note-on at sample {} lies past the 2 asked bars (from {start_line})", n.on));
            }
            if n.channel != 0 {
                failures.push(format!("note on channel {} (out_ch default is 1)", n.channel + 1));
            }
            match n.off {
                None => failures.push(format!("note {} from sample {} never ended", n.key, n.on)),
                Some(off) if off < n.on => failures.push(format!("note {} ends before it starts", n.key)),
                Some(off) if off > start_line + 2 * SAMPLES_PER_BAR + 1 => {
                    failures.push(format!("note {} ends at {off}, past the asked bars", n.key))
                }
                _ => {}
            }
        }
        // The preview voice: the input is silent, so the output is the voice alone.
        if let Some(first) = s.notes.iter().map(|n| n.on as usize).min() {
            if let Some(i) = s.audio[..first].iter().position(|&x| x != 0.0) {
                failures.push(format!("audio at sample {i} before the first generated note ({first})"));
            }
            let after = &s.audio[first..(first + 4800).min(s.audio.len())];
            let peak = after.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            if peak < 0.01 {
                failures.push(format!("preview voice silent after the first note (peak {peak})"));
            }
            let max = s.audio.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            if max.is_nan() || max > 1.0 {
                failures.push(format!("preview voice peaks at {max}"));
            }
        }
        eprintln!(
            "continuation: {} notes from sample {start} (Generate at {pressed_at}, bar line {start_line})",
            s.notes.len()
        );
        s.host.shutdown();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

#[test]
fn transport_stop_silences_the_continuation() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _cache = fresh_cache_dir();
    run_guarded("continuation-stop", Duration::from_secs(120), || {
        let mut s = Session::new();
        s.set_bars(16);
        while s.started.elapsed() < Duration::from_secs(1) {
            s.block(&[]);
        }
        s.play_primer(2);
        s.press_generate();
        // Play until a few generated notes have come out, at most 4 bars.
        let limit = s.pos + 4 * SAMPLES_PER_BAR;
        while s.pos < limit && s.notes.len() < 4 {
            s.block(&[]);
        }
        let stopped_at = s.pos;
        s.host.set_transport(TransportSettings { playing: false, tempo_bpm: TEMPO, time_sig_num: 4, time_sig_den: 4 });
        for _ in 0..(2 * SAMPLES_PER_BAR / BLOCK as u64) {
            s.block(&[]);
        }
        let mut failures = Vec::new();
        if s.notes.is_empty() {
            failures.push("no generated note before the stop".to_string());
        }
        for n in &s.notes {
            if n.on >= stopped_at {
                failures.push(format!("note {} started at sample {} after the stop at {stopped_at}", n.key, n.on));
            }
            if n.off.is_none_or(|off| off > stopped_at + BLOCK as u64) {
                failures.push(format!("note {} (from {}) not released by the stop at {stopped_at}: {:?}", n.key, n.on, n.off));
            }
        }
        eprintln!("continuation: {} notes before the stop at sample {stopped_at}", s.notes.len());
        s.host.shutdown();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

/// One Follow-mode session: a second of nothing (the worker loads its models), two bars of
/// primer, six bars of silence the continuation fills. Returns it with what came out.
fn follow_session(offline: bool) -> Session {
    let mut s = Session::with_render(offline);
    for (id, value) in [("preview", 1.0), ("seed", 0.25)] {
        let id = s.host.param_id(id);
        s.host.set_param(id, value);
    }
    let trigger = s.host.param_id("trigger");
    let follow = s.host.param_text_to_value(trigger, "Follow").expect("trigger accepts 'Follow'");
    s.host.set_param(trigger, follow);
    let lead_in = (SR as u64).div_ceil(BLOCK as u64);
    for _ in 0..lead_in {
        s.block(&[]);
    }
    s.play_primer(2);
    for _ in 0..(6 * SAMPLES_PER_BAR).div_ceil(BLOCK as u64) {
        s.block(&[]);
    }
    s
}

#[test]
fn offline_render_plays_the_live_continuation() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _cache = fresh_cache_dir();
    run_guarded("continuation-offline", Duration::from_secs(180), || {
        let live = follow_session(false);
        let live_s = live.started.elapsed();
        let offline = follow_session(true);
        let offline_s = offline.started.elapsed();
        let rendered = live.pos as f64 / SR;
        eprintln!(
            "continuation: {} notes live ({rendered:.1} s of music in {:.1} s), {} offline (in {:.1} s)",
            live.notes.len(),
            live_s.as_secs_f64(),
            offline.notes.len(),
            offline_s.as_secs_f64(),
        );
        let mut failures = Vec::new();
        // Follow mode starts a continuation at the first bar line it can: after the primer
        // there are at least five bars of it.
        if live.notes.len() < 8 {
            failures.push(format!("live: {} generated notes over 8 bars of Follow mode", live.notes.len()));
        }
        let first_diff = live.notes.iter().zip(&offline.notes).position(|(a, b)| a != b);
        if live.notes.len() != offline.notes.len() || first_diff.is_some() {
            let k = first_diff.unwrap_or(live.notes.len().min(offline.notes.len()));
            failures.push(format!(
                "offline render differs from the live run at note {k}: live {:?}, offline {:?} ({} vs {} notes)",
                live.notes.get(k),
                offline.notes.get(k),
                live.notes.len(),
                offline.notes.len()
            ));
        }
        if let Some(i) = live.audio.iter().zip(&offline.audio).position(|(a, b)| a.to_bits() != b.to_bits()) {
            failures.push(format!("preview audio differs from sample {i}: live {}, offline {}", live.audio[i], offline.audio[i]));
        }
        if !live.audio.iter().any(|x| x.abs() > 0.01) {
            failures.push("the preview voice was silent".to_string());
        }
        if offline_s >= live_s {
            failures.push(format!("offline took {offline_s:?}, no faster than real time ({live_s:?})"));
        }
        live.host.shutdown();
        offline.host.shutdown();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}
