//! [`ClapTestHost`]: a minimal but honest CLAP host around `clack-host` that loads a `.clap`
//! file, instantiates one plugin and drives it like a DAW would.
//!
//! Host extensions offered to the plugin (each implemented minimally, recording what the plugin
//! asked for): `log`, `params` (rescan/clear/request_flush), `thread-check`, `state`
//! (mark_dirty), `latency` (changed), `note-ports` and `audio-ports` (rescan). Anything else the
//! plugin queries (gui, track-info, voice-info, ...) is simply absent, which a plugin must cope
//! with.
//!
//! Threading model: all calls happen on the thread that created the host (the test's "main
//! thread"). `start_processing`/`process`/`stop_processing` are flagged as audio-thread calls for
//! the `thread-check` extension (`is_audio_thread() == true`, `is_main_thread() == false` while
//! they run), as they would be on a DAW's audio thread. Main-thread callbacks requested by the
//! plugin (`request_callback`) are serviced between blocks.
//!
//! Thread: main (the instance is `!Send`); create and use a `ClapTestHost` on one thread.

use crate::events::{InEvent, OutEvent};
use crate::guard::set_phase;
use crate::hash_param_id;

use clack_extensions::audio_ports::{
    AudioPortInfoBuffer, AudioPortRescanFlags, HostAudioPorts, HostAudioPortsImpl, PluginAudioPorts,
};
use clack_extensions::gui::{GuiResizeHints, PluginGui};
use clack_extensions::latency::{HostLatency, HostLatencyImpl, PluginLatency};
use clack_extensions::log::{HostLog, HostLogImpl, LogSeverity};
use clack_extensions::note_ports::{
    HostNotePorts, HostNotePortsImpl, NoteDialects, NotePortInfoBuffer, NotePortRescanFlags,
    PluginNotePorts,
};
use clack_extensions::params::{
    HostParams, HostParamsImplMainThread, HostParamsImplShared, ParamClearFlags, ParamInfoBuffer,
    ParamRescanFlags, PluginParams,
};
use clack_extensions::preset_discovery::prelude::{
    Flags as PresetFlags, FileType, IndexerImpl, Location as PresetLocation, LocationInfo, MetadataReceiverImpl,
    PluginPresetLoad, PresetDiscoveryFactory, Provider, Soundpack, Timestamp, UniversalPluginId,
};
use clack_extensions::render::{PluginRender, RenderMode};
use clack_extensions::state::{HostState, HostStateImpl, PluginState};
use clack_extensions::thread_check::{HostThreadCheck, HostThreadCheckImpl};
use clack_host::events::event_types::{TransportEvent, TransportFlags};
use clack_host::events::{EventFlags, EventHeader};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};

use anyhow::{Context as _, Result, anyhow, bail};
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

thread_local! {
    /// True while this thread is inside start_processing/process/stop_processing.
    static IN_AUDIO_CALL: Cell<bool> = const { Cell::new(false) };
}

fn in_audio_call<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_AUDIO_CALL.with(|c| c.set(false));
        }
    }
    IN_AUDIO_CALL.with(|c| c.set(true));
    let _reset = Reset;
    f()
}

/// Counters of host callbacks the plugin made, for tests that want to look.
#[derive(Default, Debug)]
pub struct HostCallbackCounts {
    pub request_restart: AtomicU32,
    pub request_process: AtomicU32,
    pub request_callback: AtomicU32,
    pub request_flush: AtomicU32,
    pub params_rescan: AtomicU32,
    pub params_clear: AtomicU32,
    pub latency_changed: AtomicU32,
    pub state_dirty: AtomicU32,
    pub ports_rescan: AtomicU32,
}

/// Thread-safe host data (`[thread-safe]` callbacks and the plugin's extensions).
pub struct HostShared {
    main_thread: ThreadId,
    pending_callback: std::sync::atomic::AtomicBool,
    counts: HostCallbackCounts,
    log: Mutex<Vec<String>>,
    echo_log: bool,
    params: OnceLock<Option<PluginParams>>,
    audio_ports: OnceLock<Option<PluginAudioPorts>>,
    note_ports: OnceLock<Option<PluginNotePorts>>,
    latency: OnceLock<Option<PluginLatency>>,
    render: OnceLock<Option<PluginRender>>,
    preset_load: OnceLock<Option<PluginPresetLoad>>,
    state: OnceLock<Option<PluginState>>,
    gui: OnceLock<Option<PluginGui>>,
}

impl<'a> SharedHandler<'a> for HostShared {
    fn initializing(&self, instance: InitializingPluginHandle<'a>) {
        let _ = self.params.set(instance.get_extension());
        let _ = self.audio_ports.set(instance.get_extension());
        let _ = self.note_ports.set(instance.get_extension());
        let _ = self.latency.set(instance.get_extension());
        let _ = self.render.set(instance.get_extension());
        let _ = self.preset_load.set(instance.get_extension());
        let _ = self.state.set(instance.get_extension());
        let _ = self.gui.set(instance.get_extension());
    }

