//! An XDND (version 5) drag source on its own X connection and thread.
//!
//! baseview implements XDND only as a drop target, and its event loop ignores the
//! `SelectionRequest`s and the `XdndStatus`/`XdndFinished` messages a source must answer, so the
//! drag runs beside it: an unmapped window of our own owns `XdndSelection` and offers
//! `text/uri-list` (and `TARGETS`).
//!
//! While the mouse button is down, baseview's connection holds the implicit pointer grab, so
//! another connection cannot grab the pointer. The source therefore polls `QueryPointer` for the
//! position and the button, grabs the keyboard (Escape cancels), and shows the drag cursor by
//! setting it on the window under the pointer when the drag starts (the panel's, which holds the
//! grab, so its cursor is the one shown wherever the pointer goes).
//!
//! The sequence (freedesktop.org's XDND spec):
//! - the target is the first window with `XdndAware` walking down from the root under the
//!   pointer (`TranslateCoordinates`), its messages going to its `XdndProxy` if it names one;
//! - `XdndEnter` when the pointer reaches a target, `XdndLeave` when it leaves it;
//! - `XdndPosition` only after the target answered the previous one with `XdndStatus`;
//! - on release, `XdndDrop` if the target accepted, else `XdndLeave`; then wait for
//!   `XdndFinished`, answering the target's `SelectionRequest`s meanwhile;
//! - the selection's ownership time is the server time taken when the drag starts, never later
//!   than the drop's.
//!
//! No `unwrap` and no panic path: every X error ends the drag as [`DragOutcome::Failed`].
//!
//! Thread: [`start`] on the GUI thread; the drag on a thread of its own.

use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AtomEnum, ChangeWindowAttributesAux, ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, GrabMode,
    GrabStatus, KeyButMask, PropMode, SelectionNotifyEvent, SelectionRequestEvent, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::{CURRENT_TIME, NONE};

use super::DragOutcome;

x11rb::atom_manager! {
    /// The atoms of the XDND protocol the source uses.
    pub Atoms: AtomsCookie {
        XdndAware,
        XdndProxy,
        XdndEnter,
        XdndPosition,
        XdndStatus,
        XdndLeave,
        XdndDrop,
        XdndFinished,
        XdndSelection,
        XdndActionCopy,
        XdndTypeList,
        TARGETS,
        UTF8_STRING,
        MOODFADER_TIME,
        UriList: b"text/uri-list",
    }
}

/// The XDND version the source speaks.
const XDND_VERSION: u32 = 5;
/// How often the pointer is polled.
const POLL: Duration = Duration::from_millis(8);
/// The longest a drag may last before it is cancelled (a stuck button, a lost release).
const MAX_DRAG: Duration = Duration::from_secs(120);
/// How long to wait for the target's `XdndStatus` after release, and for `XdndFinished` after the drop.
const STATUS_WAIT: Duration = Duration::from_millis(500);
const FINISH_WAIT: Duration = Duration::from_secs(10);
/// The cursor font's "hand2" glyph (and its mask, the next glyph): the drag cursor.
const HAND_GLYPH: u16 = 60;
/// The Escape keysym.
const XK_ESCAPE: u32 = 0xff1b;

/// A running drag: [`DragHandle::wait`] for how it ended.
pub struct DragHandle(std::thread::JoinHandle<DragOutcome>);

impl DragHandle {
    /// Whether the drag is over (the panel polls this; never blocks).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits for the drag to end and says how.
    pub fn wait(self) -> DragOutcome {
        self.0.join().unwrap_or_else(|_| DragOutcome::Failed("the drag thread stopped unexpectedly".into()))
    }
}

