//! `moodfader lab …`: training and measuring. The exporters the training scripts read, the
//! continuation's and the audio input's evaluations, personal calibration's evaluation and the
//! emotion bridge's fit. `cargo xtask train …` runs them; they read the data sets from `--data`,
//! else `$MOODFADER_DATA`, else `../shared/data`.
//!
//! Thread: main

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use moodfader_engine::Attribute;
use moodfader_engine::files::write_atomically;
use moodfader_engine::lab::export::{FLAT_VELOCITY, data_dir, export_emopia, export_tokens, export_vgmidi};
use moodfader_engine::listen::midifile::{parse_midi, read_midi_file};
use moodfader_engine::listen::transcribe::BasicPitch;

use crate::user::{load_model, non_negative, progress_bar};

/// The demo primer (our own material), built in so `eval-continuation` needs no files.
const DEMO_MID: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/demo.mid"));

/// Training-split pieces whose openings the bridge is calibrated on.
const BRIDGE_PRIMERS: usize = 24;
/// Openings of validation-split pieces the full evaluation also sweeps every fader on.
const HELDOUT_PRIMERS: usize = 8;
/// Default gain of the calibrated bridge: the estimator reading asked per unit of target. Chosen
/// on the evaluation grid (0.4 / 0.6 / 0.8 gave quadrant accuracy 0.94 / 1.00 / 0.92 on the quick grid).
const BRIDGE_GAIN: f32 = 0.6;

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    ExportFeatures(ExportFeaturesArgs),
    ExportTokens(ExportTokensArgs),
    EvalContinuation(EvalContinuationArgs),
    EvalFaithfulness(EvalFaithfulnessArgs),
    FitBridge(FitBridgeArgs),
    EvalAudio(EvalAudioArgs),
    EvalCalibration(EvalCalibrationArgs),
}

pub fn run(c: LabCommand) -> Result<()> {
    match c {
        LabCommand::ExportFeatures(a) => export_features(a),
        LabCommand::ExportTokens(a) => export_tokens_cmd(a),
        LabCommand::EvalContinuation(a) => eval_continuation(a),
        LabCommand::EvalFaithfulness(a) => eval_faithfulness(a),
        LabCommand::FitBridge(a) => fit_bridge(a),
        LabCommand::EvalAudio(a) => eval_audio(a),
        LabCommand::EvalCalibration(a) => eval_calibration(a),
    }
}

/// Where the data sets are: `--data DIR`, else `$MOODFADER_DATA`, else `../shared/data`.
#[derive(Debug, Args)]
struct DataArg {
    /// The data sets' folder (default $MOODFADER_DATA, else ../shared/data).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

impl DataArg {
    fn dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(data_dir)
    }
}

/// Write the per-bar features of the labelled VGMIDI pieces (and of the EMOPIA clips) for
/// training the emotion model.
#[derive(Debug, Args)]
pub struct ExportFeaturesArgs {
    #[command(flatten)]
    data: DataArg,
    /// The VGMIDI CSV file to write (per-bar listener ratings).
    #[arg(short = 'o', value_name = "OUT.csv")]
    out: PathBuf,
    /// Also write the EMOPIA clips (clip-level quadrant labels) to this CSV.
    #[arg(long, value_name = "EMOPIA.csv")]
    emopia: Option<PathBuf>,
    /// Set every note's velocity to the same value first, as a step sequencer plays.
    #[arg(long)]
    flat_velocity: bool,
}

