//! Moodfader, the plugin: hears the MIDI or the audio on its track, shows the mood it hears, and
//! plays a continuation steered by faders. This file holds the nice-plug glue; the work is done by
//! `moodfader-engine`, which knows nothing of the host.
//!
//! Thread: audio for `process()`; host main thread for the lifecycle calls.

use std::sync::Arc;

use moodfader_engine::rt::audio_side::{AudioSide, OutEvent, TransportInfo};
use moodfader_engine::rt::queues;
use moodfader_engine::rt::synth::Synth;
use moodfader_engine::runtime::EmbeddedRuntime;
use moodfader_engine::shared::Shared;
use moodfader_engine::worker::{Worker, WorkerConfig};
use nice_plug::midi::{Channel, Key, VoiceID};
use nice_plug::prelude::*;

pub mod dragout;
pub mod editor;
pub mod params;

use params::{InputSource, MoodfaderParams};

/// Output events one block can hold besides the heard ones passed through (scheduled notes and
/// mood CCs). More in one block are dropped and counted.
const MAX_OUT_EVENTS_PER_BLOCK: usize = 1024;

// `cargo xtask bundle` sets MOODFADER_PAYLOAD_DIR to the sha256-checked cache of `cargo xtask setup`.
// The library's name is the target's (`moodfader_engine::runtime::ORT_LIB_FILE`); for a Windows
// target the payload folder is the Windows cache (`target/moodfader-runtime/windows-x86_64/`).
#[cfg(all(feature = "embed-runtime", target_os = "windows"))]
static EMBEDDED_ORT_LIB: &[u8] = include_bytes!(concat!(env!("MOODFADER_PAYLOAD_DIR"), "/onnxruntime.dll"));
#[cfg(all(feature = "embed-runtime", not(target_os = "windows")))]
static EMBEDDED_ORT_LIB: &[u8] = include_bytes!(concat!(env!("MOODFADER_PAYLOAD_DIR"), "/libonnxruntime.so.1.31.1"));
#[cfg(feature = "embed-runtime")]
static EMBEDDED_BASIC_PITCH: &[u8] = include_bytes!(concat!(env!("MOODFADER_PAYLOAD_DIR"), "/nmp.onnx"));

/// The calibration fitted on saved points, each (estimate V, estimate A, felt V, felt A).
pub fn fit_calibration(points: &[[f32; 4]]) -> moodfader_engine::feel::calibration::Calibration {
    let est: Vec<(f32, f32)> = points.iter().map(|p| (p[0], p[1])).collect();
    let felt: Vec<(f32, f32)> = points.iter().map(|p| (p[2], p[3])).collect();
    moodfader_engine::feel::calibration::Calibration::fit(&est, &felt)
}

/// The ONNX Runtime library and Basic Pitch's model carried by this binary, if it was bundled
/// with them.
pub fn embedded_runtime() -> Option<EmbeddedRuntime> {
    #[cfg(feature = "embed-runtime")]
    return Some(EmbeddedRuntime { lib: EMBEDDED_ORT_LIB, basic_pitch: EMBEDDED_BASIC_PITCH });
    #[cfg(not(feature = "embed-runtime"))]
    None
}

pub struct Moodfader {
    params: Arc<MoodfaderParams>,
    /// Transport clock and drop counters (written by the audio thread), the estimate and status
    /// (written by the worker); read by the worker, the audio thread and the panel.
    shared: Arc<Shared>,
    /// The audio thread's side of the queues; created on activation.
    audio: Option<Box<AudioSide>>,
    /// The worker thread; started on activation, stopped on deactivation and drop.
    worker: Option<Worker>,
    /// Scheduled output events of the current block, merged in time order with the thru events.
    /// Preallocated; never grows in `process()`.
    out_events: Vec<(u32, OutEvent)>,
    was_playing: bool,
    was_bypassed: bool,
    was_generate: bool,
    /// The preview voice: plays the continuation into the audio output when "Preview" is on,
    /// for hosts that do not route MIDI out of plugins. Fixed voice pool; no allocation.
    synth: Box<Synth>,
    /// Mono scratch for the voice, sized at activation to the largest block.
    preview_buf: Vec<f32>,
}

