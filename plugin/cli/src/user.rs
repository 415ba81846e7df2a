//! The user's commands, the product's contract: `analyze`, `continue`, `transcribe` and `render`.
//!
//! Thread: main

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgMatches, Args, FromArgMatches};
use moodfader_engine::Attribute;
use moodfader_engine::feel::analyze::{Analysis, analyze_piece};
use moodfader_engine::feel::emotion::EmotionModel;
use moodfader_engine::files::write_atomically;
use moodfader_engine::listen::midifile::{parse_midi, read_midi_file};
use moodfader_engine::listen::transcribe::{BasicPitch, NoteParams, TranscribedNote, transcribe_offline, transcription_smf};
use moodfader_engine::listen::wav::read_wav;
use moodfader_engine::runtime::ensure_runtime;

/// A value parser for numbers in `[lo, hi]` (NaN and infinities refused).
pub fn number_in(lo: f32, hi: f32) -> impl Fn(&str) -> Result<f32, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.parse::<f32>() {
        Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
        _ => Err(format!("'{s}' is not a number in [{lo}, {hi}]")),
    }
}

/// A value parser for numbers `>= 0`.
pub fn non_negative(s: &str) -> Result<f32, String> {
    s.parse::<f32>().ok().filter(|x| x.is_finite() && *x >= 0.0).ok_or_else(|| format!("'{s}' is not a number >= 0"))
}

/// The emotion model with ONNX Runtime loaded.
pub fn load_model() -> Result<EmotionModel> {
    ensure_runtime(None)?;
    EmotionModel::load_default()
}

fn tempo(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && (20.0..=400.0).contains(t))
        .ok_or_else(|| format!("'{s}' is not a tempo in 20..=400 BPM"))
}

/// Per-bar valence/arousal following the file's meter, and an overall value.
///
/// A WAV file is transcribed first (as `transcribe` does; bars of 4/4 at --tempo BPM). A FOLDER is
/// analysed file by file (a progress bar on a terminal; one row per file, or every curve with
/// --json / --csv).
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A MIDI file (.mid), a WAV file (.wav) or a folder of MIDI files.
    #[arg(value_name = "INPUT")]
    input: PathBuf,
    /// Print {"bars":[{"bar","start_s","valence","arousal"}...],"overall":{...}} on stdout.
    #[arg(long)]
    json: bool,
    /// Also write the per-bar curve as CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Also draw the curves on bands coloured by quadrant, as PNG (one file only).
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// Adapt to a listener: rows 'bar,valence,arousal' rating a few bars as they feel to you;
    /// every bar is then read through your calibration (one file only).
    #[arg(long, value_name = "RATINGS.csv")]
    calibrate: Option<PathBuf>,
    /// Tempo of a WAV file's bars (a WAV has no tempo map).
    #[arg(long, value_name = "BPM", default_value = "120", value_parser = tempo)]
    tempo: f64,
}

