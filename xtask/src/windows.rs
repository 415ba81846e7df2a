//! The Windows build, cross-built on Linux and proven under Wine.
//!
//! * `cargo xtask bundle moodfader --release --target x86_64-pc-windows-gnu` ([`bundle`]): the
//!   Windows `moodfader.vst3` (`Contents/x86_64-win/moodfader.vst3`) and `moodfader.clap` in
//!   `target/bundled/x86_64-pc-windows-gnu/`, carrying ONNX Runtime's `onnxruntime.dll` and the
//!   models (the runtime of `cargo xtask setup`, `target/moodfader-runtime/windows-x86_64/`).
//! * `cargo xtask windows` ([`check`], also a step of `cargo xtask test`): builds the bundles and
//!   the Windows command line, then under Wine:
//!   - `moodfader.exe analyze` (MIDI and WAV), `continue` and `transcribe` against the Linux build
//!     on the same input: the JSON within [`JSON_TOLERANCE`] on the same notes (within
//!     [`AUDIO_JSON_TOLERANCE`] on audio whose transcriptions differ by a velocity step), the
//!     MIDI byte for byte, the transcribed notes the same;
//!   - the clack-host tests (`tests/tests/clap_host.rs`) cross-built for Windows on the Windows
//!     `.clap`: activation at 48 kHz, bit-exact audio, sample-exact MIDI thru, and mood CCs from
//!     a worker that loaded the embedded ONNX Runtime;
//!   - the drag-out's COM objects (`plugin/src/dragout/windows.rs`'s tests): the `CF_HDROP` data
//!     object and the drop source, as a drop target uses them.
//!
//! Wine 8 lacks `ProcessPrng` (bcryptprimitives.dll), which Rust's standard library imports; a
//! stand-in built from `tests/wine/bcryptprimitives.c` sits beside the test executables, never in
//! a bundle (Windows 10 and later have the real one).
//!
//! Thread: any

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo_args::{self, CLI_PACKAGE, PLUGIN_PACKAGE};
use crate::runtime::{self, WINDOWS_TARGET, WINDOWS_X86_64};
use crate::tasks::{PAYLOAD_DIR_ENV, Step};
use crate::workspace::{self, Workspace, cargo_cmd, limit, on_path};

/// How far the Linux and Windows builds' `analyze` figures may differ on the same notes.
pub const JSON_TOLERANCE: f64 = 1e-4;
/// How far they may differ on audio when the two transcriptions differ only by velocities one
/// step apart: each platform runs Basic Pitch on its own ONNX Runtime build, and a velocity that
/// rounds the other way moves its bar's reading by about 1.3e-4 per step (measured on demo.wav
/// with the committed estimator). The same notes are then read within [`JSON_TOLERANCE`].
pub const AUDIO_JSON_TOLERANCE: f64 = 1e-3;

/// The cross compiler the `x86_64-pc-windows-gnu` target links with (Debian's gcc-mingw-w64-x86-64).
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// Where the Windows bundles go.
pub fn bundle_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("bundled").join(WINDOWS_TARGET)
}

/// True when `args` name the Windows target (`--target x86_64-pc-windows-gnu` or `--target=…`).
pub fn targets_windows(args: &[String]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        a.strip_prefix("--target=") == Some(WINDOWS_TARGET)
            || (a == "--target" && args.get(i + 1).is_some_and(|t| t == WINDOWS_TARGET))
    })
}

