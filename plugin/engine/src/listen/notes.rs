//! The note type every part of the engine speaks, and bar windows over time.
//!
//! Thread: any

/// One heard (or read) note. Times are kept both in seconds (a monotonic listening clock, or the
/// file's time) and in quarter-note beats on the song grid, so features that need wall time (notes
/// per second) and features that need the grid (16th positions) read the same note.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Note {
    pub onset_s: f64,
    pub dur_s: f64,
    /// Song position of the onset in quarter notes.
    pub onset_beats: f64,
    pub dur_beats: f64,
    pub pitch: u8,
    pub velocity: u8,
    /// Zero-based MIDI channel (9 is the General MIDI drum channel).
    pub channel: u8,
}

impl Note {
    pub fn end_s(&self) -> f64 {
        self.onset_s + self.dur_s
    }

    pub fn is_drum(&self) -> bool {
        self.channel == DRUM_CHANNEL
    }
}

/// Zero-based General MIDI percussion channel ("channel 10"), ignored for pitch features.
pub const DRUM_CHANNEL: u8 = 9;

/// A span of time the features summarise: usually one bar of the song's meter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BarWindow {
    pub start_s: f64,
    pub end_s: f64,
    pub start_beats: f64,
    /// Bar length in quarter notes (4/4 = 4, 6/8 = 3, 7/8 = 3.5).
    pub len_beats: f64,
    /// Tempo in the window, quarter notes per minute.
    pub tempo_bpm: f64,
}

impl BarWindow {
    pub fn dur_s(&self) -> f64 {
        (self.end_s - self.start_s).max(1e-6)
    }

    /// Whether a song position (quarter notes) falls in this bar: from its start, up to but not
    /// including its end.
    pub fn contains_beat(&self, beats: f64) -> bool {
        beats >= self.start_beats && beats < self.start_beats + self.len_beats
    }

    /// Bar length in quarter notes for a time signature `num`/`den`.
    pub fn len_beats_for_meter(num: u32, den: u32) -> f64 {
        let num = num.clamp(1, 64) as f64;
        let den = den.clamp(1, 64) as f64;
        num * 4.0 / den
    }
}
