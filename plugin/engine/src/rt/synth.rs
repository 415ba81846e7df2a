//! A small polyphonic synth: the preview voice, and how the command line renders MIDI to WAV.
//! Each voice is a soft electric-piano-like tone (two detuned partials and a decaying bright
//! partial) with a short linear attack and an exponential release, so notes never click.
//!
//! Thread: any. [`Synth::note_on`], [`Synth::note_off`] and [`Synth::render`] never allocate,
//! lock or panic: real-time safe (the voice pool is fixed; a note beyond it steals the oldest).

/// Voices playing at once.
pub const NUM_VOICES: usize = 32;
const ATTACK_S: f32 = 0.004;
const RELEASE_S: f32 = 0.12;
/// Bright partial decay time.
const BRIGHT_DECAY_S: f32 = 0.35;
/// Long-term decay of a held note (piano-like).
const SUSTAIN_DECAY_S: f32 = 2.5;

#[derive(Debug, Clone, Copy, Default)]
struct Voice {
    active: bool,
    releasing: bool,
    channel: u8,
    pitch: u8,
    /// Amplitude from velocity.
    gain: f32,
    phase: [f32; 3],
    inc: [f32; 3],
    /// Envelope level, the bright partial's level, and samples since the start.
    env: f32,
    bright: f32,
    age: u32,
    /// Start order, to steal the oldest.
    serial: u64,
}

/// The synth.
#[derive(Debug, Clone)]
pub struct Synth {
    voices: [Voice; NUM_VOICES],
    sample_rate: f32,
    serial: u64,
    attack_step: f32,
    release_mul: f32,
    bright_mul: f32,
    sustain_mul: f32,
}

impl Synth {
    pub fn new(sample_rate: f32) -> Self {
        let sr = if sample_rate.is_finite() && sample_rate >= 1000.0 { sample_rate.min(1.0e6) } else { 48_000.0 };
        Self {
            voices: [Voice::default(); NUM_VOICES],
            sample_rate: sr,
            serial: 0,
            attack_step: 1.0 / (ATTACK_S * sr),
            release_mul: (-1.0 / (RELEASE_S * sr / 5.0)).exp(),
            bright_mul: (-1.0 / (BRIGHT_DECAY_S * sr)).exp(),
            sustain_mul: (-1.0 / (SUSTAIN_DECAY_S * sr)).exp(),
        }
    }

    pub fn sample_rate(&self) -> f32 {
        self.sample_rate
    }

    /// Starts a note (a re-strike of a sounding key restarts its voice).
    pub fn note_on(&mut self, channel: u8, pitch: u8, velocity: u8) {
        let pitch = pitch & 127;
        let idx = self
            .voices
            .iter()
            .position(|v| v.active && v.channel == channel && v.pitch == pitch)
            .or_else(|| self.voices.iter().position(|v| !v.active))
            .unwrap_or_else(|| {
                // Steal the oldest voice.
                let mut oldest = 0;
                for (i, v) in self.voices.iter().enumerate() {
                    if v.serial < self.voices[oldest].serial {
                        oldest = i;
                    }
                }
                oldest
            });
        let freq = 440.0 * 2f32.powf((pitch as f32 - 69.0) / 12.0);
        let nyquist = self.sample_rate * 0.45;
        let inc = |ratio: f32| if freq * ratio < nyquist { freq * ratio / self.sample_rate } else { 0.0 };
        self.serial += 1;
        let old_env = if self.voices[idx].active { self.voices[idx].env } else { 0.0 };
        self.voices[idx] = Voice {
            active: true,
            releasing: false,
            channel,
            pitch,
            gain: 0.12 * (velocity.clamp(1, 127) as f32 / 127.0).powf(1.5),
            phase: [0.0, 0.25, 0.0],
            inc: [inc(1.0), inc(1.003), inc(3.0)],
            // A restarted voice continues from its level: no step, no click.
            env: old_env,
            bright: 1.0,
            age: 0,
            serial: self.serial,
        };
    }

    /// Releases a note.
    pub fn note_off(&mut self, channel: u8, pitch: u8) {
        for v in self.voices.iter_mut().filter(|v| v.active && v.channel == channel && v.pitch == pitch & 127) {
            v.releasing = true;
        }
    }

    /// Releases every note.
    pub fn all_notes_off(&mut self) {
        for v in self.voices.iter_mut() {
            v.releasing = true;
        }
    }

    pub fn num_active(&self) -> usize {
        self.voices.iter().filter(|v| v.active).count()
    }

