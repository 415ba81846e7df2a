//! The composite xtask commands: `bundle moodfader`, `test`, `demo`, `bench` and
//! `train emotion`. Each one provisions the runtime first (see `runtime.rs`).
//! Thread: any

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo_args::{self, CLI_PACKAGE, PLUGIN_PACKAGE};
use crate::invariants;
use crate::runtime::{self, Runtime};
use crate::workspace::{self, Workspace, cargo_cmd, limit};

/// Compile-time payload folder for the plugin's `embed-runtime` feature.
pub const PAYLOAD_DIR_ENV: &str = "MOODFADER_PAYLOAD_DIR";
/// The bundled `.clap` the tests crate loads.
pub const CLAP_ENV: &str = "MOODFADER_CLAP";
/// ONNX Runtime library for tests and benches.
pub const ORT_DYLIB_DEV_ENV: &str = "MOODFADER_ORT_DYLIB_DEV";
/// ONNX Runtime library for the `moodfader` binary and the training script.
pub const ORT_DYLIB_ENV: &str = "MOODFADER_ORT_DYLIB";
/// Training data folder override.
pub const DATA_ENV: &str = "MOODFADER_DATA";

const CRITERION_QUICK: &[&str] = &["--warm-up-time", "0.5", "--measurement-time", "1"];

/// Builds and bundles the plugin with `feature` added to `cargo_args`, with
/// `MOODFADER_PAYLOAD_DIR` pointing at the runtime cache.
pub fn bundle_moodfader(
    ws: &Workspace,
    rt: &Runtime,
    args: &[String],
    feature: &str,
) -> Result<()> {
    let args = cargo_args::with_feature(args, feature);
    let payload = fs::canonicalize(&rt.dir)
        .with_context(|| format!("{}: cannot resolve runtime cache", rt.dir.display()))?;
    eprintln!("[xtask] {PAYLOAD_DIR_ENV}={}", payload.display());
    // SAFETY: xtask is single-threaded; nothing reads the environment concurrently. The variable
    // must be in our own environment: cargo and the build scripts inherit it.
    unsafe { std::env::set_var(PAYLOAD_DIR_ENV, &payload) };
    nice_plug_xtask::chdir_workspace_root()?;
    // nice_plug_xtask::build runs the same `cargo build -p moodfader ARGS`, but with no time limit.
    let mut build = cargo_cmd(["build", "-p", PLUGIN_PACKAGE]);
    build.args(&args);
    workspace::run(&format!("cargo build -p {PLUGIN_PACKAGE}"), &mut build, limit::CARGO)?;
    nice_plug_xtask::bundle(&ws.target_dir, PLUGIN_PACKAGE, &args, false)?;
    eprintln!(
        "[xtask] bundled into {}",
        ws.target_dir.join("bundled").display()
    );
    Ok(())
}

fn clap_path(ws: &Workspace) -> PathBuf {
    ws.target_dir
        .join("bundled")
        .join(format!("{PLUGIN_PACKAGE}.clap"))
}

/// Env vars the tests and benches read.
fn test_env(ws: &Workspace, rt: &Runtime) -> [(&'static str, PathBuf); 2] {
    [
        (CLAP_ENV, clap_path(ws)),
        (ORT_DYLIB_DEV_ENV, rt.ort_lib.clone()),
    ]
}

/// What one step of `cargo xtask test` came to, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Passed,
    /// Did not run, and why (a tool missing outside CI).
    Skipped(String),
}

/// The skip log the data-set tests append to (`moodfader_engine::lab::skipped`), emptied first.
const SKIP_LOG_ENV: &str = "MOODFADER_SKIP_LOG";

