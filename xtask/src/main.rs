//! Moodfader's `cargo xtask` entry point: dispatches `setup`, `bundle`, `test`, `demo`, `bench`,
//! `screenshot`, `invariants`, `eval` and `train` to their modules, and passes anything else
//! through to `nice-plug-xtask`.
//! Thread: any

mod budgets;
mod cargo_args;
mod daw;
mod invariants;
mod runtime;
mod screenshot;
mod tasks;
mod windows;
mod workspace;

use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
Usage:
  cargo xtask setup                          provision ONNX Runtime + nmp.onnx into <target>/moodfader-runtime
                                             (and the Windows runtime into its windows-x86_64/)
  cargo xtask bundle moodfader [cargo args]  setup, then build and bundle with --features embed-runtime;
                                             with --target x86_64-pc-windows-gnu the Windows bundles,
                                             into <target>/bundled/x86_64-pc-windows-gnu/
  cargo xtask windows                        Windows bundles and command line, checked under Wine
                                             against the Linux build (also a step of `test`)
  cargo xtask daw                            the test VST3 in DawDreamer (offline Follow-mode render,
                                             state reload) and pedalboard (load time); a step of `test`
  cargo xtask test                           setup, debug test bundle, every test, architecture checks
  cargo xtask demo                           setup, run `moodfader analyze assets/demo.mid`
  cargo xtask bench [--quick]                setup, engine and plugin-host benchmarks
  cargo xtask train emotion [script args]    setup, venv, export features, train the emotion model
  cargo xtask screenshot                     the standalone panel under Xvfb: screenshot + checks
  cargo xtask invariants                     the architecture checks alone (on the last bundle)
  cargo xtask eval continuation              measure models/continuation.onnx (faders, emotion grid,
                                             faithfulness, the separate judge), write its metrics
  cargo xtask train continuation [args]      export tokens, train/resume the continuation model
                                             (--minutes M bounds a run), export, calibrate
                                             its emotion bridge, measure it
  cargo xtask train bridge                   calibrate the committed continuation model's
                                             emotion bridge by synthesis, measure it
  cargo xtask bundle-universal | known-packages   passed through to nice-plug-xtask

Environment:
  MOODFADER_WHEEL_DIR   folder holding the pinned wheels (skips `pip download`)
  MOODFADER_DATA        training data folder for `train` (default <root>/../shared/data)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        bail!("missing xtask command");
    };
    let rest = &args[1..];

    match command.as_str() {
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        "setup" => {
            if !rest.is_empty() {
                bail!("setup takes no arguments, got {rest:?}");
            }
            let ws = workspace::Workspace::locate()?;
            runtime::setup(&ws)?;
            runtime::setup_for(&ws, runtime::WINDOWS_X86_64).map(|_| ())
        }
        "bundle" => match cargo_args::split_moodfader_bundle_args(rest) {
            Some(cargo_args) if windows::targets_windows(&cargo_args) => {
                let ws = workspace::Workspace::locate()?;
                windows::bundle(&ws, &cargo_args).map(|_| ())
            }
            Some(cargo_args) => {
                let ws = workspace::Workspace::locate()?;
                let rt = runtime::setup(&ws)?;
                tasks::bundle_moodfader(&ws, &rt, &cargo_args, "embed-runtime")
            }
            // Another package or several: plain nice-plug bundling.
            None => nice_plug_xtask::main_with_args("cargo xtask", args),
        },
        "test" => {
            if !rest.is_empty() {
                bail!("test takes no arguments, got {rest:?}");
            }
            tasks::test(&workspace::Workspace::locate()?)
        }
        "demo" => {
            if !rest.is_empty() {
                bail!("demo takes no arguments, got {rest:?}");
            }
            tasks::demo(&workspace::Workspace::locate()?)
        }
        "bench" => {
            let quick = match rest {
                [] => false,
                [flag] if flag == "--quick" => true,
                _ => bail!("bench accepts only --quick, got {rest:?}"),
            };
            tasks::bench(&workspace::Workspace::locate()?, quick)
        }
        "screenshot" => {
            let ws = workspace::Workspace::locate()?;
            let rt = runtime::setup(&ws)?;
            screenshot::panel_screenshot(&ws, &rt).map(|_| ())
        }
        "invariants" => invariants::check_all(&workspace::Workspace::locate()?),
        "daw" => {
            if !rest.is_empty() {
                bail!("daw takes no arguments, got {rest:?}");
            }
            let ws = workspace::Workspace::locate()?;
            let rt = runtime::setup(&ws)?;
            match daw::check(&ws, &rt)? {
                tasks::Step::Skipped(why) => bail!("DAW check did not run: {why}"),
                tasks::Step::Passed => Ok(()),
            }
        }
        "windows" => {
            if !rest.is_empty() {
                bail!("windows takes no arguments, got {rest:?}");
            }
            let ws = workspace::Workspace::locate()?;
            let rt = runtime::setup(&ws)?;
            match windows::check(&ws, &rt)? {
                tasks::Step::Skipped(why) => bail!("Windows check did not run: {why}"),
                tasks::Step::Passed => Ok(()),
            }
        }
        "eval" => match rest.first().map(String::as_str) {
            Some("continuation") => {
                let ws = workspace::Workspace::locate()?;
                let rt = runtime::setup(&ws)?;
                tasks::merge_continuation_metrics(&rt, &ws.root.join("models"))
            }
            _ => bail!("eval needs a target: `cargo xtask eval continuation`"),
        },
        "train" => match rest.split_first() {
            Some((model, script_args)) if model == "emotion" => {
                tasks::train_emotion(&workspace::Workspace::locate()?, script_args)
            }
            Some((model, script_args)) if model == "continuation" => {
                tasks::train_continuation(&workspace::Workspace::locate()?, script_args)
            }
            Some((model, _)) if model == "bridge" => tasks::train_bridge(&workspace::Workspace::locate()?),
            Some((model, _)) => bail!("train target '{model}' is unknown; use 'emotion', 'continuation' or 'bridge'"),
            None => bail!("train needs a target: `cargo xtask train emotion` or `cargo xtask train continuation`"),
        },
        "bundle-universal" | "known-packages" => {
            nice_plug_xtask::main_with_args("cargo xtask", args)
        }
        _ => bail!("xtask command '{command}' is unknown\n\n{USAGE}"),
    }
}
