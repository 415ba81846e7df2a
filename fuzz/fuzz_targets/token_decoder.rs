//! Fuzz target `token_decoder`: any token sequence (ids in and out of the vocabulary) through
//! `tokens::decode` and `tokens::grid_to_notes` onto bars of any meter and tempo. Every note that
//! comes out must lie inside the asked bars, with a positive duration that ends by the last bar's
//! end and a valid pitch, velocity and channel; no more notes than asked for.
//!
//! Thread: test
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moodfader_engine::listen::notes::BarWindow;
use moodfader_engine::play::tokens::{VOCAB_SIZE, decode, grid_to_notes};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bars as (numerator, denominator power, tempo in BPM).
    bars: Vec<(u8, u8, u16)>,
    max_notes: u16,
    channel: u8,
    tokens: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let mut bars = Vec::new();
    let (mut start_beats, mut start_s) = (0.0f64, 0.0f64);
    for &(num, den_pow, bpm) in input.bars.iter().take(16) {
        let len_beats = BarWindow::len_beats_for_meter(num.max(1) as u32, 1 << (den_pow % 5));
        let tempo_bpm = (bpm % 400).max(20) as f64;
        let dur_s = len_beats * 60.0 / tempo_bpm;
        bars.push(BarWindow { start_s, end_s: start_s + dur_s, start_beats, len_beats, tempo_bpm });
        start_beats += len_beats;
        start_s += dur_s;
    }
    // Ids spread a little past the vocabulary, so unknown ids are exercised too.
    let tokens: Vec<u32> = input.tokens.iter().map(|&t| t as u32 % (VOCAB_SIZE + 16)).collect();
    let max_notes = input.max_notes as usize;
    let grid = decode(&tokens, max_notes);
    assert!(grid.len() <= max_notes);
    let notes = grid_to_notes(&grid, &bars, input.channel);
    assert!(notes.len() <= grid.len());
    for n in &notes {
        assert!(n.pitch < 128 && (1..=127).contains(&n.velocity) && n.channel < 16);
        assert!(n.onset_beats >= 0.0 && n.onset_beats < start_beats, "onset {} of {}", n.onset_beats, start_beats);
        assert!(n.dur_beats > 0.0 && n.onset_beats + n.dur_beats <= start_beats + 1e-9, "past the asked bars");
        assert!(n.onset_s.is_finite() && n.dur_s.is_finite() && n.dur_s > 0.0);
    }
});