/// `cargo xtask test`: every test in the workspace plus the architecture invariants. The last
/// line counts every step (setup and bundle included) and names what was skipped: a step that
/// could not run, and each check a test skipped for want of data.
pub fn test(ws: &Workspace) -> Result<()> {
    let mut clock = StepClock::start();
    let rt = runtime::setup(ws)?;
    clock.lap("setup");
    bundle_moodfader(ws, &rt, &[], "assert_process_allocs,embed-runtime")
        .context("test bundle (debug, assert_process_allocs + embed-runtime)")?;
    clock.lap("bundle");
    let mut results: Vec<(&str, Result<Step>)> = vec![("setup", Ok(Step::Passed)), ("bundle", Ok(Step::Passed))];

    let skip_log = ws.target_dir.join("xtask-skipped-checks.txt");
    let _ = fs::remove_file(&skip_log);
    // Every Rust test runs under the pinned cargo-nextest, each with the time limit in
    // `.config/nextest.toml`, so a test that hangs fails under its own name.
    nextest_steps(ws, &rt, &skip_log, &mut results, &mut clock);

    results.push(("architecture invariants", invariants::check_all(ws).map(|()| Step::Passed)));
    clock.lap("architecture invariants");

    results.push(("panel screenshot (standalone under Xvfb)", crate::screenshot::panel_screenshot(ws, &rt)));
    clock.lap("panel screenshot");

    results.push(("Windows build under Wine", crate::windows::check(ws, &rt)));
    clock.lap("Windows");

    results.push(("DawDreamer and pedalboard (VST3)", crate::daw::check(ws, &rt)));
    clock.lap("DAW engines");

    let skipped_checks: Vec<String> = fs::read_to_string(&skip_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    let line = summary(&results, &skipped_checks);
    for (name, r) in &results {
        match r {
            Err(err) => eprintln!("[xtask] FAILED {name}: {err:#}"),
            Ok(Step::Skipped(why)) => eprintln!("[xtask] SKIPPED {name}: {why}"),
            Ok(Step::Passed) => {}
        }
    }
    for check in &skipped_checks {
        eprintln!("[xtask] NOT CHECKED (a test skipped it) {check}");
    }
    eprintln!("[xtask] {}", clock.report());
    println!("{line}");
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        bail!("xtask test: {failed} step(s) failed");
    }
    Ok(())
}

/// The tests that assert wall-clock latency in real time (on the worker or end to end): they
/// run alone, one at a time, after the others, so that on a 2-core machine they measure the code
/// and not their neighbours.
const REALTIME_TESTS: &str = "package(moodfader-engine) & (binary(=audio_input) | binary(=transcription) | binary(=worker_status))";

