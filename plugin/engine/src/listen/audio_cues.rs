//! Audio-level cues that carry arousal, measured on the track's audio itself rather than on the
//! transcribed notes: loudness, onset rate (peaks of spectral flux), spectral flux and
//! brightness (spectral centroid), per bar.
//!
//! Thread: worker / command line (allocates its FFT plan and buffers once, in `new`)

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Analysis frame and hop, in samples at [`CUE_SAMPLE_RATE_HZ`].
pub const FRAME: usize = 1024;
pub const HOP: usize = 512;
/// The cues are computed at Basic Pitch's rate (the transcriber has that audio at hand; it checks
/// at compile time that its `MODEL_SAMPLE_RATE_HZ` is this rate, so this file needs nothing of it).
pub const CUE_SAMPLE_RATE_HZ: u32 = 22_050;
/// Number of cues per bar.
pub const NUM_CUES: usize = 4;
pub const CUE_NAMES: [&str; NUM_CUES] = ["loudness_db", "onsets_per_s", "flux", "brightness_oct"];
/// Silence floor of the loudness cue.
const FLOOR_DB: f32 = -90.0;

/// Per-frame measurements of a stretch of audio.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CueFrames {
    /// Frame energy (mean square).
    pub energy: Vec<f32>,
    /// Positive change of log magnitude from the previous frame, summed over bins.
    pub flux: Vec<f32>,
    /// Spectral centroid (power-weighted) in Hz (0 for a silent frame).
    pub centroid_hz: Vec<f32>,
}

/// Computes [`CueFrames`] with a Hann window and a real FFT.
pub struct CueAnalyzer {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
    prev_log_mag: Vec<f32>,
}

impl std::fmt::Debug for CueAnalyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CueAnalyzer").finish()
    }
}

impl Default for CueAnalyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl CueAnalyzer {
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FRAME);
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        let window = (0..FRAME).map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / FRAME as f32).cos()).collect();
        Self { fft, window, input: vec![0.0; FRAME], prev_log_mag: vec![0.0; spectrum.len()], spectrum, scratch }
    }

    /// Frames of `audio` (at [`CUE_SAMPLE_RATE_HZ`]) every [`HOP`] samples; frame `k` covers
    /// samples `[k * HOP, k * HOP + FRAME)` (zero beyond the end). Non-finite samples are silence.
    pub fn frames(&mut self, audio: &[f32]) -> CueFrames {
        let n = audio.len().div_ceil(HOP);
        let mut out = CueFrames { energy: Vec::with_capacity(n), flux: Vec::with_capacity(n), centroid_hz: Vec::with_capacity(n) };
        self.prev_log_mag.iter_mut().for_each(|x| *x = 0.0);
        self.append_frames(audio, n, &mut out);
        out
    }

    /// Appends `n` frames of `audio` to `out`, the flux continuing from the last frame analysed
    /// (the first frame ever has none).
    pub fn append_frames(&mut self, audio: &[f32], n: usize, out: &mut CueFrames) {
        let bin_hz = CUE_SAMPLE_RATE_HZ as f32 / FRAME as f32;
        for k in 0..n {
            let start = k * HOP;
            let mut energy = 0.0f32;
            for i in 0..FRAME {
                let x = audio.get(start + i).copied().filter(|x| x.is_finite()).unwrap_or(0.0);
                energy += x * x;
                self.input[i] = x * self.window[i];
            }
            energy /= FRAME as f32;
            if self.fft.process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch).is_err() {
                out.energy.push(energy);
                out.flux.push(0.0);
                out.centroid_hz.push(0.0);
                continue;
            }
            let (mut flux, mut num, mut den) = (0.0f32, 0.0f32, 0.0f32);
            for (b, c) in self.spectrum.iter().enumerate() {
                let mag = c.norm();
                let log_mag = (1.0 + 100.0 * mag).ln();
                flux += (log_mag - self.prev_log_mag[b]).max(0.0);
                self.prev_log_mag[b] = log_mag;
                // Power-weighted, so window leakage does not pull the centroid up.
                num += mag * mag * b as f32 * bin_hz;
                den += mag * mag;
            }
            out.energy.push(energy);
            out.flux.push(if out.energy.len() == 1 { 0.0 } else { flux });
            out.centroid_hz.push(if den > 1e-9 { num / den } else { 0.0 });
        }
    }
}

