//! Project save and restore through the real CLAP `state` extension: every parameter set away
//! from its default survives a save into a fresh instance, and a state blob saved by the first
//! released parameter layout (kept as a fixture) still loads with its values.
//!
//! Thread: test thread; bodies run on guarded threads (the CLAP main thread).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use moodfader_tests::guard::run_guarded;
use moodfader_tests::{ClapTestHost, workspace_root};

const FIXTURE: &str = "state-0.1.0";

fn fixture_paths() -> (PathBuf, PathBuf) {
    let dir = workspace_root().join("tests").join("fixtures");
    (dir.join(format!("{FIXTURE}.bin")), dir.join(format!("{FIXTURE}.json")))
}

/// A value away from the default for every parameter, on its steps for stepped ones.
fn chosen_value(min: f64, max: f64, default: f64, k: usize) -> f64 {
    let span = max - min;
    let mut v = min + span * [0.37, 0.81, 0.13, 0.66][k % 4];
    if span >= 1.0 && span.fract() == 0.0 {
        v = v.round();
    }
    if (v - default).abs() < 1e-9 {
        v = if default > min { min } else { max };
    }
    v
}

/// Sets every parameter, processes a block so the plugin applies them, and returns the values
/// the plugin reports by nice-plug string id, and the saved state.
fn set_everything_and_save() -> (BTreeMap<u32, f64>, Vec<u8>) {
    let mut host = ClapTestHost::load();
    host.activate(48_000.0, 1, 512).unwrap();
    host.start_processing().unwrap();
    let params = host.params().to_vec();
    for (k, p) in params.iter().enumerate() {
        host.set_param(p.id, chosen_value(p.min, p.max, p.default, k));
    }
    let silence = vec![0.0f32; 512];
    host.process([&silence, &silence], &[]).unwrap();
    host.stop_processing();
    host.deactivate();
    let values: BTreeMap<u32, f64> = params.iter().map(|p| (p.id, host.param_value(p.id).unwrap())).collect();
    for (k, p) in params.iter().enumerate() {
        let want = chosen_value(p.min, p.max, p.default, k);
        assert!((values[&p.id] - want).abs() < 1e-3 * (p.max - p.min).max(1.0), "'{}' did not take {want}: {}", p.name, values[&p.id]);
    }
    let state = host.save_state().unwrap();
    host.shutdown();
    (values, state)
}

fn load_and_read(state: &[u8]) -> BTreeMap<u32, f64> {
    let mut host = ClapTestHost::load();
    host.load_state(state).unwrap();
    let ids: Vec<u32> = host.params().iter().map(|p| p.id).collect();
    let values = ids.iter().map(|&id| (id, host.param_value(id).unwrap())).collect();
    host.shutdown();
    values
}

#[test]
fn every_parameter_survives_save_and_restore() {
    run_guarded("state round trip", Duration::from_secs(60), || {
        let (saved, blob) = set_everything_and_save();
        let restored = load_and_read(&blob);
        for (id, v) in &saved {
            let got = restored.get(id).copied().unwrap_or(f64::NAN);
            assert!((got - v).abs() < 1e-6, "param {id}: saved {v}, restored {got}");
        }
        assert_eq!(saved.len(), restored.len());
    });
}

#[test]
fn first_released_state_still_loads() {
    run_guarded("state fixture", Duration::from_secs(60), || {
        let (bin, json) = fixture_paths();
        if std::env::var_os("MOODFADER_WRITE_STATE_FIXTURE").is_some() {
            let (values, blob) = set_everything_and_save();
            std::fs::write(&bin, &blob).unwrap();
            let by_id: BTreeMap<String, f64> = values.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            std::fs::write(&json, format!("{by_id:#?}")).unwrap();
        }
        let blob = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let text = std::fs::read_to_string(&json).unwrap();
        let restored = load_and_read(&blob);
        // The fixture lists `"<clap id>": value,` pairs, written by this test on release 0.1.0.
        let mut num_checked = 0;
        for line in text.lines() {
            let line = line.trim().trim_end_matches(',');
            let Some((k, v)) = line.split_once(':') else { continue };
            let (Ok(id), Ok(want)) = (k.trim().trim_matches('"').parse::<u32>(), v.trim().parse::<f64>()) else { continue };
            let got = restored.get(&id).copied().unwrap_or_else(|| panic!("parameter {id} of the 0.1.0 layout is gone"));
            assert!((got - want).abs() < 1e-6, "param {id}: fixture {want}, restored {got}");
            num_checked += 1;
        }
        assert!(num_checked >= 31, "fixture lists {num_checked} parameters");
    });
}

/// The panel reopens at the size the user left it: the size is saved with the project, and after
/// a restore the plugin reports it through `gui.get_size` before any window exists (hosts size
/// the editor's frame from that). The panel may be resized on both axes.
#[test]
fn panel_size_is_saved_with_the_project() {
    run_guarded("panel size", Duration::from_secs(60), || {
        let mut host = ClapTestHost::load();
        let (w, h, can_resize, hints) = host.gui_size().unwrap();
        assert_eq!((w, h), (960, 700), "a new instance opens at the default size");
        assert!(can_resize, "the panel must be resizable");
        let hints = hints.expect("resize hints");
        assert!(hints.can_resize_horizontally && hints.can_resize_vertically, "both axes resize");
        let blob = host.save_state().unwrap();
        host.shutdown();

        // What a project saved after the user dragged the panel to 1280 x 860 holds. nice-plug's
        // CLAP state is a little-endian u64 length, then the JSON.
        assert!(blob.len() > 8);
        let len = u64::from_le_bytes(blob[..8].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&blob[8..8 + len]).expect("state is JSON text");
        let key = "\"panel-size\":\"";
        let at = text.find(key).unwrap_or_else(|| panic!("saved state has no panel-size field: {text}"));
        let value_start = at + key.len();
        let value_end = value_start + text[value_start..].find('"').unwrap();
        let json = format!("{}[1280.0,860.0]{}", &text[..value_start], &text[value_end..]);
        let mut edited = (json.len() as u64).to_le_bytes().to_vec();
        edited.extend_from_slice(json.as_bytes());

        let mut host = ClapTestHost::load();
        host.load_state(&edited).unwrap();
        let (w, h, _, _) = host.gui_size().unwrap();
        assert_eq!((w, h), (1280, 860), "the restored project's panel size");
        // And it goes back into the next save.
        let again = String::from_utf8_lossy(&host.save_state().unwrap()).into_owned();
        assert!(again.contains("\"panel-size\":\"[1280.0,860.0]\""), "{again}");
        host.shutdown();
    });
}
