//! The lab: offline measurement (how the continuation obeys, how audio is heard), the training
//! exporters, and where the data sets are. Behind the cargo feature `lab`, so the plugin's binary
//! does not carry it; `moodfader lab …`, the xtask's training and the data-set tests use it.
//!
//! Thread: command line / tests (allocates, reads files, runs models; never the audio thread).

pub mod audio_eval;
pub mod evaluate;
pub mod export;
pub mod faithful;

/// Environment variable that `cargo xtask test` points at a file collecting the checks a test
/// skipped (one line each), so the run's summary can name them.
pub const SKIP_LOG_ENV: &str = "MOODFADER_SKIP_LOG";

/// Says loudly that a check did not run and why (for want of data, say), on stderr and, when
/// `cargo xtask test` runs the tests, into its skip log so the summary names it. Fails in CI, where
/// the data must be there.
pub fn skipped(check: &str, why: &str) {
    eprintln!("\n!!!!! {check} NOT CHECKED: {why} !!!!!\n");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{check}: {why}");
        }
    }
    assert!(std::env::var_os("CI").is_none(), "{check}: CI must have the data set ({why})");
}
