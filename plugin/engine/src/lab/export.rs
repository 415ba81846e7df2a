//! The training exporter: per-bar features of the labelled VGMIDI pieces and of the EMOPIA clips,
//! written as CSV with a JSON sidecar naming the feature spec, as played or with every velocity
//! flattened (a step sequencer's notes). `models/train` reads only this output, so the model is
//! trained on exactly the features the plugin computes.
//!
//! Thread: command line

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::feel::features::{FEATURE_NAMES, FEATURE_SPEC_VERSION, Features, features_for_bars};
use crate::files::write_atomically;
use crate::listen::midifile::{Piece, read_midi_file};
use crate::listen::notes::BarWindow;

/// The velocity every note gets in the flattened ("no dynamics") variant of an export.
pub const FLAT_VELOCITY: u8 = 80;

/// Sets every note's velocity to [`FLAT_VELOCITY`], as a step sequencer plays.
pub fn flatten_velocities(notes: &mut [crate::listen::notes::Note]) {
    for n in notes {
        n.velocity = FLAT_VELOCITY;
    }
}

#[derive(Debug, Deserialize)]
struct LabelEntry {
    midi: String,
    valence: Vec<f32>,
    arousal: Vec<f32>,
    #[serde(default)]
    valence_std: Vec<f32>,
    #[serde(default)]
    arousal_std: Vec<f32>,
}

/// What the export did.
#[derive(Debug, Default)]
pub struct ExportReport {
    pub num_pieces: usize,
    pub num_bars: usize,
    /// Pieces with fewer bars in the MIDI file than rated measures (the extra ratings are dropped;
    /// more bars than ratings is normal: trailing silence).
    pub num_length_mismatches: usize,
    /// Pieces whose ratings follow a 4/4 grid rather than the file's meter.
    pub num_fixed_meter: usize,
    pub skipped: Vec<String>,
}

/// Finds the data folder: `MOODFADER_DATA`, else `../shared/data` next to the workspace.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MOODFADER_DATA").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

/// One rated piece with its per-bar features, aligned with its ratings.
#[derive(Debug, Clone)]
pub struct LabelledPiece {
    /// The labels' `midi` path, the piece's id.
    pub id: String,
    pub bars: Vec<BarWindow>,
    pub features: Vec<Features>,
    pub valence: Vec<f32>,
    pub arousal: Vec<f32>,
    pub valence_std: Vec<f32>,
    pub arousal_std: Vec<f32>,
}

/// Reads every labelled VGMIDI piece and computes its per-bar features (the same code as the
/// plugin), aligned with the rated measures.
pub fn labelled_pieces(data: &Path, report: &mut ExportReport) -> Result<Vec<LabelledPiece>> {
    labelled_pieces_with(data, report, false)
}

/// A labelled MIDI file (velocities flattened when `flat`); `None`, with the reason in the
/// report's skipped list, when it cannot be read.
fn read_piece(path: &Path, report: &mut ExportReport, flat: bool) -> Option<Piece> {
    match read_midi_file(path) {
        Ok(mut piece) => {
            if flat {
                flatten_velocities(&mut piece.notes);
            }
            Some(piece)
        }
        Err(err) => {
            report.skipped.push(format!("{err:#}"));
            None
        }
    }
}

/// A data set's `labels.json`: a non-empty JSON list of `T`.
fn read_labels<T: serde::de::DeserializeOwned>(path: &Path, set: &str) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read {set} labels (is the data set there?)", path.display()))?;
    let entries: Vec<T> = serde_json::from_str(&text).with_context(|| format!("{}: not valid labels", path.display()))?;
    if entries.is_empty() {
        bail!("{}: no labelled {set} music", path.display());
    }
    Ok(entries)
}