pub fn analyze(a: AnalyzeArgs) -> Result<()> {
    let path = a.input.as_path();
    if path.is_dir() {
        if a.plot.is_some() || a.calibrate.is_some() {
            bail!("--plot and --calibrate take one file, not a folder");
        }
        return analyze_folder(path, a.csv.as_deref(), a.json);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let piece = match ext.as_str() {
        "mid" | "midi" | "smf" => read_midi_file(path)?,
        "wav" | "wave" => {
            let notes = transcribe_file(path, false)?;
            let smf = transcription_smf(&notes, a.tempo);
            parse_midi(&smf).with_context(|| format!("{}: transcription", path.display()))?
        }
        _ => bail!("{}: unsupported file type (expected .mid or .wav)", path.display()),
    };
    if piece.bars.is_empty() {
        bail!("{}: no notes to analyse", path.display());
    }
    let mut model = load_model()?;
    let mut analysis = analyze_piece(&piece, &mut model)?;
    if let Some(ratings) = &a.calibrate {
        calibrate(&mut analysis, ratings)?;
    }
    if let Some(csv) = &a.csv {
        write_atomically(csv, to_csv(&analysis).as_bytes())?;
    }
    if let Some(png) = &a.plot {
        let title = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        crate::plot::plot_curve(&analysis, &title, png)?;
    }
    if a.json {
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

/// Transcribes a WAV file with Basic Pitch (the reference's settings).
fn transcribe_file(path: &Path, pitch_bends: bool) -> Result<Vec<TranscribedNote>> {
    let audio = read_wav(path)?;
    ensure_runtime(None)?;
    // An offline tool may use every core (the plugin's sessions use one).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut model = BasicPitch::load_default_with_threads(None, threads)?;
    let params = NoteParams { pitch_bends, ..NoteParams::default() };
    transcribe_offline(&mut model, &audio.samples, audio.sample_rate_hz, &params)
        .with_context(|| format!("{}: transcription failed", path.display()))
}

/// Audio to notes with Basic Pitch.
///
/// The basic-pitch 0.4.0 model and its post-processing: onset 0.5, frame 0.3, notes of at least
/// 127.7 ms, pitch bends on notes that overlap no other. WAV at any rate from 8 to 384 kHz, any
/// channel count, 8/16/24/32-bit PCM or 32-bit float.
#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// The audio, a WAV file.
    #[arg(value_name = "INPUT.wav")]
    input: PathBuf,
    /// The MIDI file to write, at --tempo BPM in 4/4.
    #[arg(short = 'o', value_name = "OUT.mid")]
    out: PathBuf,
    /// Tempo of OUT.mid (120, like basic-pitch, unless given).
    #[arg(long, value_name = "BPM", default_value = "120", value_parser = tempo)]
    tempo: f64,
    /// Also list the notes as CSV (start_s,end_s,pitch,velocity).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Leave out the pitch bends.
    #[arg(long)]
    no_pitch_bends: bool,
}

pub fn transcribe_cmd(a: TranscribeArgs) -> Result<()> {
    let notes = transcribe_file(&a.input, !a.no_pitch_bends)?;
    write_atomically(&a.out, &transcription_smf(&notes, a.tempo))?;
    if let Some(csv) = &a.csv {
        let mut s = String::from("start_s,end_s,pitch,velocity\n");
        for n in &notes {
            s.push_str(&format!("{:.6},{:.6},{},{}\n", n.start_s, n.end_s, n.pitch, n.velocity));
        }
        write_atomically(csv, s.as_bytes())?;
    }
    eprintln!("{}: {} notes -> {}", a.input.display(), notes.len(), a.out.display());
    Ok(())
}

/// Play a MIDI file with the built-in voice into a mono 16-bit WAV: test audio for the transcriber.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The MIDI file to play.
    #[arg(value_name = "INPUT.mid")]
    input: PathBuf,
    /// The WAV file to write.
    #[arg(short = 'o', value_name = "OUT.wav")]
    out: PathBuf,
    /// Sample rate in Hz.
    #[arg(long, value_name = "HZ", default_value_t = 44_100, value_parser = clap::value_parser!(u32).range(8_000..=192_000))]
    rate: u32,
}

pub fn render_cmd(a: RenderArgs) -> Result<()> {
    let piece = read_midi_file(&a.input)?;
    let samples = moodfader_engine::rt::synth::render_notes(&piece.notes, a.rate);
    write_atomically(&a.out, &moodfader_engine::rt::synth::wav_bytes(&samples, a.rate))
}

/// `analyze FOLDER`: every MIDI file in it (sorted), a progress bar on a terminal, one row per
/// file (or the per-bar curves with --json / --csv). A file that cannot be read is reported and
/// skipped; the exit code is then 2, after the others are written.
fn analyze_folder(dir: &Path, csv: Option<&Path>, json: bool) -> Result<()> {
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
    let bar = progress_bar(files.len() as u64);
    let (mut results, mut failed) = (Vec::new(), Vec::new());
    let mut csv_text = String::from("file,bar,start_s,valence,arousal\n");
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        bar.set_message(name.clone());
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
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(out) = csv {
        write_atomically(out, csv_text.as_bytes())?;
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

/// A progress bar on stderr (drawn only on a terminal) with a message after the count.
pub fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} {wide_msg}") {
        bar.set_style(style.progress_chars("#>."));
    }
    bar
}

