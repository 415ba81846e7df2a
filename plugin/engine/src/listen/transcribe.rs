//! Audio to notes with Spotify's Basic Pitch (`nmp.onnx` from the `basic-pitch==0.4.0` wheel):
//! resampling to the model's rate, windowed inference, and the reference post-processing
//! (`basic_pitch/inference.py` and `note_creation.py` of that release), ported line by line so
//! the notes match the Python package's. Model constants live here.
//!
//! Two ways in:
//! - [`transcribe_offline`]: a whole recording, exactly the reference's windows (2 s, 30 frames
//!   of overlap) and decoding over the whole file. The command line's `transcribe` and
//!   `analyze X.wav` use it.
//! - [`StreamingTranscriber`]: the worker feeds it the track's audio as it comes; it runs the
//!   model every [`STREAM_HOP_FRAMES`] frames on the newest window and decodes a sliding region,
//!   handing out note-ons and note-offs once they are settled (see its docs for the latency).
//!
//! Thread: worker / command line. Never the audio thread: it allocates and runs ONNX Runtime.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::runtime::{EmbeddedRuntime, beside_binary_candidates, dev_cache_candidates, session_from_bytes_with_threads, sha256_hex};

/// The model's sample rate.
pub const MODEL_SAMPLE_RATE_HZ: u32 = 22_050;
// The audio cues run on the transcriber's resampled stream.
const _: () = assert!(crate::listen::audio_cues::CUE_SAMPLE_RATE_HZ == MODEL_SAMPLE_RATE_HZ);
/// Samples between two frames of the model's output.
pub const FFT_HOP: usize = 256;
/// Samples in one model window (2 s less one hop).
pub const WINDOW_SAMPLES: usize = 2 * MODEL_SAMPLE_RATE_HZ as usize - FFT_HOP;
/// Output frames per window.
pub const FRAMES_PER_WINDOW: usize = 172;
/// Frames per second of the annotations (`22050 // 256`, as the reference rounds it).
pub const ANNOTATIONS_FPS: usize = MODEL_SAMPLE_RATE_HZ as usize / FFT_HOP;
/// Overlap of two windows, in frames; half is cut from each side.
pub const OVERLAP_FRAMES: usize = 30;
/// Pitches (piano keys) of the note and onset outputs.
pub const NUM_PITCHES: usize = 88;
/// Bins of the contour output (3 per semitone).
pub const NUM_CONTOUR_BINS: usize = 3 * NUM_PITCHES;
/// MIDI number of the first pitch bin (A0).
pub const MIDI_OFFSET: u8 = 21;
const MAX_FREQ_IDX: usize = NUM_PITCHES - 1;

pub const INPUT_NAME: &str = "serving_default_input_2:0";
pub const OUTPUT_NOTE: &str = "StatefulPartitionedCall:1";
pub const OUTPUT_ONSET: &str = "StatefulPartitionedCall:2";
pub const OUTPUT_CONTOUR: &str = "StatefulPartitionedCall:0";

/// File name and sha256 of the model in the basic-pitch 0.4.0 wheel.
pub const MODEL_FILE: &str = "nmp.onnx";
pub const MODEL_SHA256: &str = "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec";
/// Path to an `nmp.onnx` that overrides every other place.
pub const ENV_BASIC_PITCH: &str = "MOODFADER_BASIC_PITCH";

/// Windows run in one call when transcribing a file.
const OFFLINE_BATCH: usize = 8;

/// The reference's decoding settings (`basic_pitch.inference.predict`'s defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoteParams {
    pub onset_threshold: f32,
    pub frame_threshold: f32,
    /// Minimum note length in frames (127.70 ms at 86.13 frames/s rounds to 11).
    pub min_note_len_frames: usize,
    /// Add onsets where the frame activation jumps.
    pub infer_onsets: bool,
    /// Also take notes the onset pass missed, from the strongest remaining activation.
    pub melodia_trick: bool,
    /// Frames below the threshold that end a note.
    pub energy_tol_frames: usize,
    /// Estimate pitch bends from the contour output (offline only).
    pub pitch_bends: bool,
}

impl Default for NoteParams {
    fn default() -> Self {
        Self {
            onset_threshold: 0.5,
            frame_threshold: 0.3,
            min_note_len_frames: min_note_len_frames(127.70),
            infer_onsets: true,
            melodia_trick: true,
            energy_tol_frames: 11,
            pitch_bends: false,
        }
    }
}

/// `int(np.round(ms / 1000 * (22050 / 256)))`.
pub fn min_note_len_frames(min_note_ms: f64) -> usize {
    (min_note_ms / 1000.0 * (MODEL_SAMPLE_RATE_HZ as f64 / FFT_HOP as f64)).round_ties_even().max(0.0) as usize
}

/// The model's three outputs over time, row-major: `note[f * 88 + p]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activations {
    pub note: Vec<f32>,
    pub onset: Vec<f32>,
    pub contour: Vec<f32>,
}

impl Activations {
    pub fn num_frames(&self) -> usize {
        self.note.len() / NUM_PITCHES
    }
}

/// A decoded note in model frames: `[start, end)`, MIDI pitch, mean activation in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameNote {
    pub start_frame: usize,
    pub end_frame: usize,
    pub pitch: u8,
    pub amplitude: f32,
}

/// A transcribed note in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscribedNote {
    pub start_s: f64,
    pub end_s: f64,
    pub pitch: u8,
    /// `round(127 * amplitude)`, as the reference writes MIDI velocities.
    pub velocity: u8,
    pub amplitude: f32,
    /// Pitch bend per frame of the note in thirds of a semitone, evenly spaced from its start
    /// to its end (empty: none, or dropped because the note overlaps another).
    pub bends: Vec<i16>,
}

/// Where the model came from, for status lines.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Embedded,
    File(PathBuf),
}

/// Basic Pitch's network in an ONNX Runtime session (one intra-op thread).
pub struct BasicPitch {
    session: ort::session::Session,
    pub source: ModelSource,
    input: Vec<f32>,
}

impl std::fmt::Debug for BasicPitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicPitch").field("source", &self.source).finish()
    }
}

