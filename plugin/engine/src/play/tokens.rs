//! The event vocabulary of the continuation model (REMI-style): bars, positions on a grid of
//! twelve steps per quarter note (sixteenths and eighth-note triplets both land on it), pitches,
//! velocity buckets, durations, and per-bar conditioning tokens for the eight attributes.
//! One source of truth: training reads sequences this module writes.
//!
//! A bar is `Bar, Attr×8, (Position, (Pitch, Velocity, Duration)+)*`. Decoding accepts any
//! token sequence: tokens out of place are skipped, so every sequence decodes to valid notes.
//!
//! Thread: any (the worker's sampler, the exporter, the command line)

use crate::listen::notes::{BarWindow, Note};

/// Grid steps per quarter note.
pub const STEPS_PER_QUARTER: u32 = 12;
/// Longest bar the vocabulary can address, in quarter notes (15/8 is 7.5).
pub const MAX_BAR_QUARTERS: u32 = 8;
pub const NUM_POSITIONS: u32 = STEPS_PER_QUARTER * MAX_BAR_QUARTERS;
pub const NUM_VELOCITY_BUCKETS: u32 = 16;
/// Duration classes in grid steps (1/12 quarter), shortest first; a note gets the nearest.
pub const DURATION_STEPS: [u32; 24] = [1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 15, 16, 18, 20, 24, 30, 36, 42, 48, 60, 72, 84, 96, 144];
pub const NUM_ATTRIBUTES: u32 = 8;
pub const NUM_ATTRIBUTE_LEVELS: u32 = 8;

/// Token ids. The ranges are laid out one after another; [`VOCAB_SIZE`] is the total.
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
pub const BAR: u32 = 3;
pub const POSITION_BASE: u32 = 4;
pub const PITCH_BASE: u32 = POSITION_BASE + NUM_POSITIONS;
pub const VELOCITY_BASE: u32 = PITCH_BASE + 128;
pub const DURATION_BASE: u32 = VELOCITY_BASE + NUM_VELOCITY_BUCKETS;
pub const ATTRIBUTE_BASE: u32 = DURATION_BASE + DURATION_STEPS.len() as u32;
pub const VOCAB_SIZE: u32 = ATTRIBUTE_BASE + NUM_ATTRIBUTES * NUM_ATTRIBUTE_LEVELS;
/// Bumped whenever the vocabulary or the grammar changes.
pub const TOKEN_SPEC_VERSION: u32 = 1;

/// What a token means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Pad,
    Bos,
    Eos,
    Bar,
    /// Grid step from the bar's start.
    Position(u32),
    Pitch(u8),
    /// Velocity bucket, 0..[`NUM_VELOCITY_BUCKETS`].
    Velocity(u32),
    /// Index into [`DURATION_STEPS`].
    Duration(u32),
    /// Attribute index (order of [`crate::Attribute::ALL`]) and level 0..[`NUM_ATTRIBUTE_LEVELS`].
    Attribute(u32, u32),
}

impl Token {
    pub fn id(self) -> u32 {
        match self {
            Token::Pad => PAD,
            Token::Bos => BOS,
            Token::Eos => EOS,
            Token::Bar => BAR,
            Token::Position(p) => POSITION_BASE + p.min(NUM_POSITIONS - 1),
            Token::Pitch(p) => PITCH_BASE + (p as u32 & 127),
            Token::Velocity(v) => VELOCITY_BASE + v.min(NUM_VELOCITY_BUCKETS - 1),
            Token::Duration(d) => DURATION_BASE + d.min(DURATION_STEPS.len() as u32 - 1),
            Token::Attribute(a, l) => {
                ATTRIBUTE_BASE + a.min(NUM_ATTRIBUTES - 1) * NUM_ATTRIBUTE_LEVELS + l.min(NUM_ATTRIBUTE_LEVELS - 1)
            }
        }
    }

    /// The token for an id; `None` for ids outside the vocabulary.
    pub fn from_id(id: u32) -> Option<Token> {
        Some(match id {
            PAD => Token::Pad,
            BOS => Token::Bos,
            EOS => Token::Eos,
            BAR => Token::Bar,
            _ if id < PITCH_BASE => Token::Position(id - POSITION_BASE),
            _ if id < VELOCITY_BASE => Token::Pitch((id - PITCH_BASE) as u8),
            _ if id < DURATION_BASE => Token::Velocity(id - VELOCITY_BASE),
            _ if id < ATTRIBUTE_BASE => Token::Duration(id - DURATION_BASE),
            _ if id < VOCAB_SIZE => {
                let k = id - ATTRIBUTE_BASE;
                Token::Attribute(k / NUM_ATTRIBUTE_LEVELS, k % NUM_ATTRIBUTE_LEVELS)
            }
            _ => return None,
        })
    }
}