/// Starts dragging `uri` (one `file://` URI) from where the pointer is, with the mouse button
/// that is down now, on `display` (`None`: `$DISPLAY`). Returns at once; the drag runs on its own
/// thread and connection.
pub fn start(uri: String, display: Option<String>) -> Result<DragHandle, String> {
    let (conn, screen) = x11rb::connect(display.as_deref()).map_err(|e| format!("drag: cannot reach the X display: {e}"))?;
    std::thread::Builder::new()
        .name("moodfader-drag".into())
        .spawn(move || match Source::new(conn, screen, uri) {
            Ok(mut s) => {
                let outcome = s.run().unwrap_or_else(|e| DragOutcome::Failed(format!("drag: {e}")));
                s.close();
                outcome
            }
            Err(e) => DragOutcome::Failed(format!("drag: {e}")),
        })
        .map(DragHandle)
        .map_err(|e| format!("drag: cannot start its thread: {e}"))
}

type XResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Where the pointer's drop would go: the window with `XdndAware`, where its messages go (its
/// proxy or itself), and the version to speak.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Target {
    window: Window,
    send_to: Window,
    version: u32,
}

struct Source {
    conn: RustConnection,
    atoms: Atoms,
    root: Window,
    window: Window,
    uri: String,
    time: u32,
    escape: Option<u8>,
    keyboard_grabbed: bool,
    /// The window whose cursor was set to the drag cursor, and the cursor.
    cursor_on: Option<(Window, u32)>,
}

