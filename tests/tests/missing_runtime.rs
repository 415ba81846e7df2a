//! With the ONNX Runtime library missing (`MOODFADER_ORT_DYLIB` points nowhere and
//! `MOODFADER_NO_EMBEDDED_RUNTIME=1` forbids the embedded fallback), the plugin must still load,
//! activate, pass audio and MIDI thru untouched, and send no mood CC within 2 s with `mood_cc` on.
//!
//! Thread: test thread; the body runs on its own guarded thread (the CLAP main thread).

use moodfader_tests::scenario::run_degraded;

#[test]
fn missing_runtime_degrades_to_thru() {
    let cache = run_degraded(
        "missing_runtime",
        "missing runtime (MOODFADER_ORT_DYLIB=/nonexistent/...)",
        &[
            ("MOODFADER_ORT_DYLIB", "/nonexistent/libonnxruntime.so.1.31.1".as_ref()),
            ("MOODFADER_NO_EMBEDDED_RUNTIME", "1".as_ref()),
        ],
    );
    let unpacked: Vec<_> = walk(cache.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("onnxruntime"))
        .collect();
    if !unpacked.is_empty() {
        eprintln!(
            "note: with MOODFADER_NO_EMBEDDED_RUNTIME=1 the plugin still unpacked {unpacked:?}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
