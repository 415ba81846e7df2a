//! Workspace paths (root, cargo target directory) and a small helper that runs child processes
//! and reports what it ran.
//! Thread: any

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Where the workspace lives on disk. Locating it also changes the current directory to the root.
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

impl Workspace {
    /// Changes into the workspace root (nice-plug-xtask's heuristic) and resolves the target
    /// directory via `cargo metadata`, falling back to `$CARGO_TARGET_DIR` or `<root>/target`.
    pub fn locate() -> Result<Self> {
        nice_plug_xtask::chdir_workspace_root()?;
        let root =
            std::env::current_dir().context("workspace root: cannot read current directory")?;
        let target_dir = match metadata_target_dir(&root) {
            Ok(dir) => dir,
            Err(err) => {
                let fallback = fallback_target_dir(&root, std::env::var_os("CARGO_TARGET_DIR"));
                eprintln!(
                    "[xtask] warning: cargo metadata failed ({err:#}); using target dir {}",
                    fallback.display()
                );
                fallback
            }
        };
        Ok(Self { root, target_dir })
    }
}

fn metadata_target_dir(root: &Path) -> Result<PathBuf> {
    let output = Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .output()
        .context("cargo metadata: cannot start cargo")?;
    if !output.status.success() {
        bail!(
            "cargo metadata: exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata: output is not JSON")?;
    let dir = json
        .get("target_directory")
        .and_then(|v| v.as_str())
        .context("cargo metadata: output has no target_directory")?;
    Ok(PathBuf::from(dir))
}

fn fallback_target_dir(root: &Path, cargo_target_dir: Option<OsString>) -> PathBuf {
    match cargo_target_dir {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The cargo binary that runs us (`$CARGO` under `cargo run`), else `cargo` from `PATH`.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A new `cargo` command with the given arguments.
pub fn cargo_cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(cargo());
    cmd.args(args);
    cmd
}

/// Renders a command as a shell-like line for logs (env vars set on it come first).
pub fn describe(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    parts.push(program);
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// True when `tool` is an executable file in a folder of `PATH`.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Runs `cmd` with inherited stdio; fails naming `what` when it cannot start or exits non-zero.
pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("[xtask] $ {}", describe(cmd));
    let status = cmd.status().with_context(|| {
        format!(
            "{what}: cannot start {}",
            cmd.get_program().to_string_lossy()
        )
    })?;
    if !status.success() {
        bail!("{what}: exited with {status}");
    }
    Ok(())
}

/// Runs `cmd` with stdout captured (stderr inherited); fails like [`run`].
pub fn run_capture(what: &str, cmd: &mut Command) -> Result<Output> {
    eprintln!("[xtask] $ {}", describe(cmd));
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| {
            format!(
                "{what}: cannot start {}",
                cmd.get_program().to_string_lossy()
            )
        })?;
    if !output.status.success() {
        bail!("{what}: exited with {}", output.status);
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_target_dir_defaults_to_root_target() {
        let root = Path::new("/ws");
        assert_eq!(fallback_target_dir(root, None), PathBuf::from("/ws/target"));
        assert_eq!(
            fallback_target_dir(root, Some("".into())),
            PathBuf::from("/ws/target")
        );
        assert_eq!(
            fallback_target_dir(root, Some("out".into())),
            PathBuf::from("/ws/out")
        );
        assert_eq!(
            fallback_target_dir(root, Some("/abs".into())),
            PathBuf::from("/abs")
        );
    }

    #[test]
    fn describe_shows_env_program_and_args() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.args(["build", "-p", "x"]).env("A", "1");
        assert_eq!(describe(&cmd), "A=1 cargo build -p x");
    }
}