/// [`labelled_pieces`], with every velocity flattened first when `flat`.
pub fn labelled_pieces_with(data: &Path, report: &mut ExportReport, flat: bool) -> Result<Vec<LabelledPiece>> {
    let labelled = data.join("vgmidi/labelled");
    let entries: Vec<LabelEntry> = read_labels(&labelled.join("labels.json"), "VGMIDI")?;
    let mut out = Vec::new();
    for e in entries {
        let path = labelled.join(&e.midi);
        let Some(piece) = read_piece(&path, report, flat) else { continue };
        // VGMIDI counts measures in the file's meter for most pieces, but in 4/4 for a few with
        // meter changes; use whichever grid covers the rated measures.
        let mut bars = piece.bars.clone();
        if bars.len() < e.valence.len() {
            let four_four = piece.bars_in_fixed_meter(4, 4);
            if four_four.len() >= e.valence.len() {
                bars = four_four;
                report.num_fixed_meter += 1;
            } else {
                report.num_length_mismatches += 1;
            }
        }
        let features = features_for_bars(&piece.notes, &bars);
        let n = features.len().min(e.valence.len()).min(e.arousal.len());
        let pad = |v: &Vec<f32>| (0..n).map(|t| v.get(t).copied().unwrap_or(0.0)).collect::<Vec<f32>>();
        report.num_pieces += 1;
        report.num_bars += n;
        out.push(LabelledPiece {
            id: e.midi.clone(),
            bars: bars[..n].to_vec(),
            features: features[..n].to_vec(),
            valence: e.valence[..n].to_vec(),
            arousal: e.arousal[..n].to_vec(),
            valence_std: pad(&e.valence_std),
            arousal_std: pad(&e.arousal_std),
        });
    }
    Ok(out)
}

/// Writes `out_csv` (and `out_csv.json`) with one row per rated bar of every labelled piece
/// (velocities flattened when `flat`).
pub fn export_vgmidi(data: &Path, out_csv: &Path, flat: bool) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    let pieces = labelled_pieces_with(data, &mut report, flat)?;
    let mut csv = String::new();
    csv.push_str("piece,bar,start_s");
    for name in FEATURE_NAMES {
        csv.push_str(&format!(",f_{name}"));
    }
    csv.push_str(",valence,arousal,valence_std,arousal_std\n");
    for p in &pieces {
        let id = p.id.replace(',', ";");
        for t in 0..p.features.len() {
            csv.push_str(&format!("{id},{t},{:.6}", p.bars[t].start_s));
            for v in p.features[t] {
                csv.push_str(&format!(",{v:.6}"));
            }
            csv.push_str(&format!(
                ",{:.6},{:.6},{:.6},{:.6}\n",
                p.valence[t], p.arousal[t], p.valence_std[t], p.arousal_std[t]
            ));
        }
    }
    write_with_sidecar(out_csv, &csv, "VGMIDI labelled", flat, &report)?;
    Ok(report)
}

