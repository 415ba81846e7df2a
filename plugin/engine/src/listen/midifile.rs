//! Standard MIDI File reading: notes with times in seconds and beats, the tempo map, and the bars
//! of the file's meter. Used by the command line, the training exporter and the tests.
//!
//! Thread: worker / command line (allocates)

use std::path::Path;

use anyhow::{Context, Result, bail};
use midly::{MetaMessage, MidiMessage, Smf, Timing, TrackEventKind};

use crate::listen::notes::{BarWindow, Note};

/// Refuse files with more notes than this (a hostile or broken file, not music).
pub const MAX_NOTES: usize = 2_000_000;

/// Refuse files longer than this many bars.
pub const MAX_BARS: usize = 100_000;

/// A tempo change at a tick: microseconds per quarter note from `tick` on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TempoChange {
    pub tick: u64,
    pub us_per_quarter: u32,
}

/// A meter change at a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeterChange {
    pub tick: u64,
    pub num: u32,
    pub den: u32,
}

/// A parsed MIDI file.
#[derive(Debug, Clone)]
pub struct Piece {
    /// Pitched and drum notes, sorted by onset then pitch.
    pub notes: Vec<Note>,
    pub ticks_per_quarter: u32,
    pub tempos: Vec<TempoChange>,
    pub meters: Vec<MeterChange>,
    /// Bars following the file's meter, up to the end of the last note.
    pub bars: Vec<BarWindow>,
    pub end_tick: u64,
}

/// Converts ticks to seconds with a tempo map.
#[derive(Debug, Clone)]
struct TempoMap {
    tpq: f64,
    /// (tick, seconds at that tick, µs per quarter from there)
    segments: Vec<(u64, f64, f64)>,
}

impl TempoMap {
    fn new(tpq: u32, tempos: &[TempoChange]) -> Self {
        let tpq = tpq as f64;
        let mut segments = vec![(0u64, 0.0f64, 500_000.0f64)];
        for t in tempos {
            let (last_tick, last_s, last_us) = *segments.last().unwrap();
            let s = last_s + (t.tick - last_tick) as f64 / tpq * last_us / 1e6;
            if t.tick == last_tick {
                segments.last_mut().unwrap().2 = t.us_per_quarter as f64;
            } else {
                segments.push((t.tick, s, t.us_per_quarter as f64));
            }
        }
        TempoMap { tpq, segments }
    }

    fn seconds(&self, tick: u64) -> f64 {
        let i = self.segments.partition_point(|s| s.0 <= tick).saturating_sub(1);
        let (t0, s0, us) = self.segments[i];
        s0 + (tick - t0) as f64 / self.tpq * us / 1e6
    }

    /// Quarter notes at `seconds` (the inverse of [`Self::seconds`]; before 0 the first tempo goes on).
    fn beats(&self, seconds: f64) -> f64 {
        let i = self.segments.partition_point(|s| s.1 <= seconds).saturating_sub(1);
        let (t0, s0, us) = self.segments[i];
        t0 as f64 / self.tpq + (seconds - s0) * 1e6 / us
    }
}

/// Reads and parses a MIDI file. Errors name the file and the problem.
pub fn read_midi_file(path: &Path) -> Result<Piece> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read file", path.display()))?;
    parse_midi(&bytes).with_context(|| format!("{}: not a usable MIDI file", path.display()))
}

/// Refuses a header whose SMPTE frame rate byte is -128: midly 0.5.3 negates it and overflows
/// (found by fuzzing). Checks every `MThd`, so RIFF-wrapped files are covered too.
fn check_smpte_division(bytes: &[u8]) -> Result<()> {
    let mut from = 0;
    while let Some(pos) = bytes[from..].windows(4).position(|w| w == b"MThd") {
        let at = from + pos;
        if bytes.get(at + 12) == Some(&0x80) {
            bail!("invalid SMPTE frame rate in the header");
        }
        from = at + 4;
    }
    Ok(())
}