/// The test steps of `cargo xtask test`: the workspace's tests (all but the real-time ones), the
/// real-time ones alone, and xtask's own, each run by nextest.
fn nextest_steps(ws: &Workspace, rt: &Runtime, skip_log: &Path, results: &mut Vec<(&'static str, Result<Step>)>, clock: &mut StepClock) {
    let nextest = match runtime::nextest(ws) {
        Ok(bin) => bin,
        Err(e) => {
            results.push(("cargo nextest", Err(e.context("cannot provision cargo-nextest"))));
            return;
        }
    };
    let others = format!("not ({REALTIME_TESTS})");
    let steps: [(&'static str, Vec<&str>); 3] = [
        ("cargo nextest (workspace)", vec!["--workspace", "--exclude", "xtask", "-E", &others]),
        ("cargo nextest (real-time latency tests, alone)", vec!["--workspace", "--exclude", "xtask", "--test-threads", "1", "-E", REALTIME_TESTS]),
        ("cargo nextest -p xtask", vec!["-p", "xtask"]),
    ];
    for (what, args) in steps {
        let mut cmd = Command::new(&nextest);
        cmd.args(["nextest", "run", "--no-fail-fast"]).args(&args);
        cmd.envs(test_env(ws, rt)).env(SKIP_LOG_ENV, skip_log).env("CARGO", workspace::cargo());
        results.push((what, workspace::run(what, &mut cmd, limit::CARGO).map(|()| Step::Passed)));
        clock.lap(what);
    }
}

/// Wall-clock time per step of `cargo xtask test`, so a slow step shows in CI's log.
struct StepClock {
    last: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl StepClock {
    fn start() -> Self {
        Self { last: std::time::Instant::now(), laps: Vec::new() }
    }

    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    /// "step times: setup 0:03, bundle 2:10, …; total 12:40" (minutes:seconds).
    fn report(&self) -> String {
        let mmss = |d: std::time::Duration| format!("{}:{:02}", d.as_secs() / 60, d.as_secs() % 60);
        let total: std::time::Duration = self.laps.iter().map(|(_, d)| *d).sum();
        let laps: Vec<String> = self.laps.iter().map(|(n, d)| format!("{n} {}", mmss(*d))).collect();
        format!("step times: {}; total {}", laps.join(", "), mmss(total))
    }
}

/// The last line of `cargo xtask test`: how many steps passed of how many, which, and what was
/// skipped or failed.
fn summary(results: &[(&str, Result<Step>)], skipped_checks: &[String]) -> String {
    let names = |f: &dyn Fn(&Result<Step>) -> bool| -> Vec<&str> { results.iter().filter(|(_, r)| f(r)).map(|(n, _)| *n).collect() };
    let passed = names(&|r| matches!(r, Ok(Step::Passed)));
    let skipped = names(&|r| matches!(r, Ok(Step::Skipped(_))));
    let failed = names(&|r| r.is_err());
    let mut line = if failed.is_empty() && skipped.is_empty() && skipped_checks.is_empty() {
        format!("xtask test: all {} steps passed ({})", results.len(), passed.join(", "))
    } else {
        format!("xtask test: {}/{} steps passed ({})", passed.len(), results.len(), passed.join(", "))
    };
    if !skipped.is_empty() {
        line += &format!("; SKIPPED: {}", skipped.join(", "));
    }
    if !skipped_checks.is_empty() {
        line += &format!("; NOT CHECKED for want of data: {}", skipped_checks.join("; "));
    }
    if !failed.is_empty() {
        line += &format!("; FAILED: {}", failed.join(", "));
    }
    line
}

/// `cargo xtask demo`: analyzes `assets/demo.mid` (the curve as CSV, JSON and PNG), then writes
/// four continuations of it (one per quadrant) as `.mid` and `.wav` and a short text report.
pub fn demo(ws: &Workspace) -> Result<()> {
    let rt = runtime::setup(ws)?;
    let midi = ws.root.join("assets").join("demo.mid");
    if !midi.is_file() {
        bail!("demo MIDI not found at {}", midi.display());
    }
    let out_dir = ws.target_dir.join("demo");
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("{}: cannot create", out_dir.display()))?;
    let csv = out_dir.join("demo_curve.csv");
    let json = out_dir.join("demo_curve.json");
    let png = out_dir.join("demo_curve.png");

    let mut cmd = moodfader_cli();
    cmd.arg("analyze")
        .arg(&midi)
        .arg("--csv")
        .arg(&csv)
        .arg("--plot")
        .arg(&png)
        .arg("--json");
    cmd.env(ORT_DYLIB_ENV, &rt.ort_lib);
    let output = workspace::run_capture("moodfader analyze", &mut cmd, limit::TOOL)?;
    fs::write(&json, &output.stdout)
        .with_context(|| format!("{}: cannot write", json.display()))?;
    serde_json::from_slice::<serde_json::Value>(&output.stdout).with_context(|| {
        format!(
            "moodfader analyze: stdout is not JSON (saved to {})",
            json.display()
        )
    })?;

    let table = fs::read_to_string(&csv)
        .with_context(|| format!("moodfader analyze: CSV not written at {}", csv.display()))?;
    println!("{}", format_csv_table(&table));
    println!("curve CSV:  {}", csv.display());
    println!("curve JSON: {}", json.display());
    if !png.is_file() {
        bail!("moodfader analyze: plot not written at {}", png.display());
    }
    println!("curve plot: {}", png.display());

    // Four continuations of the demo, one per quadrant, each read back by the estimator.
    let mut report = String::from(
        "Moodfader demo: assets/demo.mid (24 bars: calm C major, tense A minor, bright G major)\n\n",
    );
    let overall = serde_json::from_slice::<serde_json::Value>(&output.stdout)?["overall"].clone();
    report.push_str(&format!(
        "Heard, whole piece: valence {:+.2}, arousal {:+.2} (per bar: demo_curve.csv)\n\n",
        overall["valence"].as_f64().unwrap_or(f64::NAN),
        overall["arousal"].as_f64().unwrap_or(f64::NAN)
    ));
    report.push_str("Continuations, 8 bars each, steered fully (seed 1):\n");
    report.push_str("quadrant  target V/A      heard back V/A   notes  notes/bar  mean velocity  WAV RMS\n");
    for (name, v, a) in [("excited", 0.7, 0.7), ("tense", -0.7, 0.7), ("sad", -0.7, -0.7), ("calm", 0.7, -0.7)] {
        let mid = out_dir.join(format!("continue_{name}.mid"));
        let wav = out_dir.join(format!("continue_{name}.wav"));
        let mut cont = moodfader_cli();
        cont.arg("continue")
            .arg(&midi)
            .args(["--bars", "8", "--seed", "1"])
            .arg(format!("--valence={v}"))
            .arg(format!("--arousal={a}"))
            .arg("-o")
            .arg(&mid)
            .arg("--wav")
            .arg(&wav)
            .env(ORT_DYLIB_ENV, &rt.ort_lib);
        workspace::run(&format!("moodfader continue ({name})"), &mut cont, limit::TOOL)?;
        let mut an = moodfader_cli();
        an.arg("analyze").arg(&mid).arg("--json").env(ORT_DYLIB_ENV, &rt.ort_lib);
        let out = workspace::run_capture(&format!("moodfader analyze ({name})"), &mut an, limit::TOOL)?;
        let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let (hv, ha) = (j["overall"]["valence"].as_f64().unwrap_or(f64::NAN), j["overall"]["arousal"].as_f64().unwrap_or(f64::NAN));
        let (notes, mean_vel) = midi_note_stats(&fs::read(&mid)?);
        let rms = wav_rms(&fs::read(&wav)?);
        report.push_str(&format!(
            "{name:8}  {v:+.1} / {a:+.1}     {hv:+.2} / {ha:+.2}     {notes:5}  {:9.1}  {mean_vel:13.1}  {rms:7.4}\n",
            notes as f64 / 8.0
        ));
    }
    report.push_str(
        "\n\"heard back\" is Moodfader's own estimator on the generated notes; notes/bar and velocity are\n\
         what the faders' density and dynamics targets ask for; WAV RMS is the rendered loudness.\n",
    );
    let report_path = out_dir.join("report.txt");
    fs::write(&report_path, &report).with_context(|| format!("{}: cannot write", report_path.display()))?;
    println!("\n{report}");
    println!("continuations: {}/continue_<quadrant>.mid and .wav; report {}", out_dir.display(), report_path.display());
    Ok(())
}

/// Note-on count and mean velocity of a Standard MIDI File (running status and meta events
/// handled; good enough for our own files).
fn midi_note_stats(bytes: &[u8]) -> (usize, f64) {
    let (mut n, mut sum) = (0usize, 0.0f64);
    let mut i = 14; // after MThd
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[i + 4], bytes[i + 5], bytes[i + 6], bytes[i + 7]]) as usize;
        let (start, end) = (i + 8, (i + 8 + len).min(bytes.len()));
        if &bytes[i..i + 4] == b"MTrk" {
            let mut p = start;
            let mut status = 0u8;
            while p < end {
                while p < end && bytes[p] & 0x80 != 0 {
                    p += 1;
                }
                p += 1; // last delta byte
                if p >= end {
                    break;
                }
                if bytes[p] & 0x80 != 0 {
                    status = bytes[p];
                    p += 1;
                }
                match status {
                    0xff => {
                        let mut l = 0usize;
                        p += 1;
                        while p < end && bytes[p] & 0x80 != 0 {
                            l = (l << 7) | (bytes[p] & 0x7f) as usize;
                            p += 1;
                        }
                        l = (l << 7) | (bytes.get(p).copied().unwrap_or(0) & 0x7f) as usize;
                        p += 1 + l;
                    }
                    s if s & 0xf0 == 0x90 => {
                        if p + 1 < end && bytes[p + 1] > 0 {
                            n += 1;
                            sum += bytes[p + 1] as f64;
                        }
                        p += 2;
                    }
                    s if matches!(s & 0xf0, 0xc0 | 0xd0) => p += 1,
                    _ => p += 2,
                }
            }
        }
        i = end;
    }
    (n, if n == 0 { 0.0 } else { sum / n as f64 })
}

