//! The command line's contract (product.md), run as a user would run the binary:
//! * `analyze --json` prints the per-bar curve and the overall value;
//! * `continue` writes a MIDI file that holds only the continuation (from the bar after the
//!   primer's end, with the primer's tempo and meter) and, with `--wav`, a non-silent WAV;
//! * bad input (missing file, garbage, out-of-range values) is one line naming the problem,
//!   exit code 2, and nothing half-written left behind.
//!
//! Needs ONNX Runtime (`cargo xtask setup`, or MOODFADER_ORT_DYLIB).
//!
//! Thread: test

use std::path::Path;
use std::process::{Command, Output};

use moodfader_engine::listen::midifile::parse_midi;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/demo.mid");

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moodfader")).args(args).output().expect("runs moodfader")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn analyze_json_follows_the_contract() {
    let o = run(&["analyze", DEMO, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let bars = v["bars"].as_array().unwrap();
    assert_eq!(bars.len(), 24);
    for (i, b) in bars.iter().enumerate() {
        assert_eq!(b["bar"].as_u64(), Some(i as u64));
        for k in ["valence", "arousal"] {
            let x = b[k].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&x), "bar {i} {k} {x}");
        }
        assert!(b["start_s"].as_f64().is_some());
    }
    assert!(v["overall"]["valence"].as_f64().is_some() && v["overall"]["arousal"].as_f64().is_some());
}

#[test]
fn continue_writes_only_the_continuation_and_a_wav() {
    let dir = tempfile::tempdir().unwrap();
    let (mid, wav) = (dir.path().join("out.mid"), dir.path().join("out.wav"));
    let o = run(&[
        "continue", DEMO, "--bars", "2", "--valence", "-0.5", "--arousal", "0.5", "--seed", "3", "--temperature", "0.9",
        "--note-density", "0.8", "-o", mid.to_str().unwrap(), "--wav", wav.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let piece = parse_midi(&std::fs::read(&mid).unwrap()).expect("OUT.mid parses");
    assert!(!piece.notes.is_empty());
    let primer = parse_midi(&std::fs::read(DEMO).unwrap()).unwrap();
    let start = primer.bars.len() as f64 * 4.0;
    for n in &piece.notes {
        assert!(n.onset_beats >= start - 1e-6 && n.onset_beats + n.dur_beats <= start + 8.0 + 1e-3, "{n:?}");
    }
    assert_eq!((piece.meters[0].num, piece.meters[0].den), (4, 4));
    let primer_tempo = 60e6 / primer.tempos.last().unwrap().us_per_quarter as f64;
    assert!((60e6 / piece.tempos[0].us_per_quarter as f64 - primer_tempo).abs() < 0.01);
    let w = std::fs::read(&wav).unwrap();
    assert_eq!(&w[0..4], b"RIFF");
    let peak = w[44..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]).unsigned_abs()).max().unwrap();
    assert!(peak > 1000, "the WAV is not silent (peak {peak})");
    // Same seed, same file.
    let again = dir.path().join("again.mid");
    let o = run(&[
        "continue", DEMO, "--bars", "2", "--valence", "-0.5", "--arousal", "0.5", "--seed", "3", "--temperature", "0.9",
        "--note-density", "0.8", "-o", again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&mid).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn bad_input_is_one_line_exit_2_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mid");
    let garbage = dir.path().join("garbage.mid");
    std::fs::write(&garbage, b"MThd this is not a MIDI file").unwrap();
    let missing = dir.path().join("missing.mid");
    let o_str = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["continue", missing.to_str().unwrap(), "--bars", "2", "-o", o_str], "missing.mid"),
        (vec!["continue", garbage.to_str().unwrap(), "--bars", "2", "-o", o_str], "garbage.mid"),
        (vec!["continue", DEMO, "--bars", "0", "-o", o_str], "--bars"),
        (vec!["continue", DEMO, "--bars", "17", "-o", o_str], "--bars"),
        (vec!["continue", DEMO, "--bars", "2", "--valence", "2", "-o", o_str], "--valence"),
        (vec!["continue", DEMO, "--bars", "2", "--tension", "nan", "-o", o_str], "--tension"),
        (vec!["continue", DEMO, "--bars", "2"], "-o"),
        (vec!["analyze", garbage.to_str().unwrap()], "garbage.mid"),
        (vec!["analyze", missing.to_str().unwrap()], "missing.mid"),
        (vec!["lab", "fit-bridge", "--samples", "3"], "--samples"),
        (vec!["lab", "fit-bridge", "--gain", "-1"], "--gain"),
        (vec!["lab", "fit-bridge", "--data", missing.to_str().unwrap()], "missing.mid"),
    ];
    for (args, mentions) in cases {
        let o = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("moodfader: ") && first.contains(mentions), "{args:?}: first line {first:?} should name {mentions}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line, not the manual: {err}");
        assert!(!Path::new(&out).exists(), "{args:?} left {out:?} behind");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "only the garbage input remains: {leftovers:?}");
}

#[test]
fn every_command_has_its_help_and_the_shells_their_completions() {
    for (args, mentions) in [
        (vec!["--help"], "continue"),
        (vec!["continue", "--help"], "--note-density"),
        (vec!["analyze", "--help"], "--calibrate"),
        (vec!["transcribe", "--help"], "--no-pitch-bends"),
        (vec!["lab", "--help"], "fit-bridge"),
        (vec!["lab", "eval-continuation", "--help"], "--heldout"),
        (vec!["completions", "bash"], "moodfader"),
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(mentions), "{args:?} should mention {mentions}: {out}");
    }
    let o = run(&["analyse", DEMO]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("analyze") && err.trim_end().lines().count() == 1, "a misspelt command gets one line and a hint: {err}");
}