    fn request_restart(&self) {
        self.counts.request_restart.fetch_add(1, Ordering::Relaxed);
    }

    fn request_process(&self) {
        self.counts.request_process.fetch_add(1, Ordering::Relaxed);
    }

    fn request_callback(&self) {
        self.counts.request_callback.fetch_add(1, Ordering::Relaxed);
        self.pending_callback.store(true, Ordering::Release);
    }
}

impl HostLogImpl for HostShared {
    fn log(&self, severity: LogSeverity, message: &str) {
        let line = format!("[{severity}] {message}");
        if self.echo_log {
            eprintln!("[plugin log] {line}");
        }
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }
}

impl HostParamsImplShared for HostShared {
    fn request_flush(&self) {
        self.counts.request_flush.fetch_add(1, Ordering::Relaxed);
    }
}

impl HostThreadCheckImpl for HostShared {
    fn is_main_thread(&self) -> bool {
        std::thread::current().id() == self.main_thread && !IN_AUDIO_CALL.with(Cell::get)
    }

    fn is_audio_thread(&self) -> bool {
        IN_AUDIO_CALL.with(Cell::get)
    }
}

/// Main-thread host data (`[main-thread]` callbacks).
pub struct HostMainThread<'a> {
    shared: &'a HostShared,
}

impl<'a> MainThreadHandler<'a> for HostMainThread<'a> {}

impl HostParamsImplMainThread for HostMainThread<'_> {
    fn rescan(&self, _flags: ParamRescanFlags) {
        self.shared
            .counts
            .params_rescan
            .fetch_add(1, Ordering::Relaxed);
    }

    fn clear(&self, _param_id: ClapId, _flags: ParamClearFlags) {
        self.shared
            .counts
            .params_clear
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl HostLatencyImpl for HostMainThread<'_> {
    fn changed(&self) {
        self.shared
            .counts
            .latency_changed
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl HostStateImpl for HostMainThread<'_> {
    fn mark_dirty(&self) {
        self.shared
            .counts
            .state_dirty
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl HostNotePortsImpl for HostMainThread<'_> {
    fn supported_dialects(&self) -> NoteDialects {
        NoteDialects::CLAP | NoteDialects::MIDI
    }

    fn rescan(&self, _flags: NotePortRescanFlags) {
        self.shared
            .counts
            .ports_rescan
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl HostAudioPortsImpl for HostMainThread<'_> {
    fn is_rescan_flag_supported(&self, _flag: AudioPortRescanFlags) -> bool {
        true
    }

    fn rescan(&self, _flags: AudioPortRescanFlags) {
        self.shared
            .counts
            .ports_rescan
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The host type handed to clack.
pub struct TestHost;

impl HostHandlers for TestHost {
    type Shared<'a> = HostShared;
    type MainThread<'a> = HostMainThread<'a>;
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _shared: &Self::Shared<'_>) {
        builder
            .register::<HostLog>()
            .register::<HostParams>()
            .register::<HostThreadCheck>()
            .register::<HostState>()
            .register::<HostLatency>()
            .register::<HostNotePorts>()
            .register::<HostAudioPorts>();
    }
}

/// One parameter as the plugin's `params` extension describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDesc {
    /// The CLAP id (for nice-plug: `hash_param_id(string_id)`).
    pub id: u32,
    /// The display name (`clap_param_info.name`).
    pub name: String,
    /// The module/group path.
    pub module: String,
    /// CLAP plain range and default. nice-plug exposes every param as `0..=step_count`
    /// (`0..=1` for bools and continuous params), so an int param `1..=16` is `0..=15` here.
    pub min: f64,
    pub max: f64,
    pub default: f64,
    /// Raw `CLAP_PARAM_*` flags.
    pub flags: u32,
}

/// One note port as the plugin's `note-ports` extension describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct NotePortDesc {
    pub id: u32,
    pub name: String,
    /// Raw `CLAP_NOTE_DIALECT_*` bits.
    pub supported_dialects: u32,
}

/// Transport the harness reports for each block. Song position is computed by the harness from
/// its running sample counter (advanced only while `playing`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransportSettings {
    pub playing: bool,
    pub tempo_bpm: f64,
    pub time_sig_num: u16,
    pub time_sig_den: u16,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            playing: true,
            tempo_bpm: 120.0,
            time_sig_num: 4,
            time_sig_den: 4,
        }
    }
}