fn export_features(a: ExportFeaturesArgs) -> Result<()> {
    let data = a.data.dir();
    if !data.join("vgmidi/labelled/labels.json").is_file() {
        bail!("{}: VGMIDI data not found there; set MOODFADER_DATA or pass --data", data.display());
    }
    let velocities = if a.flat_velocity { format!(", every velocity {FLAT_VELOCITY}") } else { String::new() };
    let report = export_vgmidi(&data, &a.out, a.flat_velocity).context("export failed")?;
    eprintln!(
        "exported {} bars of {} pieces to {}{velocities} ({} rated on a 4/4 grid, {} with bar counts that differ from their ratings, {} skipped)",
        report.num_bars,
        report.num_pieces,
        a.out.display(),
        report.num_fixed_meter,
        report.num_length_mismatches,
        report.skipped.len()
    );
    for s in &report.skipped {
        eprintln!("  skipped: {s}");
    }
    if let Some(out) = &a.emopia {
        if !data.join("emopia/labels.json").is_file() {
            bail!("{}: EMOPIA data not found there; set MOODFADER_DATA or pass --data", data.display());
        }
        let report = export_emopia(&data, out, a.flat_velocity).context("EMOPIA export failed")?;
        eprintln!(
            "exported {} bars of {} EMOPIA clips to {}{velocities} ({} skipped)",
            report.num_bars,
            report.num_pieces,
            out.display(),
            report.skipped.len()
        );
        for s in &report.skipped {
            eprintln!("  skipped: {s}");
        }
    }
    Ok(())
}

/// Write token sequences of Pop1K7, POP909, EMOPIA and VGMIDI, with per-bar attribute levels,
/// for training the continuation model.
#[derive(Debug, Args)]
pub struct ExportTokensArgs {
    #[command(flatten)]
    data: DataArg,
    /// Transpositions to export, comma-separated semitones in -24..=24.
    #[arg(long, value_name = "LIST", default_value = "0", allow_hyphen_values = true, value_parser = semitones)]
    transpose: Semitones,
    /// The JSON-lines file to write.
    #[arg(short = 'o', value_name = "OUT.jsonl")]
    out: PathBuf,
}

#[derive(Debug, Clone)]
struct Semitones(Vec<i8>);

fn semitones(list: &str) -> Result<Semitones, String> {
    list.split(',')
        .map(|t| t.trim().parse::<i8>().ok().filter(|v| (-24..=24).contains(v)))
        .collect::<Option<Vec<i8>>>()
        .map(Semitones)
        .ok_or_else(|| format!("'{list}' is not a comma-separated list of semitones in -24..=24"))
}

fn export_tokens_cmd(a: ExportTokensArgs) -> Result<()> {
    let report = export_tokens(&a.data.dir(), &a.out, &a.transpose.0).context("token export failed")?;
    eprintln!(
        "exported {} sequences ({} tokens) of {} pieces ({} for validation) to {}; {} skipped",
        report.num_sequences,
        report.num_tokens,
        report.num_pieces,
        report.num_valid_pieces,
        a.out.display(),
        report.skipped.len()
    );
    for s in &report.skipped {
        eprintln!("  skipped: {s}");
    }
    Ok(())
}

/// Measure how the continuation model obeys its faders and targets.
///
/// Default primers: the built-in demo's three moods and the whole demo; --heldout adds 8-bar
/// openings of eight pieces of the validation split, which the model never saw.
#[derive(Debug, Args)]
pub struct EvalContinuationArgs {
    /// The quick grid (fewer levels and seeds).
    #[arg(long)]
    quick: bool,
    /// Use this MIDI file as the only primer instead of the demo's.
    #[arg(long, value_name = "FILE.mid")]
    primer: Option<PathBuf>,
    /// Also measure on openings of validation-split pieces found in this data folder.
    #[arg(long, value_name = "DATA")]
    heldout: Option<PathBuf>,
    /// Measure on openings of this many training-split pieces of `--data` instead of the demo's
    /// (for tuning the sampler without looking at the held-out figures).
    #[arg(long, value_name = "N", conflicts_with = "primer")]
    training_split: Option<usize>,
    #[command(flatten)]
    data: DataArg,
    /// Sweep only these faders (comma-separated names; empty for none).
    #[arg(long, value_name = "FADER,..", value_parser = fader_mask)]
    only: Option<u8>,
    /// Skip the emotion grid.
    #[arg(long)]
    no_emotion: bool,
    /// Write every continuation of the emotion grid here as MIDI, with `trials.json` (target,
    /// primer, seed, the estimator's reading), for a separate judge (models/train/judge.py).
    #[arg(long, value_name = "DIR")]
    dump_emotion: Option<PathBuf>,
    /// Write the report (JSON) here instead of stdout.
    #[arg(short = 'o', value_name = "OUT.json")]
    out: Option<PathBuf>,
}

