//! Simplified event types for the test host: what a test sends into a block ([`InEvent`]) and
//! what the plugin sent back ([`OutEvent`]), with conversion to and from clack's CLAP events.
//!
//! `time` is always the sample offset inside the block (CLAP's `header.time`).
//! Channels are 0-based (MIDI channel 1 is `0`), as in CLAP.
//!
//! Thread: any

use clack_host::events::event_types::{MidiEvent, NoteOffEvent, NoteOnEvent, ParamValueEvent};
use clack_host::events::io::EventBuffer;
use clack_host::events::spaces::CoreEventSpace;
use clack_host::events::{Pckn, UnknownEvent};
use clack_host::utils::ClapId;

/// An event the test feeds into one `process()` block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InEvent {
    /// CLAP note-on (`CLAP_EVENT_NOTE_ON`) on note port 0, note id -1.
    NoteOn {
        time: u32,
        channel: u8,
        key: u8,
        velocity: f64,
    },
    /// CLAP note-off (`CLAP_EVENT_NOTE_OFF`) on note port 0, note id -1.
    NoteOff {
        time: u32,
        channel: u8,
        key: u8,
        velocity: f64,
    },
    /// Raw MIDI 1.0 bytes (`CLAP_EVENT_MIDI`) on note port 0, e.g. a CC `[0xB0 | ch, cc, value]`.
    Midi { time: u32, data: [u8; 3] },
    /// Parameter change (`CLAP_EVENT_PARAM_VALUE`) with the CLAP plain value.
    Param { time: u32, id: u32, value: f64 },
}

impl InEvent {
    /// Convenience: a MIDI CC on a 0-based channel.
    pub fn cc(time: u32, channel: u8, cc: u8, value: u8) -> Self {
        InEvent::Midi {
            time,
            data: [0xB0 | (channel & 0x0F), cc & 0x7F, value & 0x7F],
        }
    }

    /// Sample offset inside the block.
    pub fn time(&self) -> u32 {
        match *self {
            InEvent::NoteOn { time, .. }
            | InEvent::NoteOff { time, .. }
            | InEvent::Midi { time, .. }
            | InEvent::Param { time, .. } => time,
        }
    }

    /// The same event at another block offset.
    pub fn with_time(mut self, t: u32) -> Self {
        match &mut self {
            InEvent::NoteOn { time, .. }
            | InEvent::NoteOff { time, .. }
            | InEvent::Midi { time, .. }
            | InEvent::Param { time, .. } => *time = t,
        }
        self
    }

    /// Pushes this event onto a clack event buffer.
    pub(crate) fn push_to(&self, buffer: &mut EventBuffer) {
        match *self {
            InEvent::NoteOn {
                time,
                channel,
                key,
                velocity,
            } => {
                let pckn = Pckn::from_raw(0, i16::from(channel), i16::from(key), -1);
                buffer.push(&NoteOnEvent::new(time, pckn, velocity));
            }
            InEvent::NoteOff {
                time,
                channel,
                key,
                velocity,
            } => {
                let pckn = Pckn::from_raw(0, i16::from(channel), i16::from(key), -1);
                buffer.push(&NoteOffEvent::new(time, pckn, velocity));
            }
            InEvent::Midi { time, data } => {
                buffer.push(&MidiEvent::new(time, 0, data));
            }
            InEvent::Param { time, id, value } => {
                buffer.push(&ParamValueEvent::new(
                    time,
                    ClapId::new(id),
                    Pckn::match_all(),
                    value,
                ));
            }
        }
    }
}

/// An event the plugin pushed to the output event list during one `process()` call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutEvent {
    /// `CLAP_EVENT_NOTE_ON` (raw CLAP fields; -1 means "any").
    NoteOn {
        time: u32,
        port: i16,
        channel: i16,
        key: i16,
        velocity: f64,
        note_id: i32,
    },
    /// `CLAP_EVENT_NOTE_OFF`.
    NoteOff {
        time: u32,
        port: i16,
        channel: i16,
        key: i16,
        velocity: f64,
        note_id: i32,
    },
    /// `CLAP_EVENT_MIDI` (MIDI 1.0 bytes).
    Midi { time: u32, port: u16, data: [u8; 3] },
    /// `CLAP_EVENT_PARAM_VALUE` (the plugin reporting a parameter change).
    ParamValue { time: u32, id: u32, value: f64 },
    /// Anything else (gestures, note end, sysex, ...): only its type id is kept.
    Other { time: u32, type_id: u16 },
}

impl OutEvent {
    /// Sample offset inside the block.
    pub fn time(&self) -> u32 {
        match *self {
            OutEvent::NoteOn { time, .. }
            | OutEvent::NoteOff { time, .. }
            | OutEvent::Midi { time, .. }
            | OutEvent::ParamValue { time, .. }
            | OutEvent::Other { time, .. } => time,
        }
    }

    /// If this is a MIDI CC: `(0-based channel, controller, value)`.
    pub fn as_cc(&self) -> Option<(u8, u8, u8)> {
        match *self {
            OutEvent::Midi { data, .. } if data[0] & 0xF0 == 0xB0 => {
                Some((data[0] & 0x0F, data[1], data[2]))
            }
            _ => None,
        }
    }

    pub(crate) fn from_clap(event: &UnknownEvent) -> Self {
        let time = event.header().time();
        match event.as_core_event() {
            Some(CoreEventSpace::NoteOn(e)) => {
                let raw = e.as_raw();
                OutEvent::NoteOn {
                    time,
                    port: raw.port_index,
                    channel: raw.channel,
                    key: raw.key,
                    velocity: raw.velocity,
                    note_id: raw.note_id,
                }
            }
            Some(CoreEventSpace::NoteOff(e)) => {
                let raw = e.as_raw();
                OutEvent::NoteOff {
                    time,
                    port: raw.port_index,
                    channel: raw.channel,
                    key: raw.key,
                    velocity: raw.velocity,
                    note_id: raw.note_id,
                }
            }
            Some(CoreEventSpace::Midi(e)) => OutEvent::Midi {
                time,
                port: e.port_index(),
                data: e.data(),
            },
            Some(CoreEventSpace::ParamValue(e)) => OutEvent::ParamValue {
                time,
                id: e.param_id().map(ClapId::get).unwrap_or(u32::MAX),
                value: e.value(),
            },
            _ => OutEvent::Other {
                time,
                type_id: event.header().type_id(),
            },
        }
    }
}
