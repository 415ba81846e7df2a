//! The Windows drag source: OLE's `DoDragDrop` with a `CF_HDROP` data object, the format
//! Explorer and every DAW take file drops in.
//!
//! `DoDragDrop` runs a modal loop that still dispatches to baseview's window procedure, so
//! starting it from inside that procedure (where egui sees the drag begin) could re-enter it.
//! The panel therefore posts a message to a message-only window of our own, made for the drag on
//! the GUI thread, and the drag runs when the host's message loop delivers it, outside baseview's
//! handler. OLE is already initialised on that thread (baseview calls `OleInitialize`); the call
//! here is balanced. The window and its class are gone when the drag ends.
//!
//! No `unwrap` and no panic path: a failure ends the drag as [`DragOutcome::Failed`].
//!
//! Thread: GUI thread (the panel's, which is the thread of the host's message loop).

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::{Arc, Mutex};

use windows::Win32::Foundation::{
    DRAGDROP_S_CANCEL, DRAGDROP_S_DROP, DRAGDROP_S_USEDEFAULTCURSORS, DV_E_FORMATETC, E_NOTIMPL, E_OUTOFMEMORY,
    GlobalFree, HINSTANCE, HMODULE, HWND, LPARAM, LRESULT, OLE_E_ADVISENOTSUPPORTED, S_OK, WPARAM,
};
use windows::Win32::System::Com::{
    DATADIR_GET, DVASPECT_CONTENT, FORMATETC, IAdviseSink, IDataObject, IDataObject_Impl, IEnumFORMATETC, IEnumSTATDATA,
    STGMEDIUM, STGMEDIUM_0, TYMED_HGLOBAL,
};
use windows::Win32::System::LibraryLoader::{
    GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS, GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT, GetModuleHandleExW,
};
use windows::Win32::System::Memory::{GMEM_MOVEABLE, GlobalAlloc, GlobalLock, GlobalUnlock};
use windows::Win32::System::Ole::{
    CF_HDROP, DROPEFFECT, DROPEFFECT_COPY, DROPEFFECT_NONE, DoDragDrop, IDropSource, IDropSource_Impl, OleInitialize,
    OleUninitialize,
};
use windows::Win32::System::SystemServices::{MK_LBUTTON, MODIFIERKEYS_FLAGS};
use windows::Win32::UI::Shell::SHCreateStdEnumFmtEtc;
use windows::Win32::UI::WindowsAndMessaging::{
    CreateWindowExW, DefWindowProcW, DestroyWindow, HWND_MESSAGE, PostMessageW, RegisterClassW, UnregisterClassW,
    WINDOW_EX_STYLE, WINDOW_STYLE, WM_APP, WNDCLASSW,
};
use windows::core::{BOOL, HRESULT, PCWSTR, Ref, w};
use windows_core::implement;

use super::DragOutcome;

/// The message that starts the drag, posted to our own window.
const WM_START_DRAG: u32 = WM_APP + 0x4d46;
const CLASS: PCWSTR = w!("MoodfaderDragStarter");

type Outcome = Arc<Mutex<Option<DragOutcome>>>;

thread_local! {
    /// The drag waiting for its message: the `CF_HDROP` payload and where to put the outcome.
    static PENDING: RefCell<Option<(Vec<u8>, Outcome)>> = const { RefCell::new(None) };
}

/// A drag started with [`start`]: it runs when the host's message loop delivers our message.
pub struct DragHandle(Outcome);

impl DragHandle {
    /// Whether the drag is over (the panel polls this; never blocks).
    pub fn is_finished(&self) -> bool {
        self.0.lock().map(|o| o.is_some()).unwrap_or(true)
    }

    /// How the drag ended (a drag still running reads as failed: call it once finished).
    pub fn wait(self) -> DragOutcome {
        match self.0.lock() {
            Ok(mut o) => o.take().unwrap_or_else(|| DragOutcome::Failed("drag: still running".into())),
            Err(_) => DragOutcome::Failed("drag: its state was lost".into()),
        }
    }
}

