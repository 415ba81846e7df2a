//! Finding and starting ONNX Runtime (loaded dynamically, `ort`'s `load-dynamic`).
//!
//! Where the library is looked for, first match wins:
//! 1. `MOODFADER_ORT_DYLIB`: a path to the library, [`ORT_LIB_FILE`] (only that path is tried).
//! 2. The copy embedded in the plugin binary (bundles built by `cargo xtask bundle`), unpacked
//!    once, hash-checked, to the per-user cache: `$XDG_CACHE_HOME/moodfader/runtime-<sha>/`
//!    (else `~/.cache/…`) on Linux and macOS, `%LOCALAPPDATA%\moodfader\runtime-<sha>\` on
//!    Windows. `MOODFADER_NO_EMBEDDED_RUNTIME=1` skips this step.
//! 3. [`ORT_LIB_FILE`] next to the running executable or plugin binary.
//! 4. The developer cache written by `cargo xtask setup` (`target/moodfader-runtime/`).
//!
//! Thread: worker / command line. Never called from the audio thread or while a host scans.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

/// The ONNX Runtime release the engine is built for.
pub const ORT_VERSION: &str = "1.31.1";
/// File name of the runtime library: `libonnxruntime.so.1.31.1` (Linux), `onnxruntime.dll`
/// (Windows; the name inside the `win_amd64` wheel), `libonnxruntime.1.31.1.dylib` (macOS).
#[cfg(target_os = "windows")]
pub const ORT_LIB_FILE: &str = "onnxruntime.dll";
#[cfg(target_os = "macos")]
pub const ORT_LIB_FILE: &str = "libonnxruntime.1.31.1.dylib";
#[cfg(not(any(target_os = "windows", target_os = "macos")))]
pub const ORT_LIB_FILE: &str = "libonnxruntime.so.1.31.1";
pub const ENV_ORT_DYLIB: &str = "MOODFADER_ORT_DYLIB";
pub const ENV_NO_EMBEDDED: &str = "MOODFADER_NO_EMBEDDED_RUNTIME";

/// The runtime library and model files carried inside a bundle.
#[derive(Clone, Copy)]
pub struct EmbeddedRuntime {
    /// The runtime library ([`ORT_LIB_FILE`]).
    pub lib: &'static [u8],
    /// Basic Pitch's `nmp.onnx` (from the basic-pitch 0.4.0 wheel), for audio transcription.
    pub basic_pitch: &'static [u8],
}

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
static LOADED_FROM: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The per-user cache folder: `%LOCALAPPDATA%\moodfader` on Windows.
#[cfg(target_os = "windows")]
pub fn cache_root() -> Option<PathBuf> {
    std::env::var_os("LOCALAPPDATA")
        .filter(|v| !v.is_empty())
        .map(|p| PathBuf::from(p).join("moodfader"))
}

/// The per-user cache folder: `$XDG_CACHE_HOME/moodfader`, else `~/.cache/moodfader`.
#[cfg(not(target_os = "windows"))]
pub fn cache_root() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|p| p.join("moodfader"))
}

/// Unpacks embedded bytes to `<cache>/<dir_prefix>-<sha16>/<file_name>` unless an identical file
/// is already there. Writes to a temporary file, then renames, so a crash leaves nothing half-done.
pub fn unpack_cached(bytes: &[u8], dir_prefix: &str, file_name: &str) -> Result<PathBuf> {
    let sha = sha256_hex(bytes);
    let root = cache_root().ok_or_else(|| {
        if cfg!(target_os = "windows") {
            anyhow!("no cache folder: LOCALAPPDATA is not set")
        } else {
            anyhow!("no cache folder: neither XDG_CACHE_HOME nor HOME is set")
        }
    })?;
    let dir = root.join(format!("{dir_prefix}-{}", &sha[..16]));
    let path = dir.join(file_name);
    if let Ok(existing) = std::fs::read(&path)
        && sha256_hex(&existing) == sha {
            return Ok(path);
        }
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.sync_all().ok();
    }
    if let Err(e) = std::fs::rename(&tmp, &path) {
        // On Windows a library another process has loaded cannot be replaced; if that process
        // unpacked the same bytes meanwhile, its copy is as good as ours.
        let _ = std::fs::remove_file(&tmp);
        let same = std::fs::read(&path).is_ok_and(|existing| sha256_hex(&existing) == sha);
        if !same {
            return Err(e).with_context(|| format!("{}: cannot rename into place", path.display()));
        }
    }
    Ok(path)
}