/// RMS of a 16-bit PCM WAV written by `moodfader` (44-byte header).
fn wav_rms(bytes: &[u8]) -> f64 {
    let samples: Vec<f64> = bytes.get(44..).unwrap_or(&[]).chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f64 / 32768.0).collect();
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|x| x * x).sum::<f64>() / samples.len() as f64).sqrt()
}

/// Aligns a simple CSV (no quoted commas) into columns for the terminal.
pub fn format_csv_table(csv: &str) -> String {
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(str::trim).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(c, cell)| format!("{cell:>w$}", w = widths[c]))
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `cargo run --release -p moodfader-cli --bin moodfader --`: the command line, ready for its arguments.
fn moodfader_cli() -> Command {
    cargo_cmd(["run", "--release", "-p", CLI_PACKAGE, "--bin", "moodfader", "--"])
}

/// `moodfader lab …`: the training and measuring commands, ready for the subcommand.
fn moodfader_lab() -> Command {
    let mut cmd = moodfader_cli();
    cmd.arg("lab");
    cmd
}

/// `cargo xtask bench [--quick]`: engine benches, then the plugin-host benches against a release
/// bundle. `--quick` runs only `[[bench]]` targets (libtest would reject criterion's flags) with
/// short criterion timings.
pub fn bench(ws: &Workspace, quick: bool) -> Result<()> {
    let rt = runtime::setup(ws)?;
    let bench_cmd = |package: &str| {
        let mut cmd = cargo_cmd(["bench", "-p", package]);
        if quick {
            cmd.args(["--bench", "*", "--"]).args(CRITERION_QUICK);
            cmd.env("MOODFADER_BENCH_RUNS", "20");
        }
        cmd.envs(test_env(ws, &rt));
        cmd
    };
    // The engine's worker update (valence/arousal) and the plugin's process() (in-process, with
    // an allocation counter). Figures are printed against product.md's budgets.
    for package in ["moodfader-engine", "moodfader"] {
        workspace::run(&format!("cargo bench -p {package}"), &mut bench_cmd(package), limit::CARGO)?;
    }
    println!("{}", crate::budgets::summary(&ws.target_dir));
    println!("xtask bench: done{}", if quick { " (quick: timings are indicative only)" } else { "" });
    Ok(())
}