/// What one `process()` call produced.
#[derive(Clone, Debug)]
pub struct BlockOutput {
    /// Output audio, `[left, right]`, exactly as long as the block.
    pub audio: [Vec<f32>; 2],
    /// Output events in the order the plugin pushed them (`time` is the offset in the block).
    pub events: Vec<OutEvent>,
    /// The plugin's process status.
    pub status: ProcessStatus,
    /// The transport that was sent with this block.
    pub transport: TransportEvent,
}

/// The CLAP transport for a block starting `song_pos_samples` into the song.
pub fn transport_event(
    t: TransportSettings,
    song_pos_samples: u64,
    sample_rate: f64,
) -> TransportEvent {
    #[allow(clippy::cast_precision_loss)]
    let seconds = song_pos_samples as f64 / sample_rate;
    let beats = seconds * t.tempo_bpm / 60.0;
    let beats_per_bar = f64::from(t.time_sig_num) * 4.0 / f64::from(t.time_sig_den.max(1));
    let bar_number = (beats / beats_per_bar).floor();
    let mut flags = TransportFlags::HAS_TEMPO
        | TransportFlags::HAS_BEATS_TIMELINE
        | TransportFlags::HAS_SECONDS_TIMELINE
        | TransportFlags::HAS_TIME_SIGNATURE;
    if t.playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: BeatTime::from_float(beats),
        song_pos_seconds: SecondsTime::from_float(seconds),
        tempo: t.tempo_bpm,
        tempo_inc: 0.0,
        loop_start_beats: BeatTime::from_float(0.0),
        loop_end_beats: BeatTime::from_float(0.0),
        loop_start_seconds: SecondsTime::from_float(0.0),
        loop_end_seconds: SecondsTime::from_float(0.0),
        bar_start: BeatTime::from_float(bar_number * beats_per_bar),
        #[allow(clippy::cast_possible_truncation)]
        bar_number: bar_number as i32,
        time_signature_numerator: t.time_sig_num,
        time_signature_denominator: t.time_sig_den,
    }
}

/// Value every output sample is preset to before a block; if it survives, the plugin did not
/// write that sample.
pub const OUTPUT_SENTINEL: f32 = -12345.678;

struct Active {
    sample_rate: f64,
    max_frames: u32,
    processor: Option<PluginAudioProcessor<TestHost>>,
}

/// A CLAP host around one plugin instance of one loaded `.clap` file.
pub struct ClapTestHost {
    // Field order matters for drop: instance before entry.
    instance: Option<PluginInstance<TestHost>>,
    entry: Option<PluginEntry>,
    params: Vec<ParamDesc>,
    active: Option<Active>,
    transport: TransportSettings,
    song_pos_samples: u64,
    steady_time: u64,
    queued_params: Vec<(u32, f64)>,
    in_bufs: [Vec<f32>; 2],
    out_bufs: [Vec<f32>; 2],
    input_ports: AudioPorts,
    output_ports: AudioPorts,
    in_events: EventBuffer,
    out_events: EventBuffer,
    scratch_events: Vec<InEvent>,
}

impl ClapTestHost {
    /// Loads `crate::clap_path()` and instantiates `crate::PLUGIN_ID`, panicking with a clear
    /// message on any failure.
    pub fn load() -> Self {
        let path = crate::clap_path();
        Self::load_from(&path, crate::PLUGIN_ID)
            .unwrap_or_else(|e| panic!("loading {} failed: {e:#}", path.display()))
    }