/// Onset frames: local maxima of flux above a moving median (±8 frames) plus `delta`, at least
/// 3 frames apart.
pub fn onset_frames(flux: &[f32]) -> Vec<usize> {
    const HALF: usize = 8;
    let delta = {
        let mean = flux.iter().sum::<f32>() / flux.len().max(1) as f32;
        0.5 * mean + 1e-3
    };
    let mut out: Vec<usize> = Vec::new();
    let mut buf = Vec::with_capacity(2 * HALF + 1);
    for t in 1..flux.len().saturating_sub(1) {
        if !(flux[t] > flux[t - 1] && flux[t] >= flux[t + 1]) {
            continue;
        }
        buf.clear();
        buf.extend_from_slice(&flux[t.saturating_sub(HALF)..(t + HALF + 1).min(flux.len())]);
        buf.sort_by(f32::total_cmp);
        let median = buf[buf.len() / 2];
        if flux[t] > median + delta && out.last().is_none_or(|&l| t - l >= 3) {
            out.push(t);
        }
    }
    out
}

/// The cues of the span `[start_s, end_s)` of audio whose frame 0 starts at `t0_s`.
pub fn span_cues(frames: &CueFrames, onsets: &[usize], t0_s: f64, start_s: f64, end_s: f64) -> [f32; NUM_CUES] {
    let hop_s = HOP as f64 / CUE_SAMPLE_RATE_HZ as f64;
    let n = frames.energy.len();
    let a = (((start_s - t0_s) / hop_s).floor().max(0.0) as usize).min(n);
    let b = (((end_s - t0_s) / hop_s).ceil().max(0.0) as usize).clamp(a, n);
    if b == a {
        return [FLOOR_DB, 0.0, 0.0, 0.0];
    }
    let len = (b - a) as f32;
    let energy = frames.energy[a..b].iter().sum::<f32>() / len;
    let loudness_db = (10.0 * (energy + 1e-12).log10()).max(FLOOR_DB);
    let dur_s = ((b - a) as f64 * hop_s).max(1e-3) as f32;
    let num_onsets = onsets.iter().filter(|&&t| t >= a && t < b).count() as f32;
    let flux = frames.flux[a..b].iter().sum::<f32>() / len;
    // Centroid weighted by energy, as octaves above 100 Hz (0 when silent).
    let (mut num, mut den) = (0.0f32, 0.0f32);
    for t in a..b {
        if frames.centroid_hz[t] > 0.0 {
            num += frames.energy[t] * frames.centroid_hz[t];
            den += frames.energy[t];
        }
    }
    let brightness = if den > 1e-12 { ((num / den) / 100.0).max(1.0).log2() } else { 0.0 };
    [loudness_db, num_onsets / dur_s, flux, brightness]
}


/// The cues of the track's audio as it streams in (at [`CUE_SAMPLE_RATE_HZ`]): frames every
/// [`HOP`] samples, the last [`LIVE_CUE_SECONDS`] kept, so the worker can read the cues of the
/// bars that just passed.
#[derive(Debug)]
pub struct LiveCues {
    analyzer: CueAnalyzer,
    /// Samples not yet framed (the last `FRAME - HOP` of the previous frame lead each frame).
    pending: Vec<f32>,
    frames: CueFrames,
    /// Time of `frames[0]`'s start on the stream's clock.
    first_frame_s: f64,
}

/// Seconds of cue frames kept.
pub const LIVE_CUE_SECONDS: f64 = 24.0;