    /// Adds the voices into `out` (mono), sample by sample.
    pub fn render(&mut self, out: &mut [f32]) {
        use std::f32::consts::TAU;
        for v in self.voices.iter_mut().filter(|v| v.active) {
            for o in out.iter_mut() {
                if v.releasing {
                    v.env *= self.release_mul;
                    if v.env < 1e-4 {
                        v.active = false;
                        break;
                    }
                } else if v.env < 1.0 && v.age < (ATTACK_S * self.sample_rate) as u32 + 1 {
                    v.env = (v.env + self.attack_step).min(1.0);
                } else {
                    v.env *= self.sustain_mul;
                }
                v.bright *= self.bright_mul;
                let s = (v.phase[0] * TAU).sin() + 0.6 * (v.phase[1] * TAU).sin() + 0.35 * v.bright * (v.phase[2] * TAU).sin();
                *o += v.gain * v.env * s;
                for k in 0..3 {
                    v.phase[k] += v.inc[k];
                    if v.phase[k] >= 1.0 {
                        v.phase[k] -= 1.0;
                    }
                }
                v.age = v.age.saturating_add(1);
            }
        }
    }
}

/// Renders notes (seconds on their own timeline) to mono samples, with a release tail.
pub fn render_notes(notes: &[crate::listen::notes::Note], sample_rate: u32) -> Vec<f32> {
    let mut synth = Synth::new(sample_rate as f32);
    let sr = synth.sample_rate() as f64;
    let end_s = notes.iter().map(|n| n.onset_s + n.dur_s).fold(0.0, f64::max) + 0.5;
    let total = (end_s * sr).ceil() as usize;
    let mut events: Vec<(usize, bool, u8, u8, u8)> = Vec::with_capacity(notes.len() * 2);
    for n in notes {
        let on = (n.onset_s.max(0.0) * sr).round() as usize;
        let off = ((n.onset_s + n.dur_s).max(0.0) * sr).round().max(on as f64 + 1.0) as usize;
        events.push((on, true, n.channel, n.pitch, n.velocity));
        events.push((off, false, n.channel, n.pitch, 0));
    }
    // Offs before ons at the same sample, so a repeated note re-strikes.
    events.sort_by_key(|e| (e.0, e.1));
    let mut out = vec![0.0f32; total];
    let mut at = 0usize;
    for (t, on, ch, p, v) in events {
        let t = t.min(total);
        synth.render(&mut out[at..t]);
        at = t;
        if on {
            synth.note_on(ch, p, v);
        } else {
            synth.note_off(ch, p);
        }
    }
    synth.render(&mut out[at..]);
    out
}

/// A 16-bit PCM mono WAV file of `samples` (clipped to [-1, 1]).
pub fn wav_bytes(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&sample_rate.to_le_bytes());
    b.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        let v = if s.is_finite() { (s.clamp(-1.0, 1.0) * 32767.0).round() as i16 } else { 0 };
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::notes::Note;

    fn note(onset_s: f64, dur_s: f64, pitch: u8, velocity: u8) -> Note {
        Note { onset_s, dur_s, onset_beats: onset_s * 2.0, dur_beats: dur_s * 2.0, pitch, velocity, channel: 0 }
    }

    #[test]
    fn renders_sound_without_clicks_and_ends_silent() {
        let sr = 48_000;
        let out = render_notes(&[note(0.1, 0.5, 60, 100), note(0.3, 0.2, 64, 60), note(0.3, 0.2, 67, 127)], sr);
        let peak = out.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(peak > 0.05 && peak < 1.0, "peak {peak}");
        // No click: the largest step between samples stays small against the peak.
        let step = out.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0f32, f32::max);
        assert!(step < 0.1 * peak.max(0.1), "step {step} peak {peak}");
        assert!(out[..(0.09 * sr as f64) as usize].iter().all(|&x| x == 0.0), "silence before the first note");
        assert!(out[out.len() - 100..].iter().all(|x| x.abs() < 1e-3), "tail dies away");
    }

    #[test]
    fn louder_velocity_is_louder_and_voices_are_bounded() {
        let rms = |v: u8| {
            let o = render_notes(&[note(0.0, 0.3, 60, v)], 44_100);
            (o.iter().map(|x| x * x).sum::<f32>() / o.len() as f32).sqrt()
        };
        assert!(rms(120) > 1.5 * rms(40));
        let mut s = Synth::new(48_000.0);
        for p in 0..100u8 {
            s.note_on(0, p, 100);
        }
        assert_eq!(s.num_active(), NUM_VOICES);
        s.all_notes_off();
        let mut buf = vec![0.0; 48_000];
        s.render(&mut buf);
        assert_eq!(s.num_active(), 0);
    }

    #[test]
    fn wav_header_is_pcm_mono() {
        let b = wav_bytes(&[0.0, 0.5, -0.5, 2.0, f32::NAN], 22_050);
        assert_eq!(&b[0..4], b"RIFF");
        assert_eq!(&b[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 22_050);
        assert_eq!(b.len(), 44 + 10);
        assert_eq!(i16::from_le_bytes(b[50..52].try_into().unwrap()), 32767);
    }
}
