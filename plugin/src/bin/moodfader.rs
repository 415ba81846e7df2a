//! `moodfader`, the command line: the same engine as the plugin, on files.
//!
//! ```text
//! moodfader analyze INPUT.mid [--json] [--csv FILE] [--plot FILE.png]
//! moodfader continue PRIMER.mid --bars N [--valence V] [--arousal A] [--ATTRIBUTE X ...]
//!                    [--steer S] [--temperature T] [--seed S] -o OUT.mid [--wav OUT.wav]
//! moodfader transcribe INPUT.wav -o OUT.mid [--tempo BPM] [--csv FILE] [--no-pitch-bends]
//! moodfader render INPUT.mid -o OUT.wav [--rate HZ]
//! moodfader export-features [--data DIR] -o OUT.csv
//! moodfader export-tokens [--data DIR] [--transpose LIST] -o OUT.jsonl
//! ```
//! Bad input prints one line naming the file and the problem and exits with code 2.
//!
//! Thread: main

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use moodfader_engine::analyze::{Analysis, analyze_piece};
use moodfader_engine::emotion::EmotionModel;
use moodfader_engine::export::{data_dir, export_tokens as write_tokens, export_vgmidi, write_atomically};
use moodfader_engine::midifile::{parse_midi, read_midi_file};
use moodfader_engine::transcribe::{BasicPitch, NoteParams, TranscribedNote, transcribe_offline, transcription_smf};
use moodfader_engine::wav::read_wav;
use moodfader_engine::runtime::ensure_runtime;

const USAGE: &str = "\
moodfader — hears the mood of music (valence and arousal, each in [-1, 1])

USAGE:
    moodfader analyze INPUT.mid|INPUT.wav|FOLDER [--json] [--csv FILE] [--plot FILE.png]
        Per-bar valence/arousal following the file's meter, and an overall value. A WAV file is
        transcribed first (as `transcribe` does; bars of 4/4 at --tempo BPM, default 120). A
        FOLDER is analysed file by file (a progress bar on a terminal; one row per file, or every
        curve with --json / --csv).
        --json       print {\"bars\":[{\"bar\",\"start_s\",\"valence\",\"arousal\"}...],\"overall\":{...}}
        --csv FILE   also write the per-bar curve as CSV
        --plot FILE  also draw the curves on bands coloured by quadrant, as PNG
        --calibrate RATINGS.csv  adapt to a listener: rows 'bar,valence,arousal' rating a few
                     bars as they feel to you; every bar is then read through your calibration
    moodfader continue PRIMER.mid --bars N [--valence V] [--arousal A] [--ATTRIBUTE X ...]
                       [--steer S] [--temperature T] [--seed S] -o OUT.mid [--wav OUT.wav]
        Play on from the primer for N bars (1-16), in its key, tempo and meter, steered toward a
        valence/arousal target (each in [-1, 1]) and attribute targets (each in [0, 1]).
        ATTRIBUTE: note-density, rhythm-density, dynamics, register, pitch-range, mode,
        articulation, tension. A target not given follows what was heard; --steer S in [0, 1]
        blends heard (0) and target (1); it defaults to 1 when --valence or --arousal is given.
        OUT.mid holds only the continuation: its first bar starts at the bar line after the
        primer's end, so it lines up when placed where the primer starts. --wav renders the
        continuation (from its first bar) with the preview voice, 44.1 kHz mono.
        --temperature T  sampling temperature (default 1.0); --seed S  (default 1)
    moodfader transcribe INPUT.wav -o OUT.mid [--tempo BPM] [--csv FILE] [--no-pitch-bends]
        Audio to notes with Basic Pitch (the basic-pitch 0.4.0 model and its post-processing:
        onset 0.5, frame 0.3, notes of at least 127.7 ms, pitch bends on notes that overlap no
        other). WAV at any rate from 8 to 384 kHz, any channel count, 8/16/24/32-bit PCM or
        32-bit float. OUT.mid is written at --tempo BPM (default 120, like basic-pitch) in 4/4;
        --csv also lists the notes (start_s,end_s,pitch,velocity).
    moodfader render INPUT.mid -o OUT.wav [--rate HZ]
        Play a MIDI file with the built-in voice into a mono 16-bit WAV (default 44100 Hz):
        test audio for the transcriber.
    moodfader export-features [--data DIR] -o OUT.csv
        Write the per-bar features of the labelled VGMIDI pieces for training
        (DIR defaults to $MOODFADER_DATA, else ../shared/data).
    moodfader export-tokens [--data DIR] [--transpose LIST] -o OUT.jsonl
        Write token sequences of POP909 and VGMIDI for training the continuation model, with
        per-bar attribute levels; LIST is comma-separated semitones (default 0).
    moodfader eval-continuation [--quick] [--primer FILE.mid] [--heldout DATA] [--only FADER,..]
                                [--no-emotion] [-o OUT.json]
        Measure how the continuation model obeys its faders and targets (default primers: the
        built-in demo's three moods and the whole demo; --heldout adds 8-bar openings of six
        pieces of the validation split, which the model never saw). --only sweeps only the named
        faders; --no-emotion skips the emotion grid.
    moodfader fit-bridge [--data DIR] [--samples N] [--gain G] [--prior-weight W] [--write MANIFEST]
                         [--csv FILE]
        Calibrate the emotion bridge by synthesis: N continuations (default 1600) of openings of
        training pieces with every fader at random, read back by the estimator; fits how the
        reading follows the faders and, with --write, stores it in the continuation manifest
        (the bridge then asks for the fader values nearest the listeners' whose continuation
        reads as the target, GAIN times it, default 0.6; W weighs staying near the listeners' values).
    moodfader eval-audio [--data DIR] [--train N] [--test N] [-o OUT.json] [--write-map FILE]
        How the estimator hears audio: labelled VGMIDI pieces rendered by the built-in voice and
        transcribed, against the same pieces read from MIDI, and what audio cues (loudness, onset
        rate, flux, brightness) add; scored on the emotion model's held-out pieces. --write-map
        also writes the report as the live arousal map (models/audio_cues.json).
    moodfader eval-calibration [--data DIR] [-o OUT.json]
        What personal calibration buys on VGMIDI's individual listener curves (held-out pieces).
    moodfader --help | --version

ENVIRONMENT:
    MOODFADER_ORT_DYLIB   path of libonnxruntime.so.1.31.1 (else the bundled or `cargo xtask setup` copy)
    MOODFADER_MODEL_DIR   folder with emotion_va.onnx/.json and continuation.onnx/.json
                          (else the built-in models)
    MOODFADER_BASIC_PITCH path of Basic Pitch's nmp.onnx (else the bundled or `cargo xtask setup` copy)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageErrorBox>() {
                eprintln!("moodfader: {}\n\n{USAGE}", u.0);
            } else {
                eprintln!("moodfader: {}", format!("{e:#}").replace('\n', " "));
            }
            ExitCode::from(2)
        }
    }
}