impl BasicPitch {
    /// Finds and loads the model: `MOODFADER_BASIC_PITCH`, else the copy embedded in the plugin,
    /// else `nmp.onnx` beside the executable, else `cargo xtask setup`'s cache. ONNX Runtime must
    /// be loaded first ([`crate::runtime::ensure_runtime`]).
    pub fn load_default(embedded: Option<EmbeddedRuntime>) -> Result<Self> {
        Self::load_default_with_threads(embedded, 1)
    }

    /// [`load_default`](Self::load_default) with `intra_threads` ONNX Runtime threads: for the
    /// command line's offline transcription only (the plugin's sessions use one).
    pub fn load_default_with_threads(embedded: Option<EmbeddedRuntime>, intra_threads: usize) -> Result<Self> {
        if let Some(p) = std::env::var_os(ENV_BASIC_PITCH).filter(|v| !v.is_empty()) {
            return Self::load_file(Path::new(&p), intra_threads);
        }
        if let Some(e) = embedded.filter(|e| !e.basic_pitch.is_empty()) {
            return Self::from_bytes(e.basic_pitch, ModelSource::Embedded, intra_threads);
        }
        for p in beside_binary_candidates(MODEL_FILE).into_iter().chain(dev_cache_candidates(MODEL_FILE)) {
            if p.is_file() {
                return Self::load_file(&p, intra_threads);
            }
        }
        bail!("Basic Pitch model {MODEL_FILE} not found: set {ENV_BASIC_PITCH} to its path, or run `cargo xtask setup`")
    }

    pub fn load_file(path: &Path, intra_threads: usize) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("Basic Pitch model {} is missing or unreadable", path.display()))?;
        Self::from_bytes(&bytes, ModelSource::File(path.to_path_buf()), intra_threads)
            .with_context(|| format!("Basic Pitch model {} cannot be used", path.display()))
    }

    /// Checks the pinned sha256, opens a session and proves it with one probe window.
    pub fn from_bytes(bytes: &[u8], source: ModelSource, intra_threads: usize) -> Result<Self> {
        let sha = sha256_hex(bytes);
        if sha != MODEL_SHA256 {
            bail!("model file is corrupt or not basic-pitch 0.4.0's nmp.onnx: sha256 {sha}, expected {MODEL_SHA256}");
        }
        let session = session_from_bytes_with_threads(bytes, intra_threads)
            .map_err(|e| anyhow!("ONNX Runtime rejects the model: {e}"))?;
        let mut model = Self { session, source, input: Vec::with_capacity(WINDOW_SAMPLES * OFFLINE_BATCH) };
        let mut probe = Activations::default();
        model.run_windows(&vec![0.0; WINDOW_SAMPLES], &mut probe, 0..FRAMES_PER_WINDOW).context("model does not run on a probe window")?;
        if probe.num_frames() != FRAMES_PER_WINDOW {
            bail!("model returned {} frames for one window, expected {FRAMES_PER_WINDOW}", probe.num_frames());
        }
        Ok(model)
    }

    /// Runs the model on `windows` (a whole number of [`WINDOW_SAMPLES`]-long windows, one after
    /// the other) and appends frames `keep` of each window's output to `out`. Non-finite samples
    /// are read as silence.
    pub fn run_windows(&mut self, windows: &[f32], out: &mut Activations, keep: std::ops::Range<usize>) -> Result<()> {
        if windows.is_empty() || !windows.len().is_multiple_of(WINDOW_SAMPLES) {
            bail!("{} samples is not a whole number of {WINDOW_SAMPLES}-sample windows", windows.len());
        }
        let keep = keep.start.min(FRAMES_PER_WINDOW)..keep.end.min(FRAMES_PER_WINDOW);
        let n = windows.len() / WINDOW_SAMPLES;
        self.input.clear();
        self.input.extend(windows.iter().map(|&x| if x.is_finite() { x } else { 0.0 }));
        let tensor = ort::value::TensorRef::from_array_view(([n, WINDOW_SAMPLES, 1], self.input.as_slice()))
            .map_err(|e| anyhow!("{e}"))?;
        let outputs = self.session.run(ort::inputs![INPUT_NAME => tensor]).map_err(|e| anyhow!("{e}"))?;
        let take = |name: &str, width: usize, dst: &mut Vec<f32>| -> Result<()> {
            let (shape, data) = outputs[name].try_extract_tensor::<f32>().map_err(|e| anyhow!("{name}: {e}"))?;
            if shape.len() != 3 || shape[0] as usize != n || shape[1] as usize != FRAMES_PER_WINDOW || shape[2] as usize != width {
                bail!("output {name} has shape {shape:?}, expected [{n}, {FRAMES_PER_WINDOW}, {width}]");
            }
            for w in 0..n {
                let base = w * FRAMES_PER_WINDOW * width;
                dst.extend_from_slice(&data[base + keep.start * width..base + keep.end * width]);
            }
            Ok(())
        };
        take(OUTPUT_NOTE, NUM_PITCHES, &mut out.note)?;
        take(OUTPUT_ONSET, NUM_PITCHES, &mut out.onset)?;
        take(OUTPUT_CONTOUR, NUM_CONTOUR_BINS, &mut out.contour)?;
        Ok(())
    }
}

