//! `moodfader`, the command line: the same engine as the plugin, on files.
//!
//! ```text
//! moodfader analyze INPUT.mid [--json] [--csv FILE] [--plot FILE.png]
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
use moodfader_engine::midifile::read_midi_file;
use moodfader_engine::runtime::ensure_runtime;

const USAGE: &str = "\
moodfader — hears the mood of music (valence and arousal, each in [-1, 1])

USAGE:
    moodfader analyze INPUT.mid [--json] [--csv FILE] [--plot FILE.png]
        Per-bar valence/arousal following the file's meter, and an overall value.
        --json       print {\"bars\":[{\"bar\",\"start_s\",\"valence\",\"arousal\"}...],\"overall\":{...}}
        --csv FILE   also write the per-bar curve as CSV
        --plot FILE  also draw the curves on bands coloured by quadrant, as PNG
    moodfader export-features [--data DIR] -o OUT.csv
        Write the per-bar features of the labelled VGMIDI pieces for training
        (DIR defaults to $MOODFADER_DATA, else ../shared/data).
    moodfader export-tokens [--data DIR] [--transpose LIST] -o OUT.jsonl
        Write token sequences of POP909 and VGMIDI for training the continuation model, with
        per-bar attribute levels; LIST is comma-separated semitones (default 0).
    moodfader --help | --version

ENVIRONMENT:
    MOODFADER_ORT_DYLIB   path of libonnxruntime.so.1.31.1 (else the bundled or `cargo xtask setup` copy)
    MOODFADER_MODEL_DIR   folder with emotion_va.onnx and emotion_va.json (else the built-in model)

Not in this version yet: `continue`, `transcribe`, WAV input.";

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
        "continue" | "transcribe" => bail!("{cmd}: not available in this version"),
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
    let a = parse(args, &["--csv", "--plot"], &["--json"])?;
    let [input] = a.positional.as_slice() else {
        return Err(usage("analyze takes exactly one INPUT file"));
    };
    let path = Path::new(input);
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "mid" | "midi" | "smf" => {}
        "wav" => bail!("{}: audio input needs the transcriber, not available in this version", path.display()),
        _ => bail!("{}: unsupported file type (expected .mid)", path.display()),
    }
    let piece = read_midi_file(path)?;
    if piece.bars.is_empty() {
        bail!("{}: no notes to analyse", path.display());
    }
    let mut model = load_model()?;
    let analysis = analyze_piece(&piece, &mut model)?;
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