#[derive(Debug)]
struct UsageErrorBox(String);
impl std::fmt::Display for UsageErrorBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageErrorBox {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageErrorBox(msg.into()))
}

fn run(args: &[String]) -> Result<()> {
    let Some(cmd) = args.first() else { return Err(usage("no command given")) };
    let rest = &args[1..];
    match cmd.as_str() {
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        "--version" | "-V" => {
            println!("moodfader {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "analyze" => analyze(rest),
        "export-features" => export_features(rest),
        "export-tokens" => export_tokens(rest),
        "continue" => continue_cmd(rest),
        "eval-continuation" => eval_continuation(rest),
        "eval-calibration" => eval_calibration(rest),
        "fit-bridge" => fit_bridge(rest),
        "eval-audio" => eval_audio(rest),
        "transcribe" => transcribe_cmd(rest),
        "render" => render_cmd(rest),
        other => Err(usage(format!("unknown command '{other}'"))),
    }
}

/// Simple flag parser: positional arguments, boolean flags, and flags with one value.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

fn parse(args: &[String], with_value: &[&str], booleans: &[&str]) -> Result<Args> {
    let mut out = Args { positional: Vec::new(), flags: Vec::new() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some((flag, value)) = a.split_once('=').filter(|(f, _)| with_value.contains(f)) {
            out.flags.push((flag.to_string(), Some(value.to_string())));
        } else if a.starts_with('-') && a.len() > 1 {
            if booleans.contains(&a.as_str()) {
                out.flags.push((a.clone(), None));
            } else if with_value.contains(&a.as_str()) {
                let v = it.next().ok_or_else(|| usage(format!("{a} needs a value")))?;
                out.flags.push((a.clone(), Some(v.clone())));
            } else {
                return Err(usage(format!("unknown option '{a}'")));
            }
        } else {
            out.positional.push(a.clone());
        }
    }
    Ok(out)
}

impl Args {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|(f, _)| f == flag)
    }
    fn value(&self, flag: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(f, _)| f == flag).and_then(|(_, v)| v.as_deref())
    }
}

fn load_model() -> Result<EmotionModel> {
    ensure_runtime(moodfader::embedded_runtime())?;
    EmotionModel::load_default()
}