/// `basic_pitch.inference.run_inference` on audio already at 22 050 Hz: half an overlap of
/// zeros in front, windows every `WINDOW_SAMPLES - 30 * 256` samples (the last one zero-padded),
/// 15 frames cut from each side of every window, trimmed to the audio's length.
pub fn infer_offline(model: &mut BasicPitch, audio: &[f32]) -> Result<Activations> {
    let overlap_len = OVERLAP_FRAMES * FFT_HOP;
    let hop = WINDOW_SAMPLES - overlap_len;
    let mut padded = vec![0.0f32; overlap_len / 2];
    padded.extend_from_slice(audio);
    let starts: Vec<usize> = (0..padded.len().max(1)).step_by(hop).collect();
    let mut act = Activations::default();
    let mut batch = Vec::with_capacity(WINDOW_SAMPLES * OFFLINE_BATCH);
    let n_olap = OVERLAP_FRAMES / 2;
    for chunk in starts.chunks(OFFLINE_BATCH) {
        batch.clear();
        for &s in chunk {
            let end = (s + WINDOW_SAMPLES).min(padded.len());
            batch.extend_from_slice(&padded[s..end]);
            batch.resize(batch.len() + WINDOW_SAMPLES - (end - s), 0.0);
        }
        model.run_windows(&batch, &mut act, n_olap..FRAMES_PER_WINDOW - n_olap)?;
    }
    let n_frames = (audio.len() as f64 * (ANNOTATIONS_FPS as f64 / MODEL_SAMPLE_RATE_HZ as f64)).floor() as usize;
    let n_frames = n_frames.min(act.num_frames());
    act.note.truncate(n_frames * NUM_PITCHES);
    act.onset.truncate(n_frames * NUM_PITCHES);
    act.contour.truncate(n_frames * NUM_CONTOUR_BINS);
    Ok(act)
}

/// `note_creation.model_frames_to_time`: frame times of the offline output, with the
/// reference's per-window correction (its "magic number" included).
pub fn offline_frame_time_s(frame: usize) -> f64 {
    let hop_s = FFT_HOP as f64 / MODEL_SAMPLE_RATE_HZ as f64;
    let window_offset = hop_s * (FRAMES_PER_WINDOW as f64 - WINDOW_SAMPLES as f64 / FFT_HOP as f64) + 0.0018;
    frame as f64 * hop_s - window_offset * (frame / FRAMES_PER_WINDOW) as f64
}

/// `note_creation.get_infered_onsets`: the larger of the predicted onsets and the rise of the
/// frame activation over the last one and two frames (rescaled to the onsets' maximum). Like
/// the reference (numpy's 0/0), a frame activation that never rises makes every onset NaN.
fn inferred_onsets(onsets: &[f32], frames: &[f32], n_frames: usize) -> Vec<f64> {
    const N_DIFF: usize = 2;
    let mut diff = vec![0.0f64; n_frames * NUM_PITCHES];
    for t in N_DIFF..n_frames {
        for p in 0..NUM_PITCHES {
            let x = frames[t * NUM_PITCHES + p] as f64;
            let d1 = x - frames[(t - 1) * NUM_PITCHES + p] as f64;
            let d2 = x - frames[(t - 2) * NUM_PITCHES + p] as f64;
            diff[t * NUM_PITCHES + p] = d1.min(d2).max(0.0);
        }
    }
    let max_onset = onsets.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let max_diff = diff.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    onsets
        .iter()
        .zip(diff.iter())
        .map(|(&o, &d)| {
            let scaled = max_onset * d / max_diff;
            if scaled.is_nan() { f64::NAN } else { (o as f64).max(scaled) }
        })
        .collect()
}

/// `note_creation.output_to_notes_polyphonic` over frames `[0, n)`: onsets at local maxima in
/// time above the onset threshold, walked from the last to the first, each held while the frame
/// activation stays above the frame threshold (allowing `energy_tol` frames below); then, with
/// the melodia trick, notes grown from the strongest activation left. Each note takes its
/// energy and its neighbours' away from later notes.
pub fn notes_from_activations(act: &Activations, params: &NoteParams) -> Vec<FrameNote> {
    let n_frames = act.num_frames();
    let frames = &act.note[..n_frames * NUM_PITCHES];
    let onsets_raw = &act.onset[..n_frames * NUM_PITCHES];
    let onsets: Vec<f64> = if params.infer_onsets {
        inferred_onsets(onsets_raw, frames, n_frames)
    } else {
        onsets_raw.iter().map(|&x| x as f64).collect()
    };
    let at = |t: usize, p: usize| t * NUM_PITCHES + p;
    // scipy.signal.argrelmax(axis=0, order=1, mode="clip"): strictly above both neighbours in
    // time; the first and last frame never qualify.
    let mut peaks: Vec<(usize, usize)> = Vec::new();
    for t in 1..n_frames.saturating_sub(1) {
        for p in 0..NUM_PITCHES {
            let x = onsets[at(t, p)];
            if x > onsets[at(t - 1, p)] && x > onsets[at(t + 1, p)] && x >= params.onset_threshold as f64 {
                peaks.push((t, p));
            }
        }
    }
    let frame_thresh = params.frame_threshold as f64;
    let tol = params.energy_tol_frames;
    let mut remaining: Vec<f64> = frames.iter().map(|&x| x as f64).collect();
    let mean_of = |from: usize, to: usize, p: usize| -> f32 {
        let n = to.saturating_sub(from);
        if n == 0 {
            return f32::NAN;
        }
        ((from..to).map(|t| frames[at(t, p)] as f64).sum::<f64>() / n as f64) as f32
    };
    // A note takes its frames' energy, and its neighbours', away from later notes.
    let clear = |remaining: &mut [f64], t: usize, p: usize| {
        remaining[at(t, p)] = 0.0;
        if p < MAX_FREQ_IDX {
            remaining[at(t, p + 1)] = 0.0;
        }
        if p > 0 {
            remaining[at(t, p - 1)] = 0.0;
        }
    };
    let mut notes = Vec::new();
    for &(start, p) in peaks.iter().rev() {
        if start + 1 >= n_frames {
            continue;
        }
        let mut i = start + 1;
        let mut k = 0;
        while i < n_frames - 1 && k < tol {
            if remaining[at(i, p)] < frame_thresh {
                k += 1;
            } else {
                k = 0;
            }
            i += 1;
        }
        i -= k;
        if i - start <= params.min_note_len_frames {
            continue;
        }
        for t in start..i {
            clear(&mut remaining, t, p);
        }
        notes.push(FrameNote { start_frame: start, end_frame: i, pitch: p as u8 + MIDI_OFFSET, amplitude: mean_of(start, i, p) });
    }
    if params.melodia_trick && n_frames > 0 {
        // The strongest remaining cell, as np.argmax finds it (first in row-major order), kept
        // cheap with each frame's own maximum: only the frames a note clears are rescanned.
        let row_max = |remaining: &[f64], t: usize| -> (f64, usize) {
            let (mut best, mut best_p) = (f64::NEG_INFINITY, 0usize);
            for (p, &x) in remaining[t * NUM_PITCHES..(t + 1) * NUM_PITCHES].iter().enumerate() {
                if x > best {
                    best = x;
                    best_p = p;
                }
            }
            (best, best_p)
        };
        let mut maxima: Vec<(f64, usize)> = (0..n_frames).map(|t| row_max(&remaining, t)).collect();
        loop {
            let (mut best, mut i_mid) = (f64::NEG_INFINITY, 0usize);
            for (t, &(m, _)) in maxima.iter().enumerate() {
                if m > best {
                    best = m;
                    i_mid = t;
                }
            }
            if best <= frame_thresh {
                break;
            }
            let p = maxima[i_mid].1;
            remaining[at(i_mid, p)] = 0.0;
            // Forward.
            let mut i = i_mid + 1;
            let mut k = 0;
            while i < n_frames - 1 && k < tol {
                if remaining[at(i, p)] < frame_thresh {
                    k += 1;
                } else {
                    k = 0;
                }
                clear(&mut remaining, i, p);
                i += 1;
            }
            let last_cleared = i;
            let i_end = i as isize - 1 - k as isize;
            // Backward.
            let mut i = i_mid as isize - 1;
            let mut k = 0;
            while i > 0 && k < tol {
                if remaining[at(i as usize, p)] < frame_thresh {
                    k += 1;
                } else {
                    k = 0;
                }
                clear(&mut remaining, i as usize, p);
                i -= 1;
            }
            let first_cleared = (i + 1).max(0) as usize;
            let to = last_cleared.max(i_mid + 1);
            for (t, m) in maxima.iter_mut().enumerate().take(to).skip(first_cleared) {
                *m = row_max(&remaining, t);
            }
            let i_start = i + 1 + k as isize;
            if i_end - i_start <= params.min_note_len_frames as isize {
                continue;
            }
            let (s, e) = (i_start.max(0) as usize, i_end.max(0) as usize);
            notes.push(FrameNote { start_frame: s, end_frame: e, pitch: p as u8 + MIDI_OFFSET, amplitude: mean_of(s, e, p) });
        }
    }
    notes
}