/// `--only`'s fader names as a bit mask over `Attribute::ALL`.
fn fader_mask(list: &str) -> Result<u8, String> {
    let mut mask = 0u8;
    for name in list.split(',').filter(|n| !n.is_empty()) {
        let at = Attribute::from_cli_name(name).ok_or_else(|| format!("no fader called {name:?}"))?;
        mask |= 1 << Attribute::ALL.iter().position(|&x| x == at).unwrap_or(0);
    }
    Ok(mask)
}

fn eval_continuation(a: EvalContinuationArgs) -> Result<()> {
    use moodfader_engine::lab::evaluate::{EvalConfig, Primer, demo_primers, evaluate_with, heldout_primers, training_primers};
    use moodfader_engine::play::continuation::ContinuationModel;

    let primers = match (&a.primer, a.training_split) {
        (Some(p), _) => {
            let piece = read_midi_file(p)?;
            vec![Primer { name: p.display().to_string(), notes: piece.notes, bars: piece.bars }]
        }
        (None, Some(n)) => {
            let primers = training_primers(&a.data.dir(), n, 8);
            if primers.is_empty() {
                bail!("{}: no corpus pieces found for training-split primers; set MOODFADER_DATA or pass --data", a.data.dir().display());
            }
            primers
        }
        (None, None) => demo_primers(&parse_midi(DEMO_MID).context("built-in demo")?),
    };
    let mut emotion = load_model()?;
    let mut model = ContinuationModel::load_default()?;
    let mut cfg = if a.quick { EvalConfig::QUICK } else { EvalConfig::FULL };
    if let Some(mask) = a.only {
        cfg.attributes = mask;
    }
    cfg.emotion = !a.no_emotion;
    let mut dump = EmotionDump::new(a.dump_emotion.as_deref())?;
    let report = evaluate_with(&mut model, &mut emotion, &primers, cfg, &mut |t| dump.add("demo", &primers[t.primer].name, t))?;
    // Also on pieces the model never saw (the validation split), when the data is given.
    let heldout_report = match &a.heldout {
        Some(dir) => {
            let primers = heldout_primers(dir, HELDOUT_PRIMERS, 8);
            if primers.is_empty() {
                bail!("{}: no corpus pieces (Pop1K7, POP909, EMOPIA, VGMIDI) found for held-out primers", dir.display());
            }
            let r = evaluate_with(&mut model, &mut emotion, &primers, EvalConfig { seeds: 1, ..cfg }, &mut |t| dump.add("heldout", &primers[t.primer].name, t))?;
            eprintln!("held-out primers ({}): {}", primers.len(), eval_summary(&r));
            Some(r)
        }
        None => None,
    };
    dump.finish()?;
    let mut value = serde_json::to_value(&report)?;
    if let Some(h) = &heldout_report {
        value["heldout_primers"] = serde_json::to_value(h)?;
    }
    let json = serde_json::to_string_pretty(&value)?;
    match &a.out {
        Some(out) => write_atomically(out, json.as_bytes())?,
        None => println!("{json}"),
    }
    eprintln!("{}, {:.0} tokens/s", eval_summary(&report), report.tokens_per_second);
    for (v, a, ev, ea, h, t) in &report.emotion_by_target {
        eprintln!("  target V {v:+.1} A {a:+.1}: heard V {ev:+.2} A {ea:+.2}, {h}/{t} in the quadrant");
    }
    for (mode, at) in &report.mode_ladder {
        eprintln!("  written in {mode:15} measures mode {at:.3}");
    }
    print_faders(if a.training_split.is_some() { "training-split primers" } else { "demo primers" }, &report);
    if let Some(h) = &heldout_report {
        print_faders("held-out primers", h);
    }
    Ok(())
}

