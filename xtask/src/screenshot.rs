//! `cargo xtask test`'s panel check, as a person would do it: start the standalone app under a
//! virtual X server (Xvfb), take a screenshot (ImageMagick `import`), and check that the panel
//! drew: not blank, the pad where it belongs (its panel colour, the orange target ring at its
//! centre), the eight attribute faders (their blue fills), and the piano roll. The screenshot is
//! kept in `target/screenshots/panel.png` (the README's picture is taken this way).
//!
//! Thread: any (the xtask's main thread; Xvfb and the app are child processes)

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::runtime::Runtime;
use crate::tasks::Step;
use crate::workspace::{self, Workspace, cargo_cmd, limit, on_path};

const PANEL: [u8; 3] = [0x20, 0x23, 0x2a];
const TARGET: [u8; 3] = [0xf2, 0xa6, 0x3b];

/// An RGB image from a binary PPM (P6, maxval 255).
struct Image {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Image {
    fn from_ppm(bytes: &[u8]) -> Result<Image> {
        // Header: "P6" whitespace width whitespace height whitespace maxval single-whitespace.
        let mut fields = Vec::new();
        let mut i = 0;
        while fields.len() < 4 && i < bytes.len() {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
        }
        i += 1;
        if fields.len() < 4 || fields[0] != "P6" || fields[3] != "255" {
            bail!("screenshot is not an 8-bit binary PPM: header {fields:?}");
        }
        let (w, h): (usize, usize) = (fields[1].parse()?, fields[2].parse()?);
        let rgb = bytes.get(i..i + w * h * 3).context("screenshot PPM is truncated")?.to_vec();
        Ok(Image { w, h, rgb })
    }

    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        let o = (y.min(self.h - 1) * self.w + x.min(self.w - 1)) * 3;
        [self.rgb[o], self.rgb[o + 1], self.rgb[o + 2]]
    }

    /// Fraction of pixels in the rectangle for which `f` holds.
    fn fraction(&self, x0: usize, y0: usize, x1: usize, y1: usize, f: impl Fn([u8; 3]) -> bool) -> f64 {
        let mut n = 0usize;
        let mut hit = 0usize;
        for y in y0..y1 {
            for x in x0..x1 {
                n += 1;
                hit += f(self.px(x, y)) as usize;
            }
        }
        hit as f64 / n.max(1) as f64
    }
}

fn near(c: [u8; 3], want: [u8; 3], tol: i32) -> bool {
    (0..3).all(|k| (c[k] as i32 - want[k] as i32).abs() <= tol)
}

/// What is wrong with a screenshot of the panel (window at the screen's top left), if anything.
fn check(img: &Image) -> Vec<String> {
    let mut problems = Vec::new();
    if img.w < 960 || img.h < 700 {
        problems.push(format!("screen {}x{} is smaller than the 960x700 panel", img.w, img.h));
        return problems;
    }
    let mut colours = std::collections::HashSet::new();
    for y in (0..700).step_by(3) {
        for x in (0..960).step_by(3) {
            colours.insert(img.px(x, y));
        }
    }
    if colours.len() < 50 {
        problems.push(format!("the panel looks blank ({} distinct colours)", colours.len()));
    }
    let pad = img.fraction(20, 50, 428, 458, |c| near(c, PANEL, 4));
    if pad < 0.6 {
        problems.push(format!("the pad is not where it belongs (only {:.0}% of its area has the pad colour)", pad * 100.0));
    }
    let ring = img.fraction(200, 230, 250, 280, |c| near(c, TARGET, 40));
    if ring < 0.01 {
        problems.push("no orange target ring at the pad's centre".into());
    }
    let fills = img.fraction(458, 60, 860, 215, |c| c[2] as i32 > c[0] as i32 + 40 && c[2] as i32 > c[1] as i32 + 20);
    if fills < 0.05 {
        problems.push(format!("the attribute faders are missing (blue fill on {:.1}% of their area)", fills * 100.0));
    }
    let roll = img.fraction(20, 480, 940, 580, |c| near(c, PANEL, 4));
    if roll < 0.5 {
        problems.push(format!("the piano roll is missing ({:.0}% of its area has the panel colour)", roll * 100.0));
    }
    problems
}