/// Cross-builds the plugin for Windows with its runtime embedded and bundles it into
/// [`bundle_dir`]. `args` are cargo's (they name the target; `--release` or not).
pub fn bundle(ws: &Workspace, args: &[String]) -> Result<PathBuf> {
    let rt = runtime::setup_for(ws, WINDOWS_X86_64)?;
    let args = cargo_args::with_feature(args, "embed-runtime");
    let payload = fs::canonicalize(&rt.dir)
        .with_context(|| format!("{}: cannot resolve the Windows runtime cache", rt.dir.display()))?;
    eprintln!("[xtask] {PAYLOAD_DIR_ENV}={}", payload.display());
    // SAFETY: xtask is single-threaded; cargo and the build scripts inherit our environment.
    unsafe { std::env::set_var(PAYLOAD_DIR_ENV, &payload) };
    nice_plug_xtask::chdir_workspace_root()?;
    // nice_plug_xtask::build runs the same `cargo build -p moodfader ARGS`, but with no time limit.
    let mut build = cargo_cmd(["build", "-p", PLUGIN_PACKAGE]);
    build.args(&args);
    workspace::run(&format!("cargo build -p {PLUGIN_PACKAGE}"), &mut build, limit::CARGO)?;

    // nice-plug-xtask bundles into <target dir>/bundled, where the Linux `moodfader.clap` lives
    // under the same name; it gets a target dir of its own that sees only the Windows build.
    let stage = ws.target_dir.join("windows-bundling");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("{}: cannot clear", stage.display()))?;
    }
    fs::create_dir_all(&stage).with_context(|| format!("{}: cannot create", stage.display()))?;
    let built = ws.target_dir.join(WINDOWS_TARGET);
    link_dir(&built, &stage.join(WINDOWS_TARGET))?;
    nice_plug_xtask::bundle(&stage, PLUGIN_PACKAGE, &args, false)?;

    let out = bundle_dir(ws);
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("{}: cannot clear", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    for name in [format!("{PLUGIN_PACKAGE}.clap"), format!("{PLUGIN_PACKAGE}.vst3")] {
        let from = stage.join("bundled").join(&name);
        if !from.exists() {
            bail!("{}: nice-plug-xtask wrote no {name}", stage.join("bundled").display());
        }
        fs::rename(&from, out.join(&name))
            .with_context(|| format!("{}: cannot move into {}", from.display(), out.display()))?;
    }
    // (The bundler also copies a `moodfader.exe` it takes for a standalone build: that is the
    // command line, which is built and checked on its own.)
    let _ = fs::remove_dir_all(&stage);
    eprintln!("[xtask] Windows bundles in {}", out.display());
    Ok(out)
}

#[cfg(unix)]
fn link_dir(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("{}: cannot link to {}", link.display(), target.display()))
}

#[cfg(not(unix))]
fn link_dir(_target: &Path, _link: &Path) -> Result<()> {
    bail!("cross-building the Windows bundles is done on Linux")
}

/// What the check needs that a machine may lack, as one line naming how to get it.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    for (tool, package) in [("wine", "wine"), (MINGW_GCC, "gcc-mingw-w64-x86-64")] {
        if !on_path(tool) {
            missing.push(format!("{tool} (Debian's {package})"));
        }
    }
    let mut rustc = Command::new("rustc");
    rustc.args(["--print", "target-libdir", "--target", WINDOWS_TARGET]);
    let has_target = workspace::output_within("rustc --print target-libdir", &mut rustc, limit::QUERY)
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| dir.is_dir());
    if !has_target {
        missing.push(format!("the {WINDOWS_TARGET} target (`rustup target add {WINDOWS_TARGET}`)"));
    }
    missing
}

/// A path as a Windows program under Wine reads it (Wine maps `/` to drive `Z:`).
fn wine_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// How every Wine run of the checks is set up: a prefix of its own under target/, quiet, without
/// the Mono and Gecko installers a fresh prefix would offer, with Wine's crash debugger off (a
/// crash is an exit code, not a `winedbg --auto` waiting for ever with no window to show), and
/// with the AMX permission preloaded (`tests/wine/amx_permission.c` says why).
struct Wine {
    prefix: PathBuf,
    amx_preload: PathBuf,
}