/// Our DLL's module handle (the window class must belong to the module its procedure lives in).
fn this_module() -> Result<HINSTANCE, String> {
    let mut module = HMODULE::default();
    let flags = GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT;
    // SAFETY: the address is a function of this module; the out pointer is a local.
    unsafe { GetModuleHandleExW(flags, PCWSTR(wndproc as *const u16), &mut module) }.map_err(|e| format!("drag: {e}"))?;
    Ok(HINSTANCE(module.0))
}

/// Starts dragging the file at `path` (on the GUI thread; the mouse button is down).
pub fn start(path: &Path) -> Result<DragHandle, String> {
    use std::os::windows::ffi::OsStrExt;
    let wide: Vec<u16> = path.as_os_str().encode_wide().collect();
    let payload = super::cf_hdrop_payload(&wide);
    let instance = this_module()?;
    let class = WNDCLASSW { lpfnWndProc: Some(wndproc), hInstance: instance, lpszClassName: CLASS, ..Default::default() };
    // SAFETY: the class structure outlives the call; a class left from an earlier drag is reused.
    let _ = unsafe { RegisterClassW(&class) };
    // SAFETY: a message-only window of our class; every pointer argument is a constant or None.
    let hwnd = unsafe {
        CreateWindowExW(WINDOW_EX_STYLE(0), CLASS, w!(""), WINDOW_STYLE(0), 0, 0, 0, 0, Some(HWND_MESSAGE), None, Some(instance), None)
    }
    .map_err(|e| format!("drag: cannot make its window: {e}"))?;
    let outcome: Outcome = Arc::new(Mutex::new(None));
    PENDING.with(|p| *p.borrow_mut() = Some((payload, outcome.clone())));
    // SAFETY: our own window, on this thread.
    if let Err(e) = unsafe { PostMessageW(Some(hwnd), WM_START_DRAG, WPARAM(0), LPARAM(0)) } {
        PENDING.with(|p| p.borrow_mut().take());
        // SAFETY: the window we just made, on its thread.
        let _ = unsafe { DestroyWindow(hwnd) };
        return Err(format!("drag: cannot start: {e}"));
    }
    Ok(DragHandle(outcome))
}

extern "system" fn wndproc(hwnd: HWND, msg: u32, wparam: WPARAM, lparam: LPARAM) -> LRESULT {
    if msg == WM_START_DRAG {
        if let Some((payload, outcome)) = PENDING.with(|p| p.borrow_mut().take()) {
            let result = run_drag(payload);
            if let Ok(mut o) = outcome.lock() {
                *o = Some(result);
            }
        }
        // SAFETY: our window, destroyed from its own procedure on its thread; the class goes
        // with it (UnregisterClassW fails harmlessly while another drag's window lives).
        unsafe {
            let _ = DestroyWindow(hwnd);
            if let Ok(instance) = this_module() {
                let _ = UnregisterClassW(CLASS, Some(instance));
            }
        }
        return LRESULT(0);
    }
    // SAFETY: the default procedure with the arguments we were given.
    unsafe { DefWindowProcW(hwnd, msg, wparam, lparam) }
}

/// The modal drag itself.
fn run_drag(payload: Vec<u8>) -> DragOutcome {
    // SAFETY: balanced below; on a thread where baseview initialised OLE it answers S_FALSE.
    let ole = unsafe { OleInitialize(None) };
    let data: IDataObject = FileDrop { payload }.into();
    let source: IDropSource = DropSource.into();
    let mut effect = DROPEFFECT_NONE;
    // SAFETY: both objects live until the call returns; `effect` is a local.
    let hr = unsafe { DoDragDrop(&data, &source, DROPEFFECT_COPY, &mut effect) };
    if ole.is_ok() {
        // SAFETY: balances the successful OleInitialize above.
        unsafe { OleUninitialize() };
    }
    match hr {
        DRAGDROP_S_DROP if effect != DROPEFFECT_NONE => DragOutcome::Dropped,
        DRAGDROP_S_DROP | DRAGDROP_S_CANCEL => DragOutcome::Cancelled,
        other => DragOutcome::Failed(format!("drag: DoDragDrop failed ({other})")),
    }
}

