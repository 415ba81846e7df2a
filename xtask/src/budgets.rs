//! The summary `cargo xtask bench` prints: each measured figure against its budget from
//! product.md, read from criterion's estimates and the benches' own percentile files.
//! Thread: any

use std::path::Path;

use serde_json::Value;

/// product.md: "Basic Pitch, live: real-time factor ≤ 0.05 on one core".
const TRANSCRIPTION_RTF_BUDGET: f64 = 0.05;

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Criterion's median for a benchmark, in nanoseconds.
fn criterion_median_ns(target: &Path, id: &str) -> Option<f64> {
    read_json(&target.join("criterion").join(id).join("new").join("estimates.json"))?["median"]["point_estimate"].as_f64()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "within budget" } else { "OVER BUDGET" }
}

/// One row per budget of product.md; figures that no bench measures yet say so.
pub fn summary(target: &Path) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let bench_dir = target.join("moodfader-bench");
    match (criterion_median_ns(target, "process_64_frames_48k_16_events"), read_json(&bench_dir.join("process_allocs.json"))) {
        (Some(ns), allocs) => {
            let allocs = allocs.and_then(|v| v["allocations"].as_u64());
            let ok = ns <= 2000.0 && allocs == Some(0);
            rows.push([
                "process() per 64-frame block, 48 kHz, 16 MIDI events".into(),
                format!("median {:.0} ns, {} allocations", ns, allocs.map_or("?".into(), |a| a.to_string())),
                "median ≤ 2 µs, zero allocations".into(),
                verdict(ok).into(),
            ]);
        }
        _ => rows.push(["process()".into(), "not measured".into(), "median ≤ 2 µs".into(), "-".into()]),
    }
    match read_json(&bench_dir.join("va_update.json")) {
        Some(v) => {
            let (p50, p99) = (v["p50_us"].as_f64().unwrap_or(f64::NAN), v["p99_us"].as_f64().unwrap_or(f64::NAN));
            rows.push([
                "valence/arousal update on the worker".into(),
                format!("p50 {p50:.0} µs, p99 {p99:.0} µs"),
                "p99 ≤ 1 ms on one core".into(),
                verdict(p99 <= 1000.0).into(),
            ]);
        }
        None => rows.push(["valence/arousal update".into(), "not measured".into(), "p99 ≤ 1 ms".into(), "-".into()]),
    }
    match criterion_median_ns(target, "instantiate_and_list_params") {
        Some(ns) => rows.push([
            "plugin instantiate (host scan), no model loaded".into(),
            format!("median {:.1} µs", ns / 1000.0),
            "≤ 20 ms".into(),
            verdict(ns <= 20e6).into(),
        ]),
        None => rows.push(["plugin instantiate".into(), "not measured".into(), "≤ 20 ms".into(), "-".into()]),
    }
    match read_json(&bench_dir.join("continuation.json")) {
        Some(v) => {
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            rows.push([
                "continuation (one core, demo primer, prefill included)".into(),
                format!(
                    "first bar p99 {:.0} ms, 8 bars p99 {:.0} ms, {:.0} tokens/s",
                    f("first_bar_p99_ms"),
                    f("eight_bars_p99_ms"),
                    f("tokens_per_s")
                ),
                "first bar ≤ 50 ms, 8 bars ≤ 300 ms p99".into(),
                verdict(f("first_bar_p99_ms") <= 50.0 && f("eight_bars_p99_ms") <= 300.0).into(),
            ]);
        }
        None => rows.push(["continuation".into(), "not measured".into(), "first bar ≤ 50 ms, 8 bars ≤ 300 ms p99".into(), "-".into()]),
    }
    match read_json(&bench_dir.join("memory.json")).and_then(|v| v["peak_rss_mb"].as_f64()) {
        Some(mb) => rows.push([
            "memory: a process with ONNX Runtime and both models (peak RSS)".into(),
            format!("{mb:.0} MB"),
            "≤ 200 MB per instance".into(),
            verdict(mb <= 200.0).into(),
        ]),
        None => rows.push(["memory per instance, all models loaded".into(), "not measured".into(), "≤ 200 MB".into(), "-".into()]),
    }
    match read_json(&bench_dir.join("transcribe.json")).and_then(|v| v["rtf"].as_f64()) {
        // Latency is asserted by plugin/engine/tests/audio_input.rs (max ~1.25 s measured).
        Some(rtf) => rows.push([
            "Basic Pitch, live (streaming, 48 kHz in)".into(),
            format!("real-time factor {rtf:.3}"),
            format!("RTF ≤ {TRANSCRIPTION_RTF_BUDGET} on one core"),
            verdict(rtf <= TRANSCRIPTION_RTF_BUDGET).into(),
        ]),
        None => rows.push(["Basic Pitch, live".into(), "not measured".into(), format!("RTF ≤ {TRANSCRIPTION_RTF_BUDGET} on one core"), "-".into()]),
    }
    let widths: [usize; 4] = std::array::from_fn(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0));
    let mut out = String::from("\nBudgets (product.md) — figures from this run\n");
    for r in &rows {
        for (c, cell) in r.iter().enumerate() {
            out.push_str(cell);
            out.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_what_the_benches_write() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let est = t.join("criterion/process_64_frames_48k_16_events/new");
        std::fs::create_dir_all(&est).unwrap();
        std::fs::write(est.join("estimates.json"), r#"{"median":{"point_estimate":263.0}}"#).unwrap();
        std::fs::create_dir_all(t.join("moodfader-bench")).unwrap();
        std::fs::write(t.join("moodfader-bench/process_allocs.json"), r#"{"allocations": 0, "calls": 10}"#).unwrap();
        std::fs::write(t.join("moodfader-bench/va_update.json"), r#"{"p50_us": 50.0, "p99_us": 2000.0}"#).unwrap();
        let s = summary(t);
        assert!(s.contains("median 263 ns, 0 allocations"), "{s}");
        assert!(s.contains("p99 2000 µs") && s.contains("OVER BUDGET"), "{s}");
        assert!(s.contains("plugin instantiate") && s.contains("not measured"), "{s}");
        std::fs::write(t.join("moodfader-bench/transcribe.json"), r#"{"rtf": 0.040}"#).unwrap();
        let s = summary(t);
        let row = s.lines().find(|l| l.contains("Basic Pitch")).unwrap();
        assert!(row.contains("RTF ≤ 0.05") && row.contains("within budget"), "{row}");
    }
}
