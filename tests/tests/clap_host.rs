//! Loads the real `moodfader.clap` in a clack-based host and drives it like a DAW:
//! * `contract_ports_and_params`: CLAP id, ports and the `thru` / `mood_cc` / `out_ch` params;
//! * `audio_and_thru_matrix`: 3 sample rates x 4 max block sizes, bit-exact audio and
//!   sample-exact MIDI thru with a running transport;
//! * `mood_ccs_arrive`: with `mood_cc` on, CC 20 and CC 21 arrive within 8 s of wall time.
//!
//! The test bundle is built (by `cargo xtask test`) with nice-plug's `assert_process_allocs`
//! feature in debug, so any allocation inside the plugin's `process()` panics inside an
//! `extern "C"` call and aborts this whole test process (SIGABRT, with nice-plug's allocation
//! message on stderr). The matrix below, which exercises process() with every block size and
//! a dense event stream, is therefore also the real-time allocation test.
//!
//! The tests in this file share one process, so they take a lock and run one at a time (env
//! vars are set under it, before the plugin is loaded, and the real-time mood test gets the CPU
//! to itself).
//!
//! Thread: test threads; each test body runs on its own guarded thread (the CLAP main thread).

use moodfader_tests::guard::{breadcrumb, run_guarded};
use moodfader_tests::scenario::{
    CC_AROUSAL, CC_VALENCE, Material, Pacing, check_audio_bit_exact, check_thru, max_in_window, run,
};
use moodfader_tests::{ClapTestHost, PLUGIN_ID, bundle_asserts_process_allocs, clap_path};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The per-user cache folder of this test process, where the plugin unpacks the ONNX Runtime it
/// carries: `<target>/test-cache/clap_host/`, emptied when the process first asks, and set as
/// `XDG_CACHE_HOME` (and `LOCALAPPDATA`, where a Windows build looks, under Wine too). ONNX
/// Runtime loads once per process, so whichever test starts the worker first unpacks it there.
fn process_cache_dir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| moodfader_tests::workspace_root().join("target"));
        let dir = target.join("test-cache").join("clap_host");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: cannot create: {e}", dir.display()));
        // SAFETY: the tests of this file run one at a time under SERIAL, and this runs before the
        // first of them loads the plugin.
        unsafe {
            std::env::set_var("XDG_CACHE_HOME", &dir);
            std::env::set_var("LOCALAPPDATA", &dir);
        }
        dir
    })
    .clone()
}

#[test]
fn contract_ports_and_params() {
    let _lock = serial();
    let path = clap_path();
    process_cache_dir();
    run_guarded("contract", Duration::from_secs(120), move || {
        let mut host = ClapTestHost::load_from(&path, PLUGIN_ID)
            .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
        let mut failures: Vec<String> = Vec::new();

        let (audio_in, audio_out) = host.audio_ports();
        if audio_in != [2] || audio_out != [2] {
            failures.push(format!(
                "audio ports: expected 1 stereo in + 1 stereo out, got in {audio_in:?} out {audio_out:?}"
            ));
        }
        let (notes_in, notes_out) = host.note_ports();
        if notes_in.len() != 1 || notes_out.len() != 1 {
            failures.push(format!(
                "note ports: expected 1 in + 1 out, got in {notes_in:?} out {notes_out:?}"
            ));
        }

        for (id, want_default, what) in [("thru", 1.0, "on"), ("mood_cc", 0.0, "off")] {
            match host.param_by_string_id(id) {
                None => failures.push(format!("no param with string id '{id}'")),
                Some(p) if p.max != 1.0 || p.default != want_default => failures.push(format!(
                    "param '{id}' should be a bool defaulting to {what}: got {p:?}"
                )),
                Some(_) => {}
            }
        }
        match host.param_by_string_id("out_ch").cloned() {
            None => failures.push("no param with string id 'out_ch'".into()),
            Some(p) => {
                // nice-plug exposes an IntParam 1..=16 as CLAP 0..=15.
                let one = host.param_text_to_value(p.id, "1");
                let sixteen = host.param_text_to_value(p.id, "16");
                if p.max != 15.0 || one != Some(p.default) || sixteen != Some(p.max) {
                    failures.push(format!(
                        "param 'out_ch' should be an int 1..=16 defaulting to 1: got {p:?}, \
                         text '1' -> {one:?}, '16' -> {sixteen:?}"
                    ));
                }
            }
        }
        if let Err(e) = host.activate(48_000.0, 1, 512) {
            failures.push(format!("activate(48 kHz, 1..=512): {e:#}"));
        }
        host.shutdown();
        assert!(
            failures.is_empty(),
            "plugin contract mismatches:\n{}",
            failures.join("\n")
        );
    });
}

