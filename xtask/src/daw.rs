//! `cargo xtask daw` (a step of `cargo xtask test`): the test bundle's VST3 in JUCE-based hosts
//! from PyPI: DawDreamer renders a Follow-mode session offline, pedalboard times the load
//! (`tests/daw/check_dawdreamer.py` says what is checked). The hosts live in a venv of their own
//! (`target/daw-venv`, pinned in `tests/daw/requirements.txt`).
//!
//! It checks the debug test bundle (`assert_process_allocs`: an allocation in `process()` aborts
//! the render) rather than a release build: stricter, and CI is spared a second full compile.
//!
//! Thread: none (xtask)

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::runtime::Runtime;
use crate::tasks::{Step, bundle_moodfader, python_venv};
use crate::workspace::{self, Workspace, limit};

/// Bundles the debug test build (a no-op after `cargo xtask test`'s bundle step), keeps a copy of
/// its VST3 in `target/daw/`, and runs the DAW-engine checks on the copy.
pub fn check(ws: &Workspace, rt: &Runtime) -> Result<Step> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let daw = ws.root.join("tests").join("daw");
    let python = match python_venv(&ws.target_dir.join("daw-venv"), &daw.join("requirements.txt")) {
        Ok(p) => p,
        // No registry to install from: a user's offline machine, not CI.
        Err(e) if !ci => {
            let msg = format!("DawDreamer/pedalboard could not be installed ({e:#})");
            eprintln!("[xtask] WARNING: DAW check SKIPPED: {msg}");
            return Ok(Step::Skipped(msg));
        }
        Err(e) => return Err(e),
    };
    bundle_moodfader(ws, rt, &[], "assert_process_allocs,embed-runtime").context("debug test bundle")?;
    let out = ws.target_dir.join("daw");
    let vst3 = out.join("moodfader.vst3");
    if vst3.exists() {
        fs::remove_dir_all(&vst3).with_context(|| format!("{}: cannot clear", vst3.display()))?;
    }
    copy_dir(&ws.target_dir.join("bundled").join("moodfader.vst3"), &vst3)?;

    let report = out.join("report.json");
    let mut cmd = Command::new(&python);
    cmd.arg(daw.join("check_dawdreamer.py")).arg(&vst3).arg("--json").arg(&report);
    // A private cache, so the bundle's runtime and models are unpacked as on a first install.
    let cache = out.join("cache");
    let _ = fs::remove_dir_all(&cache);
    cmd.env("XDG_CACHE_HOME", &cache);
    workspace::run("DawDreamer and pedalboard on the test VST3", &mut cmd, limit::SCRIPT)?;
    if !report.is_file() {
        bail!("{}: the DAW check wrote no report", report.display());
    }
    Ok(Step::Passed)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("{}: cannot create", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("{}: cannot read", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("{} -> {}: cannot copy", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}