/// Contour bins either side of a note's own bin searched for its pitch bend.
const BEND_TOLERANCE_BINS: usize = 25;

/// `note_creation.get_pitch_bends` for one note: per frame, the contour bin with the most
/// activation within ±25 bins of the note's own, weighted by a Gaussian (std 5 bins), as an
/// offset in thirds of a semitone.
pub fn pitch_bends(act: &Activations, note: &FrameNote) -> Vec<i16> {
    let n_frames = act.contour.len() / NUM_CONTOUR_BINS;
    let tol = BEND_TOLERANCE_BINS as isize;
    let freq_idx = 3 * (note.pitch as isize - MIDI_OFFSET as isize);
    let lo = (freq_idx - tol).max(0);
    let hi = (freq_idx + tol + 1).min(NUM_CONTOUR_BINS as isize);
    // scipy.signal.windows.gaussian(51, std=5), cut like the reference cuts it.
    let g_from = (tol - freq_idx).max(0);
    let gauss = |k: isize| (-0.5 * ((k as f64 - tol as f64) / 5.0).powi(2)).exp();
    let pb_shift = tol - (tol - freq_idx).max(0);
    (note.start_frame..note.end_frame.min(n_frames))
        .map(|t| {
            let row = &act.contour[t * NUM_CONTOUR_BINS..(t + 1) * NUM_CONTOUR_BINS];
            let (mut best, mut best_k) = (f64::NEG_INFINITY, 0isize);
            for (k, b) in (lo..hi).enumerate() {
                let v = row[b as usize] as f64 * gauss(g_from + k as isize);
                if v > best {
                    best = v;
                    best_k = k as isize;
                }
            }
            (best_k - pb_shift) as i16
        })
        .collect()
}

/// `note_creation.drop_overlapping_pitch_bends`: a note that overlaps another in time keeps no
/// bend (MIDI has one pitch wheel per channel).
pub fn drop_overlapping_bends(notes: &mut [TranscribedNote]) {
    let mut drop = vec![false; notes.len()];
    for i in 0..notes.len() {
        for j in 0..notes.len() {
            if i != j && notes[j].start_s >= notes[i].start_s && notes[j].start_s < notes[i].end_s {
                drop[i] = true;
                drop[j] = true;
            }
        }
    }
    for (n, d) in notes.iter_mut().zip(drop) {
        if d {
            n.bends.clear();
        }
    }
}

/// The transcription as a format-0 Standard MIDI File at `tempo_bpm` in 4/4, like the
/// reference's `note_events_to_midi` (one channel; pitch bends of ±2 semitones spread evenly
/// over each note that has them).
pub fn transcription_smf(notes: &[TranscribedNote], tempo_bpm: f64) -> Vec<u8> {
    let tpq = crate::listen::midifile::SMF_TICKS_PER_QUARTER as f64;
    let tempo_bpm = tempo_bpm.clamp(1.0, 2000.0);
    let tick = |s: f64| (s.max(0.0) * tempo_bpm / 60.0 * tpq).round() as u64;
    let us = (60_000_000.0 / tempo_bpm).round() as u32;
    // (tick, order, bytes): note-offs before bends before note-ons at the same tick.
    let mut events: Vec<(u64, u8, [u8; 3], usize)> = Vec::new();
    for n in notes {
        let (on, off) = (tick(n.start_s), tick(n.end_s).max(tick(n.start_s) + 1));
        events.push((on, 2, [0x90, n.pitch & 127, n.velocity.clamp(1, 127)], 3));
        events.push((off, 0, [0x80, n.pitch & 127, 0], 3));
        let k = n.bends.len();
        for (i, &b) in n.bends.iter().enumerate() {
            let t = if k > 1 { n.start_s + (n.end_s - n.start_s) * i as f64 / (k - 1) as f64 } else { n.start_s };
            let v = ((b as f64 * 4096.0 / 3.0).round() as i32).clamp(-8192, 8191) + 8192;
            events.push((tick(t), 1, [0xe0, (v & 127) as u8, ((v >> 7) & 127) as u8], 3));
        }
    }
    events.sort_by_key(|e| (e.0, e.1));
    let mut raw: Vec<(u32, Vec<u8>)> = vec![
        (0, vec![0xff, 0x51, 3, (us >> 16) as u8, (us >> 8) as u8, us as u8]),
        (0, vec![0xff, 0x58, 4, 4, 2, 24, 8]),
    ];
    let mut last = 0u64;
    for (t, _, b, len) in events {
        raw.push(((t - last).min(u32::MAX as u64 >> 4) as u32, b[..len].to_vec()));
        last = t;
    }
    crate::listen::midifile::single_track_smf(crate::listen::midifile::SMF_TICKS_PER_QUARTER, raw.iter().map(|(d, b)| (*d, b.as_slice())))
}