#[test]
fn audio_and_thru_matrix() {
    const TEMPO: f64 = 120.0;
    let _lock = serial();
    let path = clap_path();
    process_cache_dir();
    run_guarded("matrix", Duration::from_secs(900), move || {
        match bundle_asserts_process_allocs(&path) {
            Some(true) => breadcrumb(
                "matrix: the bundle has assert_process_allocs; if this process aborts with \
                 'memory allocation of N bytes failed', the plugin allocated inside process() in \
                 the config named last",
            ),
            _ => breadcrumb(
                "matrix: WARNING: this bundle was NOT built with assert_process_allocs, so the \
                 matrix does not catch allocations in process(); `cargo xtask test` builds one \
                 that is",
            ),
        }
        let mut failures: Vec<String> = Vec::new();
        for sample_rate in [44_100.0, 48_000.0, 96_000.0] {
            for max_block in [1usize, 64, 511, 4096] {
                // 4 bars at 120 BPM (8 s of audio); for 1-frame blocks (one process() call per
                // sample: up to 384 000 calls) 2 bars, which still cross a bar line, a chord change
                // and a repeated key's off+on on one sample.
                let bars = if max_block == 1 { 2.0 } else { 4.0 };
                let frames = (bars * 4.0 * sample_rate * 60.0 / TEMPO) as usize;
                let seed = sample_rate as u64 ^ max_block as u64;
                let config = format!("{sample_rate} Hz, max block {max_block}, {bars} bars");

                breadcrumb(&format!("matrix: {config}"));
                let started = Instant::now();
                let mut host = ClapTestHost::load_from(&path, PLUGIN_ID)
                    .unwrap_or_else(|e| panic!("{config}: loading: {e:#}"));
                if let Err(e) = host.activate(sample_rate, 1, max_block as u32) {
                    failures.push(format!("{config}: activate failed: {e:#}"));
                    host.shutdown();
                    continue;
                }
                let m = Material::new(sample_rate, TEMPO, frames, max_block, true, seed);
                let out = match run(&mut host, &m, Pacing::Fast, |_| false) {
                    Ok(out) => out,
                    Err(e) => {
                        failures.push(format!("{config}: processing failed: {e:#}"));
                        host.shutdown();
                        continue;
                    }
                };
                if let Err(e) = check_audio_bit_exact(&m.signal, &out) {
                    failures.push(format!("{config}: audio passthrough not bit-exact:\n{e}"));
                }
                // mood_cc is off by default: nothing may be ignored, any CC 20/21 is extra.
                if let Err(e) = check_thru(&m.events, &out, |_, _| false) {
                    failures.push(format!("{config}: MIDI thru not sample-exact:\n{e}"));
                }
                host.shutdown();
                eprintln!(
                    "{config}: {} blocks, {} events in, {} out, {:.2} s",
                    out.blocks,
                    m.events.len(),
                    out.events.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        assert!(
            failures.is_empty(),
            "{} failure(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    });
}

#[test]
fn mood_ccs_arrive() {
    const SR: f64 = 48_000.0;
    const BLOCK: usize = 512;
    const TEMPO: f64 = 120.0;
    const DEADLINE: Duration = Duration::from_secs(8);
    let _lock = serial();
    let path = clap_path();
    let cache_dir = process_cache_dir();
    run_guarded("mood", Duration::from_secs(120), move || {
        breadcrumb("mood: 48 kHz / 512, mood_cc on, real time, up to 8 s");
        let mut host = ClapTestHost::load_from(&path, PLUGIN_ID)
            .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
        let mood_cc = host.param_id("mood_cc");
        host.activate(SR, 1, BLOCK as u32)
            .unwrap_or_else(|e| panic!("activate(48 kHz, 512): {e:#}"));
        host.set_param(mood_cc, 1.0);

        // Enough music for the deadline plus a 2 s look at the send rate afterwards.
        let m = Material::new(SR, TEMPO, (11.0 * SR) as usize, BLOCK, false, 42);
        let mut both_at: Option<Duration> = None;
        let out = run(&mut host, &m, Pacing::RealTime, |o| {
            if both_at.is_none() {
                let ccs = o.mood_ccs();
                let has = |cc| ccs.iter().any(|&(_, ch, c, _)| ch == 0 && c == cc);
                if has(CC_VALENCE) && has(CC_AROUSAL) {
                    both_at = Some(o.wall);
                }
            }
            match both_at {
                // Keep going 2 s after both arrived to look at the send rate.
                Some(t) => o.wall > t + Duration::from_secs(2),
                None => o.wall > DEADLINE,
            }
        })
        .unwrap_or_else(|e| panic!("processing failed: {e:#}"));

        let ccs = out.mood_ccs();
        let mut failures: Vec<String> = Vec::new();
        match both_at {
            Some(t) => eprintln!(
                "CC 20 and 21 both arrived after {:.2} s wall ({} mood CCs in {:.2} s; first \
                 (sample, channel, cc, value): {:?})",
                t.as_secs_f64(),
                ccs.len(),
                out.wall.as_secs_f64(),
                &ccs[..ccs.len().min(12)]
            ),
            None => failures.push(format!(
                "CC 20 and CC 21 on channel 1 did not both arrive within {DEADLINE:?} of \
                 real-time processing with mood_cc on; mood CCs seen: {:?}",
                &ccs[..ccs.len().min(10)]
            )),
        }
        if let Some(&(at, ch, cc, v)) = ccs.iter().find(|&&(_, ch, _, v)| v > 127 || ch != 0) {
            failures.push(format!(
                "mood CC {cc} at sample {at}: channel {} value {v}; expected channel 1 (out_ch \
                 default) and a value in 0..=127",
                ch + 1
            ));
        }
        for cc in [CC_VALENCE, CC_AROUSAL] {
            let times: Vec<u64> = ccs
                .iter()
                .filter(|&&(_, _, c, _)| c == cc)
                .map(|&(at, ..)| at)
                .collect();
            let most = max_in_window(&times, SR as u64);
            if most > 12 {
                failures.push(format!(
                    "CC {cc} sent {most} times within one second of audio; the contract says at \
                     most ~10 per second"
                ));
            }
        }
        if let Err(e) = check_audio_bit_exact(&m.signal, &out) {
            failures.push(format!(
                "audio passthrough not bit-exact with mood_cc on:\n{e}"
            ));
        }
        if let Err(e) = check_thru(&m.events, &out, |ch, cc| {
            ch == 0 && (cc == CC_VALENCE || cc == CC_AROUSAL)
        }) {
            failures.push(format!("MIDI thru not sample-exact with mood_cc on:\n{e}"));
        }
        host.shutdown();
        // The estimate came from the ONNX Runtime the bundle carries, unpacked into the per-user
        // cache (XDG_CACHE_HOME, or LOCALAPPDATA on Windows), unless a developer pointed elsewhere.
        if std::env::var_os("MOODFADER_ORT_DYLIB").is_none() {
            let lib = if cfg!(windows) { "onnxruntime.dll" } else { "libonnxruntime.so.1.31.1" };
            let unpacked = std::fs::read_dir(cache_dir.join("moodfader"))
                .map(|dirs| {
                    dirs.flatten().any(|d| {
                        d.file_name().to_string_lossy().starts_with("runtime-") && d.path().join(lib).is_file()
                    })
                })
                .unwrap_or(false);
            if !unpacked {
                failures.push(format!(
                    "the embedded ONNX Runtime was not unpacked into {}/moodfader/runtime-*/{lib}",
                    cache_dir.display()
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}