impl Wine {
    /// Builds the preload (host gcc) into `target/wine-tools/` and makes the prefix once.
    fn prepare(ws: &Workspace) -> Result<Self> {
        let tools = ws.target_dir.join("wine-tools");
        fs::create_dir_all(&tools).with_context(|| format!("{}: cannot create", tools.display()))?;
        let amx_preload = tools.join("amx_permission.so");
        let mut gcc = Command::new("gcc");
        gcc.args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&amx_preload)
            .arg(ws.root.join("tests").join("wine").join("amx_permission.c"));
        workspace::run("gcc amx_permission.so (Wine only)", &mut gcc, limit::TOOL)?;
        let wine = Self { prefix: ws.target_dir.join("wine-prefix"), amx_preload };
        wine.ensure_prefix()?;
        Ok(wine)
    }

    /// `tool` (wine, wineboot, wineserver) with the environment above.
    fn tool(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=;winedbg.exe=d")
            .env("LD_PRELOAD", &self.amx_preload)
            .env_remove("DISPLAY");
        // What the Windows build finds must be its own: no developer override of the Linux build.
        for var in [crate::tasks::ORT_DYLIB_ENV, "MOODFADER_NO_EMBEDDED_RUNTIME", "MOODFADER_BASIC_PITCH", "MOODFADER_MODEL_DIR"] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// `wine PROGRAM`.
    fn program(&self, program: &Path) -> Command {
        let mut cmd = self.tool("wine");
        cmd.arg(program);
        cmd
    }

    /// Makes the prefix once: booted, and on Wine's null graphics driver, so that the windows a
    /// plugin makes (nice-plug's hidden event-loop window) need no X display.
    fn ensure_prefix(&self) -> Result<()> {
        let ready = self.prefix.join(".moodfader-ready");
        if ready.is_file() {
            return Ok(());
        }
        let mut boot = self.tool("wineboot");
        boot.arg("--init");
        workspace::run("wineboot --init", &mut boot, limit::WINE_SESSION)?;
        let mut null_driver = self.tool("wine");
        null_driver.args(["reg", "add", "HKCU\\Software\\Wine\\Drivers", "/v", "Graphics", "/d", "null", "/f"]);
        workspace::run("wine reg add (null graphics driver)", &mut null_driver, limit::TOOL)?;
        let mut wait = self.tool("wineserver");
        wait.arg("-w");
        workspace::run("wineserver -w", &mut wait, limit::TOOL)?;
        fs::write(&ready, "booted, null graphics driver\n").with_context(|| format!("{}: cannot write", ready.display()))
    }
}

/// Builds `tests/wine/crash.c` with mingw into `dir` and runs it under Wine: the run must fail
/// as a crash, in seconds, not wait in Wine's crash debugger. Returns how long it took.
fn crash_under_wine(ws: &Workspace, wine: &Wine, dir: &Path) -> Result<std::time::Duration> {
    let exe = dir.join("crash.exe");
    let mut gcc = Command::new(MINGW_GCC);
    gcc.args(["-O0", "-o"]).arg(&exe).arg(ws.root.join("tests").join("wine").join("crash.c"));
    workspace::run("mingw gcc crash.exe (Wine only)", &mut gcc, limit::TOOL)?;
    let started = std::time::Instant::now();
    let outcome = workspace::run("crash.exe under Wine", &mut wine.program(&exe), CRASH_LIMIT);
    let took = started.elapsed();
    match outcome {
        Ok(()) => bail!("crash.exe under Wine exited 0: the crash went unseen"),
        Err(e) if e.to_string().contains("time limit") => {
            bail!("crash.exe under Wine hung until its time limit (Wine's crash debugger is not off?): {e:#}")
        }
        Err(e) => {
            eprintln!("[xtask] a crash under Wine is an exit code after {:.1} s: {e:#}", took.as_secs_f64());
            Ok(took)
        }
    }
}

/// How long the crash check may take before it counts as a hang.
const CRASH_LIMIT: std::time::Duration = std::time::Duration::from_secs(45);

/// Builds the Wine-only `ProcessPrng` stand-in into `dir`.
fn build_prng_stub(ws: &Workspace, dir: &Path) -> Result<PathBuf> {
    let dll = dir.join("bcryptprimitives.dll");
    let mut gcc = Command::new(MINGW_GCC);
    gcc.args(["-shared", "-O2", "-o"])
        .arg(&dll)
        .arg(ws.root.join("tests").join("wine").join("bcryptprimitives.c"))
        .arg("-ladvapi32");
    workspace::run("mingw gcc bcryptprimitives.dll (Wine only)", &mut gcc, limit::TOOL)?;
    Ok(dll)
}