/// `eval-continuation --dump-emotion`: the emotion grid's continuations as MIDI files and an index.
struct EmotionDump {
    dir: Option<PathBuf>,
    trials: Vec<serde_json::Value>,
}

impl EmotionDump {
    fn new(dir: Option<&std::path::Path>) -> Result<Self> {
        if let Some(d) = dir {
            std::fs::create_dir_all(d).with_context(|| format!("{}: cannot create", d.display()))?;
        }
        Ok(Self { dir: dir.map(PathBuf::from), trials: Vec::new() })
    }

    fn add(&mut self, set: &str, primer_name: &str, t: &moodfader_engine::lab::evaluate::EmotionTrial) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let file = format!("{set}_{:02}_{:+.1}_{:+.1}_{}.mid", t.primer, t.target.0, t.target.1, t.seed);
        let tempo = t.bars.first().map_or(120.0, |b| b.tempo_bpm);
        // Notes on the continuation's own timeline: its first bar starts the file.
        let start = t.bars.first().map_or(0.0, |b| b.start_beats);
        let notes: Vec<_> = t.notes.iter().map(|n| moodfader_engine::Note { onset_beats: n.onset_beats - start, ..*n }).collect();
        let len = t.bars.first().map_or(4.0, |b| b.len_beats);
        let meter = if (len - len.round()).abs() < 1e-9 { (len.round() as u32, 4) } else { ((len * 2.0).round() as u32, 8) };
        write_atomically(&dir.join(&file), &moodfader_engine::play::compose::notes_to_smf(&notes, tempo, meter))?;
        self.trials.push(serde_json::json!({
            "file": file, "set": set, "primer": primer_name, "seed": t.seed,
            "target": [t.target.0, t.target.1], "estimator": [t.reading.0, t.reading.1],
            "bars": t.bars.len(),
        }));
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        write_atomically(&dir.join("trials.json"), serde_json::to_string_pretty(&self.trials)?.as_bytes())
    }
}

/// Measure how close the unsteered continuation stays to where the music really goes.
///
/// Openings of validation-split pieces (which the model never saw) are cut into the bars heard and
/// the bars that really follow; the continuation (steer 0, every fader on auto) and the naive
/// answer "play the primer's last bars again" are both compared with what follows.
#[derive(Debug, Args)]
pub struct EvalFaithfulnessArgs {
    #[command(flatten)]
    data: DataArg,
    /// Pieces to open (spread evenly over the validation split).
    #[arg(long, value_name = "N", default_value_t = 40)]
    pieces: usize,
    /// Bars heard (the primer).
    #[arg(long, value_name = "BARS", default_value_t = 4)]
    primer_bars: usize,
    /// Bars continued and compared.
    #[arg(long, value_name = "BARS", default_value_t = 4)]
    bars: usize,
    /// Continuations per piece (seeds 1..=N).
    #[arg(long, value_name = "N", default_value_t = 3)]
    seeds: u64,
    /// Sampling temperature.
    #[arg(long, value_name = "T", default_value_t = 1.0)]
    temperature: f32,
    /// Diagnosis: sample without keeping to the heard key.
    #[arg(long)]
    no_key: bool,
    /// Gain of the pitch-class governor (default: the product's; 0 for none).
    #[arg(long, value_name = "G", value_parser = non_negative)]
    pitch_class_hold: Option<f32>,
    /// Most of the notes that may repeat a primer note (default: the product's; 1 for no limit).
    #[arg(long, value_name = "SHARE", value_parser = non_negative)]
    copy_limit: Option<f32>,
    /// Gain of the copy governor (default: the product's).
    #[arg(long, value_name = "G", value_parser = non_negative)]
    copy_gain: Option<f32>,
    /// Open pieces of the training split instead (where a sampler setting may be tuned).
    #[arg(long)]
    training_split: bool,
    /// Open pieces of one data set only.
    #[arg(long, value_name = "SET", value_parser = ["emopia", "pop1k7", "pop909", "vgmidi"])]
    data_set: Option<String>,
    /// Also report each piece's notes per bar and per pitch class (heard, real, continued).
    #[arg(long)]
    per_piece: bool,
    /// Write the report (JSON) here instead of stdout.
    #[arg(short = 'o', value_name = "OUT.json")]
    out: Option<PathBuf>,
}

