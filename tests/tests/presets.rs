//! The factory presets through CLAP preset discovery, as a host's preset browser sees them: the
//! library's preset-discovery factory lists the five presets inside the plugin (names, load keys,
//! plugin id, factory flag, description), and `clap.preset-load` applies one, setting what the
//! panel's preset buttons set and leaving every other parameter as it was.
//!
//! Thread: test thread; bodies run on guarded threads (the CLAP main thread).

use std::time::Duration;

use moodfader_tests::guard::run_guarded;
use moodfader_tests::{ClapTestHost, PLUGIN_ID};

/// (name, load key): the load keys are what hosts store in projects, so they never change.
const PRESETS: [(&str, &str); 5] = [
    ("Brighten", "brighten"),
    ("Darken", "darken"),
    ("Calm down", "calm-down"),
    ("Build up", "build-up"),
    ("Follow me", "follow-me"),
];

#[test]
fn factory_presets_are_listed_for_preset_browsers() {
    run_guarded("preset discovery", Duration::from_secs(60), || {
        let host = ClapTestHost::load();
        let found = host.discover_presets().unwrap();
        let listed: Vec<(&str, &str)> = found.iter().map(|p| (p.name.as_str(), p.load_key.as_str())).collect();
        assert_eq!(listed, PRESETS);
        for p in &found {
            assert_eq!(p.plugin_ids, [("clap".to_string(), PLUGIN_ID.to_string())], "{}", p.name);
            assert!(p.factory_content, "{} is not marked factory content", p.name);
            assert!(!p.description.is_empty() && !p.creators.is_empty(), "{}: {p:?}", p.name);
        }
        host.shutdown();
    });
}

#[test]
fn a_factory_preset_loads_its_values_and_leaves_the_rest() {
    run_guarded("preset load", Duration::from_secs(60), || {
        let mut host = ClapTestHost::load();
        let id = |host: &ClapTestHost, s: &str| host.param_id(s);
        let (cont, dyn_auto, steer, out_ch) = (id(&host, "cont_on"), id(&host, "dyn_auto"), id(&host, "steer"), id(&host, "out_ch"));
        host.activate(48_000.0, 1, 512).unwrap();
        host.start_processing().unwrap();
        // Away from what the preset sets (and an output channel it must not touch).
        host.set_param(cont, 0.0);
        host.set_param(dyn_auto, 0.0);
        host.set_param(steer, 0.1);
        host.set_param(out_ch, 5.0);
        let silence = vec![0.0f32; 512];
        host.process([&silence, &silence], &[]).unwrap();
        host.stop_processing();

        host.load_preset("calm-down").unwrap();
        let v = |host: &mut ClapTestHost, s: &str| {
            let id = host.param_id(s);
            host.param_value(id).unwrap()
        };
        // CLAP values as nice-plug reports them: the targets normalised over -1..1, steer over
        // 0..1, booleans 0/1, the trigger by variant index (0: on demand).
        for (param, want) in [("tgt_val", 0.65), ("tgt_aro", 0.1), ("steer", 0.8), ("cont_on", 1.0), ("dyn_auto", 1.0), ("trigger", 0.0)] {
            let got = v(&mut host, param);
            assert!((got - want).abs() < 1e-4, "calm-down: {param} is {got}, want {want}");
        }
        let out = v(&mut host, "out_ch");
        assert!((out - 5.0).abs() < 1e-4, "a preset leaves the output channel alone: {out}");

        host.load_preset("follow-me").unwrap();
        let (trigger, steer) = (v(&mut host, "trigger"), v(&mut host, "steer"));
        assert!((trigger - 1.0).abs() < 1e-4 && steer.abs() < 1e-4, "follow-me: trigger {trigger}, steer {steer}");
        assert!(host.load_preset("no-such-preset").is_err(), "an unknown load key is refused");

        // Processing goes on after a preset change.
        host.start_processing().unwrap();
        host.process([&silence, &silence], &[]).unwrap();
        host.stop_processing();
        host.deactivate();
        host.shutdown();
    });
}