/// `cargo xtask windows`: see the module header. `Step::Skipped` with a loud message when a tool
/// is missing outside CI (in CI that is a failure).
pub fn check(ws: &Workspace, linux_rt: &runtime::Runtime) -> Result<Step> {
    let missing = missing_tools();
    if !missing.is_empty() {
        let msg = format!("missing {} (CI installs them)", missing.join(", "));
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("{msg}");
        }
        eprintln!("[xtask] WARNING: Windows check SKIPPED: {msg}");
        return Ok(Step::Skipped(msg));
    }
    let target_args = vec!["--release".to_string(), "--target".to_string(), WINDOWS_TARGET.to_string()];
    let bundles = bundle(ws, &target_args)?;
    let win_rt = runtime::setup_for(ws, WINDOWS_X86_64)?;

    let mut cli = cargo_cmd(["build", "-p", CLI_PACKAGE]);
    cli.args(&target_args);
    workspace::run("cargo build moodfader-cli (Windows)", &mut cli, limit::CARGO)?;
    let mut linux_cli = cargo_cmd(["build", "-p", CLI_PACKAGE]);
    workspace::run("cargo build moodfader-cli (Linux)", &mut linux_cli, limit::CARGO)?;

    // The command line installed as a user would: moodfader.exe with onnxruntime.dll and nmp.onnx
    // beside it (and, for Wine, the ProcessPrng stand-in).
    let check_dir = ws.target_dir.join("windows-check");
    let bin = check_dir.join("bin");
    let work = check_dir.join("work");
    for d in [&bin, &work] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("{}: cannot clear", d.display()))?;
        }
        fs::create_dir_all(d).with_context(|| format!("{}: cannot create", d.display()))?;
    }
    let exe = bin.join("moodfader.exe");
    copy(&ws.target_dir.join(WINDOWS_TARGET).join("release").join("moodfader.exe"), &exe)?;
    copy(&win_rt.ort_lib, &bin.join("onnxruntime.dll"))?;
    copy(&win_rt.nmp_onnx, &bin.join("nmp.onnx"))?;
    let stub = build_prng_stub(ws, &bin)?;
    let wine = Wine::prepare(ws)?;
    crash_under_wine(ws, &wine, &work)?;

    let linux_exe = ws.target_dir.join("debug").join("moodfader");
    let linux = |args: &[&str]| -> Command {
        let mut cmd = Command::new(&linux_exe);
        cmd.args(args).current_dir(&work).env(crate::tasks::ORT_DYLIB_ENV, &linux_rt.ort_lib);
        cmd
    };
    let windows = |args: &[&str]| -> Command {
        let mut cmd = wine.program(&exe);
        cmd.args(args).current_dir(&work);
        cmd
    };
    copy(&ws.root.join("assets").join("demo.mid"), &work.join("demo.mid"))?;
    workspace::run("moodfader render (Linux)", &mut linux(&["render", "demo.mid", "-o", "demo.wav"]), limit::TOOL)?;

    let mut report = Vec::new();
    // Basic Pitch's network runs on each platform's own ONNX Runtime build (MSVC's on Windows):
    // the same notes come out, a velocity may round the other way.
    workspace::run(
        "moodfader transcribe (Linux)",
        &mut linux(&["transcribe", "demo.wav", "-o", "heard-linux.mid", "--csv", "heard-linux.csv"]),
        limit::TOOL,
    )?;
    workspace::run(
        "moodfader.exe transcribe (Windows, Wine)",
        &mut windows(&["transcribe", "demo.wav", "-o", "heard-windows.mid", "--csv", "heard-windows.csv"]),
        limit::TOOL,
    )?;
    let read = |p: PathBuf| fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()));
    let (notes, gap) = same_notes(&read(work.join("heard-linux.csv"))?, &read(work.join("heard-windows.csv"))?)
        .context("transcribe demo.wav: Linux and Windows heard different notes")?;
    report.push(format!(
        "transcribe: the same {notes} notes (times within {:.1} ms, velocities within {})",
        gap.0 * 1e3,
        gap.1
    ));

    // The same notes read the same way: the demo, and the Linux transcription of its audio, on
    // both builds; the audio itself within what a velocity rounded the other way allows.
    let audio_tolerance = if gap.1 <= 1.0 { AUDIO_JSON_TOLERANCE } else { JSON_TOLERANCE };
    for (input, tolerance) in [("demo.mid", JSON_TOLERANCE), ("heard-linux.mid", JSON_TOLERANCE), ("demo.wav", audio_tolerance)] {
        let args = ["analyze", input, "--json"];
        let a = workspace::run_capture("moodfader analyze (Linux)", &mut linux(&args), limit::TOOL)?;
        let b = workspace::run_capture("moodfader.exe analyze (Windows, Wine)", &mut windows(&args), limit::TOOL)?;
        let diff = json_max_difference(&parse_json(&a.stdout, "Linux")?, &parse_json(&b.stdout, "Windows")?)
            .with_context(|| format!("analyze {input}: the Linux and Windows JSON differ in shape"))?;
        if diff > tolerance {
            bail!("analyze {input}: Linux and Windows differ by {diff:.2e} (at most {tolerance:.0e})");
        }
        report.push(format!("analyze {input}: JSON agrees within {diff:.1e}"));
    }

    for (name, extra) in [("steady", &[][..]), ("steered", &["--valence", "0.7", "--arousal", "-0.5"][..])] {
        let linux_out = format!("continue-{name}-linux.mid");
        let win_out = format!("continue-{name}-windows.mid");
        let args = |out: &str| -> Vec<String> {
            let mut v: Vec<String> = ["continue", "demo.mid", "--bars", "4", "--seed", "7"].map(String::from).to_vec();
            v.extend(extra.iter().map(|s| s.to_string()));
            v.extend(["-o".to_string(), out.to_string()]);
            v
        };
        let (linux_args, win_args) = (args(&linux_out), args(&win_out));
        workspace::run("moodfader continue (Linux)", &mut linux(&refs(&linux_args)), limit::TOOL)?;
        workspace::run("moodfader.exe continue (Windows, Wine)", &mut windows(&refs(&win_args)), limit::TOOL)?;
        same_bytes(&work.join(&linux_out), &work.join(&win_out), &format!("continue ({name}, seed 7)"))?;
        report.push(format!("continue ({name}, seed 7): the same MIDI"));
    }
    // The clack-host tests, cross-built, on the Windows .clap.
    let test_exe = windows_test_executable(&["-p", "moodfader-tests", "--test", "clap_host"], "clap_host tests", &stub)?;
    let mut host_tests = wine.program(&test_exe);
    host_tests
        .args(["--test-threads=1", "--nocapture"])
        .env("MOODFADER_CLAP", wine_path(&bundles.join(format!("{PLUGIN_PACKAGE}.clap"))))
        .env("RUST_BACKTRACE", "1")
        .current_dir(ws.root.join("tests"));
    workspace::run("clack-host tests on the Windows .clap (Wine)", &mut host_tests, limit::WINE_SESSION)?;
    report.push("clack-host tests on the Windows .clap: passed".to_string());

    // The drag-out's COM objects (plugin/src/dragout/windows.rs), as a drop target uses them; in
    // release, so the bundle's compiled dependencies are reused.
    let drag_exe = windows_test_executable(&["--release", "-p", PLUGIN_PACKAGE, "--lib"], "the plugin's unit tests", &stub)?;
    let mut drag_tests = wine.program(&drag_exe);
    drag_tests.args(["dragout::windows", "--test-threads=1"]).current_dir(&work);
    workspace::run("drag-out's COM objects (Windows, Wine)", &mut drag_tests, limit::TOOL)?;
    report.push("drag-out's CF_HDROP data object and drop source: passed".to_string());

    for line in &report {
        eprintln!("[xtask] windows: {line}");
    }
    Ok(Step::Passed)
}