fn analyze(args: &[String]) -> Result<()> {
    let a = parse(args, &["--csv", "--plot", "--calibrate", "--tempo"], &["--json"])?;
    let [input] = a.positional.as_slice() else {
        return Err(usage("analyze takes exactly one INPUT file"));
    };
    let path = Path::new(input);
    if path.is_dir() {
        if a.value("--plot").is_some() || a.value("--calibrate").is_some() {
            return Err(usage("--plot and --calibrate take one file, not a folder"));
        }
        return analyze_folder(path, a.value("--csv"), a.has("--json"));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let piece = match ext.as_str() {
        "mid" | "midi" | "smf" => read_midi_file(path)?,
        "wav" | "wave" => {
            let tempo = parse_tempo(&a)?;
            let notes = transcribe_file(path, false)?;
            let smf = transcription_smf(&notes, tempo);
            parse_midi(&smf).with_context(|| format!("{}: transcription", path.display()))?
        }
        _ => bail!("{}: unsupported file type (expected .mid or .wav)", path.display()),
    };
    if piece.bars.is_empty() {
        bail!("{}: no notes to analyse", path.display());
    }
    let mut model = load_model()?;
    let mut analysis = analyze_piece(&piece, &mut model)?;
    if let Some(ratings) = a.value("--calibrate") {
        calibrate(&mut analysis, Path::new(ratings))?;
    }
    if let Some(csv) = a.value("--csv") {
        write_atomically(Path::new(csv), to_csv(&analysis).as_bytes())?;
    }
    if let Some(png) = a.value("--plot") {
        let title = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        moodfader::plot::plot_curve(&analysis, &title, Path::new(png))?;
    }
    if a.has("--json") {
        println!("{}", serde_json::to_string(&analysis)?);
    } else {
        println!("bar  start_s  valence  arousal");
        for b in &analysis.bars {
            println!("{:>3}  {:>7.2}  {:>+7.3}  {:>+7.3}", b.bar, b.start_s, b.valence, b.arousal);
        }
        println!("overall        {:>+7.3}  {:>+7.3}", analysis.overall.valence, analysis.overall.arousal);
    }
    Ok(())
}

fn parse_tempo(a: &Args) -> Result<f64> {
    match a.value("--tempo") {
        None => Ok(120.0),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && (20.0..=400.0).contains(t))
            .ok_or_else(|| usage(format!("--tempo: '{v}' is not a tempo in 20..=400 BPM"))),
    }
}

/// Transcribes a WAV file with Basic Pitch (the reference's settings).
fn transcribe_file(path: &Path, pitch_bends: bool) -> Result<Vec<TranscribedNote>> {
    let audio = read_wav(path)?;
    ensure_runtime(moodfader::embedded_runtime())?;
    // An offline tool may use every core (the plugin's sessions use one).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut model = BasicPitch::load_default_with_threads(moodfader::embedded_runtime(), threads)?;
    let params = NoteParams { pitch_bends, ..NoteParams::default() };
    transcribe_offline(&mut model, &audio.samples, audio.sample_rate_hz, &params)
        .with_context(|| format!("{}: transcription failed", path.display()))
}

fn transcribe_cmd(args: &[String]) -> Result<()> {
    let a = parse(args, &["-o", "--tempo", "--csv"], &["--no-pitch-bends"])?;
    let [input] = a.positional.as_slice() else {
        return Err(usage("transcribe takes exactly one INPUT.wav"));
    };
    let out = a.value("-o").ok_or_else(|| usage("transcribe needs -o OUT.mid"))?;
    let tempo = parse_tempo(&a)?;
    let notes = transcribe_file(Path::new(input), !a.has("--no-pitch-bends"))?;
    write_atomically(Path::new(out), &transcription_smf(&notes, tempo))?;
    if let Some(csv) = a.value("--csv") {
        let mut s = String::from("start_s,end_s,pitch,velocity\n");
        for n in &notes {
            s.push_str(&format!("{:.6},{:.6},{},{}\n", n.start_s, n.end_s, n.pitch, n.velocity));
        }
        write_atomically(Path::new(csv), s.as_bytes())?;
    }
    eprintln!("{input}: {} notes -> {out}", notes.len());
    Ok(())
}

fn render_cmd(args: &[String]) -> Result<()> {
    let a = parse(args, &["-o", "--rate"], &[])?;
    let [input] = a.positional.as_slice() else {
        return Err(usage("render takes exactly one INPUT.mid"));
    };
    let out = a.value("-o").ok_or_else(|| usage("render needs -o OUT.wav"))?;
    let rate = match a.value("--rate") {
        None => 44_100,
        Some(v) => v.parse::<u32>().ok().filter(|r| (8_000..=192_000).contains(r)).ok_or_else(|| usage(format!("--rate: '{v}' is not a sample rate in 8000..=192000")))?,
    };
    let piece = read_midi_file(Path::new(input))?;
    let samples = moodfader_engine::synth::render_notes(&piece.notes, rate);
    write_atomically(Path::new(out), &moodfader_engine::synth::wav_bytes(&samples, rate))
}

/// `analyze FOLDER`: every MIDI file in it (sorted), a progress bar on a terminal, one row per
/// file (or the per-bar curves with --json / --csv). A file that cannot be read is reported and
/// skipped; the exit code is then 2, after the others are written.
fn analyze_folder(dir: &Path, csv: Option<&str>, json: bool) -> Result<()> {
    use std::io::{IsTerminal, Write};
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read folder", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "mid" | "midi" | "smf")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no MIDI files in this folder", dir.display());
    }
    let mut model = load_model()?;
    let tty = std::io::stderr().is_terminal();
    let (mut results, mut failed) = (Vec::new(), Vec::new());
    let mut csv_text = String::from("file,bar,start_s,valence,arousal\n");
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if tty {
            let done = (i * 30) / files.len();
            eprint!("\r[{}{}] {}/{} {:<40.40}", "#".repeat(done), ".".repeat(30 - done), i + 1, files.len(), name);
            let _ = std::io::stderr().flush();
        }
        let analysis = read_midi_file(f).and_then(|p| {
            if p.bars.is_empty() {
                bail!("{}: no notes to analyse", f.display());
            }
            analyze_piece(&p, &mut model)
        });
        match analysis {
            Ok(an) => {
                for b in &an.bars {
                    csv_text.push_str(&format!("{},{},{:.6},{:.6},{:.6}\n", name.replace(',', "_"), b.bar, b.start_s, b.valence, b.arousal));
                }
                results.push((name, an));
            }
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if tty {
        eprintln!("\r[{}] {}/{} done{:40}", "#".repeat(30), files.len(), files.len(), "");
    }
    if let Some(out) = csv {
        write_atomically(Path::new(out), csv_text.as_bytes())?;
    }
    if json {
        let list: Vec<serde_json::Value> = results
            .iter()
            .map(|(n, an)| serde_json::json!({"file": n, "bars": an.bars, "overall": an.overall}))
            .collect();
        println!("{}", serde_json::json!({"files": list, "failed": failed}));
    } else {
        println!("{:<40}  bars  valence  arousal", "file");
        for (n, an) in &results {
            println!("{:<40.40}  {:>4}  {:>+7.3}  {:>+7.3}", n, an.bars.len(), an.overall.valence, an.overall.arousal);
        }
    }
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("moodfader: {f}");
        }
        bail!("{}: {} of {} files could not be analysed (listed above)", dir.display(), failed.len(), files.len());
    }
    Ok(())
}