#[test]
fn analyze_a_folder_reports_every_file_and_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(DEMO, dir.path().join("a.mid")).unwrap();
    std::fs::copy(DEMO, dir.path().join("b.mid")).unwrap();
    std::fs::write(dir.path().join("c.mid"), b"not midi").unwrap();
    let csv = dir.path().join("all.csv");
    let o = run(&["analyze", dir.path().to_str().unwrap(), "--json", "--csv", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "one bad file: exit 2 after the others: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert_eq!(v["files"].as_array().unwrap().len(), 2);
    assert_eq!(v["failed"].as_array().unwrap().len(), 1);
    assert!(stderr(&o).contains("c.mid"));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 1 + 2 * 24, "header and 24 bars of each good file");
}

/// The demo's four quadrant continuations (as `cargo xtask demo` makes them): non-silent, and the
/// energetic ones (excited, tense) denser and louder than the quiet ones (sad, calm), the way the
/// density and dynamics faders say.
#[test]
fn quadrant_continuations_differ_the_way_the_faders_say() {
    let dir = tempfile::tempdir().unwrap();
    let mut stats = Vec::new();
    for (name, v, a) in [("excited", 0.7, 0.7), ("tense", -0.7, 0.7), ("sad", -0.7, -0.7), ("calm", 0.7, -0.7)] {
        let (mid, wav) = (dir.path().join(format!("{name}.mid")), dir.path().join(format!("{name}.wav")));
        let o = run(&[
            "continue", DEMO, "--bars", "8", "--seed", "1", &format!("--valence={v}"), &format!("--arousal={a}"),
            "-o", mid.to_str().unwrap(), "--wav", wav.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let notes = parse_midi(&std::fs::read(&mid).unwrap()).unwrap().notes.len();
        let w = std::fs::read(&wav).unwrap();
        let samples: Vec<f64> = w[44..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f64 / 32768.0).collect();
        let rms = (samples.iter().map(|x| x * x).sum::<f64>() / samples.len().max(1) as f64).sqrt();
        assert!(notes > 0 && rms > 0.003, "{name}: {notes} notes, RMS {rms}: silent");
        eprintln!("{name}: {notes} notes, RMS {rms:.4}");
        stats.push((a, notes as f64, rms));
    }
    let mean = |up: bool, k: usize| {
        let v: Vec<f64> = stats.iter().filter(|s| (s.0 > 0.0) == up).map(|s| if k == 0 { s.1 } else { s.2 }).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(mean(true, 0) > 1.2 * mean(false, 0), "energetic continuations are denser: {stats:?}");
    assert!(mean(true, 1) > 1.2 * mean(false, 1), "energetic continuations are louder: {stats:?}");
}

#[test]
fn render_transcribe_and_analyze_audio() {
    let dir = tempfile::tempdir().unwrap();
    let (wav, mid, csv) = (dir.path().join("demo.wav"), dir.path().join("demo.mid"), dir.path().join("demo.csv"));
    let o = run(&["render", DEMO, "-o", wav.to_str().unwrap(), "--rate", "48000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["transcribe", wav.to_str().unwrap(), "-o", mid.to_str().unwrap(), "--csv", csv.to_str().unwrap(), "--tempo", "80"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let heard = parse_midi(&std::fs::read(&mid).unwrap()).expect("OUT.mid parses");
    let source = parse_midi(&std::fs::read(DEMO).unwrap()).unwrap();
    // The demo starts at 80 BPM (then 112 and 150): with --tempo 80 its first bars line up.
    assert!(heard.notes.len() * 10 >= source.notes.len() * 8, "{} notes heard of {}", heard.notes.len(), source.notes.len());
    let first = heard.notes.iter().map(|n| n.onset_beats).fold(f64::MAX, f64::min);
    assert!(first < 0.1, "first onset at beat {first}");
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), heard.notes.len() + 1);
    let o = run(&["analyze", wav.to_str().unwrap(), "--json", "--tempo", "80"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let bars = v["bars"].as_array().unwrap();
    // 54 s of audio in 3-second bars (a WAV has no tempo map: 4/4 at --tempo throughout).
    assert!((17..=19).contains(&bars.len()), "{} bars", bars.len());
    // Calm at the start, excited at the end, as from the MIDI file.
    let a = |i: usize| bars[i]["arousal"].as_f64().unwrap();
    // Measured: -0.37 -> -0.08 (from the MIDI file itself: -0.59 -> +0.4; bars at one tempo blur it).
    assert!(a(bars.len() - 2) > a(1) + 0.2, "arousal {} -> {}", a(1), a(bars.len() - 2));
}

#[test]
fn bad_audio_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mid");
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, b"RIFF\x10\x00\x00\x00WAVEnope").unwrap();
    for input in [junk.to_str().unwrap(), "/no/such/file.wav", DEMO] {
        let o = run(&["transcribe", input, "-o", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{input}");
        let e = stderr(&o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains(input), "{e}");
        assert!(!out.exists());
    }
    let o = run(&["analyze", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["transcribe", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "no -o is a usage error");
}