/// Where `cargo xtask setup` puts `file_name` (`target/moodfader-runtime/`).
pub(crate) fn dev_cache_candidates(file_name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        out.push(PathBuf::from(dir).join("moodfader-runtime").join(file_name));
    }
    // plugin/engine → workspace root/target
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(root) = manifest.parent().and_then(Path::parent) {
        out.push(root.join("target").join("moodfader-runtime").join(file_name));
    }
    out
}

/// `file_name` next to the running executable.
pub(crate) fn beside_binary_candidates(file_name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent() {
            out.push(dir.join(file_name));
        }
    out
}

/// Decides which library file to load, unpacking the embedded copy if that is the one.
pub fn locate_runtime(embedded: Option<EmbeddedRuntime>) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_ORT_DYLIB).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("ONNX Runtime library not found at {} (from {ENV_ORT_DYLIB})", p.display());
        }
        return Ok(p);
    }
    let no_embedded = std::env::var_os(ENV_NO_EMBEDDED).is_some_and(|v| v == "1");
    if let (Some(e), false) = (embedded, no_embedded) {
        return unpack_cached(e.lib, "runtime", ORT_LIB_FILE).context("cannot unpack the embedded ONNX Runtime");
    }
    for p in beside_binary_candidates(ORT_LIB_FILE).into_iter().chain(dev_cache_candidates(ORT_LIB_FILE)) {
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "ONNX Runtime {ORT_VERSION} not found: set {ENV_ORT_DYLIB} to {ORT_LIB_FILE}, or run `cargo xtask setup`"
    )
}

/// Loads ONNX Runtime once per process and creates its environment. Later calls return the path
/// it was loaded from. A failed attempt can be retried (for example after the user fixes the path).
pub fn ensure_runtime(embedded: Option<EmbeddedRuntime>) -> Result<PathBuf> {
    let mut loaded = LOADED_FROM.lock().map_err(|_| anyhow!("runtime loader lock poisoned"))?;
    if let Some(p) = loaded.as_ref() {
        return Ok(p.clone());
    }
    let path = locate_runtime(embedded)?;
    let builder = ort::init_from(&path)
        .map_err(|e| anyhow!("ONNX Runtime library at {} cannot be loaded: {e}", path.display()))?;
    let env = builder
        .with_name("moodfader")
        .with_telemetry(false)
        .build()
        .map_err(|e| anyhow!("ONNX Runtime environment cannot be created: {e}"))?;
    let _ = ENVIRONMENT.set(env);
    *loaded = Some(path.clone());
    Ok(path)
}

/// Builds a session from model bytes with one intra-op thread (the product's rule).
pub fn session_from_bytes(bytes: &[u8]) -> Result<ort::session::Session> {
    session_from_bytes_with_threads(bytes, 1)
}

/// Like [`session_from_bytes`] with `intra_threads` intra-op threads: only for offline tools
/// (the command line's `transcribe`), never for the plugin's sessions.
pub fn session_from_bytes_with_threads(bytes: &[u8], intra_threads: usize) -> Result<ort::session::Session> {
    let env = ENVIRONMENT.get().ok_or_else(|| anyhow!("ONNX Runtime is not loaded"))?;
    let mut builder = ort::session::Session::builder(env)
        .map_err(|e| anyhow!("{e}"))?
        .with_intra_threads(intra_threads.max(1))
        .map_err(|e| anyhow!("{e}"))?
        .with_inter_threads(1)
        .map_err(|e| anyhow!("{e}"))?;
    builder.commit_from_memory(bytes).map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_is_idempotent_and_repairs_a_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: this test binary's other tests do not read XDG_CACHE_HOME concurrently with a
        // different meaning; unpack_cached is the only reader in this module's tests.
        unsafe { std::env::set_var("XDG_CACHE_HOME", dir.path()) };
        let bytes = b"pretend runtime";
        let p1 = unpack_cached(bytes, "runtime", "lib.so").unwrap();
        assert_eq!(std::fs::read(&p1).unwrap(), bytes);
        std::fs::write(&p1, b"damaged").unwrap();
        let p2 = unpack_cached(bytes, "runtime", "lib.so").unwrap();
        assert_eq!(p1, p2);
        assert_eq!(std::fs::read(&p2).unwrap(), bytes);
    }
}