/// Velocity 1..=127 to its bucket and back (the bucket's middle).
pub fn velocity_bucket(velocity: u8) -> u32 {
    (velocity.clamp(1, 127) as u32 * NUM_VELOCITY_BUCKETS / 128).min(NUM_VELOCITY_BUCKETS - 1)
}

pub fn bucket_velocity(bucket: u32) -> u8 {
    let b = bucket.min(NUM_VELOCITY_BUCKETS - 1);
    ((b * 128 + 64) / NUM_VELOCITY_BUCKETS).clamp(1, 127) as u8
}

/// The duration class nearest to `steps` grid steps.
pub fn duration_class(steps: f64) -> u32 {
    let mut best = 0;
    for (i, &d) in DURATION_STEPS.iter().enumerate() {
        if (d as f64 - steps).abs() < (DURATION_STEPS[best] as f64 - steps).abs() {
            best = i;
        }
    }
    best as u32
}

/// A note on the grid: bar index, position and duration in grid steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridNote {
    pub bar: u32,
    pub position: u32,
    pub pitch: u8,
    pub velocity: u8,
    pub duration_steps: u32,
}

/// Encodes notes bar by bar (drums skipped). `bars` gives each bar's start and length;
/// `attributes(bar)` the eight conditioning levels of that bar. Notes outside every bar, or at
/// positions the vocabulary cannot address, are left out.
pub fn encode(notes: &[Note], bars: &[BarWindow], mut attributes: impl FnMut(usize) -> [u32; 8]) -> Vec<u32> {
    let mut out = vec![BOS];
    let mut grid: Vec<GridNote> = Vec::new();
    for n in notes.iter().filter(|n| !n.is_drum()) {
        // Snap to the grid first, so a note played a hair before a bar line starts that bar.
        let onset_beats = (n.onset_beats * STEPS_PER_QUARTER as f64).round() / STEPS_PER_QUARTER as f64;
        let bar = bars.partition_point(|b| b.start_beats <= onset_beats + 1e-9);
        if bar == 0 {
            continue;
        }
        let b = &bars[bar - 1];
        let position = ((onset_beats - b.start_beats) * STEPS_PER_QUARTER as f64).round();
        let bar_steps = (b.len_beats * STEPS_PER_QUARTER as f64).round();
        if position < 0.0 || position >= bar_steps.min(NUM_POSITIONS as f64) {
            continue;
        }
        grid.push(GridNote {
            bar: (bar - 1) as u32,
            position: position as u32,
            pitch: n.pitch & 127,
            velocity: n.velocity,
            duration_steps: DURATION_STEPS[duration_class(n.dur_beats * STEPS_PER_QUARTER as f64) as usize],
        });
    }
    grid.sort_by_key(|g| (g.bar, g.position, g.pitch));
    grid.dedup_by_key(|g| (g.bar, g.position, g.pitch));
    let mut next = 0;
    for bar in 0..bars.len() {
        out.push(BAR);
        for (a, level) in attributes(bar).into_iter().enumerate() {
            out.push(Token::Attribute(a as u32, level).id());
        }
        let mut last_position = None;
        while next < grid.len() && grid[next].bar == bar as u32 {
            let g = grid[next];
            if last_position != Some(g.position) {
                out.push(Token::Position(g.position).id());
                last_position = Some(g.position);
            }
            out.push(Token::Pitch(g.pitch).id());
            out.push(Token::Velocity(velocity_bucket(g.velocity)).id());
            out.push(Token::Duration(duration_class(g.duration_steps as f64)).id());
            next += 1;
        }
    }
    out.push(EOS);
    out
}

/// Decodes any token sequence into grid notes. Grammar: a note needs a `Bar` and a `Position`
/// before it and is complete after `Pitch, Velocity, Duration`; anything else out of place is
/// skipped. Positions must not go backwards within a bar (a backward one is skipped), and no
/// more than `max_notes` notes are returned.
pub fn decode(tokens: &[u32], max_notes: usize) -> Vec<GridNote> {
    let mut out = Vec::new();
    let mut bar: Option<u32> = None;
    let mut position: Option<u32> = None;
    let mut pitch: Option<u8> = None;
    let mut velocity: Option<u8> = None;
    for &id in tokens {
        let Some(t) = Token::from_id(id) else { continue };
        match t {
            Token::Eos => break,
            Token::Bar => {
                bar = Some(bar.map_or(0, |b| b.saturating_add(1)));
                position = None;
                pitch = None;
                velocity = None;
            }
            Token::Position(p) if bar.is_some() && position.is_none_or(|q| p >= q) => {
                position = Some(p);
                pitch = None;
                velocity = None;
            }
            Token::Pitch(p) if position.is_some() => {
                pitch = Some(p);
                velocity = None;
            }
            Token::Velocity(v) if pitch.is_some() => velocity = Some(bucket_velocity(v)),
            Token::Duration(d) => {
                if let (Some(b), Some(pos), Some(p), Some(v)) = (bar, position, pitch, velocity) {
                    if out.len() >= max_notes {
                        break;
                    }
                    out.push(GridNote { bar: b, position: pos, pitch: p, velocity: v, duration_steps: DURATION_STEPS[d as usize] });
                }
                pitch = None;
                velocity = None;
            }
            _ => {}
        }
    }
    out
}

