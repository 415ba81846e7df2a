//! MIDI drag-out from the panel: the continuation as a `.mid` file that the user drags onto a DAW
//! track, a file manager or anything that takes file drops.
//!
//! baseview (under nice-plug-egui) has no drag source on any platform, so the drag runs beside
//! it: on Linux an XDND v5 source on its own X connection and thread ([`x11`]). The file is
//! written first, to the per-user cache, named by its content, and stays until the plugin is
//! unloaded ([`DragFiles`]).
//!
//! Thread: GUI thread (writing the file, starting a drag); the drag itself on its own thread.

use std::path::{Path, PathBuf};

#[cfg(target_os = "windows")]
pub mod windows;
#[cfg(target_os = "linux")]
pub mod x11;

/// The platform's running drag.
#[cfg(target_os = "linux")]
pub use x11::DragHandle;
#[cfg(target_os = "windows")]
pub use windows::DragHandle;

/// Starts dragging the file at `path` with the mouse button that is down now (GUI thread).
#[cfg(target_os = "linux")]
pub fn start(path: &Path) -> Result<DragHandle, String> {
    x11::start(file_uri(path), None)
}

/// Starts dragging the file at `path` with the mouse button that is down now (GUI thread).
#[cfg(target_os = "windows")]
pub fn start(path: &Path) -> Result<DragHandle, String> {
    windows::start(path)
}

/// The `CF_HDROP` block Windows' file drops carry: a `DROPFILES` header (offset of the list: 20,
/// drop point (0, 0), not in a non-client area, wide characters) followed by the one path in
/// UTF-16 and the list's two terminating NULs.
pub fn cf_hdrop_payload(path_utf16: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + 2 * (path_utf16.len() + 2));
    for field in [20u32, 0, 0, 0, 1] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    for unit in path_utf16.iter().chain(&[0, 0]) {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}

/// How a drag ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DragOutcome {
    /// Dropped on a window that took it (the target said so).
    Dropped,
    /// The user pressed Escape, or released over a window that refused it.
    Cancelled,
    /// Released where nothing takes drops (the desktop, a window without XDND).
    NoTarget,
    /// The drag could not run (no display, a protocol error); one line saying why.
    Failed(String),
}

/// The drag files written by one plugin instance; they are deleted when it goes (the plugin is
/// unloaded or the panel's owner is dropped), not before: a DAW may read a dropped file late.
#[derive(Debug, Default)]
pub struct DragFiles {
    written: Vec<PathBuf>,
}

impl DragFiles {
    /// Writes `bytes` to `<cache>/drag/moodfader-<kind>-<sha12>.mid` (the same content keeps its
    /// name, so dragging twice writes once) and returns its path.
    pub fn write(&mut self, bytes: &[u8], kind: &str) -> Result<PathBuf, String> {
        let root = moodfader_engine::runtime::cache_root().ok_or("no per-user cache folder (HOME / LOCALAPPDATA unset)")?;
        self.write_in(&root.join("drag"), bytes, kind)
    }

    /// [`DragFiles::write`] into `dir`.
    pub fn write_in(&mut self, dir: &Path, bytes: &[u8], kind: &str) -> Result<PathBuf, String> {
        let sha = moodfader_engine::runtime::sha256_hex(bytes);
        let path = dir.join(format!("moodfader-{kind}-{}.mid", &sha[..12]));
        if std::fs::read(&path).ok().as_deref() != Some(bytes) {
            moodfader_engine::files::write_atomically(&path, bytes).map_err(|e| format!("{e:#}"))?;
        }
        if !self.written.contains(&path) {
            self.written.push(path.clone());
        }
        Ok(path)
    }
}

impl Drop for DragFiles {
    fn drop(&mut self) {
        for p in &self.written {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The `file://` URI of an absolute path, percent-encoded as RFC 8089 and XDND's `text/uri-list`
/// ask (every byte but unreserved characters and `/`).
pub fn file_uri(path: &Path) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
    const PATH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    #[cfg(unix)]
    {
        // Paths are bytes on Unix: encode them as they are.
        use std::os::unix::ffi::OsStrExt;
        format!("file://{}", percent_encoding::percent_encode(path.as_os_str().as_bytes(), PATH))
    }
    #[cfg(not(unix))]
    {
        const WINDOWS_PATH: &AsciiSet = &PATH.remove(b':');
        let text = path.to_string_lossy().replace('\\', "/");
        format!("file:///{}", percent_encoding::utf8_percent_encode(text.trim_start_matches('/'), WINDOWS_PATH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hdrop_block_is_dropfiles_then_the_wide_path_and_two_nuls() {
        let path: Vec<u16> = r"C:\Users\ü\a.mid".encode_utf16().collect();
        let b = cf_hdrop_payload(&path);
        assert_eq!(&b[..20], &[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(b.len(), 20 + 2 * (path.len() + 2));
        let units: Vec<u16> = b[20..].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(String::from_utf16(&units[..path.len()]).unwrap(), r"C:\Users\ü\a.mid");
        assert_eq!(&units[path.len()..], &[0, 0]);
    }

    #[test]
    fn uris_are_percent_encoded() {
        assert_eq!(file_uri(Path::new("/tmp/a b/ü#1.mid")), "file:///tmp/a%20b/%C3%BC%231.mid");
        assert_eq!(file_uri(Path::new("/home/x/moodfader-continuation-0a1b.mid")), "file:///home/x/moodfader-continuation-0a1b.mid");
    }

    #[test]
    fn files_are_named_by_content_written_once_and_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = DragFiles::default();
        let a = files.write_in(dir.path(), b"MThd one", "continuation").unwrap();
        let b = files.write_in(dir.path(), b"MThd one", "continuation").unwrap();
        let c = files.write_in(dir.path(), b"MThd two", "continuation").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(std::fs::read(&c).unwrap(), b"MThd two");
        drop(files);
        assert!(!a.exists() && !c.exists(), "drag files outlived their plugin");
    }
}