/// The training data folder: `$MOODFADER_DATA`, else `<root>/../shared/data`.
pub fn data_dir(root: &Path, env_value: Option<std::ffi::OsString>) -> PathBuf {
    match env_value {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => root.join("..").join("shared").join("data"),
    }
}

fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// A Python venv at `venv` with `requirements` installed (pip is skipped while the file is
/// unchanged since the last successful install); returns its python.
pub fn python_venv(venv: &Path, requirements: &Path) -> Result<PathBuf> {
    let python = venv_python(venv);
    if !python.is_file() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv"]).arg(venv);
        workspace::run("python3 -m venv", &mut cmd, limit::PIP)?;
    }
    let stamp = venv.join(".moodfader-requirements.sha256");
    let req_sha = runtime::sha256_file(requirements)?;
    if fs::read_to_string(&stamp).ok().as_deref() == Some(req_sha.as_str()) {
        eprintln!("[xtask] {} unchanged since last install; skipping pip", requirements.display());
    } else {
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "install", "--disable-pip-version-check", "-r"]).arg(requirements);
        workspace::run(&format!("pip install -r {}", requirements.display()), &mut pip, limit::PIP)?;
        fs::write(&stamp, &req_sha).with_context(|| format!("{}: cannot write", stamp.display()))?;
    }
    Ok(python)
}

/// The training data folder (`MOODFADER_DATA`, else `../shared/data`), or an error that says where it looked.
fn training_data(ws: &Workspace) -> Result<PathBuf> {
    let data = data_dir(&ws.root, std::env::var_os(DATA_ENV));
    if !data.is_dir() {
        bail!("training data not found at {}; set {DATA_ENV}", data.display());
    }
    Ok(data)
}