fn velocity_of(amplitude: f32) -> u8 {
    (127.0 * amplitude as f64).round_ties_even().clamp(0.0, 127.0) as u8
}

/// Mono audio at any rate → 22 050 Hz with rubato's FFT resampler (the delay removed, the length
/// `ceil(len * 22050 / rate)`). Non-finite samples are read as silence.
pub fn resample_to_model_rate(samples: &[f32], sample_rate_hz: u32) -> Result<Vec<f32>> {
    use rubato::audioadapter_buffers::direct::InterleavedSlice;
    use rubato::{Fft, FixedSync, Resampler};
    let clean: Vec<f32> = samples.iter().map(|&x| if x.is_finite() { x } else { 0.0 }).collect();
    let samples = clean.as_slice();
    if sample_rate_hz == MODEL_SAMPLE_RATE_HZ || samples.is_empty() {
        return Ok(clean);
    }
    let mut resampler = Fft::<f32>::new(sample_rate_hz as usize, MODEL_SAMPLE_RATE_HZ as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| anyhow!("cannot resample from {sample_rate_hz} Hz: {e}"))?;
    let out_len = resampler.process_all_needed_output_len(samples.len());
    let mut out = vec![0.0f32; out_len];
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| anyhow!("{e}"))?;
    let mut output = InterleavedSlice::new_mut(&mut out, 1, out_len).map_err(|e| anyhow!("{e}"))?;
    let (_, n_out) = resampler
        .process_all_into_buffer(&input, &mut output, samples.len(), None)
        .map_err(|e| anyhow!("resampling failed: {e}"))?;
    out.truncate(n_out);
    Ok(out)
}

/// The reference's `predict` on mono samples at any rate: notes sorted by start, then pitch,
/// with pitch bends when `params.pitch_bends` (overlapping notes keep none, as in the
/// reference's MIDI file).
pub fn transcribe_offline(model: &mut BasicPitch, samples: &[f32], sample_rate_hz: u32, params: &NoteParams) -> Result<Vec<TranscribedNote>> {
    let audio = resample_to_model_rate(samples, sample_rate_hz)?;
    let act = infer_offline(model, &audio)?;
    let mut notes: Vec<TranscribedNote> = notes_from_activations(&act, params)
        .into_iter()
        .map(|n| TranscribedNote {
            start_s: offline_frame_time_s(n.start_frame),
            end_s: offline_frame_time_s(n.end_frame),
            pitch: n.pitch,
            velocity: velocity_of(n.amplitude),
            amplitude: n.amplitude,
            bends: if params.pitch_bends { pitch_bends(&act, &n) } else { Vec::new() },
        })
        .collect();
    notes.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.pitch.cmp(&b.pitch)));
    if params.pitch_bends {
        drop_overlapping_bends(&mut notes);
    }
    Ok(notes)
}

/// Note-level precision, recall and F1 in the mir_eval sense without offsets: a reference and
/// an estimated note match when their pitches are equal and their onsets lie within
/// `onset_tol_s`; each note matches at most once (maximum bipartite matching).
pub fn note_f1(reference: &[(f64, u8)], estimate: &[(f64, u8)], onset_tol_s: f64) -> (f64, f64, f64) {
    if reference.is_empty() || estimate.is_empty() {
        let f = if reference.is_empty() && estimate.is_empty() { 1.0 } else { 0.0 };
        return (f, f, f);
    }
    // Candidate edges, then augmenting paths (Kuhn's algorithm); pitches split the graph.
    let mut est_by_pitch: Vec<Vec<usize>> = vec![Vec::new(); 128];
    for (j, &(_, p)) in estimate.iter().enumerate() {
        est_by_pitch[p as usize & 127].push(j);
    }
    let adj: Vec<Vec<usize>> = reference
        .iter()
        .map(|&(t, p)| est_by_pitch[p as usize & 127].iter().copied().filter(|&j| (estimate[j].0 - t).abs() <= onset_tol_s + 1e-9).collect())
        .collect();
    let mut match_est: Vec<Option<usize>> = vec![None; estimate.len()];
    fn augment(i: usize, adj: &[Vec<usize>], seen: &mut [bool], match_est: &mut [Option<usize>]) -> bool {
        for &j in &adj[i] {
            if seen[j] {
                continue;
            }
            seen[j] = true;
            if match_est[j].is_none_or(|other| augment(other, adj, seen, match_est)) {
                match_est[j] = Some(i);
                return true;
            }
        }
        false
    }
    let mut matched = 0usize;
    let mut seen = vec![false; estimate.len()];
    for i in 0..reference.len() {
        if adj[i].is_empty() {
            continue;
        }
        seen.iter_mut().for_each(|s| *s = false);
        if augment(i, &adj, &mut seen, &mut match_est) {
            matched += 1;
        }
    }
    let precision = matched as f64 / estimate.len() as f64;
    let recall = matched as f64 / reference.len() as f64;
    let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    (precision, recall, f1)
}

// ---------------------------------------------------------------------------------------------
// Streaming