/// Reads `bar,valence,arousal` rows (a listener's own ratings of a few bars; a header line is
/// allowed), fits the personal calibration on those bars and applies it to every bar.
fn calibrate(analysis: &mut Analysis, path: &Path) -> Result<()> {
    use moodfader_engine::calibration::Calibration;
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read ratings", path.display()))?;
    let (mut est, mut rat) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || (i == 0 && cells.first().is_some_and(|c| c.parse::<usize>().is_err())) {
            continue;
        }
        let parsed = (|| -> Option<(usize, f32, f32)> {
            let [b, v, a] = cells.as_slice() else { return None };
            let (v, a) = (v.parse::<f32>().ok()?, a.parse::<f32>().ok()?);
            ((-1.0..=1.0).contains(&v) && (-1.0..=1.0).contains(&a)).then_some((b.parse().ok()?, v, a))
        })();
        let Some((bar, v, a)) = parsed else {
            bail!("{}: line {} is not 'bar,valence,arousal' with values in [-1, 1]", path.display(), i + 1);
        };
        let Some(b) = analysis.bars.get(bar) else {
            bail!("{}: line {}: bar {bar} is past the piece's {} bars", path.display(), i + 1, analysis.bars.len());
        };
        est.push((b.valence, b.arousal));
        rat.push((v, a));
    }
    if rat.is_empty() {
        bail!("{}: no rated bars", path.display());
    }
    let cal = Calibration::fit(&est, &rat);
    for b in analysis.bars.iter_mut() {
        (b.valence, b.arousal) = cal.apply((b.valence, b.arousal));
    }
    (analysis.overall.valence, analysis.overall.arousal) = cal.apply((analysis.overall.valence, analysis.overall.arousal));
    eprintln!(
        "calibrated on {} bars: valence {:+.2} + {:.2}·v, arousal {:+.2} + {:.2}·a",
        rat.len(), cal.valence.0, cal.valence.1, cal.arousal.0, cal.arousal.1
    );
    Ok(())
}

fn to_csv(a: &Analysis) -> String {
    let mut s = String::from("bar,start_s,valence,arousal\n");
    for b in &a.bars {
        s.push_str(&format!("{},{:.6},{:.6},{:.6}\n", b.bar, b.start_s, b.valence, b.arousal));
    }
    s
}

fn export_features(args: &[String]) -> Result<()> {
    let a = parse(args, &["--data", "-o"], &[])?;
    let out = a.value("-o").ok_or_else(|| usage("export-features needs -o OUT.csv"))?;
    let data = a.value("--data").map(PathBuf::from).unwrap_or_else(data_dir);
    if !data.join("vgmidi/labelled/labels.json").is_file() {
        return Err(anyhow!(
            "{}: VGMIDI data not found there; set MOODFADER_DATA or pass --data",
            data.display()
        ));
    }
    let report = export_vgmidi(&data, Path::new(out)).context("export failed")?;
    eprintln!(
        "exported {} bars of {} pieces to {out} ({} rated on a 4/4 grid, {} with bar counts that differ from their ratings, {} skipped)",
        report.num_bars, report.num_pieces, report.num_fixed_meter, report.num_length_mismatches, report.skipped.len()
    );
    for s in &report.skipped {
        eprintln!("  skipped: {s}");
    }
    Ok(())
}

fn export_tokens(args: &[String]) -> Result<()> {
    let a = parse(args, &["--data", "-o", "--transpose"], &[])?;
    let out = a.value("-o").ok_or_else(|| usage("export-tokens needs -o OUT.jsonl"))?;
    let data = a.value("--data").map(PathBuf::from).unwrap_or_else(data_dir);
    let transpositions: Vec<i8> = match a.value("--transpose") {
        None => vec![0],
        Some(list) => list
            .split(',')
            .map(|t| t.trim().parse::<i8>().ok().filter(|v| (-24..=24).contains(v)))
            .collect::<Option<Vec<i8>>>()
            .ok_or_else(|| usage(format!("--transpose: '{list}' is not a comma-separated list of semitones in -24..=24")))?,
    };
    let report = write_tokens(&data, Path::new(out), &transpositions).context("token export failed")?;
    eprintln!(
        "exported {} sequences ({} tokens) of {} pieces ({} for validation) to {out}; {} skipped",
        report.num_sequences, report.num_tokens, report.num_pieces, report.num_valid_pieces, report.skipped.len()
    );
    for s in &report.skipped {
        eprintln!("  skipped: {s}");
    }
    Ok(())
}

