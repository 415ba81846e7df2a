//! Test harness that loads the real, built `moodfader.clap` with `clack-host` and drives it the
//! way a DAW does: instantiate, query ports and params, activate, start processing, process
//! blocks of stereo audio with note/MIDI/param events and a running transport, then shut down.
//!
//! * [`ClapTestHost`] is the host itself (see `host.rs`).
//! * [`InEvent`] / [`OutEvent`] are the simplified event types the host speaks (see `events.rs`).
//! * [`guard::run_guarded`] runs a test body on its own thread under a wall-clock limit, with
//!   per-phase deadlines (a hanging shutdown fails the test instead of hanging it).
//! * [`scenario`] holds the deterministic test signal, the musical event stream and the checks
//!   (bit-exact audio, sample-exact MIDI thru) shared by the integration tests in `tests/`.
//!
//! Thread: any

pub mod events;
pub mod guard;
pub mod host;
pub mod scenario;

pub use events::{InEvent, OutEvent};
pub use host::{BlockOutput, ClapTestHost, DiscoveredPreset, NotePortDesc, ParamDesc, TransportSettings};

use std::path::PathBuf;

/// The CLAP id the Moodfader plugin registers under.
pub const PLUGIN_ID: &str = "com.moodfader.moodfader";

/// The workspace root (the parent of this `tests/` package).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Path of the `.clap` file under test: `$MOODFADER_CLAP` if set, else
/// `<workspace>/target/bundled/moodfader.clap`.
///
/// # Panics
///
/// Panics loudly if the file does not exist, since every test here needs the built plugin.
pub fn clap_path() -> PathBuf {
    let path = match std::env::var_os("MOODFADER_CLAP") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root()
            .join("target")
            .join("bundled")
            .join("moodfader.clap"),
    };
    if !path.exists() {
        panic!(
            "\n\n========================================================================\n\
             built plugin not found at {}; run `cargo xtask test` (it bundles first)\n\
             (or point MOODFADER_CLAP at a built moodfader.clap)\n\
             ========================================================================\n",
            path.display()
        );
    }
    path
}

/// Whether the bundle at `path` was built with nice-plug's `assert_process_allocs` (looks for the
/// `nice_assert_no_alloc` crate's symbol names; `None` if the file cannot be read). Only a debug
/// bundle with it makes an allocation in `process()` abort, so tests report when it is absent.
pub fn bundle_asserts_process_allocs(path: &std::path::Path) -> Option<bool> {
    let bytes = std::fs::read(path).ok()?;
    Some(memchr::memmem::find(&bytes, b"nice_assert_no_alloc").is_some())
}

/// The CLAP parameter id nice-plug derives from a parameter's string id.
///
/// Same algorithm as `nice_plug::wrapper::util::hash_param_id` (nice-plug 0.4.2): a Java-style
/// `hash * 31 + byte` over the UTF-8 bytes, with the top bit cleared (reserved by VST3).
pub fn hash_param_id(id: &str) -> u32 {
    let mut hash: u32 = 0;
    for byte in id.bytes() {
        hash = hash.wrapping_mul(31).wrapping_add(u32::from(byte));
    }
    hash & !(1 << 31)
}

#[cfg(test)]
mod unit {
    use super::hash_param_id;

    #[test]
    fn hash_matches_nice_plug() {
        assert_eq!(hash_param_id(""), 0);
        assert_eq!(hash_param_id("a"), 97);
        assert_eq!(hash_param_id("ab"), 97 * 31 + 98);
        // Long ids wrap and lose the top bit.
        let h = hash_param_id("a_rather_long_parameter_identifier");
        assert_eq!(h & (1 << 31), 0);
    }
}