/// Frames between two model runs while streaming (about 0.74 s).
pub const STREAM_HOP_FRAMES: usize = 64;
/// Frames of decoded history the streaming decoder looks at (about 6 s).
pub const STREAM_REGION_FRAMES: usize = 512;
/// Frames at the end of the region whose onsets are not decided yet: a note needs its onset
/// peak confirmed and more than the minimum length above the threshold.
pub const STREAM_GUARD_FRAMES: usize = 24;
/// Frames of each window's output kept: the newest [`STREAM_HOP_FRAMES`] before the 15 frames
/// the reference also throws away at a window's end.
const STREAM_KEEP_END: usize = FRAMES_PER_WINDOW - OVERLAP_FRAMES / 2;
const STREAM_KEEP_START: usize = STREAM_KEEP_END - STREAM_HOP_FRAMES;
/// Resampler input chunk while streaming.
const STREAM_CHUNK_IN: usize = 512;

/// A note-on or note-off found in the stream. `time_s` is on the clock the transcriber was
/// started on (its `start_s` plus the audio's own time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamEvent {
    pub on: bool,
    pub pitch: u8,
    pub velocity: u8,
    pub time_s: f64,
}

/// Live transcription: feed mono audio at the host's rate with [`push`](Self::push); every
/// [`STREAM_HOP_FRAMES`] frames of audio it runs the model on the newest window and decodes the
/// last [`STREAM_REGION_FRAMES`] frames with the reference's decoder, handing out the notes
/// whose onsets lie before the guard band (and their note-offs once their ends are settled).
///
/// Latency of a note-on after the note sounds: at most one hop (0.74 s) until the window that
/// holds it runs, plus the 15 frames (0.17 s) a window keeps after its last trusted frame, plus
/// the guard band (0.28 s), plus the model's run time.
pub struct StreamingTranscriber {
    resampler: Option<rubato::Fft<f32>>,
    host_rate_hz: u32,
    start_s: f64,
    params: NoteParams,
    pending_in: Vec<f32>,
    resampled: Vec<f32>,
    /// Samples of the resampler's output still to skip (its delay).
    skip_out: usize,
    /// 22 050 Hz audio; `audio[0]` is stream sample `audio_base` (negative: zeros before start).
    audio: Vec<f32>,
    audio_base: i64,
    /// Next window's first frame.
    next_frame: usize,
    /// Decoded frames; `frames.note[0]` is stream frame `frames_base`.
    frames: Activations,
    frames_base: usize,
    window: Vec<f32>,
    /// Onsets before this frame are decided.
    decided_until: usize,
    /// Notes handed out whose ends are not settled: (pitch, start frame, last known end).
    open: Vec<(u8, usize, usize)>,
    /// Audio cues of the same 22 050 Hz stream (loudness, onsets, flux, brightness).
    cues: crate::listen::audio_cues::LiveCues,
    /// Model runs and their total time, for the real-time factor.
    pub num_runs: u64,
    pub run_time_s: f64,
    pub audio_time_s: f64,
}

impl std::fmt::Debug for StreamingTranscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingTranscriber").field("host_rate_hz", &self.host_rate_hz).field("next_frame", &self.next_frame).finish()
    }
}

impl StreamingTranscriber {
    /// A transcriber for audio at `host_rate_hz` whose first sample sounds at `start_s`.
    pub fn new(host_rate_hz: u32, start_s: f64, params: NoteParams) -> Result<Self> {
        use rubato::{Fft, FixedSync, Resampler};
        if !(1000..=1_000_000).contains(&host_rate_hz) {
            bail!("{host_rate_hz} Hz is not an audio sample rate");
        }
        let resampler = if host_rate_hz == MODEL_SAMPLE_RATE_HZ {
            None
        } else {
            Some(
                Fft::<f32>::new(host_rate_hz as usize, MODEL_SAMPLE_RATE_HZ as usize, STREAM_CHUNK_IN, 1, FixedSync::Input)
                    .map_err(|e| anyhow!("cannot resample from {host_rate_hz} Hz: {e}"))?,
            )
        };
        let skip_out = resampler.as_ref().map_or(0, |r| r.output_delay());
        let out_max = resampler.as_ref().map_or(0, |r| r.output_frames_max());
        // The first window's kept frames start at stream frame 0.
        let first_window_start = -((STREAM_KEEP_START * FFT_HOP) as i64);
        Ok(Self {
            resampler,
            host_rate_hz,
            start_s,
            params,
            pending_in: Vec::with_capacity(STREAM_CHUNK_IN * 4),
            resampled: vec![0.0; out_max],
            skip_out,
            audio: vec![0.0; (-first_window_start) as usize],
            audio_base: first_window_start,
            next_frame: 0,
            frames: Activations::default(),
            frames_base: 0,
            window: vec![0.0; WINDOW_SAMPLES],
            decided_until: 0,
            open: Vec::new(),
            cues: crate::listen::audio_cues::LiveCues::new(start_s),
            num_runs: 0,
            run_time_s: 0.0,
            audio_time_s: 0.0,
        })
    }

    /// Seconds of stream time at stream frame `frame`.
    pub fn frame_time_s(&self, frame: usize) -> f64 {
        self.start_s + (frame * FFT_HOP) as f64 / MODEL_SAMPLE_RATE_HZ as f64
    }

