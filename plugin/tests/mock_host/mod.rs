//! An in-process stand-in for a host: drives `Moodfader` through nice-plug's `Plugin` trait with
//! a mock process context, so tests and benches can call the real `process()` directly and count
//! the allocations it makes on the calling thread.
//!
//! Thread: test (the calling thread plays the host's audio thread)

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use moodfader::Moodfader;
use nice_plug::context::PluginApi;
use nice_plug::context::process::SendEventError;
use nice_plug::midi::{Channel, Key, VoiceID};
use nice_plug::prelude::*;

/// Counts allocations made by threads that opted in with [`count_allocs`], per thread.
pub struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Per thread, so tests running side by side do not count each other's allocations.
    static NUM_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    if COUNTING.with(|c| c.get()) {
        NUM_ALLOCS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` with allocation counting on for this thread; returns its result and the count.
pub fn count_allocs<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = NUM_ALLOCS.with(|n| n.get());
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, NUM_ALLOCS.with(|n| n.get()) - before)
}

pub struct MockActivate;

impl ActivateContext<Moodfader> for MockActivate {
    fn plugin_api(&self) -> PluginApi {
        PluginApi::Clap
    }
    fn execute(&self, _task: ()) {}
    fn set_latency_samples(&self, _samples: u32) {}
    fn set_current_voice_capacity(&self, _capacity: u32) {}
}

/// Events in, events out, and the transport for one block. All storage is preallocated.
pub struct MockProcess {
    pub transport: Transport,
    pub input: Vec<NoteEvent<()>>,
    pub next_input: usize,
    pub output: Vec<NoteEvent<()>>,
}

impl MockProcess {
    pub fn new(sample_rate: f32) -> Self {
        Self { transport: Transport::new(sample_rate), input: Vec::with_capacity(16_384), next_input: 0, output: Vec::with_capacity(16_384) }
    }
}

impl ProcessContext<Moodfader> for MockProcess {
    fn plugin_api(&self) -> PluginApi {
        PluginApi::Clap
    }
    fn execute_background(&self, _task: ()) {}
    fn execute_gui(&self, _task: ()) {}
    fn transport(&self) -> &Transport {
        &self.transport
    }
    fn next_event(&mut self) -> Option<NoteEvent<()>> {
        let ev = self.input.get(self.next_input).copied();
        self.next_input += 1;
        ev
    }
    fn try_send_event(&mut self, event: NoteEvent<()>) -> Result<(), (NoteEvent<()>, SendEventError)> {
        if self.output.len() < self.output.capacity() {
            self.output.push(event);
            Ok(())
        } else {
            Err((event, SendEventError::HostBufferFull))
        }
    }
    fn set_latency_samples(&self, _samples: u32) {}
    fn request_restart(&self) {}
    fn set_current_voice_capacity(&self, _capacity: u32) {}
}

/// A stereo buffer over `left` and `right` (equal lengths), as a host hands it to `process()`.
pub fn stereo_buffer<'a>(left: &'a mut [f32], right: &'a mut [f32]) -> Buffer<'a> {
    assert_eq!(left.len(), right.len());
    let n = left.len();
    let mut buffer = Buffer::default();
    // SAFETY: both slices are borrowed for the buffer's whole life and have `n` samples each.
    unsafe {
        buffer.set_slices(n, |s| {
            s.clear();
            s.push(left);
            s.push(right);
        })
    };
    buffer
}

/// A plugin instance activated at `sample_rate` with stereo buffers of `max_block` samples.
pub struct Rig {
    pub plugin: Moodfader,
    pub ctx: MockProcess,
    pub left: Vec<f32>,
    pub right: Vec<f32>,
    pub sample_rate: f32,
    pub pos_samples: i64,
}

impl Rig {
    pub fn new(sample_rate: f32, max_block: usize) -> Self {
        let mut plugin = Moodfader::default();
        let layout = Moodfader::AUDIO_IO_LAYOUTS[0];
        let config = BufferConfig {
            sample_rate,
            min_buffer_size: None,
            max_buffer_size: max_block as u32,
            process_mode: ProcessMode::Realtime,
        };
        assert!(plugin.activate(&layout, &config, &mut MockActivate));
        plugin.reset();
        Self {
            plugin,
            ctx: MockProcess::new(sample_rate),
            left: vec![0.0; max_block],
            right: vec![0.0; max_block],
            sample_rate,
            pos_samples: 0,
        }
    }

    /// Queues a note for the next block.
    pub fn note(&mut self, timing: u32, on: bool, pitch: u8, velocity: u8) {
        let (channel, key, voice_id) = (Channel::Number(0), Key::Number(pitch), VoiceID::Wildcard);
        let velocity = velocity as f32 / 127.0;
        self.ctx.input.push(if on {
            NoteEvent::NoteOn { timing, voice_id, channel, key, velocity }
        } else {
            NoteEvent::NoteOff { timing, voice_id, channel, key, velocity }
        });
    }

    /// Runs one block with whatever `self.ctx.transport` holds (tests set it to anything).
    pub fn process_raw(&mut self, buffer: &mut Buffer<'_>) -> ProcessStatus {
        self.ctx.next_input = 0;
        let mut aux = AuxiliaryBuffers { inputs: &mut [], outputs: &mut [] };
        self.plugin.process(buffer, &mut aux, &mut self.ctx)
    }

    /// Runs one block of `n` samples with a playing transport at 120 BPM; returns nothing, output
    /// events are in `self.ctx.output`. Does not allocate (the buffer's slice list is reused).
    pub fn process(&mut self, n: usize, buffer: &mut Buffer<'_>) -> ProcessStatus {
        self.ctx.transport.playing = true;
        self.ctx.transport.tempo = Some(120.0);
        self.ctx.transport.time_sig_numerator = Some(4);
        self.ctx.transport.time_sig_denominator = Some(4);
        self.ctx.transport.pos_samples = Some(self.pos_samples);
        self.ctx.transport.pos_beats = Some(self.pos_samples as f64 / self.sample_rate as f64 * 2.0);
        self.ctx.next_input = 0;
        let mut aux = AuxiliaryBuffers { inputs: &mut [], outputs: &mut [] };
        let status = self.plugin.process(buffer, &mut aux, &mut self.ctx);
        self.pos_samples += n as i64;
        status
    }
}
