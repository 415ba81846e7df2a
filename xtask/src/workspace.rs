//! Workspace paths (root, cargo target directory) and a small helper that runs child processes
//! and reports what it ran.
//! Thread: any

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

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
    let mut cmd = cargo_cmd(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"]);
    cmd.arg(root.join("Cargo.toml"));
    let output = output_within("cargo metadata", &mut cmd, limit::QUERY)?;
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

/// How long a child of xtask may run before it is stopped and its step fails, by kind of work.
/// Every external process goes through [`run`], [`run_capture`] or [`output_within`], so nothing
/// xtask starts can wait for ever: a hang becomes an error that names the step.
pub mod limit {
    use std::time::Duration;
    /// A cargo build, bundle or test run (a cold debug build of the workspace takes ~6 min here;
    /// each test has its own, shorter limit from nextest, `.config/nextest.toml`).
    pub const CARGO: Duration = Duration::from_secs(40 * 60);
    /// A quick cargo query (`metadata`, `tree`), a compiler probe.
    pub const QUERY: Duration = Duration::from_secs(3 * 60);
    /// One run of our command line, a Wine program, a compiler call for a stand-in.
    pub const TOOL: Duration = Duration::from_secs(4 * 60);
    /// `wineboot --init` of a fresh prefix, the clack-host tests under Wine.
    pub const WINE_SESSION: Duration = Duration::from_secs(8 * 60);
    /// `pip download` / `pip install` (torch for training is ~540 MB).
    pub const PIP: Duration = Duration::from_secs(20 * 60);
    /// The DAW-engine script (DawDreamer and pedalboard on the test VST3).
    pub const SCRIPT: Duration = Duration::from_secs(10 * 60);
    /// A training run (the scripts bound themselves with `--minutes`; this is the backstop).
    pub const TRAINING: Duration = Duration::from_secs(12 * 60 * 60);
}

fn mmss(d: Duration) -> String {
    format!("{}:{:02}", d.as_secs() / 60, d.as_secs() % 60)
}

/// What to do with a child's stdout and stderr.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// Both inherited.
    None,
    /// stdout captured, stderr inherited.
    Stdout,
    /// Both captured.
    Both,
}

/// Starts `cmd` in a process group of its own and waits at most `limit` for it. On the limit the
/// whole group is killed (Wine, Xvfb and cargo start children of their own) and the error names
/// `what`. Captured streams go to files, not pipes: a daemon the child leaves behind (wineserver)
/// would hold a pipe open and its reader would wait for ever.
fn exec(what: &str, cmd: &mut Command, limit: Duration, capture: Capture) -> Result<Output> {
    let file = |name: &str| -> Result<std::fs::File> {
        tempfile::tempfile().with_context(|| format!("{what}: cannot make a temporary file for {name}"))
    };
    let out = if capture != Capture::None { Some(file("stdout")?) } else { None };
    let err = if capture == Capture::Both { Some(file("stderr")?) } else { None };
    if let Some(f) = &out {
        cmd.stdout(f.try_clone()?);
    }
    if let Some(f) = &err {
        cmd.stderr(f.try_clone()?);
    }
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: cannot start {}", cmd.get_program().to_string_lossy()))?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("{what}: cannot wait for it"))? {
            break status;
        }
        if started.elapsed() >= limit {
            kill_group(&mut child);
            bail!(
                "{what}: still running after its time limit of {} (min:s); stopped it and everything it started",
                mmss(limit)
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    let read = |f: Option<std::fs::File>| -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        if let Some(mut f) = f {
            f.seek(SeekFrom::Start(0))?;
            f.read_to_end(&mut bytes)?;
        }
        Ok(bytes)
    };
    Ok(Output { status, stdout: read(out)?, stderr: read(err)? })
}

/// Kills the child's process group (it leads one: see [`exec`]) and reaps the child.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        // SAFETY: killpg takes plain integers; the group id is the child's pid (process_group(0)).
        unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// "exited with exit status: 3", or for a crash "was killed by signal 11 (SIGSEGV)".
fn failure(status: &ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(status) {
        let name = match sig {
            4 => " (SIGILL)",
            6 => " (SIGABRT)",
            9 => " (SIGKILL)",
            11 => " (SIGSEGV)",
            _ => "",
        };
        return format!("was killed by signal {sig}{name}");
    }
    format!("exited with {status}")
}

/// Runs `cmd` with inherited stdio, for at most `limit`; fails naming `what` when it cannot start,
/// exits non-zero, crashes or runs out of time.
pub fn run(what: &str, cmd: &mut Command, limit: Duration) -> Result<()> {
    eprintln!("[xtask] $ {}  (limit {})", describe(cmd), mmss(limit));
    let out = exec(what, cmd, limit, Capture::None)?;
    if !out.status.success() {
        bail!("{what}: {}", failure(&out.status));
    }
    Ok(())
}

/// Runs `cmd` with stdout captured (stderr inherited); fails like [`run`].
pub fn run_capture(what: &str, cmd: &mut Command, limit: Duration) -> Result<Output> {
    eprintln!("[xtask] $ {}  (limit {})", describe(cmd), mmss(limit));
    let out = exec(what, cmd, limit, Capture::Stdout)?;
    if !out.status.success() {
        bail!("{what}: {}", failure(&out.status));
    }
    Ok(out)
}

/// Runs `cmd` quietly with both streams captured, for at most `limit`, and returns what it gave
/// whatever its exit status (for probes that read the failure themselves); fails only when it
/// cannot start or runs out of time.
pub fn output_within(what: &str, cmd: &mut Command, limit: Duration) -> Result<Output> {
    exec(what, cmd, limit, Capture::Both)
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

    #[test]
    fn a_child_that_never_exits_fails_its_step_by_name_in_seconds() {
        let started = Instant::now();
        let mut cmd = Command::new("sh");
        // A grandchild that would outlive the shell: the whole group goes.
        cmd.args(["-c", "sleep 600 & sleep 600"]);
        let err = run("the hanging step", &mut cmd, Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.contains("the hanging step") && err.contains("time limit"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    #[test]
    fn a_crashing_child_fails_its_step_by_name() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -SEGV $$"]);
        let err = run("the crashing step", &mut cmd, Duration::from_secs(30)).unwrap_err().to_string();
        assert!(err.contains("the crashing step") && err.contains("signal 11"), "{err}");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let err = run_capture("the failing step", &mut cmd, Duration::from_secs(30)).unwrap_err().to_string();
        assert!(err.contains("the failing step") && err.contains('3'), "{err}");
    }

    #[test]
    fn a_daemon_left_behind_does_not_hold_the_capture() {
        let started = Instant::now();
        let mut cmd = Command::new("sh");
        // Like wineserver: a child that keeps the stdout it inherited open long after.
        cmd.args(["-c", "sleep 600 & echo $!"]);
        let out = run_capture("the daemon step", &mut cmd, Duration::from_secs(30)).unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // SAFETY: plain integers; the test's own grandchild.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    #[test]
    fn output_within_returns_both_streams_of_a_failure() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 1"]);
        let out = output_within("probe", &mut cmd, Duration::from_secs(30)).unwrap();
        assert!(!out.status.success());
        assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    }
}