    /// Feeds audio; runs the model as windows fill and appends settled events to `out` (in time
    /// order within one call).
    pub fn push(&mut self, model: &mut BasicPitch, samples: &[f32], out: &mut Vec<StreamEvent>) -> Result<()> {
        use rubato::Resampler;
        use rubato::audioadapter_buffers::direct::InterleavedSlice;
        self.audio_time_s += samples.len() as f64 / self.host_rate_hz as f64;
        let from = self.audio.len();
        match self.resampler.as_mut() {
            None => self.audio.extend(samples.iter().map(|&x| if x.is_finite() { x } else { 0.0 })),
            Some(r) => {
                self.pending_in.extend(samples.iter().map(|&x| if x.is_finite() { x } else { 0.0 }));
                let mut used = 0;
                while self.pending_in.len() - used >= r.input_frames_next() {
                    let n_in = r.input_frames_next();
                    let input = InterleavedSlice::new(&self.pending_in[used..used + n_in], 1, n_in).map_err(|e| anyhow!("{e}"))?;
                    let cap = self.resampled.len();
                    let mut output = InterleavedSlice::new_mut(&mut self.resampled, 1, cap).map_err(|e| anyhow!("{e}"))?;
                    let (n_read, n_out) = r.process_into_buffer(&input, &mut output, None).map_err(|e| anyhow!("resampling failed: {e}"))?;
                    used += n_read;
                    let skip = self.skip_out.min(n_out);
                    self.skip_out -= skip;
                    self.audio.extend_from_slice(&self.resampled[skip..n_out]);
                }
                self.pending_in.drain(..used);
            }
        }
        self.cues.push(&self.audio[from..]);
        // Run every window whose audio is complete.
        loop {
            let start = (self.next_frame * FFT_HOP) as i64 - (STREAM_KEEP_START * FFT_HOP) as i64;
            let end = start + WINDOW_SAMPLES as i64;
            if end > self.audio_base + self.audio.len() as i64 {
                break;
            }
            let from = (start - self.audio_base) as usize;
            self.window.copy_from_slice(&self.audio[from..from + WINDOW_SAMPLES]);
            let t0 = std::time::Instant::now();
            let window = std::mem::take(&mut self.window);
            let r = model.run_windows(&window, &mut self.frames, STREAM_KEEP_START..STREAM_KEEP_END);
            self.window = window;
            r?;
            self.run_time_s += t0.elapsed().as_secs_f64();
            self.num_runs += 1;
            self.next_frame += STREAM_HOP_FRAMES;
            // Forget audio no later window needs.
            let next_start = (self.next_frame * FFT_HOP) as i64 - (STREAM_KEEP_START * FFT_HOP) as i64;
            let drop = (next_start - self.audio_base).max(0) as usize;
            self.audio.drain(..drop.min(self.audio.len()));
            self.audio_base += drop as i64;
            self.decode(out);
        }
        Ok(())
    }

    /// Decodes the newest region and hands out what is settled.
    fn decode(&mut self, out: &mut Vec<StreamEvent>) {
        let end = self.next_frame;
        // Keep only the region's frames.
        let keep = STREAM_REGION_FRAMES.min(end);
        let region_start = end - keep;
        let drop = region_start - self.frames_base;
        if drop > 0 {
            self.frames.note.drain(..drop * NUM_PITCHES);
            self.frames.onset.drain(..drop * NUM_PITCHES);
            self.frames.contour.drain(..drop * NUM_CONTOUR_BINS);
            self.frames_base = region_start;
        }
        let mut notes = notes_from_activations(&self.frames, &self.params);
        notes.sort_by_key(|n| (n.start_frame, n.pitch));
        let decide_limit = end.saturating_sub(STREAM_GUARD_FRAMES).max(self.decided_until);
        let settled_end = end.saturating_sub(self.params.energy_tol_frames + 2);
        let mut events: Vec<(usize, StreamEvent)> = Vec::new();
        let mut still_open = Vec::with_capacity(self.open.len());
        // Notes handed out before: close them once their end is settled (or they are gone).
        for &(pitch, start, last_end) in &self.open {
            let found = notes.iter().find(|n| n.pitch == pitch && (n.start_frame + region_start).abs_diff(start) <= 2);
            let (close_at, done) = match found {
                Some(n) => {
                    let e = n.end_frame + region_start;
                    (e, e < settled_end)
                }
                None => (last_end.max(start + 1), true),
            };
            if done {
                events.push((close_at, StreamEvent { on: false, pitch, velocity: 0, time_s: self.frame_time_s(close_at) }));
            } else {
                still_open.push((pitch, start, close_at));
            }
        }
        for n in &notes {
            let s = n.start_frame + region_start;
            let e = n.end_frame + region_start;
            if s < self.decided_until || s >= decide_limit {
                continue;
            }
            if still_open.iter().any(|&(p, st, _)| p == n.pitch && st.abs_diff(s) <= 2) {
                continue;
            }
            let velocity = velocity_of(n.amplitude).max(1);
            events.push((s, StreamEvent { on: true, pitch: n.pitch, velocity, time_s: self.frame_time_s(s) }));
            if e < settled_end {
                events.push((e, StreamEvent { on: false, pitch: n.pitch, velocity: 0, time_s: self.frame_time_s(e) }));
            } else {
                still_open.push((n.pitch, s, e));
            }
        }
        self.open = still_open;
        self.decided_until = decide_limit;
        // Offs before ons at the same frame.
        events.sort_by_key(|(f, e)| (*f, e.on));
        out.extend(events.into_iter().map(|(_, e)| e));
    }

