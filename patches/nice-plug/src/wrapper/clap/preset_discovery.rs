//! Moodfader patch: CLAP preset discovery for a plugin's factory presets.
//!
//! Upstream nice-plug exposes no `clap.preset-discovery-factory/2`, so CLAP hosts' preset
//! browsers (and clap-validator's preset-discovery tests) see none of a plugin's factory presets.
//! A plugin lists them in [`ClapPlugin::CLAP_FACTORY_PRESETS`][super::ClapPlugin]; the
//! `nice_export_clap!` entry point then offers one provider that declares a single location of
//! kind `CLAP_PRESET_DISCOVERY_LOCATION_PLUGIN` (the presets live inside the plugin) and lists
//! each preset under its load key. The plugin instance loads them through `clap.preset-load/2`
//! (`Wrapper::ext_preset_load_from_location`), which applies the preset's parameter values on
//! top of the current state, as a state load from the GUI does.

use std::ffi::{CStr, CString, c_char, c_void};

use clap_sys::factory::preset_discovery::{
    CLAP_PRESET_DISCOVERY_IS_FACTORY_CONTENT, CLAP_PRESET_DISCOVERY_LOCATION_PLUGIN,
    clap_preset_discovery_factory, clap_preset_discovery_indexer, clap_preset_discovery_location,
    clap_preset_discovery_location_kind, clap_preset_discovery_metadata_receiver,
    clap_preset_discovery_provider, clap_preset_discovery_provider_descriptor,
};
use clap_sys::universal_plugin_id::clap_universal_plugin_id;
use clap_sys::version::CLAP_VERSION;

/// A factory preset: what a host's preset browser shows, and the parameter values it sets (the
/// plugin's other parameters keep their values).
#[derive(Debug, Clone, Copy)]
pub struct ClapFactoryPreset {
    /// Stable key the host stores and hands back to `clap.preset-load`.
    pub load_key: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// (parameter ID, value) pairs, the ID as the plugin's `Params` derive spells it (with any
    /// nested `id_prefix`).
    pub values: &'static [(&'static str, PresetValue)],
}

/// A parameter's value in a factory preset, in the parameter's own (plain) units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PresetValue {
    Float(f32),
    Int(i32),
    Bool(bool),
    /// An enum parameter's variant, by its `#[id = "..."]`.
    Enum(&'static str),
}

struct Entry {
    plugin_id: CString,
    load_key: CString,
    name: CString,
    description: CString,
}

/// The preset-discovery factory of a library: built once by the entry point, never moved.
#[repr(C)]
pub struct PresetDiscovery {
    // Must stay the first field: the factory pointer the host holds is a pointer to `self`.
    factory: clap_preset_discovery_factory,
    descriptor: clap_preset_discovery_provider_descriptor,
    id: CString,
    name: CString,
    vendor: CString,
    location_name: CString,
    entries: Vec<Entry>,
}

// SAFETY: immutable after construction; the raw pointers point into its own CStrings.
unsafe impl Send for PresetDiscovery {}
unsafe impl Sync for PresetDiscovery {}