/// Places decoded grid notes on real bars (start and length from `bars`, indexed by the note's
/// bar): notes beyond the given bars, or past their bar's end, are dropped; durations end at the
/// last bar's end at the latest. Times in seconds follow each bar's tempo.
pub fn grid_to_notes(grid: &[GridNote], bars: &[BarWindow], channel: u8) -> Vec<Note> {
    let step_beats = 1.0 / STEPS_PER_QUARTER as f64;
    let Some(last) = bars.last() else { return Vec::new() };
    let end_beats = last.start_beats + last.len_beats;
    let mut notes: Vec<Note> = grid
        .iter()
        .filter_map(|g| {
            let b = bars.get(g.bar as usize)?;
            let offset_beats = g.position as f64 * step_beats;
            if offset_beats >= b.len_beats - 1e-9 {
                return None;
            }
            let onset_beats = b.start_beats + offset_beats;
            let dur_beats = (g.duration_steps as f64 * step_beats).min(end_beats - onset_beats).max(step_beats / 2.0);
            let beat_s = 60.0 / b.tempo_bpm.max(1.0);
            Some(Note {
                onset_s: b.start_s + offset_beats * beat_s,
                dur_s: dur_beats * beat_s,
                onset_beats,
                dur_beats,
                pitch: g.pitch & 127,
                velocity: g.velocity.clamp(1, 127),
                channel: channel & 15,
            })
        })
        .collect();
    notes.sort_by(|a, b| a.onset_beats.total_cmp(&b.onset_beats).then(a.pitch.cmp(&b.pitch)));
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_fill_the_vocabulary() {
        let mut seen = 0;
        for id in 0..VOCAB_SIZE {
            let t = Token::from_id(id).unwrap();
            assert_eq!(t.id(), id, "{t:?}");
            seen += 1;
        }
        assert_eq!(seen, VOCAB_SIZE);
        assert_eq!(Token::from_id(VOCAB_SIZE), None);
    }

    #[test]
    fn velocity_buckets_and_durations_are_nearest() {
        for v in 1..=127u8 {
            assert!((bucket_velocity(velocity_bucket(v)) as i32 - v as i32).abs() <= 4, "{v}");
        }
        assert_eq!(DURATION_STEPS[duration_class(3.2) as usize], 3);
        assert_eq!(DURATION_STEPS[duration_class(47.0) as usize], 48);
        assert_eq!(DURATION_STEPS[duration_class(1000.0) as usize], 144);
    }

    #[test]
    fn any_sequence_decodes_to_valid_notes() {
        // Random kinds of token (ids out of the vocabulary included), in random order.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u32| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as u32) % n
        };
        let junk: Vec<u32> = (0..5000)
            .map(|_| match next(7) {
                0 => BAR,
                1 => POSITION_BASE + next(NUM_POSITIONS),
                2 => PITCH_BASE + next(128),
                3 => VELOCITY_BASE + next(NUM_VELOCITY_BUCKETS),
                4 => DURATION_BASE + next(DURATION_STEPS.len() as u32),
                5 => ATTRIBUTE_BASE + next(NUM_ATTRIBUTES * NUM_ATTRIBUTE_LEVELS),
                _ => next(VOCAB_SIZE + 10),
            })
            .collect();
        let grid = decode(&junk, 10_000);
        assert!(!grid.is_empty(), "random tokens still hold some complete notes");
        let bars: Vec<BarWindow> = (0..4)
            .map(|i| BarWindow { start_s: i as f64 * 2.0, end_s: i as f64 * 2.0 + 2.0, start_beats: i as f64 * 4.0, len_beats: 4.0, tempo_bpm: 120.0 })
            .collect();
        for n in grid_to_notes(&grid, &bars, 0) {
            assert!(n.onset_beats >= 0.0 && n.onset_beats < 16.0 && n.dur_beats > 0.0);
            assert!(n.onset_beats + n.dur_beats <= 16.0 + 1e-9, "no note past the asked bars");
        }
    }
}