/// Cross-builds the test binary `cargo test ARGS` names for Windows, puts the Wine-only
/// `ProcessPrng` stand-in `stub` beside it, and returns its path.
fn windows_test_executable(args: &[&str], what: &str, stub: &Path) -> Result<PathBuf> {
    let mut build = cargo_cmd(["test", "--no-run", "--message-format=json", "--target", WINDOWS_TARGET]);
    build.args(args);
    let out = workspace::run_capture(&format!("cargo test --no-run, {what} (Windows)"), &mut build, limit::CARGO)?;
    let exe = test_executable(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("cargo named no executable for {what} (Windows)"))?;
    copy(stub, &exe.parent().context("test executable has no folder")?.join("bcryptprimitives.dll"))?;
    Ok(exe)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn parse_json(bytes: &[u8], which: &str) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).with_context(|| format!("the {which} build's output is not JSON"))
}

fn same_bytes(a: &Path, b: &Path, what: &str) -> Result<()> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("{}: cannot read", p.display()));
    let (x, y) = (read(a)?, read(b)?);
    if x != y {
        let at = x.iter().zip(&y).position(|(p, q)| p != q).unwrap_or(x.len().min(y.len()));
        bail!(
            "{what}: the Linux and Windows MIDI differ ({} and {} bytes, first at byte {at}): {} vs {}",
            x.len(),
            y.len(),
            a.display(),
            b.display()
        );
    }
    Ok(())
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// How far a note's start or end may move between the platforms: a Basic Pitch frame (256 samples
/// at 22 050 Hz) where a float's last bits tip a threshold.
const NOTE_TIME_TOLERANCE_S: f64 = 256.0 / 22_050.0 + 1e-6;
/// How far a velocity (0..=127) may move: one step, where a float's last bits tip the rounding.
const NOTE_VELOCITY_TOLERANCE: f64 = 1.0;