fn parse_in(a: &Args, flag: &str, lo: f32, hi: f32) -> Result<Option<f32>> {
    match a.value(flag) {
        None => Ok(None),
        Some(v) => match v.parse::<f32>() {
            Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(usage(format!("{flag}: '{v}' is not a number in [{lo}, {hi}]"))),
        },
    }
}

/// Sample rate of the WAV files the command line writes.
const WAV_RATE: u32 = 44_100;

fn continue_cmd(args: &[String]) -> Result<()> {
    use moodfader_engine::Attribute;
    use moodfader_engine::compose::{ContinueOptions, continue_piece, notes_to_smf};
    use moodfader_engine::continuation::ContinuationModel;
    use moodfader_engine::steering::SteerRequest;

    let attr_flags: Vec<String> = Attribute::ALL.iter().map(|a| format!("--{}", a.cli_name())).collect();
    let mut with_value = vec!["--bars", "--valence", "--arousal", "--steer", "--temperature", "--seed", "-o", "--wav"];
    with_value.extend(attr_flags.iter().map(String::as_str));
    let a = parse(args, &with_value, &[])?;
    let [input] = a.positional.as_slice() else {
        return Err(usage("continue takes exactly one PRIMER.mid"));
    };
    let out = a.value("-o").ok_or_else(|| usage("continue needs -o OUT.mid"))?;
    let bars = match a.value("--bars") {
        None => return Err(usage("continue needs --bars N (1-16)")),
        Some(v) => v.parse::<u32>().ok().filter(|n| (1..=16).contains(n)).ok_or_else(|| usage(format!("--bars: '{v}' is not a whole number in 1..=16")))?,
    };
    let valence = parse_in(&a, "--valence", -1.0, 1.0)?;
    let arousal = parse_in(&a, "--arousal", -1.0, 1.0)?;
    let steer = parse_in(&a, "--steer", 0.0, 1.0)?;
    let temperature = parse_in(&a, "--temperature", 0.05, 3.0)?.unwrap_or(1.0);
    let seed = match a.value("--seed") {
        None => 1,
        Some(v) => v.parse::<u64>().map_err(|_| usage(format!("--seed: '{v}' is not a whole number >= 0")))?,
    };
    let mut manual = [None; 8];
    for (i, flag) in attr_flags.iter().enumerate() {
        manual[i] = parse_in(&a, flag, 0.0, 1.0)?;
    }
    let path = Path::new(input);
    let piece = read_midi_file(path)?;
    if piece.bars.is_empty() {
        bail!("{}: no notes to continue", path.display());
    }
    // A target given only in part takes the rest from what the estimator hears in the primer.
    let (mut tv, mut ta) = (valence.unwrap_or(0.0), arousal.unwrap_or(0.0));
    if valence.is_none() != arousal.is_none() {
        let mut emotion = load_model()?;
        let analysis = analyze_piece(&piece, &mut emotion)?;
        let recent = &analysis.bars[analysis.bars.len().saturating_sub(4)..];
        let n = recent.len().max(1) as f32;
        tv = valence.unwrap_or(recent.iter().map(|b| b.valence).sum::<f32>() / n);
        ta = arousal.unwrap_or(recent.iter().map(|b| b.arousal).sum::<f32>() / n);
    }
    let steer = steer.unwrap_or(if valence.is_some() || arousal.is_some() { 1.0 } else { 0.0 });
    ensure_runtime(moodfader::embedded_runtime())?;
    let mut model = ContinuationModel::load_default()?;
    let opts = ContinueOptions {
        bars,
        steer: SteerRequest { target_valence: tv, target_arousal: ta, steer, manual },
        temperature,
        seed,
        ..Default::default()
    };
    let c = continue_piece(&mut model, &piece, &opts).with_context(|| format!("{}: cannot continue", path.display()))?;
    write_atomically(Path::new(out), &notes_to_smf(&c.notes, c.tempo_bpm, c.meter))?;
    if let Some(wav) = a.value("--wav") {
        // The WAV holds the continuation from its first bar line, played by the preview voice.
        let t0 = c.bars.first().map_or(0.0, |b| b.start_s);
        let shifted: Vec<_> = c.notes.iter().map(|n| moodfader_engine::Note { onset_s: n.onset_s - t0, ..*n }).collect();
        let samples = moodfader_engine::synth::render_notes(&shifted, WAV_RATE);
        write_atomically(Path::new(wav), &moodfader_engine::synth::wav_bytes(&samples, WAV_RATE))?;
    }
    let names = Attribute::ALL.map(|a| a.cli_name());
    let fmt = |x: &[f32; 8]| names.iter().zip(x).map(|(n, v)| format!("{n} {v:.2}")).collect::<Vec<_>>().join(", ");
    eprintln!(
        "wrote {out}: {} notes in {bars} bars at {:.1} BPM {}/{}, key {}; {:.0} ms ({} tokens)\n  heard:  {}\n  target: {}",
        c.notes.len(),
        c.tempo_bpm,
        c.meter.0,
        c.meter.1,
        c.scale.map(|s| s.name()).unwrap_or_else(|| "none".into()),
        c.generated.total.as_secs_f64() * 1e3,
        c.generated.num_tokens,
        fmt(&c.heard),
        fmt(&c.targets),
    );
    Ok(())
}