fn eval_faithfulness(a: EvalFaithfulnessArgs) -> Result<()> {
    use moodfader_engine::lab::faithful::{faithfulness, split_openings};
    use moodfader_engine::play::compose::MAX_BARS;
    use moodfader_engine::play::continuation::ContinuationModel;

    if a.primer_bars == 0 || a.bars == 0 || a.bars > MAX_BARS as usize || a.seeds == 0 || a.pieces == 0 {
        bail!("--primer-bars, --pieces and --seeds must be at least 1 and --bars 1..={MAX_BARS}");
    }
    let data = a.data.dir();
    let openings = split_openings(&data, a.pieces, a.primer_bars, a.bars, !a.training_split, a.data_set.as_deref());
    if openings.is_empty() {
        let split = if a.training_split { "training" } else { "validation" };
        bail!("{}: no {split}-split piece of at least {} bars found", data.display(), a.primer_bars + a.bars);
    }
    moodfader_engine::runtime::ensure_runtime(None)?;
    let mut model = ContinuationModel::load_default()?;
    eprintln!("eval-faithfulness: {} pieces, {} bars heard, {} continued, {} seeds", openings.len(), a.primer_bars, a.bars, a.seeds);
    let bar = progress_bar(openings.len() as u64);
    let mut opts = moodfader_engine::play::compose::ContinueOptions { temperature: a.temperature, key_aware: !a.no_key, ..Default::default() };
    if let Some(g) = a.pitch_class_hold {
        opts.pitch_class_hold = g;
    }
    if let Some(x) = a.copy_limit {
        opts.copy_limit = x;
    }
    if let Some(g) = a.copy_gain {
        opts.copy_gain = g;
    }
    let mut r = faithfulness(&mut model, &openings, a.seeds, &opts, |i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    if !a.per_piece {
        r.per_piece.clear();
    }
    let json = serde_json::to_string_pretty(&r)?;
    match &a.out {
        Some(out) => write_atomically(out, json.as_bytes())?,
        None => println!("{json}"),
    }
    for (what, c) in [("continuation", &r.continuation), ("primer again", &r.replay_primer), ("real next", &r.real_next)] {
        eprintln!(
            "  {what:13} pitch-class overlap {:.3}, density |log2| error {:.3} (against the heard bars {:.3}), copies the primer {:.3} ({} notes)",
            c.pitch_class_overlap, c.density_log2_error, c.density_vs_heard, c.copy_fraction, c.notes
        );
    }
    for (set, c, again) in &r.by_data_set {
        eprintln!(
            "  {set:13} overlap {:.3} (primer again {:.3}), density error {:.3} ({:.3})",
            c.pitch_class_overlap, again.pitch_class_overlap, c.density_log2_error, again.density_log2_error
        );
    }
    Ok(())
}

/// Every fader's figures: the headline first (pooled over primers, seeds and levels, in the
/// attribute's own unit), then the per-level means of the fader scale.
fn print_faders(what: &str, r: &moodfader_engine::lab::evaluate::EvalReport) {
    if r.attributes.is_empty() {
        return;
    }
    eprintln!("faders on {what} ({}): pooled R2 in units, mean {:.3}, lowest {:.3}", r.primers.len(), r.mean_pooled_r2_units, r.min_pooled_r2_units);
    for at in &r.attributes {
        eprintln!(
            "  {:15} pooled R2 {:.3}, {:+.3} {} over the fader (rmse {:.3}, of which between primers {:.3})  level means R2 {:.3}  consistency {:.3}  others |r| {:.2}",
            at.attribute,
            at.pooled_r2_units,
            at.pooled_slope_units,
            at.unit,
            at.pooled_rmse_units,
            at.primer_offset_rms_units,
            at.linearity_r2,
            at.consistency,
            at.others_mean_abs_r
        );
    }
}

/// One line of an evaluation's headline figures; the fader and emotion parts only when they were measured.
fn eval_summary(r: &moodfader_engine::lab::evaluate::EvalReport) -> String {
    let mut parts = Vec::new();
    if !r.attributes.is_empty() {
        parts.push(format!("fader R2 pooled in units (mean) {:.3}, lowest {:.3}, level means R2 (mean) {:.3}, consistency (mean) {:.3}", r.mean_pooled_r2_units, r.min_pooled_r2_units, r.mean_linearity_r2, r.mean_consistency));
    }
    if r.emotion_trials > 0 {
        parts.push(format!("emotion quadrant accuracy {:.3} ({} trials)", r.emotion_quadrant_accuracy, r.emotion_trials));
    }
    parts.push(format!("in key {:.3}, notes past end {}", r.in_key_fraction, r.notes_past_end));
    parts.join(", ")
}

/// Calibrate the emotion bridge by synthesis.
///
/// N continuations of openings of training pieces with every fader at random, read back by the
/// estimator; fits how the reading follows the faders and, with --write, stores it in the
/// continuation manifest (the bridge then asks for the fader values nearest the listeners' whose
/// continuation reads as GAIN times the target; W weighs staying near the listeners' values).
#[derive(Debug, Args)]
pub struct FitBridgeArgs {
    #[command(flatten)]
    data: DataArg,
    /// Continuations to write and read back (at least 64).
    #[arg(long, value_name = "N", default_value_t = 1600, value_parser = at_least_64)]
    samples: usize,
    /// The estimator reading asked per unit of target.
    #[arg(long, value_name = "G", default_value_t = BRIDGE_GAIN, allow_negative_numbers = true, value_parser = non_negative)]
    gain: f32,
    /// Weight of staying near the listeners' fader values.
    #[arg(long, value_name = "W", default_value_t = 0.05, allow_negative_numbers = true, value_parser = non_negative)]
    prior_weight: f32,
    /// Store the fit in this continuation manifest (models/continuation.json).
    #[arg(long, value_name = "MANIFEST")]
    write: Option<PathBuf>,
    /// Also write every sample (faders asked, attributes measured, reading) as CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
}

fn at_least_64(s: &str) -> Result<usize, String> {
    s.parse::<usize>().ok().filter(|n| *n >= 64).ok_or_else(|| format!("'{s}' is not a whole number >= 64"))
}

fn fit_bridge(a: FitBridgeArgs) -> Result<()> {
    use moodfader_engine::lab::evaluate::{synthesis_samples, training_primers};
    use moodfader_engine::play::continuation::ContinuationModel;
    use moodfader_engine::play::steering::ForwardModel;

    let (data, n, gain, prior_weight) = (a.data.dir(), a.samples, a.gain, a.prior_weight);
    let primers = training_primers(&data, BRIDGE_PRIMERS, 8);
    if primers.is_empty() {
        bail!("{}: no corpus pieces (Pop1K7, POP909, EMOPIA, VGMIDI) found to calibrate on", data.display());
    }
    let mut emotion = load_model()?;
    let mut model = ContinuationModel::load_default()?;
    eprintln!("fit-bridge: {n} continuations of 4 bars on {} training primers, every fader at random", primers.len());
    let bar = progress_bar(n as u64);
    let samples = synthesis_samples(&mut model, &mut emotion, &primers, n, 4, 7, |i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    if let Some(csv) = &a.csv {
        let mut text = String::from("primer");
        for at in Attribute::ALL {
            text += &format!(",asked_{}", at.cli_name());
        }
        for at in Attribute::ALL {
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
        write_atomically(csv, text.as_bytes())?;
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
        let terms: Vec<String> = Attribute::ALL.iter().zip(&fit.weights[r]).map(|(at, w)| format!("{} {w:+.3}", at.cli_name())).collect();
        eprintln!("  {name} = {:+.3} {}", fit.intercept[r], terms.join(" "));
    }
    if let Some(path) = &a.write {
        let shown = path.display();
        let text = std::fs::read_to_string(path).with_context(|| format!("{shown}: cannot read"))?;
        let mut manifest: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{shown}: not JSON"))?;
        let bridge = manifest.get_mut("bridge").and_then(|b| b.as_object_mut()).ok_or_else(|| anyhow!("{shown}: has no bridge object"))?;
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
        write_atomically(path, (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes())?;
        eprintln!("  wrote the forward model into {shown}");
    }
    Ok(())
}

/// How the estimator hears audio.
///
/// Labelled VGMIDI pieces rendered by the built-in voice and transcribed, against the same pieces
/// read from MIDI, and what audio cues (loudness, onset rate, flux, brightness) add; scored on
/// the emotion model's held-out pieces.
#[derive(Debug, Args)]
pub struct EvalAudioArgs {
    #[command(flatten)]
    data: DataArg,
    /// Training pieces for the audio cues' fit.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    train: u32,
    /// Held-out pieces to score on.
    #[arg(long, value_name = "N", default_value_t = 33, value_parser = clap::value_parser!(u32).range(1..))]
    test: u32,
    /// Write the report (JSON) here too.
    #[arg(short = 'o', value_name = "OUT.json")]
    out: Option<PathBuf>,
    /// Also write the report as the live arousal map (models/audio_cues.json).
    #[arg(long, value_name = "FILE")]
    write_map: Option<PathBuf>,
}

fn eval_audio(a: EvalAudioArgs) -> Result<()> {
    let mut emo = load_model()?;
    let mut bp = BasicPitch::load_default(None)?;
    let bar = progress_bar(0);
    let report = moodfader_engine::lab::audio_eval::eval_audio_input(&a.data.dir(), &mut emo, &mut bp, a.train as usize, a.test as usize, |i, n, id| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
        bar.set_message(id.to_string());
    })?;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(map) = &a.write_map {
        write_atomically(map, json.as_bytes())?;
    }
    if let Some(out) = &a.out {
        write_atomically(out, json.as_bytes())?;
    }
    println!("{json}");
    Ok(())
}

/// What personal calibration buys on VGMIDI's individual listener curves (held-out pieces).
#[derive(Debug, Args)]
pub struct EvalCalibrationArgs {
    #[command(flatten)]
    data: DataArg,
    /// Write the report (JSON) here instead of stdout.
    #[arg(short = 'o', value_name = "OUT.json")]
    out: Option<PathBuf>,
}

fn eval_calibration(a: EvalCalibrationArgs) -> Result<()> {
    use moodfader_engine::feel::calibration::{ListenerCurve, evaluate_listeners};
    use moodfader_engine::feel::emotion::EMBEDDED_MANIFEST;
    use moodfader_engine::feel::features::context_vectors;

    let data = a.data.dir();
    let annotators_path = data.join("vgmidi/labelled/annotators.json");
    let text = std::fs::read_to_string(&annotators_path)
        .with_context(|| format!("{}: cannot read listener curves (set MOODFADER_DATA or --data)", annotators_path.display()))?;
    let annotators: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", annotators_path.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(EMBEDDED_MANIFEST)?;
    let holdout: std::collections::HashSet<String> =
        manifest["holdout_pieces"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    let mut report = moodfader_engine::lab::export::ExportReport::default();
    let pieces = moodfader_engine::lab::export::labelled_pieces(&data, &mut report)?;
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
    match &a.out {
        Some(out) => write_atomically(out, json.as_bytes())?,
        None => println!("{json}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fader_names_and_transpositions_parse() {
        assert_eq!(fader_mask("").unwrap(), 0);
        assert_eq!(fader_mask(Attribute::ALL[1].cli_name()).unwrap(), 0b10);
        assert!(fader_mask("loudness-war").unwrap_err().contains("loudness-war"));
        assert_eq!(semitones("-2,0,3").unwrap().0, vec![-2, 0, 3]);
        assert!(semitones("0,30").is_err());
    }
}