    /// Loads the bundle at `path`, checks it contains `plugin_id`, instantiates it and
    /// enumerates its parameters.
    pub fn load_from(path: &Path, plugin_id: &str) -> Result<Self> {
        set_phase("load bundle", Some(Duration::from_secs(60)));
        // SAFETY: loading a plugin library runs its initialisers; that is what this test is for.
        let entry = unsafe { PluginEntry::load(path) }
            .map_err(|e| anyhow!("PluginEntry::load({}) failed: {e}", path.display()))?;

        let factory = entry
            .get_plugin_factory()
            .ok_or_else(|| anyhow!("{} exposes no plugin factory", path.display()))?;
        let ids: Vec<String> = factory
            .plugin_descriptors()
            .filter_map(|d| d.id().map(|id| id.to_string_lossy().into_owned()))
            .collect();
        if !ids.iter().any(|id| id == plugin_id) {
            bail!(
                "plugin id '{plugin_id}' not found in {}; the factory lists {ids:?}",
                path.display()
            );
        }

        set_phase("instantiate", Some(Duration::from_secs(30)));
        let host_info = test_host_info()?;
        let plugin_id_c = CString::new(plugin_id)?;
        let echo_log = std::env::var_os("MOODFADER_TEST_QUIET_LOG").is_none();
        let instance = PluginInstance::<TestHost>::new(
            |_| HostShared {
                main_thread: std::thread::current().id(),
                pending_callback: false.into(),
                counts: HostCallbackCounts::default(),
                log: Mutex::new(Vec::new()),
                echo_log,
                params: OnceLock::new(),
                audio_ports: OnceLock::new(),
                note_ports: OnceLock::new(),
                latency: OnceLock::new(),
                render: OnceLock::new(),
                preset_load: OnceLock::new(),
                state: OnceLock::new(),
                gui: OnceLock::new(),
            },
            |shared| HostMainThread { shared },
            &entry,
            &plugin_id_c,
            &host_info,
        )
        .map_err(|e| anyhow!("instantiating '{plugin_id}' failed: {e}"))?;

        let mut host = ClapTestHost {
            instance: Some(instance),
            entry: Some(entry),
            params: Vec::new(),
            active: None,
            transport: TransportSettings::default(),
            song_pos_samples: 0,
            steady_time: 0,
            queued_params: Vec::new(),
            in_bufs: [Vec::new(), Vec::new()],
            out_bufs: [Vec::new(), Vec::new()],
            input_ports: AudioPorts::with_capacity(2, 1),
            output_ports: AudioPorts::with_capacity(2, 1),
            in_events: EventBuffer::with_capacity(256),
            out_events: EventBuffer::with_capacity(1024),
            scratch_events: Vec::with_capacity(256),
        };
        host.params = host.enumerate_params();
        set_phase("loaded", None);
        Ok(host)
    }

    fn instance(&mut self) -> &mut PluginInstance<TestHost> {
        self.instance
            .as_mut()
            .expect("plugin instance already destroyed")
    }

    fn shared(&self) -> &HostShared {
        self.instance
            .as_ref()
            .expect("plugin instance already destroyed")
            .access_shared_handler(|s| s)
    }

    fn enumerate_params(&mut self) -> Vec<ParamDesc> {
        let Some(Some(params)) = self.shared().params.get().copied() else {
            return Vec::new();
        };
        let handle = self.instance().plugin_handle();
        let count = params.count(&handle);
        let mut out = Vec::with_capacity(count as usize);
        let mut buffer = ParamInfoBuffer::new();
        for index in 0..count {
            if let Some(info) = params.get_info(&handle, index, &mut buffer) {
                out.push(ParamDesc {
                    id: info.id.get(),
                    name: String::from_utf8_lossy(info.name).into_owned(),
                    module: String::from_utf8_lossy(info.module).into_owned(),
                    min: info.min_value,
                    max: info.max_value,
                    default: info.default_value,
                    flags: info.flags.bits(),
                });
            }
        }
        out
    }

    /// All parameters the plugin exposes (empty if it has no `params` extension).
    pub fn params(&self) -> &[ParamDesc] {
        &self.params
    }

    /// The parameter with this CLAP display name, if any.
    pub fn param_by_name(&self, name: &str) -> Option<&ParamDesc> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameter whose nice-plug string id is `string_id`, if the plugin has it.
    pub fn param_by_string_id(&self, string_id: &str) -> Option<&ParamDesc> {
        let id = hash_param_id(string_id);
        self.params.iter().find(|p| p.id == id)
    }

    /// CLAP id of the parameter with nice-plug string id `string_id` (e.g. `"mood_cc"`).
    ///
    /// # Panics
    ///
    /// Panics, listing every parameter, if the plugin has no such parameter.
    pub fn param_id(&self, string_id: &str) -> u32 {
        match self.param_by_string_id(string_id) {
            Some(p) => p.id,
            None => panic!(
                "plugin has no parameter with string id '{string_id}' (CLAP id {}); its params \
                 are: {:#?}",
                hash_param_id(string_id),
                self.params
            ),
        }
    }

    /// Current CLAP plain value of a parameter (`params.get_value`).
    pub fn param_value(&mut self, id: u32) -> Option<f64> {
        let params = self.shared().params.get().copied().flatten()?;
        let handle = self.instance().plugin_handle();
        params.get_value(&handle, ClapId::new(id))
    }