fn eval_continuation(args: &[String]) -> Result<()> {
    use moodfader_engine::Attribute;
    use moodfader_engine::continuation::ContinuationModel;
    use moodfader_engine::evaluate::{EvalConfig, Primer, demo_primers, evaluate};

    let a = parse(args, &["-o", "--primer", "--heldout", "--only"], &["--quick", "--no-emotion"])?;
    let primers = match a.value("--primer") {
        Some(p) => {
            let piece = read_midi_file(Path::new(p))?;
            vec![Primer { name: p.to_string(), notes: piece.notes, bars: piece.bars }]
        }
        None => demo_primers(&moodfader_engine::midifile::parse_midi(moodfader::DEMO_MID).context("built-in demo")?),
    };
    let mut emotion = load_model()?;
    let mut model = ContinuationModel::load_default()?;
    let mut cfg = if a.has("--quick") { EvalConfig::QUICK } else { EvalConfig::FULL };
    if let Some(only) = a.value("--only") {
        cfg.attributes = 0;
        for name in only.split(',').filter(|n| !n.is_empty()) {
            let at = Attribute::from_cli_name(name).ok_or_else(|| anyhow!("--only: no fader called {name:?}"))?;
            cfg.attributes |= 1 << Attribute::ALL.iter().position(|&x| x == at).unwrap_or(0);
        }
    }
    cfg.emotion = !a.has("--no-emotion");
    let report = evaluate(&mut model, &mut emotion, &primers, cfg)?;
    // Also on pieces the model never saw (the validation split), when the data is given.
    let heldout = match a.value("--heldout") {
        Some(dir) => {
            let primers = moodfader_engine::evaluate::heldout_primers(Path::new(dir), 6, 8);
            if primers.is_empty() {
                bail!("{dir}: no POP909 or VGMIDI pieces found for held-out primers");
            }
            let r = evaluate(&mut model, &mut emotion, &primers, EvalConfig { seeds: 1, ..cfg })?;
            eprintln!("held-out primers ({}): {}", primers.len(), eval_summary(&r));
            Some(r)
        }
        None => None,
    };
    let mut value = serde_json::to_value(&report)?;
    if let Some(h) = heldout {
        value["heldout_primers"] = serde_json::to_value(&h)?;
    }
    let json = serde_json::to_string_pretty(&value)?;
    match a.value("-o") {
        Some(out) => write_atomically(Path::new(out), json.as_bytes())?,
        None => println!("{json}"),
    }
    eprintln!("{}, {:.0} tokens/s", eval_summary(&report), report.tokens_per_second);
    for (v, a, ev, ea, h, t) in &report.emotion_by_target {
        eprintln!("  target V {v:+.1} A {a:+.1}: heard V {ev:+.2} A {ea:+.2}, {h}/{t} in the quadrant");
    }
    for (mode, at) in &report.mode_ladder {
        eprintln!("  written in {mode:15} measures mode {at:.3}");
    }
    for at in &report.attributes {
        eprintln!("  {:15} R2 {:.3} (all {:.3})  consistency {:.3}  slope {:+.2}  others |r| {:.2}", at.attribute, at.linearity_r2, at.linearity_r2_all, at.consistency, at.slope, at.others_mean_abs_r);
    }
    Ok(())
}

/// One line of an evaluation's headline figures; the fader and emotion parts only when they were measured.
fn eval_summary(r: &moodfader_engine::evaluate::EvalReport) -> String {
    let mut parts = Vec::new();
    if !r.attributes.is_empty() {
        parts.push(format!("linearity R2 (mean) {:.3}, consistency (mean) {:.3}", r.mean_linearity_r2, r.mean_consistency));
    }
    if r.emotion_trials > 0 {
        parts.push(format!("emotion quadrant accuracy {:.3} ({} trials)", r.emotion_quadrant_accuracy, r.emotion_trials));
    }
    parts.push(format!("in key {:.3}, notes past end {}", r.in_key_fraction, r.notes_past_end));
    parts.join(", ")
}