/// What every training run needs: the runtime, the data, and the Python venv with the pinned
/// requirements. Returns (runtime, data folder, python, work folder).
fn training_prelude(ws: &Workspace, script_name: &str) -> Result<(runtime::Runtime, PathBuf, PathBuf, PathBuf, PathBuf)> {
    let rt = runtime::setup(ws)?;
    let train_dir = ws.root.join("models").join("train");
    let requirements = train_dir.join("requirements.txt");
    let script = train_dir.join(script_name);
    for (what, path) in [
        ("training requirements", &requirements),
        ("training script", &script),
    ] {
        if !path.is_file() {
            bail!("{what} not found at {}", path.display());
        }
    }
    let data = training_data(ws)?;

    let python = python_venv(&train_dir.join(".venv"), &requirements)?;
    let work = train_dir.join("work");
    fs::create_dir_all(&work).with_context(|| format!("{}: cannot create", work.display()))?;
    Ok((rt, data, python, script, work))
}

/// `moodfader lab export-features` (VGMIDI alone, for the bridge) into the work folder; returns
/// the CSV's path.
fn export_features(rt: &runtime::Runtime, data: &Path, work: &Path) -> Result<PathBuf> {
    let features = work.join("vgmidi_features.csv");
    let mut export = moodfader_lab();
    export.arg("export-features").arg("--data").arg(data).arg("-o").arg(&features);
    export.env(ORT_DYLIB_ENV, &rt.ort_lib);
    workspace::run("moodfader lab export-features", &mut export, limit::TRAINING)?;
    Ok(features)
}

/// The feature CSVs the emotion model trains on.
struct FeatureSets {
    vgmidi: PathBuf,
    emopia: PathBuf,
}

/// `moodfader lab export-features --emopia …` (with `--flat-velocity` when `flat`) into `work`.
fn export_feature_sets(rt: &runtime::Runtime, data: &Path, work: &Path, flat: bool) -> Result<FeatureSets> {
    let suffix = if flat { "_flat" } else { "" };
    let sets = FeatureSets {
        vgmidi: work.join(format!("vgmidi_features{suffix}.csv")),
        emopia: work.join(format!("emopia_features{suffix}.csv")),
    };
    let mut export = moodfader_lab();
    export.arg("export-features").arg("--data").arg(data).arg("-o").arg(&sets.vgmidi);
    if flat {
        export.arg("--flat-velocity");
    }
    export.arg("--emopia").arg(&sets.emopia);
    export.env(ORT_DYLIB_ENV, &rt.ort_lib);
    workspace::run("moodfader lab export-features", &mut export, limit::TRAINING)?;
    Ok(sets)
}

/// `cargo xtask train emotion [script args]`: the four feature exports (VGMIDI and EMOPIA, as
/// played and with velocities flattened), then `train_emotion.py` (nested cross-validation).
pub fn train_emotion(ws: &Workspace, script_args: &[String]) -> Result<()> {
    let (rt, data, python, script, work) = training_prelude(ws, "train_emotion.py")?;
    let played = export_feature_sets(&rt, &data, &work, false)?;
    let flat = export_feature_sets(&rt, &data, &work, true)?;
    let mut train = Command::new(&python);
    train
        .arg(&script)
        .arg("--features")
        .arg(&played.vgmidi)
        .arg("--emopia")
        .arg(&played.emopia)
        .arg("--flat-features")
        .arg(&flat.vgmidi)
        .arg("--flat-emopia")
        .arg(&flat.emopia)
        .arg("--out")
        .arg(ws.root.join("models"))
        .args(script_args)
        .env(ORT_DYLIB_ENV, &rt.ort_lib);
    workspace::run("train_emotion.py", &mut train, limit::TRAINING)?;
    println!(
        "xtask train emotion: done; features {}, {}, models in {}",
        played.vgmidi.display(),
        played.emopia.display(),
        ws.root.join("models").display()
    );
    Ok(())
}

/// Transpositions the continuation model trains on (semitones).
pub const CONTINUATION_TRANSPOSITIONS: &str = "-3,-2,-1,0,1,2,3";

