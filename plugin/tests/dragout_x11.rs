//! MIDI drag-out's XDND source under a real X server (Xvfb), against an XDND drop target written
//! here from the spec, with the pointer and keyboard driven through XTEST as a user's would be:
//! - pressed on a stand-in for the panel (which then holds the implicit pointer grab, as
//!   baseview's window does) and released over the target: the target receives the file's URI
//!   through `text/uri-list` and the source reports the drop;
//! - Escape during the drag: the target is left, nothing is dropped;
//! - released over the bare root window: no target, nothing sent.
//!
//! Needs Xvfb (CI installs it); without it the test says so on stderr and, outside CI, passes.
//!
//! Thread: test thread, plus the target's thread and the drag's own.
#![cfg(target_os = "linux")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moodfader::dragout::{DragOutcome, x11 as drag};
use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, PropMode, Window, WindowClass,
};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

x11rb::atom_manager! {
    Atoms: AtomsCookie {
        XdndAware, XdndEnter, XdndPosition, XdndStatus, XdndLeave, XdndDrop, XdndFinished,
        XdndSelection, XdndActionCopy, MOODFADER_DROP,
        UriList: b"text/uri-list",
    }
}

struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    /// SIGTERM, so the server removes its lock file and socket (a SIGKILLed one leaves both
    /// behind, and on a machine whose /tmp outlives the run they pile up); SIGKILL if it has
    /// not gone within 5 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Xvfb on a display it chose itself (`-displayfd`: the server takes the first free display