/// One provider instance the host created (boxed; `raw` first so the host's pointer is ours).
#[repr(C)]
struct Provider {
    raw: clap_preset_discovery_provider,
    indexer: *const clap_preset_discovery_indexer,
    discovery: &'static PresetDiscovery,
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

impl PresetDiscovery {
    /// `plugins`: each exported plugin's CLAP ID, vendor and factory presets.
    pub fn new(plugins: &[(&'static str, &'static str, &'static [ClapFactoryPreset])]) -> Self {
        let vendor = plugins.first().map(|p| p.1).unwrap_or("");
        let first_id = plugins.first().map(|p| p.0).unwrap_or("nice-plug");
        let entries = plugins
            .iter()
            .flat_map(|(id, _, presets)| {
                presets.iter().map(move |p| Entry {
                    plugin_id: cstring(id),
                    load_key: cstring(p.load_key),
                    name: cstring(p.name),
                    description: cstring(p.description),
                })
            })
            .collect();
        let mut this = Self {
            factory: clap_preset_discovery_factory {
                count: Some(Self::count),
                get_descriptor: Some(Self::get_descriptor),
                create: Some(Self::create),
            },
            descriptor: clap_preset_discovery_provider_descriptor {
                clap_version: CLAP_VERSION,
                id: std::ptr::null(),
                name: std::ptr::null(),
                vendor: std::ptr::null(),
            },
            id: cstring(&format!("{first_id}.factory-presets")),
            name: cstring("Factory presets"),
            vendor: cstring(vendor),
            location_name: cstring("Factory presets"),
            entries,
        };
        // The CStrings' heap buffers do not move with the struct.
        this.descriptor.id = this.id.as_ptr();
        this.descriptor.name = this.name.as_ptr();
        this.descriptor.vendor = this.vendor.as_ptr();
        this
    }

    /// Whether there is anything to offer (the entry point hides the factory otherwise).
    pub fn has_presets(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The factory pointer for `clap_plugin_entry::get_factory`. `self` must not move again.
    pub fn factory_ptr(&'static self) -> *const c_void {
        &self.factory as *const clap_preset_discovery_factory as *const c_void
    }

    unsafe extern "C" fn count(factory: *const clap_preset_discovery_factory) -> u32 {
        if factory.is_null() { 0 } else { 1 }
    }

    unsafe extern "C" fn get_descriptor(
        factory: *const clap_preset_discovery_factory,
        index: u32,
    ) -> *const clap_preset_discovery_provider_descriptor {
        if factory.is_null() || index != 0 {
            return std::ptr::null();
        }
        let this = unsafe { &*(factory as *const Self) };
        &this.descriptor
    }

    unsafe extern "C" fn create(
        factory: *const clap_preset_discovery_factory,
        indexer: *const clap_preset_discovery_indexer,
        provider_id: *const c_char,
    ) -> *const clap_preset_discovery_provider {
        if factory.is_null() || indexer.is_null() || provider_id.is_null() {
            return std::ptr::null();
        }
        // SAFETY: the only factory we hand out is a `&'static PresetDiscovery`.
        let this: &'static Self = unsafe { &*(factory as *const Self) };
        if unsafe { CStr::from_ptr(provider_id) } != this.id.as_c_str() {
            return std::ptr::null();
        }
        let provider = Box::new(Provider {
            raw: clap_preset_discovery_provider {
                desc: &this.descriptor,
                provider_data: std::ptr::null_mut(),
                init: Some(provider_init),
                destroy: Some(provider_destroy),
                get_metadata: Some(provider_get_metadata),
                get_extension: Some(provider_get_extension),
            },
            indexer,
            discovery: this,
        });
        Box::into_raw(provider) as *const clap_preset_discovery_provider
    }
}

unsafe extern "C" fn provider_init(provider: *const clap_preset_discovery_provider) -> bool {
    if provider.is_null() {
        return false;
    }
    let provider = unsafe { &*(provider as *const Provider) };
    let indexer = unsafe { &*provider.indexer };
    let location = clap_preset_discovery_location {
        flags: CLAP_PRESET_DISCOVERY_IS_FACTORY_CONTENT,
        name: provider.discovery.location_name.as_ptr(),
        kind: CLAP_PRESET_DISCOVERY_LOCATION_PLUGIN,
        location: std::ptr::null(),
    };
    match indexer.declare_location {
        Some(declare) => unsafe { declare(indexer, &location) },
        None => false,
    }
}

unsafe extern "C" fn provider_destroy(provider: *const clap_preset_discovery_provider) {
    if !provider.is_null() {
        drop(unsafe { Box::from_raw(provider as *mut Provider) });
    }
}

unsafe extern "C" fn provider_get_metadata(
    provider: *const clap_preset_discovery_provider,
    location_kind: clap_preset_discovery_location_kind,
    location: *const c_char,
    receiver: *const clap_preset_discovery_metadata_receiver,
) -> bool {
    if provider.is_null() || receiver.is_null() {
        return false;
    }
    if location_kind != CLAP_PRESET_DISCOVERY_LOCATION_PLUGIN || !location.is_null() {
        return false;
    }
    let provider = unsafe { &*(provider as *const Provider) };
    let r = unsafe { &*receiver };
    let abi = c"clap";
    for e in &provider.discovery.entries {
        let Some(begin) = r.begin_preset else { return false };
        if !unsafe { begin(r, e.name.as_ptr(), e.load_key.as_ptr()) } {
            break;
        }
        if let Some(add) = r.add_plugin_id {
            let id = clap_universal_plugin_id { abi: abi.as_ptr(), id: e.plugin_id.as_ptr() };
            unsafe { add(r, &id) };
        }
        if let Some(set_flags) = r.set_flags {
            unsafe { set_flags(r, CLAP_PRESET_DISCOVERY_IS_FACTORY_CONTENT) };
        }
        if let Some(set_description) = r.set_description {
            unsafe { set_description(r, e.description.as_ptr()) };
        }
        if let Some(add_creator) = r.add_creator
            && !provider.discovery.vendor.is_empty()
        {
            unsafe { add_creator(r, provider.discovery.vendor.as_ptr()) };
        }
    }
    true
}

unsafe extern "C" fn provider_get_extension(
    _provider: *const clap_preset_discovery_provider,
    _extension_id: *const c_char,
) -> *const c_void {
    std::ptr::null()
}