/// Writes `csv` to `out_csv` and the feature spec beside it (`out_csv.json`).
fn write_with_sidecar(out_csv: &Path, csv: &str, source: &str, flat: bool, report: &ExportReport) -> Result<()> {
    let sidecar = serde_json::json!({
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "features": FEATURE_NAMES,
        "long_mean": {
            "bars": crate::feel::features::LONG_MEAN_BARS,
            "novelty_threshold": crate::feel::features::LONG_MEAN_NOVELTY,
            "novelty_scale": crate::feel::features::NOVELTY_SCALE,
            "novelty_features": crate::feel::features::NOVELTY_FEATURES,
        },
        "source": source,
        "velocities": if flat { format!("flattened: every note at {FLAT_VELOCITY}") } else { "as played".to_string() },
        "num_pieces": report.num_pieces,
        "num_bars": report.num_bars,
    });
    write_atomically(out_csv, csv.as_bytes())?;
    let mut side = out_csv.as_os_str().to_owned();
    side.push(".json");
    write_atomically(Path::new(&side), serde_json::to_string_pretty(&sidecar)?.as_bytes())?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct EmopiaLabel {
    midi: String,
    song: String,
    quadrant: u8,
    valence_sign: i8,
    arousal_sign: i8,
}

/// One EMOPIA clip with its per-bar features and its clip-level label.
#[derive(Debug, Clone)]
pub struct EmopiaClip {
    /// The labels' `midi` path, the clip's id.
    pub id: String,
    /// Clips of one song share it: split by song, never by clip.
    pub song: String,
    /// 1 = V+A+, 2 = V-A+, 3 = V-A-, 4 = V+A-.
    pub quadrant: u8,
    pub valence_sign: i8,
    pub arousal_sign: i8,
    pub bars: Vec<BarWindow>,
    pub features: Vec<Features>,
}

/// Reads every EMOPIA clip (velocities flattened when `flat`) with its per-bar features on the
/// file's own grid: 120 BPM 4/4 whatever was played, which is what `moodfader analyze` and a
/// host with the metronome off give the estimator for free-time performance.
pub fn emopia_clips(data: &Path, report: &mut ExportReport, flat: bool) -> Result<Vec<EmopiaClip>> {
    let dir = data.join("emopia");
    let entries: Vec<EmopiaLabel> = read_labels(&dir.join("labels.json"), "EMOPIA")?;
    let mut out = Vec::new();
    for e in entries {
        if !(1..=4).contains(&e.quadrant) || e.valence_sign.abs() != 1 || e.arousal_sign.abs() != 1 {
            report.skipped.push(format!("{}: label out of range", e.midi));
            continue;
        }
        let Some(piece) = read_piece(&dir.join(&e.midi), report, flat) else { continue };
        if piece.bars.is_empty() {
            report.skipped.push(format!("{}: no bars", e.midi));
            continue;
        }
        let features = features_for_bars(&piece.notes, &piece.bars);
        report.num_pieces += 1;
        report.num_bars += features.len();
        out.push(EmopiaClip {
            id: e.midi,
            song: e.song,
            quadrant: e.quadrant,
            valence_sign: e.valence_sign,
            arousal_sign: e.arousal_sign,
            bars: piece.bars,
            features,
        });
    }
    Ok(out)
}

/// Writes `out_csv` (and `out_csv.json`) with one row per bar of every EMOPIA clip: `clip`,
/// `song`, `bar`, `start_s`, the `f_` features, then the clip's `quadrant`, `valence_sign` and
/// `arousal_sign` on each of its rows.
pub fn export_emopia(data: &Path, out_csv: &Path, flat: bool) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    let clips = emopia_clips(data, &mut report, flat)?;
    let mut csv = String::from("clip,song,bar,start_s");
    for name in FEATURE_NAMES {
        csv.push_str(&format!(",f_{name}"));
    }
    csv.push_str(",quadrant,valence_sign,arousal_sign\n");
    for c in &clips {
        let (id, song) = (c.id.replace(',', ";"), c.song.replace(',', ";"));
        for (t, f) in c.features.iter().enumerate() {
            csv.push_str(&format!("{id},{song},{t},{:.6}", c.bars[t].start_s));
            for v in f {
                csv.push_str(&format!(",{v:.6}"));
            }
            csv.push_str(&format!(",{},{},{}\n", c.quadrant, c.valence_sign, c.arousal_sign));
        }
    }
    write_with_sidecar(out_csv, &csv, "EMOPIA clips (the file's 120 BPM grid)", flat, &report)?;
    Ok(report)
}

/// What a token export did.
#[derive(Debug, Default)]
pub struct TokenReport {
    pub num_pieces: usize,
    pub num_sequences: usize,
    pub num_tokens: usize,
    pub num_valid_pieces: usize,
    pub skipped: Vec<String>,
}

/// One piece of the continuation corpus.
#[derive(Debug, Clone)]
pub struct CorpusEntry {
    pub path: PathBuf,
    /// The path relative to the data folder: the piece's id in the token export.
    pub id: String,
    /// Pieces of one group fall on one side of the split: the song for EMOPIA (its clips share a
    /// song), the piece itself elsewhere.
    pub group: String,
    pub valid: bool,
    /// Performance MIDI without a bar grid (EMOPIA): read on an estimated tempo and downbeat.
    pub free_time: bool,
}