/// Compares two `transcribe --csv` note lists (`start_s,end_s,pitch,velocity`): the same count
/// and pitches, times and velocities within the tolerances. Returns the count and the largest
/// (time, velocity) differences.
pub fn same_notes(a: &str, b: &str) -> Result<(usize, (f64, f64))> {
    let rows = |text: &str| -> Result<Vec<[f64; 4]>> {
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Vec<f64> = l.split(',').map(|f| f.trim().parse::<f64>()).collect::<Result<_, _>>()
                    .with_context(|| format!("not a note row: {l}"))?;
                <[f64; 4]>::try_from(v).map_err(|_| anyhow::anyhow!("not 4 columns: {l}"))
            })
            .collect()
    };
    let (x, y) = (rows(a)?, rows(b)?);
    if x.len() != y.len() {
        bail!("{} notes against {}", x.len(), y.len());
    }
    let (mut time, mut velocity) = (0.0f64, 0.0f64);
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        let dt = (p[0] - q[0]).abs().max((p[1] - q[1]).abs());
        let dv = (p[3] - q[3]).abs();
        if p[2] != q[2] || dt > NOTE_TIME_TOLERANCE_S || dv > NOTE_VELOCITY_TOLERANCE {
            bail!("note {i}: {p:?} against {q:?} (start_s, end_s, pitch, velocity)");
        }
        time = time.max(dt);
        velocity = velocity.max(dv);
    }
    Ok((x.len(), (time, velocity)))
}

/// The largest difference between two JSON values' numbers, `None` when they differ in shape
/// (keys, lengths, kinds) or in any string or boolean.
pub fn json_max_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<f64> {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some((x.as_f64()? - y.as_f64()?).abs()),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).try_fold(0.0f64, |m, (p, q)| Some(m.max(json_max_difference(p, q)?)))
        }
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => x
            .iter()
            .try_fold(0.0f64, |m, (k, p)| Some(m.max(json_max_difference(p, y.get(k)?)?))),
        _ if a == b => Some(0.0),
        _ => None,
    }
}