impl Source {
    fn new(conn: RustConnection, screen: usize, uri: String) -> XResult<Self> {
        let root = conn.setup().roots.get(screen).ok_or("no such screen")?.root;
        let atoms = Atoms::new(&conn)?.reply()?;
        let window = conn.generate_id()?;
        conn.create_window(
            0,
            window,
            root,
            -10,
            -10,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE),
        )?;
        let mut s = Self { conn, atoms, root, window, uri, time: CURRENT_TIME, escape: None, keyboard_grabbed: false, cursor_on: None };
        s.time = s.server_time()?;
        s.conn.set_selection_owner(s.window, s.atoms.XdndSelection, s.time)?;
        s.conn.change_property32(PropMode::REPLACE, s.window, s.atoms.XdndTypeList, AtomEnum::ATOM, &[s.atoms.UriList])?;
        let owner = s.conn.get_selection_owner(s.atoms.XdndSelection)?.reply()?.owner;
        if owner != s.window {
            return Err("another client holds the drag selection".into());
        }
        s.escape = s.escape_keycode().ok().flatten();
        s.keyboard_grabbed = s.escape.is_some()
            && s.conn.grab_keyboard(false, s.root, s.time, GrabMode::ASYNC, GrabMode::ASYNC)?.reply()?.status == GrabStatus::SUCCESS;
        s.show_drag_cursor();
        s.conn.flush()?;
        Ok(s)
    }

    /// A server timestamp: a property change on our window and the time its event carries.
    fn server_time(&self) -> XResult<u32> {
        self.conn.change_property8(PropMode::APPEND, self.window, self.atoms.MOODFADER_TIME, AtomEnum::STRING, &[])?;
        self.conn.flush()?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            match self.conn.poll_for_event()? {
                Some(Event::PropertyNotify(e)) if e.window == self.window => return Ok(e.time),
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        Err("the X server sent no timestamp".into())
    }

    fn escape_keycode(&self) -> XResult<Option<u8>> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let map = self.conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
        let per = map.keysyms_per_keycode.max(1) as usize;
        Ok(map.keysyms.chunks(per).position(|syms| syms.contains(&XK_ESCAPE)).map(|i| min + i as u8))
    }

    /// Sets the drag cursor on the window under the pointer (the panel's, holding the grab).
    fn show_drag_cursor(&mut self) {
        let set = || -> XResult<(Window, u32)> {
            let mut w = self.root;
            let p = self.conn.query_pointer(self.root)?.reply()?;
            loop {
                let t = self.conn.translate_coordinates(self.root, w, p.root_x, p.root_y)?.reply()?;
                if t.child == NONE {
                    break;
                }
                w = t.child;
            }
            if w == self.root {
                return Err("no window under the pointer".into());
            }
            let font = self.conn.generate_id()?;
            self.conn.open_font(font, b"cursor")?;
            let cursor = self.conn.generate_id()?;
            self.conn.create_glyph_cursor(cursor, font, font, HAND_GLYPH, HAND_GLYPH + 1, 0, 0, 0, 0xffff, 0xffff, 0xffff)?;
            self.conn.close_font(font)?;
            self.conn.change_window_attributes(w, &ChangeWindowAttributesAux::new().cursor(cursor))?;
            Ok((w, cursor))
        };
        self.cursor_on = set().ok();
    }

    /// The XDND target under the root position (x, y), if any.
    fn target_at(&self, x: i16, y: i16) -> XResult<Option<Target>> {
        let mut w = self.root;
        for _ in 0..64 {
            let t = self.conn.translate_coordinates(self.root, w, x, y)?.reply()?;
            if t.child == NONE {
                return Ok(None);
            }
            w = t.child;
            let aware = self.conn.get_property(false, w, self.atoms.XdndAware, AtomEnum::ATOM, 0, 1)?.reply()?;
            if let Some(version) = aware.value32().and_then(|mut v| v.next()) {
                if version < 3 {
                    return Ok(None);
                }
                let proxy = self.conn.get_property(false, w, self.atoms.XdndProxy, AtomEnum::WINDOW, 0, 1)?.reply()?;
                let send_to = proxy.value32().and_then(|mut v| v.next()).filter(|&p| p != NONE).unwrap_or(w);
                return Ok(Some(Target { window: w, send_to, version: version.min(XDND_VERSION) }));
            }
        }
        Ok(None)
    }

    fn send(&self, target: &Target, kind: u32, data: [u32; 5]) -> XResult<()> {
        let event = ClientMessageEvent::new(32, target.window, kind, data);
        self.conn.send_event(false, target.send_to, EventMask::NO_EVENT, event)?;
        Ok(())
    }

    fn enter(&self, t: &Target) -> XResult<()> {
        self.send(t, self.atoms.XdndEnter, [self.window, t.version << 24, self.atoms.UriList, 0, 0])
    }

    fn position(&self, t: &Target, x: i16, y: i16) -> XResult<()> {
        let at = ((x as u16 as u32) << 16) | y as u16 as u32;
        self.send(t, self.atoms.XdndPosition, [self.window, 0, at, self.time, self.atoms.XdndActionCopy])
    }

    fn leave(&self, t: &Target) -> XResult<()> {
        self.send(t, self.atoms.XdndLeave, [self.window, 0, 0, 0, 0])
    }

    fn drop_on(&self, t: &Target) -> XResult<()> {
        self.send(t, self.atoms.XdndDrop, [self.window, 0, self.time, 0, 0])
    }

    /// Answers a request for the selection: the URI list, or the targets we offer.
    fn answer(&self, req: &SelectionRequestEvent) -> XResult<()> {
        let property = if req.property == NONE { req.target } else { req.property };
        let given = if req.selection != self.atoms.XdndSelection {
            NONE
        } else if req.target == self.atoms.UriList {
            let text = format!("{}\r\n", self.uri);
            self.conn.change_property8(PropMode::REPLACE, req.requestor, property, self.atoms.UriList, text.as_bytes())?;
            property
        } else if req.target == self.atoms.TARGETS {
            self.conn.change_property32(PropMode::REPLACE, req.requestor, property, AtomEnum::ATOM, &[self.atoms.TARGETS, self.atoms.UriList])?;
            property
        } else {
            NONE
        };
        let notify = SelectionNotifyEvent {
            response_type: x11rb::protocol::xproto::SELECTION_NOTIFY_EVENT,
            sequence: 0,
            time: req.time,
            requestor: req.requestor,
            selection: req.selection,
            target: req.target,
            property: given,
        };
        self.conn.send_event(false, req.requestor, EventMask::NO_EVENT, notify)?;
        self.conn.flush()?;
        Ok(())
    }

    /// Handles what arrived; returns (status seen for the current target: accepted?, finished,
    /// escape pressed).
    fn pump(&self, current: Option<&Target>) -> XResult<(Option<bool>, bool, bool)> {
        let (mut status, mut finished, mut escape) = (None, false, false);
        while let Some(event) = self.conn.poll_for_event()? {
            match event {
                Event::ClientMessage(m) if m.format == 32 => {
                    let d = m.data.as_data32();
                    if m.type_ == self.atoms.XdndStatus && current.is_some_and(|t| t.window == d[0]) {
                        status = Some(d[1] & 1 == 1);
                    } else if m.type_ == self.atoms.XdndFinished && current.is_some_and(|t| t.window == d[0]) {
                        finished = true;
                    }
                }
                Event::SelectionRequest(req) => self.answer(&req)?,
                Event::KeyPress(k) if Some(k.detail) == self.escape => escape = true,
                _ => {}
            }
        }
        Ok((status, finished, escape))
    }

    fn run(&mut self) -> XResult<DragOutcome> {
        let started = Instant::now();
        let mut target: Option<Target> = None;
        // Whether the target answered our last position, and whether it accepts.
        let (mut awaiting, mut accepted) = (false, false);
        let mut last: Option<(i16, i16)> = None;
        loop {
            let (status, _, escape) = self.pump(target.as_ref())?;
            if let Some(a) = status {
                awaiting = false;
                accepted = a;
            }
            if escape || started.elapsed() > MAX_DRAG {
                if let Some(t) = &target {
                    self.leave(t)?;
                }
                self.conn.flush()?;
                return Ok(DragOutcome::Cancelled);
            }
            let p = self.conn.query_pointer(self.root)?.reply()?;
            let buttons = KeyButMask::BUTTON1 | KeyButMask::BUTTON2 | KeyButMask::BUTTON3;
            if u16::from(p.mask) & u16::from(buttons) == 0 {
                return self.release(target, awaiting, accepted);
            }
            let here = (p.root_x, p.root_y);
            if last != Some(here) || (target.is_some() && !awaiting) {
                let under = self.target_at(here.0, here.1)?;
                if under.map(|t| t.window) != target.map(|t| t.window) {
                    if let Some(t) = &target {
                        self.leave(t)?;
                    }
                    if let Some(t) = &under {
                        self.enter(t)?;
                    }
                    target = under;
                    (awaiting, accepted) = (false, false);
                }
                if let Some(t) = &target
                    && !awaiting
                    && last != Some(here)
                {
                    self.position(t, here.0, here.1)?;
                    awaiting = true;
                }
                last = Some(here);
                self.conn.flush()?;
            }
            std::thread::sleep(POLL);
        }
    }

    /// The button went up: drop if the target accepts (waiting briefly for its answer to our
    /// last position), then wait for it to finish.
    fn release(&self, target: Option<Target>, mut awaiting: bool, mut accepted: bool) -> XResult<DragOutcome> {
        let Some(t) = target else { return Ok(DragOutcome::NoTarget) };
        let waited = Instant::now();
        while awaiting && waited.elapsed() < STATUS_WAIT {
            if let (Some(a), _, _) = self.pump(Some(&t))? {
                awaiting = false;
                accepted = a;
            } else {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if !accepted {
            self.leave(&t)?;
            self.conn.flush()?;
            return Ok(DragOutcome::Cancelled);
        }
        self.drop_on(&t)?;
        self.conn.flush()?;
        let dropped = Instant::now();
        while dropped.elapsed() < FINISH_WAIT {
            let (_, finished, _) = self.pump(Some(&t))?;
            if finished {
                return Ok(DragOutcome::Dropped);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err("the target took the drop but never said it had finished".into())
    }

    /// Gives back the keyboard and the cursor, and the window.
    fn close(&mut self) {
        if self.keyboard_grabbed {
            let _ = self.conn.ungrab_keyboard(CURRENT_TIME);
        }
        if let Some((w, cursor)) = self.cursor_on.take() {
            let _ = self.conn.change_window_attributes(w, &ChangeWindowAttributesAux::new().cursor(NONE));
            let _ = self.conn.free_cursor(cursor);
        }
        let _ = self.conn.destroy_window(self.window);
        // A round trip, so that the server has handled every request (the last XdndLeave or
        // XdndDrop among them) before the connection closes: a socket closed with events still
        // unread is reset, and the server may drop what it had not handled yet.
        let _ = self.conn.sync();
    }
}
