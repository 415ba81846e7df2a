//! With `MOODFADER_MODEL_DIR` holding an `emotion_va.onnx` of 4 KiB of random bytes (next to a
//! copy of the real `models/emotion_va.json`, when the repo has one), the plugin must still load,
//! activate, pass audio and MIDI thru untouched, and send no mood CC within 2 s with `mood_cc` on.
//!
//! Thread: test thread; the body runs on its own guarded thread (the CLAP main thread).

use moodfader_tests::scenario::{Lcg, run_degraded};
use moodfader_tests::workspace_root;

#[test]
fn corrupt_model_degrades_to_thru() {
    let models = tempfile::Builder::new()
        .prefix("moodfader-test-corrupt-models-")
        .tempdir()
        .expect("creating a temp dir");
    std::fs::write(
        models.path().join("emotion_va.onnx"),
        Lcg::new(0xBAD).bytes(4096),
    )
    .expect("writing the corrupt model");
    let json = workspace_root().join("models").join("emotion_va.json");
    if json.exists() {
        std::fs::copy(&json, models.path().join("emotion_va.json"))
            .expect("copying emotion_va.json");
    } else {
        eprintln!(
            "note: {} does not exist; testing without the json",
            json.display()
        );
    }
    run_degraded(
        "corrupt_model",
        "corrupt model (4 KiB of random bytes as emotion_va.onnx)",
        &[("MOODFADER_MODEL_DIR", models.path().as_os_str())],
    );
}