impl LiveCues {
    /// Frames start at `start_s` on the clock the caller reads the cues on.
    pub fn new(start_s: f64) -> Self {
        Self {
            analyzer: CueAnalyzer::new(),
            pending: Vec::with_capacity(FRAME * 4),
            frames: CueFrames::default(),
            first_frame_s: start_s,
        }
    }

    /// Appends audio at [`CUE_SAMPLE_RATE_HZ`].
    pub fn push(&mut self, audio: &[f32]) {
        self.pending.extend_from_slice(audio);
        if self.pending.len() < FRAME {
            return;
        }
        let n = (self.pending.len() - FRAME) / HOP + 1;
        self.analyzer.append_frames(&self.pending[..(n - 1) * HOP + FRAME], n, &mut self.frames);
        self.pending.drain(..n * HOP);
        let hop_s = HOP as f64 / CUE_SAMPLE_RATE_HZ as f64;
        let keep = (LIVE_CUE_SECONDS / hop_s) as usize;
        if self.frames.energy.len() > keep + keep / 4 {
            let drop = self.frames.energy.len() - keep;
            self.frames.energy.drain(..drop);
            self.frames.flux.drain(..drop);
            self.frames.centroid_hz.drain(..drop);
            self.first_frame_s += drop as f64 * hop_s;
        }
    }

    /// The cues of the bar ending at `now_s` and their mean over the last four bars (the
    /// inputs of [`CueMap`]), onsets found over the frames kept.
    pub fn bar_cues(&mut self, now_s: f64, bar_s: f64) -> [f32; 2 * NUM_CUES] {
        let onsets = onset_frames(&self.frames.flux);
        let bar_s = if bar_s.is_finite() && bar_s > 0.0 { bar_s } else { 2.0 };
        let bars: [[f32; NUM_CUES]; 4] = std::array::from_fn(|k| {
            span_cues(&self.frames, &onsets, self.first_frame_s, now_s - (k as f64 + 1.0) * bar_s, now_s - k as f64 * bar_s)
        });
        let mut out = [0.0f32; 2 * NUM_CUES];
        for c in 0..NUM_CUES {
            out[c] = bars[0][c];
            out[NUM_CUES + c] = bars.iter().map(|b| b[c]).sum::<f32>() / 4.0;
        }
        out
    }
}

/// The committed map from (model valence, model arousal, cues) to arousal, fitted by
/// `moodfader lab eval-audio --write-map` on transcribed VGMIDI training pieces (ridge regression on
/// standardised inputs). Valence is left as the model reads it: the cues did not help it.
pub const EMBEDDED_CUE_MAP: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/audio_cues.json"));