/// Parses MIDI file bytes.
pub fn parse_midi(bytes: &[u8]) -> Result<Piece> {
    check_smpte_division(bytes)?;
    // midly is not ours: a panic inside it on hostile bytes becomes an error, not a crash.
    let smf = std::panic::catch_unwind(|| Smf::parse(bytes))
        .map_err(|_| anyhow::anyhow!("the MIDI parser failed on this file"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tpq = match smf.header.timing {
        Timing::Metrical(t) => t.as_int() as u32,
        // SMPTE time: treat as 120 BPM with one quarter per 0.5 s worth of ticks.
        Timing::Timecode(fps, sub) => ((fps.as_f32() * sub as f32) / 2.0).round().max(1.0) as u32,
    };
    if tpq == 0 {
        bail!("ticks per quarter note is zero");
    }

    let mut tempos = Vec::new();
    let mut meters = Vec::new();
    // (tick, on?, channel, pitch, velocity)
    let mut raw: Vec<(u64, bool, u8, u8, u8)> = Vec::new();
    let mut end_tick = 0u64;
    let sequential = matches!(smf.header.format, midly::Format::Sequential);
    let mut track_offset = 0u64;
    for track in &smf.tracks {
        let mut tick = if sequential { track_offset } else { 0 };
        for ev in track {
            tick += ev.delta.as_int() as u64;
            match ev.kind {
                TrackEventKind::Midi { channel, message } => match message {
                    MidiMessage::NoteOn { key, vel } => {
                        raw.push((tick, vel.as_int() > 0, channel.as_int(), key.as_int(), vel.as_int()))
                    }
                    MidiMessage::NoteOff { key, .. } => raw.push((tick, false, channel.as_int(), key.as_int(), 0)),
                    _ => {}
                },
                TrackEventKind::Meta(MetaMessage::Tempo(us)) => {
                    let us = us.as_int();
                    if us > 0 {
                        tempos.push(TempoChange { tick, us_per_quarter: us });
                    }
                }
                TrackEventKind::Meta(MetaMessage::TimeSignature(num, den_pow, _, _))
                    if num > 0 && den_pow < 7 => {
                        meters.push(MeterChange { tick, num: num as u32, den: 1 << den_pow });
                    }
                _ => {}
            }
            if raw.len() > 2 * MAX_NOTES {
                bail!("more than {MAX_NOTES} notes");
            }
        }
        end_tick = end_tick.max(tick);
        track_offset = tick;
    }
    tempos.sort_by_key(|t| t.tick);
    meters.sort_by_key(|m| m.tick);
    // Stable sort: at one tick, note-offs before note-ons so a re-struck note closes first.
    raw.sort_by_key(|r| (r.0, r.1));

    let map = TempoMap::new(tpq, &tempos);
    let to_beats = |tick: u64| tick as f64 / tpq as f64;
    let mut open: Vec<Vec<(u64, u8)>> = vec![Vec::new(); 16 * 128];
    let mut notes = Vec::new();
    let mut push = |on_tick: u64, off_tick: u64, ch: u8, pitch: u8, vel: u8| {
        let off_tick = off_tick.max(on_tick);
        let onset_s = map.seconds(on_tick);
        notes.push(Note {
            onset_s,
            dur_s: map.seconds(off_tick) - onset_s,
            onset_beats: to_beats(on_tick),
            dur_beats: to_beats(off_tick) - to_beats(on_tick),
            pitch,
            velocity: vel,
            channel: ch,
        });
    };
    for &(tick, on, ch, pitch, vel) in &raw {
        let slot = &mut open[ch as usize * 128 + pitch as usize];
        if on {
            slot.push((tick, vel));
        } else if !slot.is_empty() {
            let (on_tick, v) = slot.remove(0);
            push(on_tick, tick, ch, pitch, v);
        }
    }
    for (i, slot) in open.iter().enumerate() {
        for &(on_tick, v) in slot {
            push(on_tick, end_tick, (i / 128) as u8, (i % 128) as u8, v);
        }
    }
    if notes.len() > MAX_NOTES {
        bail!("more than {MAX_NOTES} notes");
    }
    notes.sort_by(|a, b| a.onset_s.total_cmp(&b.onset_s).then(a.pitch.cmp(&b.pitch)));
    let bars = bars_for(tpq, &map, &meters, end_tick.max(1))?;
    Ok(Piece { notes, ticks_per_quarter: tpq, tempos, meters, bars, end_tick })
}

impl Piece {
    /// Bars that start on the given downbeats (seconds, ascending) instead of the file's meter:
    /// for data sets whose bar lines come annotated beside a file with a wrong or missing meter
    /// (POP909's files say 1/4 or 2/4 and put beat 1 off the music's beat). Music before the
    /// first downbeat is a pickup bar from 0; after the last, bars of the last bar's length go on
    /// to the end of the file. Downbeats that do not move forward are skipped; fewer than two
    /// usable ones give None.
    pub fn bars_from_downbeats(&self, downbeats_s: &[f64]) -> Option<Vec<BarWindow>> {
        let map = TempoMap::new(self.ticks_per_quarter, &self.tempos);
        let mut starts: Vec<f64> = Vec::with_capacity(downbeats_s.len() + 1);
        for &d in downbeats_s.iter().filter(|d| d.is_finite() && **d >= 0.0) {
            if starts.last().is_none_or(|&l| d > l + 1e-3) {
                starts.push(d);
            }
        }
        if starts.len() < 2 {
            return None;
        }
        let end_s = map.seconds(self.end_tick.max(1)).max(self.notes.iter().map(|n| n.end_s()).fold(0.0, f64::max));
        let first_len = starts[1] - starts[0];
        if starts[0] > 0.05 * first_len {
            starts.insert(0, 0.0);
        } else {
            starts[0] = 0.0;
        }
        // A bar follows the last downbeat, and more of its length until one ends past the music.
        let last_len = starts[starts.len() - 1] - starts[starts.len() - 2];
        let mut end = starts[starts.len() - 1];
        loop {
            end += last_len;
            starts.push(end);
            if end >= end_s + 1e-6 || starts.len() > MAX_BARS + 1 {
                break;
            }
        }
        let bars: Vec<BarWindow> = starts
            .windows(2)
            .map(|w| {
                let (b0, b1) = (map.beats(w[0]), map.beats(w[1]));
                BarWindow {
                    start_s: w[0],
                    end_s: w[1],
                    start_beats: b0,
                    len_beats: b1 - b0,
                    tempo_bpm: (b1 - b0) * 60.0 / (w[1] - w[0]).max(1e-9),
                }
            })
            .collect();
        (bars.len() <= MAX_BARS).then_some(bars)
    }

    /// Bars of a fixed meter instead of the file's own (some data sets count measures in 4/4).
    pub fn bars_in_fixed_meter(&self, num: u32, den: u32) -> Vec<BarWindow> {
        let map = TempoMap::new(self.ticks_per_quarter, &self.tempos);
        bars_for(self.ticks_per_quarter, &map, &[MeterChange { tick: 0, num, den }], self.end_tick.max(1))
            .unwrap_or_default()
    }
}

/// Ticks per quarter of the files the engine writes (continuations, transcriptions, exports).
pub const SMF_TICKS_PER_QUARTER: u16 = 480;

/// Builds a format-0 Standard MIDI File from (delta ticks, raw event bytes) pairs, adding the
/// end-of-track event. For tests and small generated files.
pub fn single_track_smf<'a>(ticks_per_quarter: u16, events: impl IntoIterator<Item = (u32, &'a [u8])>) -> Vec<u8> {
    let mut track = Vec::new();
    for (delta, bytes) in events {
        let mut d = delta;
        let mut stack = vec![(d & 0x7f) as u8];
        d >>= 7;
        while d > 0 {
            stack.push((d & 0x7f) as u8 | 0x80);
            d >>= 7;
        }
        track.extend(stack.iter().rev());
        track.extend_from_slice(bytes);
    }
    track.extend_from_slice(&[0, 0xff, 0x2f, 0]);
    let mut out = b"MThd\0\0\0\x06\0\0\0\x01".to_vec();
    out.extend_from_slice(&ticks_per_quarter.to_be_bytes());
    out.extend_from_slice(b"MTrk");
    out.extend_from_slice(&(track.len() as u32).to_be_bytes());
    out.extend(track);
    out
}