    /// The plugin's whole state as the host would save it in a project (`state.save`).
    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        let state = self.shared().state.get().copied().flatten().context("plugin has no state extension")?;
        let handle = self.instance().plugin_handle();
        let mut out = Vec::new();
        state.save(&handle, &mut out).map_err(|e| anyhow::anyhow!("state.save failed: {e:?}"))?;
        Ok(out)
    }

    /// The panel's size as the plugin reports it before any window exists (`gui.get_size`, as a
    /// host asks before it opens the editor), whether it may be resized and on which axes.
    pub fn gui_size(&mut self) -> Result<(u32, u32, bool, Option<GuiResizeHints>)> {
        let gui = self.shared().gui.get().copied().flatten().context("plugin has no gui extension")?;
        let handle = self.instance().plugin_handle();
        let size = gui.get_size(&handle).context("gui.get_size failed")?;
        Ok((size.width, size.height, gui.can_resize(&handle), gui.get_resize_hints(&handle)))
    }

    /// Restores a saved state (`state.load`), as a host does when it opens a project.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let state = self.shared().state.get().copied().flatten().context("plugin has no state extension")?;
        let handle = self.instance().plugin_handle();
        let mut reader = bytes;
        state.load(&handle, &mut reader).map_err(|e| anyhow::anyhow!("state.load failed: {e:?}"))
    }

    /// The plugin's own parse of `text` into a CLAP plain value (`params.text_to_value`), e.g.
    /// `param_text_to_value(out_ch, "3")`. Use this rather than guessing the encoding.
    pub fn param_text_to_value(&mut self, id: u32, text: &str) -> Option<f64> {
        let params = self.shared().params.get().copied().flatten()?;
        let text = CString::new(text).ok()?;
        let handle = self.instance().plugin_handle();
        params.text_to_value(&handle, ClapId::new(id), &text)
    }

    /// Channel counts of the plugin's audio ports: `(inputs, outputs)`.
    pub fn audio_ports(&mut self) -> (Vec<u32>, Vec<u32>) {
        let Some(ports) = self.shared().audio_ports.get().copied().flatten() else {
            return (Vec::new(), Vec::new());
        };
        let handle = self.instance().plugin_handle();
        let mut buffer = AudioPortInfoBuffer::new();
        let mut list = |is_input: bool| -> Vec<u32> {
            let mut out = Vec::new();
            for i in 0..ports.count(&handle, is_input) {
                if let Some(info) = ports.get(&handle, i, is_input, &mut buffer) {
                    out.push(info.channel_count);
                }
            }
            out
        };
        let inputs = list(true);
        let outputs = list(false);
        (inputs, outputs)
    }

    /// The plugin's note ports: `(inputs, outputs)`.
    pub fn note_ports(&mut self) -> (Vec<NotePortDesc>, Vec<NotePortDesc>) {
        let Some(ports) = self.shared().note_ports.get().copied().flatten() else {
            return (Vec::new(), Vec::new());
        };
        let handle = self.instance().plugin_handle();
        let mut buffer = NotePortInfoBuffer::new();
        let mut list = |is_input: bool| -> Vec<NotePortDesc> {
            let mut out = Vec::new();
            for i in 0..ports.count(&handle, is_input) {
                if let Some(info) = ports.get(&handle, i, is_input, &mut buffer) {
                    out.push(NotePortDesc {
                        id: info.id.get(),
                        name: String::from_utf8_lossy(info.name).into_owned(),
                        supported_dialects: info.supported_dialects.bits(),
                    });
                }
            }
            out
        };
        let inputs = list(true);
        let outputs = list(false);
        (inputs, outputs)
    }

    /// The plugin's reported latency in samples (0 if it has no latency extension).
    pub fn latency(&mut self) -> u32 {
        let Some(latency) = self.shared().latency.get().copied().flatten() else {
            return 0;
        };
        let handle = self.instance().plugin_handle();
        latency.get(&handle)
    }

    /// Tells the plugin to render offline (a bounce: faster than real time, and it may wait) or
    /// in real time, through the `render` extension. Call it before `activate()`; while active,
    /// the plugin asks for a restart.
    pub fn set_render_offline(&mut self, offline: bool) -> Result<()> {
        let render = self
            .shared()
            .render
            .get()
            .copied()
            .flatten()
            .context("the plugin has no render extension")?;
        let handle = self.instance().plugin_handle();
        let mode = if offline { RenderMode::Offline } else { RenderMode::Realtime };
        render
            .set(&handle, mode)
            .map_err(|e| anyhow!("render.set({offline}) refused: {e}"))
    }

    /// The presets the library lists through CLAP preset discovery, crawled as a host's preset
    /// browser does: every provider, every location it declares.
    pub fn discover_presets(&self) -> Result<Vec<DiscoveredPreset>> {
        let entry = self.entry.as_ref().context("no plugin entry")?;
        let factory: PresetDiscoveryFactory = entry
            .get_factory()
            .context("the library has no preset-discovery factory")?;
        let host_info = test_host_info()?;
        let mut found = Vec::new();
        for descriptor in factory.provider_descriptors() {
            let id = descriptor.id().context("a provider descriptor has no id")?.to_owned();
            let mut provider = Provider::instantiate(Locations::default(), entry, &id, &host_info)
                .map_err(|e| anyhow!("provider {id:?}: {e}"))?;
            let locations = std::mem::take(&mut provider.indexer_mut().0);
            for (plugin_location, flags) in locations {
                if !plugin_location {
                    bail!("provider {id:?} declared a file location; only presets inside the plugin were expected");
                }
                let mut receiver = Presets { flags, ..Presets::default() };
                provider.get_metadata(PresetLocation::Plugin, &mut receiver);
                if let Some(e) = receiver.error {
                    bail!("provider {id:?}: {e}");
                }
                found.extend(receiver.presets);
            }
        }
        Ok(found)
    }

    /// Loads a preset the plugin listed inside itself (`clap.preset-load`), then services the
    /// main thread so the plugin's follow-up (a parameter rescan) runs.
    pub fn load_preset(&mut self, load_key: &str) -> Result<()> {
        let ext = self.shared().preset_load.get().copied().flatten().context("the plugin has no preset-load extension")?;
        let key = CString::new(load_key)?;
        let handle = self.instance().plugin_handle();
        ext.load_from_location(&handle, PresetLocation::Plugin, Some(&key))
            .map_err(|_| anyhow!("preset-load refused '{load_key}'"))?;
        self.service_main_thread();
        Ok(())
    }

    /// Everything the plugin logged through the host `log` extension so far.
    pub fn log_messages(&self) -> Vec<String> {
        self.shared()
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Host callbacks the plugin made so far.
    pub fn callback_counts(&self) -> &HostCallbackCounts {
        &self.shared().counts
    }

    /// Activates with this sample rate and block size range; resets the transport position.
    pub fn activate(&mut self, sample_rate: f64, min_frames: u32, max_frames: u32) -> Result<()> {
        if self.active.is_some() {
            bail!("activate() called while already active");
        }
        set_phase("activate", Some(Duration::from_secs(60)));
        let config = PluginAudioConfiguration {
            sample_rate,
            min_frames_count: min_frames,
            max_frames_count: max_frames,
        };
        let stopped = self.instance().activate(|_, _| (), config).map_err(|e| {
            anyhow!("activate({sample_rate} Hz, {min_frames}..={max_frames}) failed: {e}")
        })?;
        let frames = max_frames as usize;
        for b in self.in_bufs.iter_mut().chain(self.out_bufs.iter_mut()) {
            *b = vec![0.0; frames];
        }
        self.active = Some(Active {
            sample_rate,
            max_frames,
            processor: Some(stopped.into()),
        });
        self.song_pos_samples = 0;
        self.steady_time = 0;
        self.service_main_thread();
        set_phase("active", None);
        Ok(())
    }

    /// `start_processing()` (flagged as an audio-thread call).
    pub fn start_processing(&mut self) -> Result<()> {
        let active = self
            .active
            .as_mut()
            .context("start_processing() before activate()")?;
        let processor = active
            .processor
            .as_mut()
            .expect("processor present while active");
        in_audio_call(|| processor.start_processing().map(|_| ()))
            .map_err(|e| anyhow!("start_processing failed: {e}"))
    }

    /// `stop_processing()` (flagged as an audio-thread call); no-op if not started.
    pub fn stop_processing(&mut self) {
        if let Some(active) = self.active.as_mut()
            && let Some(processor) = active.processor.as_mut()
            && processor.is_started()
        {
            in_audio_call(|| {
                let _ = processor.stop_processing();
            });
        }
    }

    /// Deactivates (stopping processing first if needed).
    pub fn deactivate(&mut self) {
        self.stop_processing();
        if let Some(mut active) = self.active.take() {
            let processor = active
                .processor
                .take()
                .expect("processor present while active");
            let stopped = processor.into_stopped();
            self.instance().deactivate(stopped);
        }
    }

    /// Sets the transport reported from the next block on.
    pub fn set_transport(&mut self, transport: TransportSettings) {
        self.transport = transport;
    }

    /// Moves the song position (in samples) reported for the next block.
    pub fn set_song_position_samples(&mut self, samples: u64) {
        self.song_pos_samples = samples;
    }

    /// Song position, in samples, of the start of the next block.
    pub fn song_position_samples(&self) -> u64 {
        self.song_pos_samples
    }

    /// Queues a parameter change (CLAP plain value) to be sent at offset 0 of the next block.
    pub fn set_param(&mut self, id: u32, value: f64) {
        self.queued_params.push((id, value));
    }

    /// Processes one block: `input` is `[left, right]` (equal lengths, 1..=max_frames),
    /// `events` are offsets inside the block (any order; sent sorted by time, stable).
    /// Queued [`set_param`](Self::set_param) changes go first at offset 0.
    /// Starts processing first if needed.
    pub fn process(&mut self, input: [&[f32]; 2], events: &[InEvent]) -> Result<BlockOutput> {
        let frames = input[0].len();
        if input[1].len() != frames {
            bail!(
                "input channels differ in length: {} vs {}",
                frames,
                input[1].len()
            );
        }
        let (sample_rate, max_frames) = {
            let active = self
                .active
                .as_ref()
                .context("process() before activate()")?;
            (active.sample_rate, active.max_frames)
        };
        if frames == 0 || frames > max_frames as usize {
            bail!("block of {frames} frames outside 1..={max_frames}");
        }
        if !self
            .active
            .as_ref()
            .and_then(|a| a.processor.as_ref())
            .is_some_and(PluginAudioProcessor::is_started)
        {
            self.start_processing()?;
        }

        // Events: queued param changes first, then the block's events sorted by time (stable).
        self.scratch_events.clear();
        for &(id, value) in &self.queued_params {
            self.scratch_events
                .push(InEvent::Param { time: 0, id, value });
        }
        self.queued_params.clear();
        self.scratch_events.extend_from_slice(events);
        self.scratch_events.sort_by_key(InEvent::time);
        self.in_events.clear();
        for e in &self.scratch_events {
            if e.time() as usize >= frames {
                bail!("event {e:?} has time >= block length {frames}");
            }
            e.push_to(&mut self.in_events);
        }
        self.out_events.clear();

        // Audio: copy the input, preset the output to a sentinel.
        for (buf, src) in self.in_bufs.iter_mut().zip(input) {
            buf[..frames].copy_from_slice(src);
        }
        for buf in &mut self.out_bufs {
            buf[..frames].fill(OUTPUT_SENTINEL);
        }

        let transport = transport_event(self.transport, self.song_pos_samples, sample_rate);
        let steady_time = self.steady_time;

        let Self {
            active,
            in_bufs,
            out_bufs,
            input_ports,
            output_ports,
            in_events,
            out_events,
            ..
        } = self;
        let processor = active
            .as_mut()
            .and_then(|a| a.processor.as_mut())
            .expect("processor present while active");
        let [in_l, in_r] = in_bufs;
        let [out_l, out_r] = out_bufs;
        let inputs = input_ports.with_input_buffers([AudioPortBuffer {
            latency: 0,
            channels: AudioPortBufferType::f32_input_only([
                InputChannel::variable(&mut in_l[..frames]),
                InputChannel::variable(&mut in_r[..frames]),
            ]),
        }]);
        let mut outputs = output_ports.with_output_buffers([AudioPortBuffer {
            latency: 0,
            channels: AudioPortBufferType::f32_output_only([
                &mut out_l[..frames],
                &mut out_r[..frames],
            ]),
        }]);
        let input_events = InputEvents::from_buffer(&*in_events);
        let mut output_events = OutputEvents::from_buffer(out_events);

        let status = in_audio_call(|| {
            let started = processor.as_started_mut()?;
            started.process(
                &inputs,
                &mut outputs,
                &input_events,
                &mut output_events,
                Some(steady_time),
                Some(&transport),
            )
        })
        .map_err(|e| anyhow!("process() failed: {e}"))?;

        let out_events_list: Vec<OutEvent> =
            self.out_events.iter().map(OutEvent::from_clap).collect();
        let audio = [
            self.out_bufs[0][..frames].to_vec(),
            self.out_bufs[1][..frames].to_vec(),
        ];

        self.steady_time += frames as u64;
        if self.transport.playing {
            self.song_pos_samples += frames as u64;
        }
        self.service_main_thread();

        Ok(BlockOutput {
            audio,
            events: out_events_list,
            status,
            transport,
        })
    }

    /// Runs `on_main_thread` if the plugin asked for it.
    pub fn service_main_thread(&mut self) {
        if self.shared().pending_callback.swap(false, Ordering::AcqRel) {
            self.instance().call_on_main_thread_callback();
        }
    }

    /// Clean shutdown: stop_processing, deactivate, destroy the instance, unload the entry.
    /// Each step has a 10 s deadline under [`crate::guard::run_guarded`].
    pub fn shutdown(mut self) {
        self.shutdown_in_place();
    }

    fn shutdown_in_place(&mut self) {
        let limit = Some(Duration::from_secs(10));
        set_phase("shutdown: stop_processing", limit);
        self.stop_processing();
        set_phase("shutdown: deactivate", limit);
        self.deactivate();
        if let Some(instance) = self.instance.as_mut() {
            set_phase("shutdown: main-thread callback", limit);
            if instance.access_shared_handler(|s: &HostShared| {
                s.pending_callback.swap(false, Ordering::AcqRel)
            }) {
                instance.call_on_main_thread_callback();
            }
        }
        set_phase("shutdown: destroy instance", limit);
        drop(self.instance.take());
        set_phase("shutdown: unload entry", limit);
        drop(self.entry.take());
        set_phase("shut down", None);
    }
}