fn fit_bridge(args: &[String]) -> Result<()> {
    use moodfader_engine::continuation::ContinuationModel;
    use moodfader_engine::evaluate::{synthesis_samples, training_primers};
    use moodfader_engine::steering::ForwardModel;
    let a = parse(args, &["--data", "--samples", "--csv", "--write", "--gain", "--prior-weight"], &[])?;
    let data = a.value("--data").map(PathBuf::from).unwrap_or_else(data_dir);
    let n = match a.value("--samples") {
        None => 1600,
        Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 64).ok_or_else(|| usage(format!("--samples: '{v}' is not a whole number >= 64")))?,
    };
    let number = |flag: &str, default: f32| -> Result<f32> {
        match a.value(flag) {
            None => Ok(default),
            Some(v) => v.parse::<f32>().ok().filter(|x| x.is_finite() && *x >= 0.0).ok_or_else(|| usage(format!("{flag}: '{v}' is not a number >= 0"))),
        }
    };
    let (gain, prior_weight) = (number("--gain", BRIDGE_GAIN)?, number("--prior-weight", 0.05)?);
    let primers = training_primers(&data, BRIDGE_PRIMERS, 8);
    if primers.is_empty() {
        bail!("{}: no POP909 or VGMIDI pieces found to calibrate on", data.display());
    }
    let mut emotion = load_model()?;
    let mut model = ContinuationModel::load_default()?;
    eprintln!("fit-bridge: {n} continuations of 4 bars on {} training primers, every fader at random", primers.len());
    let samples = synthesis_samples(&mut model, &mut emotion, &primers, n, 4, 7, |i| {
        if i % 200 == 0 {
            eprintln!("  [{i}/{n}]");
        }
    })?;
    if let Some(csv) = a.value("--csv") {
        let mut text = String::from("primer");
        for at in moodfader_engine::Attribute::ALL {
            text += &format!(",asked_{}", at.cli_name());
        }
        for at in moodfader_engine::Attribute::ALL {
            text += &format!(",measured_{}", at.cli_name());
        }
        text += ",valence,arousal\n";
        for s in &samples {
            text += &s.primer.to_string();
            for x in s.asked.iter().chain(&s.measured) {
                text += &format!(",{x:.4}");
            }
            text += &format!(",{:.4},{:.4}\n", s.valence, s.arousal);
        }
        write_atomically(Path::new(csv), text.as_bytes())?;
    }
    // Held-out check: fit without every 4th primer, score on its samples.
    let pick = |keep: bool| -> (Vec<[f32; 8]>, Vec<[f32; 2]>) {
        samples.iter().filter(|s| (s.primer % 4 == 3) != keep).map(|s| (s.asked, [s.valence, s.arousal])).unzip()
    };
    let (train_x, train_y) = pick(true);
    let (test_x, test_y) = pick(false);
    let part = ForwardModel::fit(&train_x, &train_y, gain, prior_weight).ok_or_else(|| anyhow!("the samples do not determine the forward model"))?;
    let r2: Vec<f64> = (0..2)
        .map(|r| {
            let mean = test_y.iter().map(|y| y[r] as f64).sum::<f64>() / test_y.len().max(1) as f64;
            let ss: f64 = test_y.iter().map(|y| (y[r] as f64 - mean).powi(2)).sum();
            let se: f64 = test_x.iter().zip(&test_y).map(|(x, y)| (y[r] as f64 - part.reading(x)[r] as f64).powi(2)).sum();
            1.0 - se / ss.max(1e-12)
        })
        .collect();
    let (all_x, all_y): (Vec<[f32; 8]>, Vec<[f32; 2]>) = samples.iter().map(|s| (s.asked, [s.valence, s.arousal])).unzip();
    let fit = ForwardModel::fit(&all_x, &all_y, gain, prior_weight).ok_or_else(|| anyhow!("the samples do not determine the forward model"))?;
    eprintln!("  reading on held-out primers' continuations: R2 valence {:.3}, arousal {:.3}", r2[0], r2[1]);
    for (r, name) in ["valence", "arousal"].iter().enumerate() {
        let terms: Vec<String> = moodfader_engine::Attribute::ALL.iter().zip(&fit.weights[r]).map(|(at, w)| format!("{} {w:+.3}", at.cli_name())).collect();
        eprintln!("  {name} = {:+.3} {}", fit.intercept[r], terms.join(" "));
    }
    if let Some(path) = a.value("--write") {
        let text = std::fs::read_to_string(path).with_context(|| format!("{path}: cannot read"))?;
        let mut manifest: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{path}: not JSON"))?;
        let bridge = manifest.get_mut("bridge").and_then(|b| b.as_object_mut()).ok_or_else(|| anyhow!("{path}: has no bridge object"))?;
        bridge.insert(
            "forward".into(),
            serde_json::json!({
                "intercept": fit.intercept,
                "weights": fit.weights,
                "gain": gain,
                "prior_weight": prior_weight,
                "fitted_on": format!(
                    "{n} continuations of 4 bars from the openings of {} training-split pieces (none of the evaluation's primers), every fader drawn uniformly in [0, 1], read by the emotion estimator; least squares of the mean reading on the fader values",
                    primers.len()
                ),
                "heldout_r2": {"valence": r2[0], "arousal": r2[1], "rule": "fit without every 4th primer, scored on its continuations"},
            }),
        );
        write_atomically(Path::new(path), (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes())?;
        eprintln!("  wrote the forward model into {path}");
    }
    Ok(())
}

/// Training-split pieces whose openings the bridge is calibrated on.
const BRIDGE_PRIMERS: usize = 24;
/// Default gain of the calibrated bridge: the estimator reading asked per unit of target. Chosen
/// on the evaluation grid (0.4 / 0.6 / 0.8 gave quadrant accuracy 0.94 / 1.00 / 0.92 on the quick grid).
const BRIDGE_GAIN: f32 = 0.6;