/// The one format offered: a file list in global memory.
fn hdrop_format() -> FORMATETC {
    FORMATETC {
        cfFormat: CF_HDROP.0,
        ptd: std::ptr::null_mut(),
        dwAspect: DVASPECT_CONTENT.0,
        lindex: -1,
        tymed: TYMED_HGLOBAL.0 as u32,
    }
}

fn is_hdrop(f: *const FORMATETC) -> bool {
    // SAFETY: the caller (OLE) hands a valid FORMATETC or null.
    unsafe { f.as_ref() }.is_some_and(|f| f.cfFormat == CF_HDROP.0 && f.tymed & TYMED_HGLOBAL.0 as u32 != 0 && f.dwAspect == DVASPECT_CONTENT.0)
}

#[implement(IDataObject)]
struct FileDrop {
    /// DROPFILES and the path ([`super::cf_hdrop_payload`]).
    payload: Vec<u8>,
}

impl IDataObject_Impl for FileDrop_Impl {
    fn GetData(&self, pformatetcin: *const FORMATETC) -> windows::core::Result<STGMEDIUM> {
        if !is_hdrop(pformatetcin) {
            return Err(DV_E_FORMATETC.into());
        }
        // SAFETY: a fresh movable block of the payload's size, locked only while we copy into it;
        // the receiver frees it (pUnkForRelease is None).
        unsafe {
            let block = GlobalAlloc(GMEM_MOVEABLE, self.payload.len())?;
            let p = GlobalLock(block);
            if p.is_null() {
                let _ = GlobalFree(Some(block));
                return Err(E_OUTOFMEMORY.into());
            }
            std::ptr::copy_nonoverlapping(self.payload.as_ptr(), p.cast::<u8>(), self.payload.len());
            let _ = GlobalUnlock(block);
            Ok(STGMEDIUM { tymed: TYMED_HGLOBAL.0 as u32, u: STGMEDIUM_0 { hGlobal: block }, pUnkForRelease: ManuallyDrop::new(None) })
        }
    }

    fn GetDataHere(&self, _pformatetc: *const FORMATETC, _pmedium: *mut STGMEDIUM) -> windows::core::Result<()> {
        Err(E_NOTIMPL.into())
    }

    fn QueryGetData(&self, pformatetc: *const FORMATETC) -> HRESULT {
        if is_hdrop(pformatetc) { S_OK } else { DV_E_FORMATETC }
    }

    fn GetCanonicalFormatEtc(&self, _pformatectin: *const FORMATETC, pformatetcout: *mut FORMATETC) -> HRESULT {
        // SAFETY: OLE hands a valid out pointer or null.
        if let Some(out) = unsafe { pformatetcout.as_mut() } {
            out.ptd = std::ptr::null_mut();
        }
        E_NOTIMPL
    }

    fn SetData(&self, _pformatetc: *const FORMATETC, _pmedium: *const STGMEDIUM, _frelease: BOOL) -> windows::core::Result<()> {
        Err(E_NOTIMPL.into())
    }

    fn EnumFormatEtc(&self, dwdirection: u32) -> windows::core::Result<IEnumFORMATETC> {
        if dwdirection == DATADIR_GET.0 as u32 {
            // SAFETY: the shell copies the one FORMATETC.
            unsafe { SHCreateStdEnumFmtEtc(&[hdrop_format()]) }
        } else {
            Err(E_NOTIMPL.into())
        }
    }