/// Reads `bar,valence,arousal` rows (a listener's own ratings of a few bars; a header line is
/// allowed), fits the personal calibration on those bars and applies it to every bar.
fn calibrate(analysis: &mut Analysis, path: &Path) -> Result<()> {
    use moodfader_engine::feel::calibration::Calibration;
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

/// Sample rate of the WAV files the command line writes.
const WAV_RATE: u32 = 44_100;

/// Play on from the primer for N bars, in its key, tempo and meter, steered toward a
/// valence/arousal target and attribute targets.
///
/// A target not given follows what was heard. OUT.mid holds only the continuation: its first bar
/// starts at the bar line after the primer's end, so it lines up when placed where the primer
/// starts. The same seed gives the same file.
#[derive(Debug, Args)]
pub struct ContinueArgs {
    /// The music to continue, a MIDI file.
    #[arg(value_name = "PRIMER.mid")]
    input: PathBuf,
    /// Bars to write (1-16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    bars: u32,
    /// Valence target in [-1, 1] (negative to positive).
    #[arg(long, value_name = "V", allow_negative_numbers = true, value_parser = number_in(-1.0, 1.0))]
    pub valence: Option<f32>,
    /// Arousal target in [-1, 1] (calm to energetic).
    #[arg(long, value_name = "A", allow_negative_numbers = true, value_parser = number_in(-1.0, 1.0))]
    arousal: Option<f32>,
    #[command(flatten)]
    faders: Faders,
    /// Blend of heard (0) and target (1); 1 when --valence or --arousal is given, else 0.
    #[arg(long, value_name = "S", value_parser = number_in(0.0, 1.0))]
    steer: Option<f32>,
    /// Sampling temperature (0.05-3).
    #[arg(long, value_name = "T", default_value = "1.0", value_parser = number_in(0.05, 3.0))]
    temperature: f32,
    /// Random seed.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// The MIDI file to write.
    #[arg(short = 'o', value_name = "OUT.mid")]
    out: PathBuf,
    /// Also render the continuation (from its first bar) with the preview voice, 44.1 kHz mono.
    #[arg(long, value_name = "OUT.wav")]
    wav: Option<PathBuf>,
}

/// The eight attribute faders as `--NAME X` options, from the engine's one list of attributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faders([Option<f32>; 8]);

impl FromArgMatches for Faders {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Faders(Attribute::ALL.map(|a| m.get_one::<f32>(a.cli_name()).copied())))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for Faders {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Attribute::ALL.into_iter().fold(cmd, |cmd, a| {
            let (lo, hi) = a.ends();
            cmd.arg(
                Arg::new(a.cli_name())
                    .long(a.cli_name())
                    .value_name("X")
                    .value_parser(number_in(0.0, 1.0))
                    .help(format!("{} target in [0, 1] ({lo} to {hi}; 0 and 1 are the training data's 5th and 95th percentiles)", a.label())),
            )
        })
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

pub fn continue_cmd(a: ContinueArgs) -> Result<()> {
    use moodfader_engine::play::compose::{ContinueOptions, continue_piece, notes_to_smf};
    use moodfader_engine::play::continuation::ContinuationModel;
    use moodfader_engine::play::steering::SteerRequest;

    let path = a.input.as_path();
    let piece = read_midi_file(path)?;
    if piece.bars.is_empty() {
        bail!("{}: no notes to continue", path.display());
    }
    let (valence, arousal) = (a.valence, a.arousal);
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
    let steer = a.steer.unwrap_or(if valence.is_some() || arousal.is_some() { 1.0 } else { 0.0 });
    ensure_runtime(None)?;
    let mut model = ContinuationModel::load_default()?;
    let opts = ContinueOptions {
        bars: a.bars,
        steer: SteerRequest { target_valence: tv, target_arousal: ta, steer, manual: a.faders.0 },
        temperature: a.temperature,
        seed: a.seed,
        ..Default::default()
    };
    let c = continue_piece(&mut model, &piece, &opts).with_context(|| format!("{}: cannot continue", path.display()))?;
    write_atomically(&a.out, &notes_to_smf(&c.notes, c.tempo_bpm, c.meter))?;
    if let Some(wav) = &a.wav {
        // The WAV holds the continuation from its first bar line, played by the preview voice.
        let t0 = c.bars.first().map_or(0.0, |b| b.start_s);
        let shifted: Vec<_> = c.notes.iter().map(|n| moodfader_engine::Note { onset_s: n.onset_s - t0, ..*n }).collect();
        let samples = moodfader_engine::rt::synth::render_notes(&shifted, WAV_RATE);
        write_atomically(wav, &moodfader_engine::rt::synth::wav_bytes(&samples, WAV_RATE))?;
    }
    let names = Attribute::ALL.map(|a| a.cli_name());
    let fmt = |x: &[f32; 8]| names.iter().zip(x).map(|(n, v)| format!("{n} {v:.2}")).collect::<Vec<_>>().join(", ");
    eprintln!(
        "wrote {}: {} notes in {} bars at {:.1} BPM {}/{}, key {}; {:.0} ms ({} tokens)\n  heard:  {}\n  target: {}",
        a.out.display(),
        c.notes.len(),
        a.bars,
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