/// Every MIDI file of the continuation corpus (Pop1K7, POP909, EMOPIA, VGMIDI unlabelled and
/// labelled), sorted by path relative to `data`, with the split: every 10th group (in sorted order,
/// counted within each family of data sets) is validation.
pub fn continuation_corpus(data: &Path) -> Vec<CorpusEntry> {
    let mut files = Vec::new();
    let mut add_dir = |dir: PathBuf, depth: usize| {
        let mut stack = vec![(dir, 0usize)];
        while let Some((d, level)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() && level < depth {
                    stack.push((p, level + 1));
                } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("mid")) {
                    files.push(p);
                }
            }
        }
    };
    add_dir(data.join("pop1k7"), 1);
    add_dir(data.join("pop909"), 1);
    add_dir(data.join("emopia/midi"), 0);
    add_dir(data.join("vgmidi/unlabelled"), 0);
    add_dir(data.join("vgmidi/labelled/midi"), 0);
    files.sort();
    let mut entries: Vec<CorpusEntry> = files
        .into_iter()
        .map(|path| {
            let id = path.strip_prefix(data).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let free_time = id.starts_with("emopia/");
            let group = if free_time { emopia_song(&id).map(|s| format!("emopia/{s}")).unwrap_or_else(|| id.clone()) } else { id.clone() };
            CorpusEntry { path, id, group, valid: false, free_time }
        })
        .collect();
    // Every 10th group, counted within each family of data sets, so that adding a data set never
    // moves a piece of another across the split (a model trained before it was added stays
    // measured on pieces it never saw). POP909 and VGMIDI are one family: the original corpus.
    let family = |id: &str| match id.split('/').next().unwrap_or("") {
        "pop909" | "vgmidi" => "pop909+vgmidi".to_string(),
        other => other.to_string(),
    };
    let mut groups: Vec<(String, &str)> = entries.iter().map(|e| (family(&e.id), e.group.as_str())).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut valid = std::collections::HashSet::new();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (fam, g) in &groups {
        let k = seen.entry(fam.as_str()).or_insert(0);
        if k.is_multiple_of(10) {
            valid.insert(g.to_string());
        }
        *k += 1;
    }
    for e in &mut entries {
        e.valid = valid.contains(&e.group);
    }
    entries
}

/// `emopia/midi/Q1_<song>_<n>.mid` -> `<song>` (song ids may hold underscores).
fn emopia_song(id: &str) -> Option<&str> {
    let stem = id.rsplit('/').next()?.strip_suffix(".mid")?;
    let rest = stem.split_once('_')?.1;
    Some(rest.rsplit_once('_')?.0)
}

/// POP909's 4/4 downbeats (seconds) from the `beat_midi.txt` beside a song's MIDI file: one beat
/// per line, `time is_downbeat_in_2/4 is_downbeat_in_4/4`. None when the file is absent.
fn pop909_downbeats(midi: &Path) -> Result<Option<Vec<f64>>> {
    let path = midi.with_file_name("beat_midi.txt");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cols: Vec<f64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>()
            .with_context(|| format!("{}:{}: not three numbers", path.display(), i + 1))?;
        let &[t, _, down] = cols.as_slice() else { bail!("{}:{}: not three numbers", path.display(), i + 1) };
        if down >= 0.5 {
            out.push(t);
        }
    }
    Ok(Some(out))
}

/// Reads a corpus piece; a free-time one is re-read on its estimated grid (its file's bars are
/// 120 BPM whatever was played). A POP909 song takes its bars from its annotated 4/4 downbeats:
/// its file's meter is mostly 1/4 and its beat 1 falls between the music's beats.
pub fn read_corpus_piece(e: &CorpusEntry) -> Result<crate::listen::midifile::Piece> {
    let mut piece = read_midi_file(&e.path)?;
    if e.id.starts_with("pop909/")
        && let Some(downbeats) = pop909_downbeats(&e.path)?
    {
        piece.bars = piece
            .bars_from_downbeats(&downbeats)
            .with_context(|| format!("{}: fewer than two downbeats in beat_midi.txt", e.path.display()))?;
    }
    if e.free_time {
        let (notes, bars, _) = crate::listen::tempo::on_estimated_grid(&piece.notes)
            .with_context(|| format!("{}: too few notes to estimate a tempo", e.path.display()))?;
        piece.notes = notes;
        piece.bars = bars;
    }
    Ok(piece)
}