    fn DAdvise(&self, _pformatetc: *const FORMATETC, _advf: u32, _padvsink: Ref<IAdviseSink>) -> windows::core::Result<u32> {
        Err(OLE_E_ADVISENOTSUPPORTED.into())
    }

    fn DUnadvise(&self, _dwconnection: u32) -> windows::core::Result<()> {
        Err(OLE_E_ADVISENOTSUPPORTED.into())
    }

    fn EnumDAdvise(&self) -> windows::core::Result<IEnumSTATDATA> {
        Err(OLE_E_ADVISENOTSUPPORTED.into())
    }
}

#[implement(IDropSource)]
struct DropSource;

impl IDropSource_Impl for DropSource_Impl {
    fn QueryContinueDrag(&self, fescapepressed: BOOL, grfkeystate: MODIFIERKEYS_FLAGS) -> HRESULT {
        if fescapepressed.as_bool() {
            DRAGDROP_S_CANCEL
        } else if grfkeystate.0 & MK_LBUTTON.0 == 0 {
            DRAGDROP_S_DROP
        } else {
            S_OK
        }
    }

    fn GiveFeedback(&self, _dweffect: DROPEFFECT) -> HRESULT {
        DRAGDROP_S_USEDEFAULTCURSORS
    }
}

/// Run under Wine by `cargo xtask windows` (the COM objects as a drop target would use them;
/// the modal drag itself needs a desktop).
#[cfg(test)]
mod tests {
    use super::*;
    use windows::Win32::System::Ole::ReleaseStgMedium;

    #[test]
    fn the_data_object_hands_out_the_file_as_cf_hdrop() {
        let wide: Vec<u16> = r"C:\Users\Test\moodfader-continuation-0123456789ab.mid".encode_utf16().collect();
        let payload = crate::dragout::cf_hdrop_payload(&wide);
        let data: IDataObject = FileDrop { payload: payload.clone() }.into();
        let hdrop = hdrop_format();
        // SAFETY: COM calls on our own object with a local FORMATETC; the medium is released.
        unsafe {
            assert_eq!(data.QueryGetData(&hdrop), S_OK);
            let text = FORMATETC { cfFormat: 1, ..hdrop };
            assert_eq!(data.QueryGetData(&text), DV_E_FORMATETC);
            assert!(data.GetData(&text).is_err());
            let mut medium = data.GetData(&hdrop).expect("GetData(CF_HDROP)");
            assert_eq!(medium.tymed, TYMED_HGLOBAL.0 as u32);
            let p = GlobalLock(medium.u.hGlobal).cast::<u8>();
            assert!(!p.is_null());
            let got = std::slice::from_raw_parts(p, payload.len()).to_vec();
            let _ = GlobalUnlock(medium.u.hGlobal);
            ReleaseStgMedium(&mut medium);
            assert_eq!(got, payload);
            let formats = data.EnumFormatEtc(DATADIR_GET.0 as u32).expect("EnumFormatEtc");
            let mut one = [FORMATETC::default()];
            let mut fetched = 0;
            assert_eq!(formats.Next(&mut one, Some(&mut fetched)), S_OK);
            assert_eq!((fetched, one[0].cfFormat), (1, CF_HDROP.0));
        }
    }

    #[test]
    fn the_drop_source_drops_on_release_and_cancels_on_escape() {
        let source: IDropSource = DropSource.into();
        // SAFETY: COM calls on our own object.
        unsafe {
            assert_eq!(source.QueryContinueDrag(false, MK_LBUTTON), S_OK);
            assert_eq!(source.QueryContinueDrag(false, MODIFIERKEYS_FLAGS(0)), DRAGDROP_S_DROP);
            assert_eq!(source.QueryContinueDrag(true, MK_LBUTTON), DRAGDROP_S_CANCEL);
            assert_eq!(source.GiveFeedback(DROPEFFECT_COPY), DRAGDROP_S_USEDEFAULTCURSORS);
        }
    }
}