    /// Ends the stream: closes every note still open at the last decoded frame.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        for (pitch, _, end) in std::mem::take(&mut self.open) {
            out.push(StreamEvent { on: false, pitch, velocity: 0, time_s: self.frame_time_s(end) });
        }
    }

    /// The cues of the bar ending at `now_s` and their 4-bar mean (see [`crate::listen::audio_cues::CueMap`]).
    pub fn bar_cues(&mut self, now_s: f64, bar_s: f64) -> [f32; 2 * crate::listen::audio_cues::NUM_CUES] {
        self.cues.bar_cues(now_s, bar_s)
    }

    /// Model time over audio time so far.
    pub fn real_time_factor(&self) -> f64 {
        if self.audio_time_s > 0.0 { self.run_time_s / self.audio_time_s } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act_from(note: &[[f32; 2]], onset: &[[f32; 2]], pitch0: usize) -> Activations {
        let n = note.len();
        let mut a = Activations { note: vec![0.0; n * NUM_PITCHES], onset: vec![0.0; n * NUM_PITCHES], contour: vec![0.0; n * NUM_CONTOUR_BINS] };
        for t in 0..n {
            for k in 0..2 {
                a.note[t * NUM_PITCHES + pitch0 + 3 * k] = note[t][k];
                a.onset[t * NUM_PITCHES + pitch0 + 3 * k] = onset[t][k];
            }
        }
        a
    }

    #[test]
    fn min_note_length_matches_the_reference_rounding() {
        assert_eq!(min_note_len_frames(127.70), 11);
        assert_eq!(NoteParams::default().min_note_len_frames, 11);
        assert_eq!(WINDOW_SAMPLES, 43_844);
        assert_eq!(ANNOTATIONS_FPS, 86);
    }

    #[test]
    fn frame_times_follow_the_reference_formula() {
        // Values from basic_pitch.note_creation.model_frames_to_time(400).
        assert!((offline_frame_time_s(0) - 0.0).abs() < 1e-12);
        assert!((offline_frame_time_s(171) - 171.0 * 256.0 / 22050.0).abs() < 1e-12);
        let w = 256.0 / 22050.0 * (172.0 - 43844.0 / 256.0) + 0.0018;
        assert!((offline_frame_time_s(172) - (172.0 * 256.0 / 22050.0 - w)).abs() < 1e-12);
        assert!((offline_frame_time_s(399) - (399.0 * 256.0 / 22050.0 - 2.0 * w)).abs() < 1e-12);
    }

    #[test]
    fn an_onset_followed_by_energy_makes_one_note_and_a_short_one_none() {
        // Pitch bin 39 (MIDI 60): onset at frame 5, energy frames 5..30. Bin 42: energy 5..12 only.
        let n = 60;
        let mut note = vec![[0.0f32; 2]; n];
        let mut onset = vec![[0.0f32; 2]; n];
        for (t, row) in note.iter_mut().enumerate() {
            if (5..30).contains(&t) {
                row[0] = 0.8;
            }
            if (5..12).contains(&t) {
                row[1] = 0.8;
            }
        }
        onset[5] = [0.9, 0.9];
        let act = act_from(&note, &onset, 39);
        let notes = notes_from_activations(&act, &NoteParams { melodia_trick: false, ..NoteParams::default() });
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].pitch, 60);
        assert_eq!(notes[0].start_frame, 5);
        assert_eq!(notes[0].end_frame, 30);
        assert!((notes[0].amplitude - 0.8).abs() < 1e-6);
    }

    #[test]
    fn melodia_finds_a_note_without_an_onset() {
        let n = 80;
        let mut note = vec![[0.0f32; 2]; n];
        for row in note.iter_mut().take(60).skip(20) {
            row[0] = 0.6;
        }
        note[40][0] = 0.7;
        let onset = vec![[0.0f32; 2]; n];
        let act = act_from(&note, &onset, 39);
        let notes = notes_from_activations(&act, &NoteParams::default());
        assert_eq!(notes.len(), 1, "{notes:?}");
        // Like the reference, the melodia pass ends a note at its last frame above the threshold.
        assert_eq!((notes[0].start_frame, notes[0].end_frame, notes[0].pitch), (20, 59, 60));
    }

    #[test]
    fn pitch_bends_follow_the_contour_and_overlaps_drop_them() {
        // MIDI 60 is contour bin 117; put the contour peak one bin up (a third of a semitone
        // sharp) for the note's frames.
        let mut act = act_from(&[[0.0; 2]; 20], &[[0.0; 2]; 20], 39);
        for t in 0..20 {
            act.contour[t * NUM_CONTOUR_BINS + 118] = 0.9;
            act.contour[t * NUM_CONTOUR_BINS + 117] = 0.5;
        }
        let note = FrameNote { start_frame: 2, end_frame: 12, pitch: 60, amplitude: 0.5 };
        assert_eq!(pitch_bends(&act, &note), vec![1; 10]);
        // Near the edges of the contour range the window is cut, not out of bounds.
        assert_eq!(pitch_bends(&act, &FrameNote { pitch: 21, ..note }).len(), 10);
        assert_eq!(pitch_bends(&act, &FrameNote { pitch: 108, ..note }).len(), 10);
        let n = |s: f64, e: f64| TranscribedNote { start_s: s, end_s: e, pitch: 60, velocity: 64, amplitude: 0.5, bends: vec![1, 2] };
        let mut notes = vec![n(0.0, 1.0), n(0.5, 1.5), n(2.0, 3.0)];
        drop_overlapping_bends(&mut notes);
        assert!(notes[0].bends.is_empty() && notes[1].bends.is_empty() && notes[2].bends == vec![1, 2]);
        let smf = transcription_smf(&notes, 120.0);
        let piece = crate::listen::midifile::parse_midi(&smf).unwrap();
        assert_eq!(piece.notes.len(), 3);
        assert!(smf.windows(3).any(|w| w[0] == 0xe0), "pitch bends written");
    }

    #[test]
    fn silence_gives_no_notes_and_no_nan() {
        let act = act_from(&vec![[0.0; 2]; 50], &vec![[0.0; 2]; 50], 0);
        assert!(notes_from_activations(&act, &NoteParams::default()).is_empty());
        assert!(notes_from_activations(&Activations::default(), &NoteParams::default()).is_empty());
    }

    #[test]
    fn f1_matches_each_note_once_within_the_tolerance() {
        let r = [(0.0, 60), (0.5, 62), (1.0, 64)];
        let e = [(0.03, 60), (0.04, 60), (0.58, 62), (1.0, 65)];
        let (p, rc, f) = note_f1(&r, &e, 0.05);
        assert!((p - 0.25).abs() < 1e-9 && (rc - 1.0 / 3.0).abs() < 1e-9, "{p} {rc}");
        assert!((f - 2.0 * 0.25 * (1.0 / 3.0) / (0.25 + 1.0 / 3.0)).abs() < 1e-9);
        assert_eq!(note_f1(&r, &r, 0.05).2, 1.0);
        assert_eq!(note_f1(&[], &r, 0.05).2, 0.0);
    }

    #[test]
    fn resampling_keeps_length_and_a_tone() {
        let sr = 48_000u32;
        let x: Vec<f32> = (0..sr).map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / sr as f32).sin() * 0.5).collect();
        let y = resample_to_model_rate(&x, sr).unwrap();
        assert!((y.len() as i64 - 22_050).abs() <= 1, "{}", y.len());
        // Zero crossings of 440 Hz over one second: about 880.
        let zc = y.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        assert!((870..=890).contains(&zc), "{zc}");
        let rms = (y[2000..20000].iter().map(|v| v * v).sum::<f32>() / 18000.0).sqrt();
        assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.01, "{rms}");
    }
}
