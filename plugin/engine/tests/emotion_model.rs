//! The committed emotion model through ONNX Runtime: its self-test rows, and its metrics on the
//! held-out VGMIDI pieces it never saw, which must not fall below what its manifest claims.
//!
//! Needs ONNX Runtime (`cargo xtask setup`, or MOODFADER_ORT_DYLIB). The held-out check needs the
//! data set (MOODFADER_DATA, else ../shared/data); without it the check says so loudly, and fails
//! when CI=true.
//!
//! Thread: test

use moodfader_engine::feel::emotion::{EMBEDDED_MANIFEST, EmotionModel};
use moodfader_engine::feel::features::{CONTEXT_LEN, context_vectors};
use moodfader_engine::lab::export::{ExportReport, data_dir, labelled_pieces};
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