/// `cargo xtask train continuation [script args]`: token export (with transpositions), training
/// (resumes from `models/train/work/continuation/checkpoint.pt`, else from the committed weights
/// `models/train/checkpoints/continuation.pt`, rewritten after each run; `--minutes M` bounds one run),
/// ONNX export into `models/`, then `moodfader lab eval-continuation` (quick and full grids) whose
/// metrics go into the manifest.
pub fn train_continuation(ws: &Workspace, script_args: &[String]) -> Result<()> {
    let (rt, data, python, script, work) = training_prelude(ws, "train_continuation.py")?;
    let features = export_features(&rt, &data, &work)?;
    let tokens = work.join("tokens.jsonl");
    let mut export = moodfader_lab();
    export
        .arg("export-tokens")
        .arg("--data")
        .arg(&data)
        .arg(format!("--transpose={CONTINUATION_TRANSPOSITIONS}"))
        .arg("-o")
        .arg(&tokens);
    workspace::run("moodfader lab export-tokens", &mut export, limit::TRAINING)?;

    let models = ws.root.join("models");
    let mut train = Command::new(&python);
    train
        .arg(&script)
        .arg("--tokens")
        .arg(&tokens)
        .arg("--features")
        .arg(&features)
        .arg("--work")
        .arg(work.join("continuation"))
        .arg("--out")
        .arg(&models)
        .arg("--resume")
        .arg(models.join("train").join("checkpoints").join("continuation.pt"))
        .args(script_args)
        .env(ORT_DYLIB_ENV, &rt.ort_lib);
    workspace::run("train_continuation.py", &mut train, limit::TRAINING)?;
    fit_bridge(&rt, &models, &data)?;
    merge_continuation_metrics(&rt, &models)?;
    println!("xtask train continuation: done; model and manifest in {}", models.display());
    Ok(())
}

/// `cargo xtask train bridge`: calibrates the emotion bridge of the continuation model in
/// `models/` by synthesis (`moodfader lab fit-bridge`), then re-measures it.
pub fn train_bridge(ws: &Workspace) -> Result<()> {
    let rt = runtime::setup(ws)?;
    let data = training_data(ws)?;
    let models = ws.root.join("models");
    fit_bridge(&rt, &models, &data)?;
    merge_continuation_metrics(&rt, &models)?;
    println!("xtask train bridge: done; bridge and metrics in {}", models.join("continuation.json").display());
    Ok(())
}

/// Fits the bridge's forward model on continuations of training pieces and writes it into the
/// continuation manifest in `models/`.
fn fit_bridge(rt: &runtime::Runtime, models: &Path, data: &Path) -> Result<()> {
    let mut fit = moodfader_lab();
    fit.arg("fit-bridge")
        .arg("--data")
        .arg(data)
        .arg("--write")
        .arg(models.join("continuation.json"))
        .env(ORT_DYLIB_ENV, &rt.ort_lib)
        .env("MOODFADER_MODEL_DIR", models);
    workspace::run("moodfader lab fit-bridge", &mut fit, limit::TRAINING)
}