/// Bars of the meter map covering ticks `0..end_tick`. A meter change starts a new bar.
fn bars_for(tpq: u32, map: &TempoMap, meters: &[MeterChange], end_tick: u64) -> Result<Vec<BarWindow>> {
    let mut bars = Vec::new();
    let mut tick = 0u64;
    let (mut num, mut den) = (4u32, 4u32);
    let mut next_meter = 0usize;
    while tick < end_tick {
        while next_meter < meters.len() && meters[next_meter].tick <= tick {
            num = meters[next_meter].num;
            den = meters[next_meter].den;
            next_meter += 1;
        }
        let len_beats = BarWindow::len_beats_for_meter(num, den);
        let mut bar_ticks = ((len_beats * tpq as f64).round() as u64).max(1);
        if next_meter < meters.len() && meters[next_meter].tick < tick + bar_ticks && meters[next_meter].tick > tick {
            bar_ticks = meters[next_meter].tick - tick;
        }
        let end = tick + bar_ticks;
        let start_s = map.seconds(tick);
        let end_s = map.seconds(end);
        let beats = bar_ticks as f64 / tpq as f64;
        bars.push(BarWindow {
            start_s,
            end_s,
            start_beats: tick as f64 / tpq as f64,
            len_beats: beats,
            tempo_bpm: beats * 60.0 / (end_s - start_s).max(1e-9),
        });
        if bars.len() > MAX_BARS {
            bail!("more than {MAX_BARS} bars");
        }
        tick = end;
    }
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smf(tpq: u16, events: &[(u32, &[u8])]) -> Vec<u8> {
        single_track_smf(tpq, events.iter().map(|(d, b)| (*d, *b)))
    }

    #[test]
    fn bars_from_downbeats_follow_the_annotation_not_the_file_meter() {
        // A 1/4 file at 120 BPM (as POP909's are) whose music puts its downbeats half a beat
        // after the file's beat 1: at 0.25 s, 2.25 s and 4.25 s. Notes run to beat 12.
        let bytes = smf(480, &[
            (0, &[0xff, 0x58, 4, 1, 2, 24, 8]),
            (240, &[0x90, 60, 100]),
            (5520, &[0x80, 60, 0]),
        ]);
        let p = parse_midi(&bytes).unwrap();
        assert!(p.bars.iter().all(|b| (b.len_beats - 1.0).abs() < 1e-9), "the file's own bars are one beat long");
        let bars = p.bars_from_downbeats(&[0.25, 2.25, 4.25]).unwrap();
        let starts: Vec<f64> = bars.iter().map(|b| b.start_beats).collect();
        assert_eq!(starts, vec![0.0, 0.5, 4.5, 8.5], "a pickup bar, then 4/4 bars from the downbeats to the end");
        assert!((bars[0].len_beats - 0.5).abs() < 1e-9);
        for (b, s) in bars[1..].iter().zip([0.25, 2.25, 4.25]) {
            assert!((b.len_beats - 4.0).abs() < 1e-9 && (b.start_s - s).abs() < 1e-9 && (b.tempo_bpm - 120.0).abs() < 1e-6);
        }
        assert!(bars.last().unwrap().end_s >= p.notes[0].end_s() - 1e-9);
        assert!(p.bars_from_downbeats(&[1.0]).is_none(), "one downbeat gives no bar length");
        assert!(p.bars_from_downbeats(&[1.0, 1.0, f64::NAN]).is_none());
    }

    #[test]
    fn tempo_change_moves_seconds_not_beats() {
        // 480 tpq; 120 BPM, a quarter note, then 60 BPM and another quarter.
        let bytes = smf(480, &[
            (0, &[0xff, 0x51, 3, 0x07, 0xa1, 0x20]),
            (0, &[0x90, 60, 100]),
            (480, &[0x80, 60, 0]),
            (0, &[0xff, 0x51, 3, 0x0f, 0x42, 0x40]),
            (0, &[0x90, 62, 90]),
            (480, &[0x90, 62, 0]),
        ]);
        let p = parse_midi(&bytes).unwrap();
        assert_eq!(p.notes.len(), 2);
        assert!((p.notes[0].dur_s - 0.5).abs() < 1e-9);
        assert!((p.notes[1].onset_s - 0.5).abs() < 1e-9);
        assert!((p.notes[1].dur_s - 1.0).abs() < 1e-9);
        assert!((p.notes[1].onset_beats - 1.0).abs() < 1e-9);
        assert_eq!(p.notes[1].velocity, 90);
    }

    #[test]
    fn bars_follow_meter_changes() {
        // 3/4 for one bar, then 7/8.
        let bytes = smf(96, &[
            (0, &[0xff, 0x58, 4, 3, 2, 24, 8]),
            (0, &[0x90, 60, 100]),
            (288, &[0x80, 60, 0]),
            (0, &[0xff, 0x58, 4, 7, 3, 24, 8]),
            (0, &[0x90, 64, 100]),
            (336, &[0x80, 64, 0]),
            (0, &[0x90, 64, 100]),
            (10, &[0x80, 64, 0]),
        ]);
        let p = parse_midi(&bytes).unwrap();
        assert_eq!(p.bars.len(), 3);
        assert!((p.bars[0].len_beats - 3.0).abs() < 1e-9);
        assert!((p.bars[1].len_beats - 3.5).abs() < 1e-9);
        assert!((p.bars[2].start_beats - 6.5).abs() < 1e-9);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_midi(b"not a midi file").is_err());
        assert!(parse_midi(b"MThd\0\0\0\x06\0\0\0\x01\0\0").is_err());
        let mut truncated = smf(480, &[(0, &[0x90, 60, 100]), (480, &[0x80, 60, 0])]);
        truncated.truncate(truncated.len() - 6);
        let _ = parse_midi(&truncated); // may parse leniently, must not panic
    }

    #[test]
    fn hostile_smpte_headers_are_errors() {
        // Found by fuzzing: these panicked inside midly with overflow checks on.
        let plain = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x80\x00";
        assert!(parse_midi(plain).is_err());
        let mut riff = b"RIFF\x1a\x00\x00\x00RMIDdata\x0e\x00\x00\x00".to_vec();
        riff.extend_from_slice(plain);
        assert!(parse_midi(&riff).is_err());
    }

    #[test]
    fn unterminated_and_restruck_notes_are_closed() {
        let bytes = smf(480, &[
            (0, &[0x90, 60, 100]),
            (240, &[0x90, 60, 80]),
            (240, &[0x80, 60, 0]),
            (240, &[0x80, 60, 0]),
            (0, &[0x90, 67, 70]),
            (480, &[0xb0, 64, 0]),
        ]);
        let p = parse_midi(&bytes).unwrap();
        assert_eq!(p.notes.len(), 3);
        assert!(p.notes.iter().all(|n| n.dur_s >= 0.0));
        let last = p.notes.iter().find(|n| n.pitch == 67).unwrap();
        assert!((last.dur_beats - 1.0).abs() < 1e-9);
    }
}