/// A child stopped on drop: SIGTERM first, so an X server removes its lock file and socket (a
/// SIGKILLed one leaves both behind, and on a machine whose /tmp outlives the run they pile up
/// until no display number is free); SIGKILL if it has not gone within 5 s.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(5) {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long Xvfb may take to say which display it took.
const XVFB_START_LIMIT: Duration = Duration::from_secs(20);

/// An Xvfb on a display it chose itself: with `-displayfd` the server takes the first free
/// display number (clearing stale locks) and writes it once it accepts connections.
fn start_xvfb() -> Result<(Killed, String)> {
    let mut child = Command::new("Xvfb")
        .args(["-displayfd", "1", "-screen", "0", "1100x800x24", "-nolisten", "tcp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting Xvfb")?;
    let stdout = child.stdout.take().context("Xvfb's stdout is not piped")?;
    let xvfb = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(XVFB_START_LIMIT).unwrap_or_default();
    let n: u32 = line.trim().parse().map_err(|_| {
        anyhow::anyhow!("Xvfb -displayfd wrote no display number within {} s (got {line:?})", XVFB_START_LIMIT.as_secs())
    })?;
    Ok((xvfb, format!(":{n}")))
}

/// How long one `import` of the screen may take.
const SCREENSHOT_LIMIT: Duration = Duration::from_secs(30);

/// The panel check; `Step::Skipped` with a loud message when Xvfb or ImageMagick is missing
/// outside CI (in CI that is a failure).
pub fn panel_screenshot(ws: &Workspace, rt: &Runtime) -> Result<Step> {
    for tool in ["Xvfb", "import"] {
        if !on_path(tool) {
            let msg = format!("{tool} not found: install the xvfb and imagemagick packages (CI installs them)");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                bail!("{msg}");
            }
            eprintln!("[xtask] WARNING: panel screenshot check SKIPPED: {msg}");
            return Ok(Step::Skipped(msg));
        }
    }
    let mut build = cargo_cmd(["build", "-p", "moodfader", "--features", "standalone", "--bin", "moodfader-standalone"]);
    workspace::run("cargo build moodfader-standalone", &mut build, limit::CARGO)?;
    let app: PathBuf = ws.target_dir.join("debug").join("moodfader-standalone");

    let (xvfb, display) = start_xvfb()?;
    let _app = Killed(
        Command::new(&app)
            .args(["--backend", "dummy"])
            .env("DISPLAY", &display)
            .env("MOODFADER_ORT_DYLIB", &rt.ort_lib)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", app.display()))?,
    );
    let started = Instant::now();
    let mut last = vec!["no screenshot taken".to_string()];
    while started.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_secs(2));
        let mut grab = Command::new("import");
        grab.args(["-display", &display, "-window", "root", "-depth", "8", "ppm:-"]);
        let out = workspace::output_within("import (screenshot of the Xvfb display)", &mut grab, SCREENSHOT_LIMIT)?;
        if !out.status.success() {
            last = vec![format!("import failed: {}", String::from_utf8_lossy(&out.stderr).trim())];
            continue;
        }
        let img = Image::from_ppm(&out.stdout)?;
        last = check(&img);
        if last.is_empty() {
            let dir = ws.target_dir.join("screenshots");
            std::fs::create_dir_all(&dir)?;
            let png = dir.join("panel.png");
            let mut save = Command::new("import");
            save.args(["-display", &display, "-window", "root", "-crop", "960x700+0+0", "+repage"]).arg(&png);
            workspace::run(&format!("import (saving {})", png.display()), &mut save, SCREENSHOT_LIMIT)?;
            println!("[xtask] panel screenshot: the pad, the faders and the piano roll drew; saved {}", png.display());
            drop(xvfb);
            return Ok(Step::Passed);
        }
    }
    bail!("the standalone panel did not draw as expected within 40 s: {}", last.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_screen_fails_every_check() {
        let (w, h) = (1000, 720);
        let mut bytes = format!("P6\n{w} {h}\n255\n").into_bytes();
        bytes.extend(std::iter::repeat_n(0u8, w * h * 3));
        let img = Image::from_ppm(&bytes).unwrap();
        let problems = check(&img);
        assert!(problems.iter().any(|p| p.contains("blank")) && problems.iter().any(|p| p.contains("pad")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("faders")) && problems.iter().any(|p| p.contains("roll")));
    }
}