impl Default for Moodfader {
    fn default() -> Self {
        // Instantiation stays cheap (host scans): no model, no runtime, no thread.
        Self {
            params: Arc::new(MoodfaderParams::default()),
            shared: Arc::new(Shared::default()),
            audio: None,
            worker: None,
            out_events: Vec::new(),
            was_playing: false,
            was_bypassed: false,
            was_generate: false,
            synth: Box::new(Synth::new(48_000.0)),
            preview_buf: Vec::new(),
        }
    }
}

impl Moodfader {
    /// The state shared with the worker and the panel (for tests and tools).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Plugin for Moodfader {
    const NAME: &'static str = "Moodfader";
    const VENDOR: &'static str = "Moodfader";
    const URL: &'static str = "https://moodfader.invalid";
    const EMAIL: &'static str = "dev@moodfader.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: NonZeroU32::new(2),
        main_output_channels: NonZeroU32::new(2),
        ..AudioIOLayout::const_default()
    }];
    const MIDI_INPUT: MidiConfig = MidiConfig::MidiCCs;
    const MIDI_OUTPUT: MidiConfig = MidiConfig::MidiCCs;
    const SAMPLE_ACCURATE_AUTOMATION: bool = false;
    const INPUT_EVENT_CAPACITY: usize = 4096;

    type SysExMessage = ();
    type BackgroundTask = ();
    type Editor = editor::PanelEditor;

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        editor::create(self.params.clone(), self.shared.clone())
    }

    fn activate(
        &mut self,
        _audio_io_layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        // Stop a previous worker first (activate may be called again without deactivate).
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        // The listener's calibration saved with the project.
        let points = self.params.calibration_points.read().map(|p| p.clone()).unwrap_or_default();
        self.shared.set_calibration(&fit_calibration(&points));
        let (audio_ends, worker_ends) = queues::queues();
        self.audio = Some(AudioSide::new(audio_ends, self.shared.clone(), buffer_config.sample_rate as f64));
        self.out_events = Vec::with_capacity(MAX_OUT_EVENTS_PER_BLOCK);
        *self.synth = Synth::new(buffer_config.sample_rate);
        self.preview_buf = vec![0.0; buffer_config.max_buffer_size.max(1) as usize];
        let config = WorkerConfig { embedded_runtime: embedded_runtime(), ..WorkerConfig::default() };
        // A bounce, freeze or export renders offline: then each block waits for the worker, so
        // every bar that would have played live plays in the render.
        let offline = buffer_config.process_mode == ProcessMode::Offline;
        self.shared.offline.store(offline, std::sync::atomic::Ordering::Release);
        match Worker::spawn(config, self.shared.clone(), worker_ends) {
            Ok(w) => {
                if let Some(a) = self.audio.as_deref_mut() {
                    a.set_offline(offline, w.thread());
                }
                self.worker = Some(w);
            }
            Err(e) => self.shared.set_status(
                moodfader_engine::WorkerStatus::Error,
                format!("worker thread cannot start: {e}; audio and MIDI pass through"),
            ),
        }
        true
    }

    fn reset(&mut self) {
        if let Some(a) = self.audio.as_deref_mut() {
            a.reset();
        }
    }

    fn deactivate(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        self.audio = None;
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        // Audio passes through (the host already copied input to output), except that subnormal
        // samples become signed zeros: denormal input must not make denormal output downstream.
        flush_subnormals(buffer);
        let Some(audio) = self.audio.as_deref_mut() else {
            return ProcessStatus::Normal;
        };
        let num_samples = buffer.samples() as u32;
        let t = context.transport();
        let info = TransportInfo {
            playing: t.playing,
            tempo_bpm: t.tempo,
            sig_num: t.time_sig_numerator.and_then(|n| u32::try_from(n).ok()),
            sig_den: t.time_sig_denominator.and_then(|d| u32::try_from(d).ok()),
            pos_beats: t.pos_beats(),
        };
        // The controls first: the block's decision point (sent by begin_block) reads them.
        publish_controls(&self.params, &self.shared.controls);
        audio.begin_block(&info, num_samples);
        // Offline only (a no-op in real time): wait for the worker to plan from what was heard.
        audio.sync_with_worker();

        let out = &mut self.out_events;
        out.clear();
        let mut push = |timing: u32, ev: OutEvent| {
            if out.len() < out.capacity() {
                out.push((timing, ev));
            }
        };
        let bypassed = self.params.bypass.value();
        // Stop, bypass, or a loop/relocation while playing: release every generated note (the
        // worker sees the release and plans again on the new grid).
        let looped = info.playing && self.was_playing && audio.jumped();
        if (self.was_playing && !info.playing) || (bypassed && !self.was_bypassed) || looped {
            audio.all_notes_off(&mut push);
        }
        self.was_playing = info.playing;
        self.was_bypassed = bypassed;
        if !bypassed {
            let mood_channel =
                self.params.mood_cc.value().then(|| (self.params.out_channel.value() - 1).clamp(0, 15) as u8);
            audio.due_events(mood_channel, &mut push);
        }

        // Bypassed, the heard MIDI passes through whatever "MIDI thru" says.
        let thru = bypassed || self.params.thru.value();
        let trigger_note = u8::try_from(self.params.trigger_note.value()).ok().filter(|&n| n < 128);
        // The Generate button (or its automation) asks once per press.
        let generate = self.params.generate.value();
        if generate && !self.was_generate {
            self.shared.controls.generate_requests.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.was_generate = generate;
        let mut next_out = 0usize;
        while let Some(ev) = context.next_event() {
            let timing = ev.timing();
            // Scheduled events due before this one go out first, keeping the output sorted.
            while next_out < self.out_events.len() && self.out_events[next_out].0 <= timing {
                send_out(context, &self.shared, self.out_events[next_out]);
                next_out += 1;
            }
            match ev {
                NoteEvent::NoteOn { timing, channel, key, velocity, .. } => {
                    let vel = (velocity.clamp(0.0, 1.0) * 127.0).round() as u8;
                    let pitch = key.number_or_middle_c();
                    if trigger_note == Some(pitch) {
                        // The trigger key asks for a continuation; it is not music to hear.
                        if vel > 0 {
                            self.shared.controls.generate_requests.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        }
                    } else {
                        audio.note(timing, vel > 0, channel.number().unwrap_or(0), pitch, vel);
                    }
                }
                NoteEvent::NoteOff { timing, channel, key, .. } => {
                    let pitch = key.number_or_middle_c();
                    if trigger_note != Some(pitch) {
                        audio.note(timing, false, channel.number().unwrap_or(0), pitch, 0);
                    }
                }
                NoteEvent::MidiCC { timing, channel, cc, value } => {
                    audio.control(timing, channel, cc, (value.clamp(0.0, 1.0) * 127.0).round() as u8);
                }
                _ => {}
            }
            if thru && context.try_send_event(ev).is_err() {
                self.shared.num_dropped_output.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        while next_out < self.out_events.len() {
            send_out(context, &self.shared, self.out_events[next_out]);
            next_out += 1;
        }

        // Always, so the worker's count of samples is the listening clock when the input source
        // switches to audio; the worker drops what it does not transcribe.
        audio.push_audio(buffer.as_slice_immutable());
        audio.end_block();
        self.preview(buffer);
        ProcessStatus::Normal
    }
}

impl Moodfader {
    /// Plays this block's generated notes on the preview voice and adds it to every output
    /// channel, sample-accurately. Keeps rendering release tails after "Preview" is switched off.
    fn preview(&mut self, buffer: &mut Buffer) {
        let on = self.params.preview.value() && !self.params.bypass.value();
        if !on && self.synth.num_active() == 0 {
            return;
        }
        let n = buffer.samples().min(self.preview_buf.len());
        let buf = &mut self.preview_buf[..n];
        buf.fill(0.0);
        let mut at = 0usize;
        for &(timing, ev) in self.out_events.iter() {
            let t = (timing as usize).min(n);
            if t > at {
                self.synth.render(&mut buf[at..t]);
                at = t;
            }
            match ev {
                OutEvent::NoteOn { channel, pitch, velocity } if on => self.synth.note_on(channel, pitch, velocity),
                OutEvent::NoteOff { channel, pitch } => self.synth.note_off(channel, pitch),
                _ => {}
            }
        }
        if !on {
            self.synth.all_notes_off();
        }
        self.synth.render(&mut buf[at..]);
        for channel in buffer.as_slice().iter_mut() {
            for (x, p) in channel.iter_mut().zip(buf.iter()) {
                *x += *p;
            }
        }
    }
}

/// Copies the parameters the worker needs into its atomics (relaxed stores; no allocation).
fn publish_controls(p: &MoodfaderParams, c: &moodfader_engine::shared::Controls) {
    use std::sync::atomic::Ordering::Relaxed;
    c.target_valence.store(p.target_valence.value(), Relaxed);
    c.target_arousal.store(p.target_arousal.value(), Relaxed);
    c.steer.store(p.steer.value(), Relaxed);
    for (i, a) in moodfader_engine::Attribute::ALL.into_iter().enumerate() {
        let fader = p.attributes.get(a);
        c.attribute[i].store(fader.value.value(), Relaxed);
        c.attribute_auto[i].store(fader.auto.value(), Relaxed);
    }
    c.continuation_on.store(p.continuation.value(), Relaxed);
    c.trigger_mode.store(
        match p.trigger.value() {
            params::TriggerMode::OnDemand => 0,
            params::TriggerMode::Follow => 1,
            params::TriggerMode::CallResponse => 2,
        },
        Relaxed,
    );
    c.num_bars.store(p.bars.value().clamp(1, 16) as u32, Relaxed);
    c.temperature.store(p.temperature.value(), Relaxed);
    c.seed.store(p.seed.value().max(0) as u32, Relaxed);
    c.out_channel.store((p.out_channel.value() - 1).clamp(0, 15) as u8, Relaxed);
    c.input_source.store(
        match p.input_source.value() {
            InputSource::Midi => 0,
            InputSource::Audio => 1,
            InputSource::Both => 2,
        },
        Relaxed,
    );
    c.preview.store(p.preview.value(), Relaxed);
}

/// Replaces subnormal samples by a zero of the same sign; every other value is left bit for bit.
fn flush_subnormals(buffer: &mut Buffer) {
    for channel in buffer.as_slice().iter_mut() {
        for x in channel.iter_mut() {
            if x.is_subnormal() {
                *x = 0.0f32.copysign(*x);
            }
        }
    }
}

fn send_out(context: &mut impl ProcessContext<Moodfader>, shared: &Shared, (timing, ev): (u32, OutEvent)) {
    let event = match ev {
        OutEvent::NoteOn { channel, pitch, velocity } => NoteEvent::NoteOn {
            timing,
            voice_id: VoiceID::Wildcard,
            channel: Channel::Number(channel),
            key: Key::Number(pitch),
            velocity: velocity as f32 / 127.0,
        },
        OutEvent::NoteOff { channel, pitch } => NoteEvent::NoteOff {
            timing,
            voice_id: VoiceID::Wildcard,
            channel: Channel::Number(channel),
            key: Key::Number(pitch),
            velocity: 0.0,
        },
        OutEvent::Control { channel, cc, value } => NoteEvent::MidiCC { timing, channel, cc, value: value as f32 / 127.0 },
    };
    if context.try_send_event(event).is_err() {
        shared.num_dropped_output.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ClapPlugin for Moodfader {
    const CLAP_ID: &'static str = "com.moodfader.moodfader";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Hears the mood of your track and plays a continuation whose mood you steer");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] =
        &[ClapFeature::NoteEffect, ClapFeature::Utility, ClapFeature::Analyzer, ClapFeature::Stereo];
    /// The factory presets, listed in CLAP hosts' preset browsers and loaded by them.
    const CLAP_FACTORY_PRESETS: &'static [ClapFactoryPreset] = &params::CLAP_PRESETS;
}

impl Vst3Plugin for Moodfader {
    const VST3_CLASS_ID: [u8; 16] = *b"MoodfaderMoodFX1";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Fx, Vst3SubCategory::Analyzer, Vst3SubCategory::Tools];
    /// VST3 hands MIDI controllers to a plugin only through parameters, one per controller and
    /// channel. The sustain pedal is the one the plugin takes in (and passes through to the
    /// instrument after it): 16 hidden parameters instead of nice-plug's 2,080, which hosts
    /// built on JUCE read one by one on load (the patched wrapper, see the workspace Cargo.toml).
    /// Under VST3 other controllers do not reach the plugin; under CLAP every one passes through.
    const VST3_MIDI_CC_PROXIES: &'static [u8] = &[64];
}

nice_export_clap!(Moodfader);
nice_export_vst3!(Moodfader);