/// Writes one JSON line per piece and transposition: `{"piece","split","transpose","num_bars",
/// "tokens"}`, with per-bar attribute levels from the training split's 5th–95th percentiles, and
/// a sidecar `OUT.json` (vocabulary, spec versions, the attribute scale, the split rule). Every
/// tenth piece in path order is validation, so the split is by piece, never by bar.
pub fn export_tokens(data: &Path, out: &Path, transpositions: &[i8]) -> Result<TokenReport> {
    use crate::play::attributes::{Attribute, AttributeScale, raw_attributes};
    use crate::play::tokens::{TOKEN_SPEC_VERSION, VOCAB_SIZE, encode};

    let files = continuation_corpus(data);
    if files.is_empty() {
        bail!("{}: no Pop1K7, POP909, EMOPIA or VGMIDI MIDI files found", data.display());
    }
    let mut report = TokenReport::default();
    let mut pieces = Vec::new();
    for e in &files {
        match read_corpus_piece(e) {
            Ok(p) => pieces.push((e.id.clone(), e.valid, p)),
            Err(err) => report.skipped.push(format!("{err:#}")),
        }
    }
    let train_bars: Vec<Features> = pieces
        .iter()
        .filter(|(_, valid, _)| !valid)
        .flat_map(|(_, _, p)| features_for_bars(&p.notes, &p.bars))
        .collect();
    let scale = AttributeScale::fit(&train_bars);

    let mut lines = String::new();
    for (id, valid, piece) in &pieces {
        report.num_pieces += 1;
        report.num_valid_pieces += *valid as usize;
        for &t in transpositions {
            let mut notes = piece.notes.clone();
            let fits = notes.iter().filter(|n| !n.is_drum()).all(|n| (0..=127).contains(&(n.pitch as i32 + t as i32)));
            if !fits {
                continue;
            }
            for n in notes.iter_mut().filter(|n| !n.is_drum()) {
                n.pitch = (n.pitch as i32 + t as i32) as u8;
            }
            let feats = features_for_bars(&notes, &piece.bars);
            let tokens = encode(&notes, &piece.bars, |bar| scale.levels(&raw_attributes(&feats[bar])));
            report.num_sequences += 1;
            report.num_tokens += tokens.len();
            lines.push_str(&serde_json::to_string(&serde_json::json!({
                "piece": id,
                "split": if *valid { "valid" } else { "train" },
                "transpose": t,
                "num_bars": piece.bars.len(),
                "tokens": tokens,
            }))?);
            lines.push('\n');
        }
    }
    write_atomically(out, lines.as_bytes())?;
    let sidecar = serde_json::json!({
        "token_spec_version": TOKEN_SPEC_VERSION,
        "vocab_size": VOCAB_SIZE,
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "attributes": Attribute::ALL.map(|a| a.cli_name()),
        "attribute_features": Attribute::ALL.map(|a| crate::feel::features::FEATURE_NAMES[crate::play::attributes::feature_index(a)]),
        "attribute_scale": scale,
        "split": "every 10th group in sorted order, counted within each family (POP909+VGMIDI, Pop1K7, EMOPIA), is validation; a group is an EMOPIA song, else one piece",
        "transpositions": transpositions,
        "num_pieces": report.num_pieces,
        "num_valid_pieces": report.num_valid_pieces,
        "num_sequences": report.num_sequences,
        "num_tokens": report.num_tokens,
    });
    let mut side = out.as_os_str().to_owned();
    side.push(".json");
    write_atomically(Path::new(&side), serde_json::to_string_pretty(&sidecar)?.as_bytes())?;
    Ok(report)
}
