//! Timeout guard for plugin tests: [`run_guarded`] runs a test body on a fresh thread (which then
//! is the CLAP "main thread", since `PluginInstance` is not `Send`) and fails the calling test
//! when the body exceeds its overall wall-clock limit, or when the current phase (set with
//! [`set_phase`]) exceeds its own deadline. A hung plugin therefore fails the test with a message
//! naming the phase (e.g. "shutdown: deactivate") instead of hanging `cargo test` forever.
//!
//! Thread: any ([`set_phase`] affects the guard of the calling thread, if any).

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct Phase {
    name: String,
    started: Instant,
    deadline: Option<Duration>,
}

type SharedPhase = Arc<Mutex<Phase>>;

thread_local! {
    static CURRENT: RefCell<Option<SharedPhase>> = const { RefCell::new(None) };
}

/// Writes a line straight to the process's stderr, bypassing libtest's output capture, so it is
/// still visible when the process aborts (e.g. when nice-plug's `assert_process_allocs` catches an
/// allocation in `process()` and the panic aborts at the `extern "C"` boundary).
pub fn breadcrumb(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "[moodfader-tests] {message}");
}

/// Names what the guarded thread is doing now; with `deadline`, the guard fails the test if this
/// phase lasts longer than that. Outside [`run_guarded`] this is a no-op.
pub fn set_phase(name: &str, deadline: Option<Duration>) {
    CURRENT.with(|c| {
        if let Some(shared) = c.borrow().as_ref() {
            let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
            p.name = name.to_string();
            p.started = Instant::now();
            p.deadline = deadline;
        }
    });
}

/// Runs `body` on a new thread named `name` and returns its result. Panics in `body` are
/// re-raised here. Fails (panics) if `body` takes longer than `limit` overall, or if a phase set
/// with a deadline overruns; the stuck thread is then abandoned (the test process exits when the
/// test harness finishes).
pub fn run_guarded<R, F>(name: &str, limit: Duration, body: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let phase: SharedPhase = Arc::new(Mutex::new(Phase {
        name: "start".to_string(),
        started: Instant::now(),
        deadline: None,
    }));
    let (tx, rx) = mpsc::channel::<R>();
    let thread_phase = Arc::clone(&phase);
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            CURRENT.with(|c| *c.borrow_mut() = Some(thread_phase));
            let result = body();
            let _ = tx.send(result);
        })
        .expect("spawning the guarded test thread");

    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => {
                let _ = handle.join();
                return result;
            }
            Err(RecvTimeoutError::Disconnected) => {
                // The body panicked: surface its panic as our own.
                match handle.join() {
                    Err(payload) => std::panic::resume_unwind(payload),
                    Ok(()) => panic!("{name}: guarded thread ended without a result"),
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let p = phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(deadline) = p.deadline
                    && p.started.elapsed() > deadline
                {
                    panic!(
                        "{name}: phase '{}' did not finish within {:?} (hung for {:.1} s) \
                         -- the plugin hangs there",
                        p.name,
                        deadline,
                        p.started.elapsed().as_secs_f64()
                    );
                }
                if start.elapsed() > limit {
                    panic!(
                        "{name}: test exceeded its {:?} limit; it was in phase '{}' for {:.1} s",
                        limit,
                        p.name,
                        p.started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
}
