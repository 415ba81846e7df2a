//! Reading WAV files for transcription: any common sample rate, any channel count, 8/16/24/32-bit
//! integer or 32-bit float PCM, mixed down to mono. Anything else gets an error naming the file
//! and the problem.
//!
//! Thread: command line / worker

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Lowest and highest sample rates accepted.
pub const MIN_SAMPLE_RATE_HZ: u32 = 8_000;
pub const MAX_SAMPLE_RATE_HZ: u32 = 384_000;
/// Longest recording accepted (an hour), so a bad header cannot ask for terabytes.
pub const MAX_DURATION_S: u64 = 3_600;

/// Mono samples in [-1, 1] and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoAudio {
    pub samples: Vec<f32>,
    pub sample_rate_hz: u32,
    /// Channels in the file before the mix-down.
    pub num_channels: u16,
}

impl MonoAudio {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate_hz.max(1) as f64
    }
}

/// Reads a WAV file and mixes it down to mono. Non-finite float samples become 0.
pub fn read_wav(path: &Path) -> Result<MonoAudio> {
    let name = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("{name}: cannot read file"))?;
    parse_wav(&bytes).with_context(|| format!("{name}: not a usable WAV file"))
}

/// [`read_wav`] on bytes in memory.
pub fn parse_wav(bytes: &[u8]) -> Result<MonoAudio> {
    let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = reader.spec();
    if spec.channels == 0 {
        bail!("it has no channels");
    }
    if !(MIN_SAMPLE_RATE_HZ..=MAX_SAMPLE_RATE_HZ).contains(&spec.sample_rate) {
        bail!("sample rate {} Hz is outside {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz", spec.sample_rate);
    }
    let num_frames = reader.duration() as u64;
    if num_frames > MAX_DURATION_S * spec.sample_rate as u64 {
        bail!("longer than {MAX_DURATION_S} s");
    }
    let ch = spec.channels as usize;
    let mut mono = Vec::with_capacity(num_frames as usize);
    let mut acc = 0.0f32;
    let mut k = 0usize;
    let mut push = |x: f32, mono: &mut Vec<f32>| {
        acc += if x.is_finite() { x } else { 0.0 };
        k += 1;
        if k == ch {
            mono.push(acc / ch as f32);
            acc = 0.0;
            k = 0;
        }
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => {
            for s in reader.samples::<f32>() {
                push(s.map_err(|e| anyhow::anyhow!("{e}"))?, &mut mono);
            }
        }
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            for s in reader.samples::<i32>() {
                push(s.map_err(|e| anyhow::anyhow!("{e}"))? as f32 * scale, &mut mono);
            }
        }
        (fmt, bits) => bail!("{bits}-bit {fmt:?} samples are not supported (use 8/16/24/32-bit PCM or 32-bit float)"),
    }
    Ok(MonoAudio { samples: mono, sample_rate_hz: spec.sample_rate, num_channels: spec.channels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(channels: u16, rate: u32, bits: u16, float: bool, frames: &[Vec<f32>]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
        };
        let mut cur = std::io::Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
            for f in frames {
                for &x in f {
                    if float {
                        w.write_sample(x).unwrap();
                    } else {
                        w.write_sample((x * ((1i64 << (bits - 1)) - 1) as f32) as i32).unwrap();
                    }
                }
            }
            w.finalize().unwrap();
        }
        cur.into_inner()
    }

    #[test]
    fn stereo_24_bit_mixes_down() {
        let b = wav(2, 44_100, 24, false, &[vec![0.5, -0.5], vec![1.0, 0.0], vec![0.25, 0.25]]);
        let a = parse_wav(&b).unwrap();
        assert_eq!(a.sample_rate_hz, 44_100);
        assert_eq!(a.num_channels, 2);
        assert_eq!(a.samples.len(), 3);
        assert!(a.samples[0].abs() < 1e-6 && (a.samples[1] - 0.5).abs() < 1e-4 && (a.samples[2] - 0.25).abs() < 1e-4);
    }

    #[test]
    fn float_nan_becomes_silence_and_six_channels_work() {
        let b = wav(6, 96_000, 32, true, &[vec![f32::NAN, 0.6, 0.0, 0.0, 0.0, 0.0]]);
        let a = parse_wav(&b).unwrap();
        assert!((a.samples[0] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn bad_input_says_why() {
        assert!(parse_wav(b"RIFF....WAVEjunk").is_err());
        assert!(parse_wav(b"").is_err());
        let e = parse_wav(&wav(1, 4_000, 16, false, &[vec![0.0]])).unwrap_err();
        assert!(format!("{e:#}").contains("4000 Hz"), "{e:#}");
    }
}