impl Drop for ClapTestHost {
    fn drop(&mut self) {
        if self.instance.is_some() || self.entry.is_some() {
            // Best effort (e.g. while unwinding from a failed assertion).
            self.shutdown_in_place();
        }
    }
}

#[cfg(test)]
mod unit {
    use super::{TransportSettings, transport_event};
    use clack_host::events::event_types::TransportFlags;

    #[test]
    fn transport_position_follows_samples() {
        let t = TransportSettings::default(); // 120 BPM 4/4, playing
        let e = transport_event(t, 96_000 + 24_000, 48_000.0); // 2.5 s = 5 beats
        assert_eq!(e.song_pos_beats.to_float(), 5.0);
        assert_eq!(e.song_pos_seconds.to_float(), 2.5);
        assert_eq!(e.bar_number, 1);
        assert_eq!(e.bar_start.to_float(), 4.0);
        assert!(e.flags.contains(TransportFlags::IS_PLAYING));
        let e = transport_event(
            TransportSettings {
                playing: false,
                time_sig_num: 6,
                time_sig_den: 8,
                ..t
            },
            48_000 * 3, // 3 s = 6 beats; 6/8 bars are 3 beats long
            48_000.0,
        );
        assert_eq!(e.bar_number, 2);
        assert_eq!(e.bar_start.to_float(), 6.0);
        assert!(!e.flags.contains(TransportFlags::IS_PLAYING));
    }
}