/// Measures the continuation model in `models/` and writes `metrics` into its manifest.
pub fn merge_continuation_metrics(rt: &runtime::Runtime, models: &Path) -> Result<()> {
    let mut metrics = serde_json::Map::new();
    let work = models.join("train").join("work");
    let trials = work.join("emotion_trials");
    let data = data_dir(models.parent().unwrap_or(models), std::env::var_os(DATA_ENV));
    for (name, quick) in [("quick", true), ("full", false)] {
        let out = work.join(format!("continuation_eval_{name}.json"));
        let mut eval = moodfader_lab();
        eval.arg("eval-continuation").arg("-o").arg(&out);
        if quick {
            eval.arg("--quick");
        } else {
            // The full grid's emotion trials as MIDI, for the separate judge below.
            if trials.is_dir() {
                fs::remove_dir_all(&trials).with_context(|| format!("{}: cannot clear", trials.display()))?;
            }
            eval.arg("--dump-emotion").arg(&trials);
            if data.is_dir() {
                eval.arg("--heldout").arg(&data);
            } else {
                eprintln!("[xtask] WARNING: no data at {}: the full eval runs without held-out primers", data.display());
            }
        }
        eval.env(ORT_DYLIB_ENV, &rt.ort_lib).env("MOODFADER_MODEL_DIR", models);
        workspace::run(&format!("moodfader lab eval-continuation ({name})"), &mut eval, limit::TRAINING)?;
        let text = fs::read_to_string(&out).with_context(|| format!("{}: cannot read", out.display()))?;
        metrics.insert(name.into(), serde_json::from_str(&text)?);
    }
    // How close the unsteered continuation stays to the real next bars of unseen pieces.
    if data.is_dir() {
        let out = models.join("train").join("work").join("continuation_faithfulness.json");
        let mut eval = moodfader_lab();
        eval.arg("eval-faithfulness").arg("--data").arg(&data).arg("-o").arg(&out);
        eval.env(ORT_DYLIB_ENV, &rt.ort_lib).env("MOODFADER_MODEL_DIR", models);
        workspace::run("moodfader lab eval-faithfulness", &mut eval, limit::TRAINING)?;
        let text = fs::read_to_string(&out).with_context(|| format!("{}: cannot read", out.display()))?;
        metrics.insert("faithfulness".into(), serde_json::from_str(&text)?);
        // The emotion grid read by a judge the bridge was not fitted against (judge.py).
        let train_dir = models.join("train");
        let python = python_venv(&train_dir.join(".venv"), &train_dir.join("requirements.txt"))?;
        let out = work.join("judge.json");
        let mut judge = Command::new(&python);
        judge.arg(train_dir.join("judge.py")).arg("--data").arg(&data).arg("--trials").arg(&trials).arg("--out").arg(&out);
        workspace::run("judge.py", &mut judge, limit::TRAINING)?;
        let text = fs::read_to_string(&out).with_context(|| format!("{}: cannot read", out.display()))?;
        metrics.insert("judge".into(), serde_json::from_str(&text)?);
    } else {
        eprintln!("[xtask] WARNING: no data at {}: faithfulness to the real next bars and the separate judge are not measured", data.display());
    }
    let manifest_path = models.join("continuation.json");
    let text = fs::read_to_string(&manifest_path).with_context(|| format!("{}: cannot read", manifest_path.display()))?;
    let mut manifest: serde_json::Value = serde_json::from_str(&text)?;
    manifest["metrics"] = serde_json::Value::Object(metrics);
    fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("{}: cannot write", manifest_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_prefers_env() {
        let root = Path::new("/w/main");
        assert_eq!(data_dir(root, Some("/d".into())), PathBuf::from("/d"));
        assert_eq!(
            data_dir(root, None),
            PathBuf::from("/w/main/../shared/data")
        );
        assert_eq!(
            data_dir(root, Some("".into())),
            PathBuf::from("/w/main/../shared/data")
        );
    }

    #[test]
    fn the_summary_counts_every_step_and_names_what_was_skipped() {
        let all = [("setup", Ok(Step::Passed)), ("bundle", Ok(Step::Passed)), ("tests", Ok(Step::Passed))];
        assert_eq!(summary(&all, &[]), "xtask test: all 3 steps passed (setup, bundle, tests)");
        let some = [
            ("setup", Ok(Step::Passed)),
            ("screenshot", Ok(Step::Skipped("no Xvfb".into()))),
            ("tests", Err(anyhow::anyhow!("boom"))),
        ];
        let line = summary(&some, &["held-out emotion metrics: no data".into()]);
        assert_eq!(
            line,
            "xtask test: 1/3 steps passed (setup); SKIPPED: screenshot; NOT CHECKED for want of data: held-out emotion metrics: no data; FAILED: tests"
        );
        let line = summary(&all, &["token round trip: no data".into()]);
        assert!(!line.contains("all 3") && line.contains("3/3") && line.contains("token round trip"), "{line}");
    }

    #[test]
    fn csv_table_is_right_aligned() {
        let t = format_csv_table("bar,valence\n1,0.25\n10,-0.5\n");
        assert_eq!(t, "bar  valence\n  1     0.25\n 10     -0.5");
        assert_eq!(format_csv_table(""), "");
    }
}
