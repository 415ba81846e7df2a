//! With `MOODFADER_MODEL_DIR` pointing at an empty folder (no `emotion_va.onnx`/`.json`), the
//! plugin must still load, activate, pass audio and MIDI thru untouched, and send no mood CC
//! within 2 s with `mood_cc` on.
//!
//! Thread: test thread; the body runs on its own guarded thread (the CLAP main thread).

use moodfader_tests::clap_path;
use moodfader_tests::guard::run_guarded;
use moodfader_tests::scenario::degraded_runtime_scenario;
use std::time::Duration;

#[test]
fn missing_model_degrades_to_thru() {
    clap_path(); // fail loudly first if the plugin is not built
    let models = tempfile::Builder::new()
        .prefix("moodfader-test-empty-models-")
        .tempdir()
        .expect("creating a temp dir");
    let cache = tempfile::Builder::new()
        .prefix("moodfader-test-cache-")
        .tempdir()
        .expect("creating a temp dir");
    // SAFETY: the only test in this process; set before the plugin is loaded.
    unsafe {
        std::env::set_var("MOODFADER_MODEL_DIR", models.path());
        std::env::set_var("XDG_CACHE_HOME", cache.path());
    }
    run_guarded("missing_model", Duration::from_secs(120), || {
        degraded_runtime_scenario("missing model (MOODFADER_MODEL_DIR=<empty dir>)");
    });
}