/// How the test host introduces itself to the plugin and to its preset providers.
fn test_host_info() -> Result<HostInfo> {
    Ok(HostInfo::new("Moodfader test host", "Moodfader developers", "https://example.invalid/moodfader-tests", "0.1.0")?)
}

/// A preset as a provider described it to the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiscoveredPreset {
    pub name: String,
    pub load_key: String,
    pub plugin_ids: Vec<(String, String)>,
    pub description: String,
    pub creators: Vec<String>,
    /// The preset's own flags, else those of its location.
    pub factory_content: bool,
}

/// An indexer that records the locations a provider declares: (inside the plugin, factory flag).
#[derive(Default)]
struct Locations(Vec<(bool, bool)>);

impl IndexerImpl for Locations {
    fn declare_filetype(&mut self, _file_type: FileType) -> Result<(), HostError> {
        Ok(())
    }
    fn declare_location(&mut self, location: LocationInfo) -> Result<(), HostError> {
        let inside = matches!(location.location, PresetLocation::Plugin);
        self.0.push((inside, location.flags.contains(PresetFlags::IS_FACTORY_CONTENT)));
        Ok(())
    }
    fn declare_soundpack(&mut self, _soundpack: Soundpack) -> Result<(), HostError> {
        Ok(())
    }
}