/// number, clearing stale locks, and writes it once it accepts connections); `None` (said on
/// stderr) without Xvfb outside CI. `-noreset`: otherwise the server resets when its last client
/// leaves, and the next connection is refused while it does.
fn xvfb() -> Option<Xvfb> {
    let on_path = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("Xvfb").is_file()));
    if !on_path {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI has no Xvfb");
        eprintln!("dragout_x11: NOT RUN, Xvfb is not installed (apt install xvfb)");
        return None;
    }
    let mut child = Command::new("Xvfb")
        .args(["-displayfd", "1", "-screen", "0", "800x600x24", "-nolisten", "tcp", "-noreset"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting Xvfb");
    let stdout = child.stdout.take().expect("Xvfb's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let mut x = Xvfb { child, display: String::new() };
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let n: u32 = line.trim().parse().unwrap_or_else(|_| panic!("Xvfb -displayfd wrote no display number within 20 s (got {line:?})"));
    x.display = format!(":{n}");
    let started = Instant::now();
    while x11rb::connect(Some(&x.display)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "Xvfb on {} took no connection within 10 s", x.display);
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(x)
}

/// What the drop target saw.
#[derive(Debug, Default)]
struct Seen {
    entered: bool,
    positions: u32,
    left: bool,
    dropped: Option<String>,
}

/// A top-level window that takes XDND drops of `text/uri-list`, on its own connection and thread,
/// until it has taken one or `stop` is set.
fn target(display: &str, x: i16, y: i16, stop: Arc<AtomicBool>) -> (Window, std::thread::JoinHandle<Seen>) {
    let (conn, screen) = x11rb::connect(Some(display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let atoms = Atoms::new(&conn).unwrap().reply().unwrap();
    let win = conn.generate_id().unwrap();
    conn.create_window(0, win, root, x, y, 300, 300, 0, WindowClass::INPUT_OUTPUT, 0, &CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE))
        .unwrap();
    conn.change_property32(PropMode::REPLACE, win, atoms.XdndAware, AtomEnum::ATOM, &[5]).unwrap();
    conn.map_window(win).unwrap();
    conn.sync().unwrap();
    let handle = std::thread::spawn(move || {
        let mut seen = Seen::default();
        let mut source = 0;
        let started = Instant::now();
        while !stop.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(30) && seen.dropped.is_none() {
            let Some(event) = conn.poll_for_event().unwrap() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            match event {
                Event::ClientMessage(m) => {
                    let d = m.data.as_data32();
                    let reply = |kind: u32, data: [u32; 5]| {
                        let e = ClientMessageEvent::new(32, d[0], kind, data);
                        conn.send_event(false, d[0], EventMask::NO_EVENT, e).unwrap();
                        conn.flush().unwrap();
                    };
                    if m.type_ == atoms.XdndEnter {
                        assert_eq!(d[2], atoms.UriList, "the source offers text/uri-list first");
                        assert_eq!(d[1] >> 24, 5, "XDND version 5");
                        seen.entered = true;
                        source = d[0];
                    } else if m.type_ == atoms.XdndPosition {
                        assert_eq!(d[0], source);
                        seen.positions += 1;
                        reply(atoms.XdndStatus, [win, 1, 0, 0, atoms.XdndActionCopy]);
                    } else if m.type_ == atoms.XdndLeave {
                        seen.left = true;
                    } else if m.type_ == atoms.XdndDrop {
                        conn.convert_selection(win, atoms.XdndSelection, atoms.UriList, atoms.MOODFADER_DROP, d[2]).unwrap();
                        conn.flush().unwrap();
                    }
                }
                Event::SelectionNotify(n) if n.requestor == win => {
                    assert_ne!(n.property, x11rb::NONE, "the source refused text/uri-list");
                    let p = conn.get_property(true, win, atoms.MOODFADER_DROP, atoms.UriList, 0, 1 << 16).unwrap().reply().unwrap();
                    seen.dropped = Some(String::from_utf8_lossy(&p.value).into_owned());
                    let e = ClientMessageEvent::new(32, source, atoms.XdndFinished, [win, 1, atoms.XdndActionCopy, 0, 0]);
                    conn.send_event(false, source, EventMask::NO_EVENT, e).unwrap();
                    conn.flush().unwrap();
                }
                _ => {}
            }
        }
        // A round trip before the connection closes: closed with events unread, the socket is
        // reset and the server may drop what it had not handled yet (XdndFinished).
        conn.sync().unwrap();
        seen
    });
    (win, handle)
}

/// The user's hand: XTEST on a connection of its own.
struct Hand {
    conn: RustConnection,
    root: Window,
}

impl Hand {
    fn new(display: &str) -> Self {
        let (conn, screen) = x11rb::connect(Some(display)).unwrap();
        let root = conn.setup().roots[screen].root;
        Self { conn, root }
    }

    fn input(&self, kind: u8, detail: u8, x: i16, y: i16) {
        self.conn.xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0).unwrap();
        self.conn.sync().unwrap();
    }

    fn move_to(&self, x: i16, y: i16) {
        self.input(x11rb::protocol::xproto::MOTION_NOTIFY_EVENT, 0, x, y);
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Moves in steps from (x0, y0) to (x1, y1), as a hand does.
    fn glide(&self, from: (i16, i16), to: (i16, i16)) {
        for k in 1..=12 {
            let f = k as f32 / 12.0;
            self.move_to(from.0 + ((to.0 - from.0) as f32 * f) as i16, from.1 + ((to.1 - from.1) as f32 * f) as i16);
        }
    }

    fn button(&self, down: bool) {
        use x11rb::protocol::xproto::{BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT};
        self.input(if down { BUTTON_PRESS_EVENT } else { BUTTON_RELEASE_EVENT }, 1, 0, 0);
    }

    fn escape(&self) {
        use x11rb::protocol::xproto::{KEY_PRESS_EVENT, KEY_RELEASE_EVENT};
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let map = self.conn.get_keyboard_mapping(min, max - min + 1).unwrap().reply().unwrap();
        let per = map.keysyms_per_keycode.max(1) as usize;
        let code = min + map.keysyms.chunks(per).position(|s| s.contains(&0xff1b)).expect("no Escape key") as u8;
        self.input(KEY_PRESS_EVENT, code, 0, 0);
        self.input(KEY_RELEASE_EVENT, code, 0, 0);
    }
}

/// A stand-in for the panel: a mapped window that takes button presses, so a press on it gives
/// its connection the implicit pointer grab, as baseview's window has during a real drag.
fn panel(display: &str) -> RustConnection {
    let (conn, screen) = x11rb::connect(Some(display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let win = conn.generate_id().unwrap();
    let mask = EventMask::BUTTON_PRESS | EventMask::BUTTON_RELEASE | EventMask::POINTER_MOTION;
    conn.create_window(0, win, root, 0, 0, 300, 300, 0, WindowClass::INPUT_OUTPUT, 0, &CreateWindowAux::new().event_mask(mask)).unwrap();
    conn.map_window(win).unwrap();
    conn.sync().unwrap();
    conn
}

fn wait(handle: drag::DragHandle) -> DragOutcome {
    let started = Instant::now();
    while !handle.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(30), "the drag did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.wait()
}

const URI: &str = "file:///tmp/moodfader%20drag/moodfader-continuation-0123456789ab.mid";

#[test]
fn a_drag_drops_the_uri_escape_cancels_and_the_desktop_takes_nothing() {
    let Some(x) = xvfb() else { return };
    let d = x.display.clone();
    let _panel = panel(&d);
    let hand = Hand::new(&d);

    // Pressed on the panel, the drag started, carried over the target.
    let over_target = || {
        let stop = Arc::new(AtomicBool::new(false));
        let (_win, seen) = target(&d, 400, 100, stop.clone());
        hand.move_to(100, 100);
        hand.button(true);
        let drag = drag::start(URI.to_string(), Some(d.clone())).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        hand.glide((100, 100), (550, 250));
        std::thread::sleep(Duration::from_millis(200));
        (drag, seen, stop)
    };

    // Dropped on the target.
    let (drag, seen, _stop) = over_target();
    hand.button(false);
    assert_eq!(wait(drag), DragOutcome::Dropped);
    let seen = seen.join().unwrap();
    assert!(seen.entered && seen.positions >= 1, "{seen:?}");
    assert_eq!(seen.dropped.as_deref(), Some(format!("{URI}\r\n").as_str()));

    // Escape over the target: left, not dropped.
    let (drag, seen, stop) = over_target();
    hand.escape();
    assert_eq!(wait(drag), DragOutcome::Cancelled);
    hand.button(false);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let seen = seen.join().unwrap();
    assert!(seen.entered && seen.left && seen.dropped.is_none(), "{seen:?}");

    // Released over the bare root window.
    hand.move_to(100, 100);
    hand.button(true);
    let drag = drag::start(URI.to_string(), Some(d.clone())).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    hand.glide((100, 100), (200, 500));
    hand.button(false);
    assert_eq!(wait(drag), DragOutcome::NoTarget);
}