fn eval_audio(args: &[String]) -> Result<()> {
    use std::io::IsTerminal;
    let a = parse(args, &["--data", "--train", "--test", "-o", "--write-map"], &[])?;
    let data = a.value("--data").map(PathBuf::from).unwrap_or_else(data_dir);
    let count = |flag: &str, default: usize| -> Result<usize> {
        match a.value(flag) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| usage(format!("{flag}: '{v}' is not a whole number >= 1"))),
        }
    };
    let (train, test) = (count("--train", 40)?, count("--test", 33)?);
    let mut emo = load_model()?;
    let mut bp = BasicPitch::load_default(moodfader::embedded_runtime())?;
    let tty = std::io::stderr().is_terminal();
    let report = moodfader_engine::audio_eval::eval_audio_input(&data, &mut emo, &mut bp, train, test, |i, n, id| {
        if tty {
            eprint!("\r[{i}/{n}] {id:<60.60}");
        }
    })?;
    if tty {
        eprintln!();
    }
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(map) = a.value("--write-map") {
        write_atomically(Path::new(map), json.as_bytes())?;
    }
    if let Some(out) = a.value("-o") {
        write_atomically(Path::new(out), json.as_bytes())?;
    }
    println!("{json}");
    Ok(())
}

fn eval_calibration(args: &[String]) -> Result<()> {
    use moodfader_engine::calibration::{ListenerCurve, evaluate_listeners};
    use moodfader_engine::emotion::EMBEDDED_MANIFEST;
    use moodfader_engine::features::context_vectors;

    let a = parse(args, &["--data", "-o"], &[])?;
    let data = a.value("--data").map(PathBuf::from).unwrap_or_else(data_dir);
    let annotators_path = data.join("vgmidi/labelled/annotators.json");
    let text = std::fs::read_to_string(&annotators_path)
        .with_context(|| format!("{}: cannot read listener curves (set MOODFADER_DATA or --data)", annotators_path.display()))?;
    let annotators: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", annotators_path.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(EMBEDDED_MANIFEST)?;
    let holdout: std::collections::HashSet<String> =
        manifest["holdout_pieces"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    let mut report = moodfader_engine::export::ExportReport::default();
    let pieces = moodfader_engine::export::labelled_pieces(&data, &mut report)?;
    let mut model = load_model()?;
    let mut curves = Vec::new();
    for p in pieces.iter().filter(|p| holdout.contains(&p.id)) {
        let inputs = context_vectors(&p.features);
        let est = model.predict(&inputs)?;
        let Some(entry) = annotators.as_array().into_iter().flatten().find(|e| e["midi"].as_str() == Some(p.id.as_str())) else { continue };
        for r in entry["raw"].as_array().into_iter().flatten() {
            let get = |k: &str| r[k].as_array().map(|v| v.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect::<Vec<f32>>()).unwrap_or_default();
            let (v, ar) = (get("valence"), get("arousal"));
            let n = est.len().min(v.len()).min(ar.len());
            curves.push(ListenerCurve { estimates: est[..n].to_vec(), ratings: (0..n).map(|t| (v[t], ar[t])).collect() });
        }
    }
    if curves.is_empty() {
        bail!("{}: no listener curves for the held-out pieces", annotators_path.display());
    }
    let mut rows = Vec::new();
    eprintln!("personal calibration on {} listener curves of {} held-out pieces (calibrate on the first K bars, score the rest):", curves.len(), holdout.len());
    eprintln!("  K   MAE V raw / cal / hold   MAE A raw / cal / hold   CCC V raw / cal / hold   CCC A raw / cal / hold");
    for k in [2usize, 4, 8] {
        let (raw, cal, hold, used) = evaluate_listeners(&curves, k);
        eprintln!(
            "  {k}   {:.3} / {:.3} / {:.3}    {:.3} / {:.3} / {:.3}    {:+.3} / {:+.3} / {:+.3}   {:+.3} / {:+.3} / {:+.3}   ({used} curves)",
            raw.mae_valence, cal.mae_valence, hold.mae_valence, raw.mae_arousal, cal.mae_arousal, hold.mae_arousal,
            raw.ccc_valence, cal.ccc_valence, hold.ccc_valence, raw.ccc_arousal, cal.ccc_arousal, hold.ccc_arousal
        );
        rows.push(serde_json::json!({"calibration_bars": k, "curves": used, "uncalibrated": raw, "calibrated": cal, "hold_first_bars_mean": hold}));
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "baseline": "hold_first_bars_mean predicts the listener's own mean rating of the K calibration bars for every later bar (what the K bars alone tell, without the model)",
        "what": "per listener curve of a held-out VGMIDI piece: fit the calibration on its first K rated bars, score the remaining bars of the same curve against that listener (annotators.json ids are per-piece slots, not persistent people, so a listener cannot be followed across pieces)",
        "results": rows,
    }))?;
    match a.value("-o") {
        Some(out) => write_atomically(Path::new(out), json.as_bytes())?,
        None => println!("{json}"),
    }
    Ok(())
}