/// A metadata receiver that records every preset.
#[derive(Default)]
struct Presets {
    flags: bool,
    presets: Vec<DiscoveredPreset>,
    error: Option<String>,
}

impl Presets {
    fn current(&mut self) -> Option<&mut DiscoveredPreset> {
        self.presets.last_mut()
    }
}

impl MetadataReceiverImpl for Presets {
    fn on_error(&mut self, error_code: i32, error_message: Option<&CStr>) {
        self.error = Some(format!("error {error_code}: {error_message:?}"));
    }
    fn begin_preset(&mut self, name: Option<&CStr>, load_key: Option<&CStr>) -> Result<(), HostError> {
        let text = |s: Option<&CStr>| s.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.presets.push(DiscoveredPreset {
            name: text(name),
            load_key: text(load_key),
            factory_content: self.flags,
            ..DiscoveredPreset::default()
        });
        Ok(())
    }
    fn add_plugin_id(&mut self, plugin_id: UniversalPluginId) {
        if let Some(p) = self.current() {
            p.plugin_ids.push((plugin_id.abi.to_string_lossy().into_owned(), plugin_id.id.to_string_lossy().into_owned()));
        }
    }
    fn set_soundpack_id(&mut self, _soundpack_id: &CStr) {}
    fn set_flags(&mut self, flags: PresetFlags) {
        if let Some(p) = self.current() {
            p.factory_content = flags.contains(PresetFlags::IS_FACTORY_CONTENT);
        }
    }
    fn add_creator(&mut self, creator: &CStr) {
        if let Some(p) = self.current() {
            p.creators.push(creator.to_string_lossy().into_owned());
        }
    }
    fn set_description(&mut self, description: &CStr) {
        if let Some(p) = self.current() {
            p.description = description.to_string_lossy().into_owned();
        }
    }
    fn set_timestamps(&mut self, _creation_time: Option<Timestamp>, _modification_time: Option<Timestamp>) {}
    fn add_feature(&mut self, _feature: &CStr) {}
    fn add_extra_info(&mut self, _key: &CStr, _value: &CStr) {}
}
