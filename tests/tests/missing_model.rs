//! With `MOODFADER_MODEL_DIR` pointing at an empty folder (no `emotion_va.onnx`/`.json`), the
//! plugin must still load, activate, pass audio and MIDI thru untouched, and send no mood CC
//! within 2 s with `mood_cc` on.
//!
//! Thread: test thread; the body runs on its own guarded thread (the CLAP main thread).

use moodfader_tests::scenario::run_degraded;

#[test]
fn missing_model_degrades_to_thru() {
    let models = tempfile::Builder::new()
        .prefix("moodfader-test-empty-models-")
        .tempdir()
        .expect("creating a temp dir");
    run_degraded(
        "missing_model",
        "missing model (MOODFADER_MODEL_DIR=<empty dir>)",
        &[("MOODFADER_MODEL_DIR", models.path().as_os_str())],
    );
}
