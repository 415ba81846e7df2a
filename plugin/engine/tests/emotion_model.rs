//! The committed emotion model through ONNX Runtime: its self-test rows; its metrics on the
//! held-out VGMIDI pieces it never saw, which must not fall below what its manifest claims; and
//! its reading of the EMOPIA clips (as played and with velocities flattened), which must agree
//! with what training measured, so the Rust features are still the ones it learnt from. The
//! manifest's nested cross-validation figures (the ones to quote) must be there and below what
//! the committed model reaches on music it was trained on.
//!
//! Needs ONNX Runtime (`cargo xtask setup`, or MOODFADER_ORT_DYLIB). The held-out check needs the
//! data set (MOODFADER_DATA, else ../shared/data); without it the check says so loudly, and fails
//! when CI=true.
//!
//! Thread: test

use moodfader_engine::feel::emotion::{EMBEDDED_MANIFEST, EmotionModel};
use moodfader_engine::feel::features::{CONTEXT_LEN, context_vectors};
use moodfader_engine::lab::export::{ExportReport, data_dir, emopia_clips, labelled_pieces};
use moodfader_engine::runtime::ensure_runtime;

fn model() -> EmotionModel {
    ensure_runtime(None).expect("ONNX Runtime (run `cargo xtask setup` or set MOODFADER_ORT_DYLIB)");
    EmotionModel::load_default().expect("committed emotion model loads")
}

fn pearson(x: &[f32], y: &[f32]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let my = y.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64 - mx, b as f64 - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    sxy / (sxx.sqrt() * syy.sqrt())
}

#[test]
fn selftest_rows_match_training() {
    let manifest: serde_json::Value = serde_json::from_str(EMBEDDED_MANIFEST).unwrap();
    let st = &manifest["selftest"];
    let atol = st["atol"].as_f64().unwrap_or(1e-4) as f32;
    let mut m = model();
    for (input, expected) in st["inputs"].as_array().unwrap().iter().zip(st["outputs"].as_array().unwrap()) {
        let v: Vec<f32> = input.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let arr: [f32; CONTEXT_LEN] = v.try_into().expect("self-test row has the model's input length");
        let (val, aro) = m.predict(&[arr]).unwrap()[0];
        let e: Vec<f32> = expected.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert!((val - e[0]).abs() <= atol && (aro - e[1]).abs() <= atol, "got ({val}, {aro}), want {e:?}");
    }
}

#[test]
fn held_out_metrics_do_not_regress() {
    let data = data_dir();
    if !data.join("vgmidi/labelled/labels.json").is_file() {
        moodfader_engine::lab::skipped("held-out emotion metrics (emotion_model.rs)", &format!("no data at {} (set MOODFADER_DATA)", data.display()));
        return;
    }
    let manifest: serde_json::Value = serde_json::from_str(EMBEDDED_MANIFEST).unwrap();
    let holdout: Vec<String> =
        manifest["holdout_pieces"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let claimed = &manifest["metrics"]["holdout"];
    let mut report = ExportReport::default();
    let pieces = labelled_pieces(&data, &mut report).unwrap();
    let mut m = model();
    let (mut pv, mut pa, mut lv, mut la) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut num_pieces = 0;
    for p in pieces.iter().filter(|p| holdout.contains(&p.id)) {
        num_pieces += 1;
        let inputs = context_vectors(&p.features);
        for ((v, a), t) in m.predict(&inputs).unwrap().into_iter().zip(0..) {
            pv.push(v);
            pa.push(a);
            lv.push(p.valence[t]);
            la.push(p.arousal[t]);
        }
    }
    assert_eq!(num_pieces, holdout.len(), "every held-out piece was found");
    let (rv, ra) = (pearson(&pv, &lv), pearson(&pa, &la));
    let want_v = claimed["valence_pearson"].as_f64().unwrap();
    let want_a = claimed["arousal_pearson"].as_f64().unwrap();
    eprintln!("held-out ({num_pieces} pieces, {} bars): valence r {rv:.4} (manifest {want_v}), arousal r {ra:.4} (manifest {want_a})", pv.len());
    assert!(rv >= want_v - 0.005, "valence r {rv:.4} fell below the committed {want_v}");
    assert!(ra >= want_a - 0.005, "arousal r {ra:.4} fell below the committed {want_a}");
}

/// Quadrant of a (valence, arousal) reading as EMOPIA numbers them (ties count as positive).
fn quadrant(v: f32, a: f32) -> u8 {
    match (v >= 0.0, a >= 0.0) {
        (true, true) => 1,
        (false, true) => 2,
        (false, false) => 3,
        (true, false) => 4,
    }
}

#[test]
fn emopia_readings_agree_with_training() {
    let data = data_dir();
    if !data.join("emopia/labels.json").is_file() {
        moodfader_engine::lab::skipped("EMOPIA emotion metrics (emotion_model.rs)", &format!("no data at {} (set MOODFADER_DATA)", data.display()));
        return;
    }
    let manifest: serde_json::Value = serde_json::from_str(EMBEDDED_MANIFEST).unwrap();
    let mut m = model();
    for (flat, key) in [(false, "emopia_fit"), (true, "emopia_fit_flat_velocity")] {
        let claimed = &manifest["metrics"][key];
        let mut report = ExportReport::default();
        let clips = emopia_clips(&data, &mut report, flat).unwrap();
        assert!(report.skipped.is_empty(), "EMOPIA clips skipped: {:?}", report.skipped);
        let mut hits = 0;
        for c in &clips {
            // As `moodfader analyze` reads a clip: the mean over its bars with notes.
            let va = m.predict(&context_vectors(&c.features)).unwrap();
            let sounding: Vec<(f32, f32)> =
                va.iter().zip(&c.features).filter(|(_, f)| f[13] < 0.5).map(|(r, _)| *r).collect();
            let pool = if sounding.is_empty() { va.clone() } else { sounding };
            let n = pool.len() as f32;
            let (v, a) = pool.iter().fold((0.0, 0.0), |s, r| (s.0 + r.0 / n, s.1 + r.1 / n));
            hits += usize::from(quadrant(v, a) == c.quadrant);
        }
        let acc = hits as f64 / clips.len() as f64;
        let want = claimed["quadrant_accuracy"].as_f64().unwrap();
        assert_eq!(clips.len() as u64, claimed["n_clips"].as_u64().unwrap(), "{key}: clip count");
        eprintln!("EMOPIA {key}: 4-quadrant accuracy {acc:.4} over {} clips (manifest {want})", clips.len());
        assert!((acc - want).abs() <= 0.005, "{key}: 4-quadrant accuracy {acc:.4}, training measured {want}");
        let nested = &manifest["metrics"]["nested"][if flat { "emopia_flat_velocity" } else { "emopia" }];
        let outer = nested["quadrant_accuracy"].as_f64().expect("the manifest has nested cross-validation figures");
        assert!(outer <= acc + 0.02, "{key}: the nested figure {outer} is above the model's own {acc:.4} on clips it trained on");
    }
}
