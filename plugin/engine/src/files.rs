//! Writing a file whole: through a temporary file in the same folder, then a rename, so a reader
//! (or a failed run) never sees half a file. The command line, the panel's MIDI export and the
//! training exporter all write through it.
//!
//! Thread: command line / GUI (file I/O; never the audio thread)

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes through a temporary file in the same folder, then renames: never a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("{}: cannot write", path.display()))
}