/// Names of the map's inputs, in order.
pub fn cue_map_inputs() -> Vec<String> {
    ["valence", "arousal"]
        .iter()
        .map(|s| s.to_string())
        .chain(CUE_NAMES.iter().map(|s| s.to_string()))
        .chain(CUE_NAMES.iter().map(|s| format!("{s}_mean4")))
        .collect()
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CueMap {
    pub inputs: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Intercept first, then one weight per input.
    pub w: Vec<f64>,
}

impl CueMap {
    /// The built-in map, checked against this build's cues.
    pub fn embedded() -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(EMBEDDED_CUE_MAP)?;
        let map: CueMap = serde_json::from_value(v["arousal_map"].clone())?;
        map.check()?;
        Ok(map)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        let d = cue_map_inputs().len();
        if self.inputs != cue_map_inputs() || self.mean.len() != d || self.std.len() != d || self.w.len() != d + 1 {
            anyhow::bail!("audio cue map does not match this build's cues");
        }
        if self.mean.iter().chain(&self.std).chain(&self.w).any(|x| !x.is_finite()) || self.std.iter().any(|&s| s <= 0.0) {
            anyhow::bail!("audio cue map has non-finite or zero-spread values");
        }
        Ok(())
    }

    /// Arousal from the model's reading and the cues, in [-1, 1] (the model's arousal when
    /// anything is not finite).
    pub fn arousal(&self, valence: f32, arousal: f32, cues: &[f32; 2 * NUM_CUES]) -> f32 {
        let x = [valence, arousal].into_iter().chain(cues.iter().copied());
        let mut y = self.w[0];
        for (j, v) in x.enumerate() {
            y += self.w[j + 1] * (v as f64 - self.mean[j]) / self.std[j];
        }
        if y.is_finite() { (y as f32).clamp(-1.0, 1.0) } else { arousal }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_cues_match_the_offline_frames() {
        let audio: Vec<f32> = (0..22_050 * 3).map(|i| (i as f32 * 0.07).sin() * ((i / 5000) % 3) as f32 * 0.2).collect();
        let mut off = CueAnalyzer::new();
        let whole = off.frames(&audio);
        let mut live = LiveCues::new(10.0);
        for chunk in audio.chunks(777) {
            live.push(chunk);
        }
        let n = live.frames.energy.len();
        assert!(n + 3 >= whole.energy.len() && n > 100);
        for k in 0..n {
            assert!((live.frames.energy[k] - whole.energy[k]).abs() < 1e-6);
            assert!((live.frames.flux[k] - whole.flux[k]).abs() < 1e-3, "{k}");
        }
        let c = live.bar_cues(13.0, 1.0);
        assert!(c.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn the_committed_cue_map_loads_and_stays_in_range() {
        let map = CueMap::embedded().expect("models/audio_cues.json");
        let loud = [-10.0, 6.0, 80.0, 4.0, -12.0, 5.0, 70.0, 4.0];
        let quiet = [-40.0, 0.5, 5.0, 2.0, -40.0, 0.5, 5.0, 2.0];
        for cues in [loud, quiet] {
            let a = map.arousal(0.1, 0.2, &cues);
            assert!(a.is_finite() && (-1.0..=1.0).contains(&a));
        }
        assert_eq!(map.arousal(f32::NAN, 0.3, &quiet), 0.3);
    }

    fn tone(hz: f32, amp: f32, secs: f32) -> Vec<f32> {
        let sr = CUE_SAMPLE_RATE_HZ as f32;
        (0..(secs * sr) as usize).map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / sr).sin()).collect()
    }

    #[test]
    fn louder_brighter_and_busier_audio_reads_so() {
        let mut an = CueAnalyzer::new();
        // Soft low tone held for 2 s, then loud high plucks four times a second.
        let mut audio = tone(220.0, 0.05, 2.0);
        for _ in 0..8 {
            let mut pluck = tone(1760.0, 0.5, 0.25);
            for (i, x) in pluck.iter_mut().enumerate() {
                *x *= (-(i as f32) / 4000.0).exp();
            }
            audio.extend(pluck);
        }
        let f = an.frames(&audio);
        let on = onset_frames(&f.flux);
        let calm = span_cues(&f, &on, 0.0, 0.2, 1.9);
        let busy = span_cues(&f, &on, 0.0, 2.0, 4.0);
        assert!(busy[0] > calm[0] + 6.0, "loudness {calm:?} {busy:?}");
        assert!(busy[1] >= 3.0 && calm[1] <= 1.0, "onset rate {calm:?} {busy:?}");
        assert!(busy[3] > calm[3] + 1.5, "brightness {calm:?} {busy:?}");
        assert!(busy.iter().chain(calm.iter()).all(|x| x.is_finite()));
    }

    #[test]
    fn silence_and_nan_give_the_floor() {
        let mut an = CueAnalyzer::new();
        let mut audio = vec![0.0f32; 22_050];
        audio[100] = f32::NAN;
        let f = an.frames(&audio);
        let c = span_cues(&f, &onset_frames(&f.flux), 0.0, 0.0, 1.0);
        assert_eq!(c, [FLOOR_DB, 0.0, 0.0, 0.0]);
        assert_eq!(span_cues(&f, &[], 0.0, 5.0, 6.0), [FLOOR_DB, 0.0, 0.0, 0.0]);
    }
}
