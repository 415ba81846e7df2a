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