/// The test executable in `cargo test --no-run --message-format=json` output.
fn test_executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The guard itself, under Wine: a Windows program that crashes ends its step with an error
    /// that names the step, in well under a minute, because Wine's crash debugger is off. Needs
    /// wine and mingw-w64 (CI installs them; there a missing tool fails the test).
    #[test]
    fn a_crash_under_wine_is_an_exit_code() {
        let missing: Vec<&str> = ["wine", MINGW_GCC, "gcc"].into_iter().filter(|t| !on_path(t)).collect();
        if !missing.is_empty() {
            assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI lacks {missing:?}");
            eprintln!("a_crash_under_wine_is_an_exit_code: NOT RUN, {missing:?} not installed");
            return;
        }
        let ws = Workspace::locate().unwrap();
        let wine = Wine::prepare(&ws).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let took = crash_under_wine(&ws, &wine, dir.path()).unwrap();
        assert!(took < std::time::Duration::from_secs(30), "the crash took {took:?} to end");
    }

    #[test]
    fn json_difference_is_the_largest_number_gap_and_none_on_another_shape() {
        let a = json!({"bars": [{"bar": 0, "valence": 0.1}], "overall": {"arousal": -0.3}, "file": "x"});
        let b = json!({"bars": [{"bar": 0, "valence": 0.10002}], "overall": {"arousal": -0.3001}, "file": "x"});
        let d = json_max_difference(&a, &b).unwrap();
        assert!((d - 1e-4).abs() < 1e-9, "{d}");
        assert_eq!(json_max_difference(&a, &a), Some(0.0));
        let fewer = json!({"bars": [], "overall": {"arousal": -0.3}, "file": "x"});
        assert_eq!(json_max_difference(&a, &fewer), None);
        let renamed = json!({"bars": [{"bar": 0, "valence": 0.1}], "overall": {"arousal": -0.3}, "file": "y"});
        assert_eq!(json_max_difference(&a, &renamed), None);
        let other_key = json!({"bars": [{"bar": 0, "valence": 0.1}], "overall": {"valence": -0.3}, "file": "x"});
        assert_eq!(json_max_difference(&a, &other_key), None);
    }

    #[test]
    fn notes_agree_within_a_frame_and_a_velocity_step_only() {
        let a = "start_s,end_s,pitch,velocity\n0.011610,2.067860,48,83\n0.986848,2.950218,55,79\n";
        let b = "start_s,end_s,pitch,velocity\n0.011610,2.067860,48,84\n0.986848,2.961828,55,79\n";
        let (n, (dt, dv)) = same_notes(a, b).unwrap();
        assert_eq!(n, 2);
        assert!((dt - 0.01161).abs() < 1e-6 && dv == 1.0, "{dt} {dv}");
        let other_pitch = "start_s,end_s,pitch,velocity\n0.011610,2.067860,49,83\n0.986848,2.950218,55,79\n";
        assert!(same_notes(a, other_pitch).is_err());
        let two_steps = "start_s,end_s,pitch,velocity\n0.011610,2.067860,48,85\n0.986848,2.950218,55,79\n";
        assert!(same_notes(a, two_steps).is_err());
        let later = "start_s,end_s,pitch,velocity\n0.04,2.067860,48,83\n0.986848,2.950218,55,79\n";
        assert!(same_notes(a, later).is_err());
        let fewer = "start_s,end_s,pitch,velocity\n0.011610,2.067860,48,83\n";
        assert!(same_notes(a, fewer).is_err());
    }

    #[test]
    fn the_windows_target_is_recognised_in_either_spelling() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(targets_windows(&s(&["--release", "--target", "x86_64-pc-windows-gnu"])));
        assert!(targets_windows(&s(&["--target=x86_64-pc-windows-gnu"])));
        assert!(!targets_windows(&s(&["--release"])));
        assert!(!targets_windows(&s(&["--target", "x86_64-unknown-linux-gnu"])));
    }

    #[test]
    fn wine_sees_unix_paths_on_drive_z() {
        assert_eq!(wine_path(Path::new("/work/target/x.clap")), "Z:\\work\\target\\x.clap");
    }

    #[test]
    fn the_test_executable_is_found_among_cargo_messages() {
        let msgs = concat!(
            r#"{"reason":"compiler-artifact","profile":{"test":false},"executable":null}"#, "\n",
            r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/deps/clap_host-1.exe"}"#, "\n",
            r#"{"reason":"build-finished","success":true}"#
        );
        assert_eq!(test_executable(msgs), Some(PathBuf::from("/t/deps/clap_host-1.exe")));
    }
}
