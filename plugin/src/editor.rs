//! The panel: a valence/arousal pad (Russell circumplex) with the live estimate, its trail and a
//! draggable target; the attribute faders; continuation controls; and a status line.
//!
//! Thread: gui. Reads the estimate and status from [`Shared`]; writes parameters only through
//! nice-plug's `ParamSetter` with begin/set/end gestures, so hosts record automation.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atomic_float::AtomicF32;

use moodfader_engine::{Attribute, Shared, WorkerStatus};
use nice_plug::context::gui::GuiContext;
use nice_plug::prelude::*;
use egui::{self, Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, Vec2};
use nice_plug::editor::dpi::{LogicalSize, NativeSize};
use nice_plug::editor::{Editor, HostMethods, ParentWindowHandle, ResizeHint, SpawnedEditor};
use nice_plug_egui::resizable_window::ResizableWindow;
use nice_plug_egui::{EguiEditor, EguiEditorHandle, EguiEditorState, EguiNiceSettings, NiceEguiApp, RepaintNotifier, create_egui_editor};

use crate::dragout::DragFiles;
use crate::params::{EDITOR_MAX, EDITOR_MIN, MoodfaderParams, TriggerMode, clamp_panel_size};

/// One palette for the whole panel.
mod palette {
    use super::Color32;
    pub const BG: Color32 = Color32::from_rgb(0x16, 0x18, 0x1d);
    pub const PANEL: Color32 = Color32::from_rgb(0x20, 0x23, 0x2a);
    pub const GRID: Color32 = Color32::from_rgb(0x34, 0x38, 0x42);
    pub const TEXT: Color32 = Color32::from_rgb(0xdc, 0xde, 0xe3);
    pub const MUTED: Color32 = Color32::from_rgb(0x7d, 0x83, 0x90);
    pub const ESTIMATE: Color32 = Color32::from_rgb(0x4f, 0xd1, 0xc5);
    pub const TARGET: Color32 = Color32::from_rgb(0xf2, 0xa6, 0x3b);
    pub const AUTO: Color32 = Color32::from_rgb(0x6d, 0x8c, 0xf2);
    pub const ERROR: Color32 = Color32::from_rgb(0xf2, 0x6d, 0x6d);
}

/// Quadrant names of the circumplex, clockwise from top right.
pub const QUADRANTS: [(&str, f32, f32); 4] =
    [("excited", 1.0, 1.0), ("calm", 1.0, -1.0), ("sad", -1.0, -1.0), ("tense", -1.0, 1.0)];

/// Maps valence/arousal in [-1, 1]² to a point of the pad rectangle (arousal up).
pub fn va_to_pad(rect: Rect, valence: f32, arousal: f32) -> Pos2 {
    let v = valence.clamp(-1.0, 1.0);
    let a = arousal.clamp(-1.0, 1.0);
    Pos2::new(rect.center().x + v * rect.width() * 0.5, rect.center().y - a * rect.height() * 0.5)
}

/// The inverse of [`va_to_pad`], clamped to the pad.
pub fn pad_to_va(rect: Rect, pos: Pos2) -> (f32, f32) {
    let v = (pos.x - rect.center().x) / (rect.width() * 0.5);
    let a = (rect.center().y - pos.y) / (rect.height() * 0.5);
    (v.clamp(-1.0, 1.0), a.clamp(-1.0, 1.0))
}

pub struct App {
    params: Arc<MoodfaderParams>,
    shared: Arc<Shared>,
    gui: Option<GuiContext>,
    /// What the last export did (path written, or why not).
    export_message: String,
    /// MIDI drag-out: the files, whether the drag takes the heard bars too, and the drag running.
    drag_files: Arc<Mutex<DragFiles>>,
    drag_with_heard: bool,
    drag: Option<DragRun>,
    calibrate: CalibrateState,
    /// The window's last scale factor (physical pixels per logical pixel), shared with
    /// [`PanelEditor`] so it can report the size in the host's native pixels.
    scale: Arc<AtomicF32>,
}

/// The editor the wrapper holds for the plugin's lifetime. It builds a fresh egui editor each time
/// the host opens the panel, at the size saved in the project (`panel_size`), because the wrapper
/// creates the editor before the host restores the project's state.
pub struct PanelEditor {
    params: Arc<MoodfaderParams>,
    shared: Arc<Shared>,
    scale: Arc<AtomicF32>,
    /// The egui editor of the panel that is (or was last) open.
    open: Mutex<Option<EguiEditor<App>>>,
    /// The files dragged out of the panel: they live as long as the plugin (the wrapper holds
    /// this editor that long), since a DAW may read a dropped file after the panel closed.
    drag_files: Arc<Mutex<DragFiles>>,
}

/// How the host may resize the panel: both axes, within [`EDITOR_MIN`]..[`EDITOR_MAX`].
pub fn resize_hint() -> ResizeHint {
    ResizeHint::RESIZABLE.with_min_max_logical_size(
        Some(LogicalSize::new(EDITOR_MIN[0], EDITOR_MIN[1])),
        Some(LogicalSize::new(EDITOR_MAX[0], EDITOR_MAX[1])),
    )
}

/// The panel's saved logical size in the host's native pixels (physical on Linux and Windows).
pub fn native_panel_size(logical: [f32; 2], scale: f32) -> NativeSize<u32> {
    let [w, h] = clamp_panel_size(logical);
    let scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
    NativeSize::from_size(LogicalSize::new(w as f64, h as f64).into(), scale as f64)
}

pub fn create(params: Arc<MoodfaderParams>, shared: Arc<Shared>) -> Option<PanelEditor> {
    Some(PanelEditor {
        params,
        shared,
        scale: Arc::new(AtomicF32::new(1.0)),
        open: Mutex::new(None),
        drag_files: Arc::new(Mutex::new(DragFiles::default())),
    })
}

impl PanelEditor {
    fn saved_size(&self) -> [f32; 2] {
        clamp_panel_size(*self.params.panel_size.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Editor for PanelEditor {
    type Handle = EguiEditorHandle;

    fn spawn(
        &self,
        parent: Option<ParentWindowHandle>,
        wait_for_parent: bool,
        fallback_scale_factor: Option<f64>,
        gui_context: GuiContext,
        host: Option<HostMethods>,
    ) -> Result<SpawnedEditor<Self::Handle>, Box<dyn std::error::Error>> {
        let [w, h] = self.saved_size();
        let state = EguiEditorState::from_size(LogicalSize::new(w as f64, h as f64), 1.0);
        let settings = EguiNiceSettings { title: "Moodfader".into(), resize_hint: resize_hint(), ..Default::default() };
        let app = App {
            params: self.params.clone(),
            shared: self.shared.clone(),
            gui: None,
            export_message: String::new(),
            drag_files: self.drag_files.clone(),
            drag_with_heard: false,
            drag: None,
            calibrate: CalibrateState::default(),
            scale: self.scale.clone(),
        };
        let editor = create_egui_editor(state, RepaintNotifier::new(), settings, app).ok_or("the panel could not be created")?;
        let spawned = editor.spawn(parent, wait_for_parent, fallback_scale_factor, gui_context, host)?;
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(editor);
        Ok(spawned)
    }

    fn size(&self) -> NativeSize<u32> {
        native_panel_size(self.saved_size(), self.scale.load(Ordering::Relaxed))
    }

    fn resize_hint(&self) -> ResizeHint {
        resize_hint()
    }

    fn track_info_updated(&self, info: TrackInfo) {
        if let Some(editor) = self.open.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            editor.track_info_updated(info);
        }
    }
}

impl NiceEguiApp for App {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        nice_gui_ctx: GuiContext,
        _frame: &mut nice_plug_egui::Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        let mut style = (*egui_ctx.global_style()).clone();
        style.visuals = egui::Visuals::dark();
        style.visuals.panel_fill = palette::BG;
        style.visuals.override_text_color = Some(palette::TEXT);
        egui_ctx.set_global_style(style);
        self.gui = Some(nice_gui_ctx);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut nice_plug_egui::Frame) {
        let Some(gui) = self.gui.clone() else { return };
        let setter = gui.param_setter();
        ui.ctx().request_repaint_after(Duration::from_millis(33));
        let full = ui.max_rect();
        ui.painter().rect_filled(full, 0.0, palette::BG);
        // A corner to drag in hosts that give plugin windows no frame of their own.
        ResizableWindow::new("moodfader-panel")
            .min_size(Vec2::new(EDITOR_MIN[0], EDITOR_MIN[1]))
            .max_size(Vec2::new(EDITOR_MAX[0], EDITOR_MAX[1]))
            .show(ui, |ui| {
                egui::Frame::new().inner_margin(14.0).show(ui, |ui| self.panel(ui, &setter));
            });
    }

    /// The host or the corner resized the window: remember the size with the project.
    fn resized(&mut self, size: nice_plug_egui::baseview::WindowSize) {
        if size.scale_factor.is_finite() && size.scale_factor > 0.0 {
            self.scale.store(size.scale_factor as f32, Ordering::Relaxed);
        }
        let logical = clamp_panel_size([size.logical.width as f32, size.logical.height as f32]);
        *self.params.panel_size.write().unwrap_or_else(|e| e.into_inner()) = logical;
    }
}

impl App {
    fn panel(&mut self, ui: &mut egui::Ui, setter: &ParamSetter) {
        ui.horizontal(|ui| {
            ui.label(egui::RichText::new("MOODFADER").font(FontId::proportional(18.0)).color(palette::TEXT));
            ui.label(egui::RichText::new("hear the mood · steer the continuation").color(palette::MUTED));
        });
        ui.add_space(6.0);
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                pad(ui, &self.params, &self.shared, setter, &mut self.calibrate);
                ui.horizontal(|ui| {
                    if ui.selectable_label(self.calibrate.on, "Calibrate").on_hover_text("tell the estimator how the music feels to you: drag the pad while this is on").clicked() {
                        self.calibrate.on = !self.calibrate.on;
                        self.calibrate.felt = None;
                    }
                    let n = self.params.calibration_points.read().map(|p| p.len()).unwrap_or(0);
                    if n > 0 {
                        if ui.button("Reset").clicked() {
                            if let Ok(mut p) = self.params.calibration_points.write() {
                                p.clear();
                            }
                            self.shared.set_calibration(&moodfader_engine::feel::calibration::Calibration::default());
                        }
                        let c = self.shared.calibration();
                        ui.label(egui::RichText::new(format!(
                            "calibrated on {n} point{}: V {:+.2}{:+.2}·v, A {:+.2}{:+.2}·a",
                            if n == 1 { "" } else { "s" }, c.valence.0, c.valence.1 - 1.0, c.arousal.0, c.arousal.1 - 1.0
                        )).size(10.0).color(palette::MUTED));
                    }
                });
            });
            ui.add_space(16.0);
            ui.vertical(|ui| {
                faders(ui, &self.params, setter);
                ui.add_space(12.0);
                continuation_controls(ui, &self.params, setter);
            });
        });
        ui.add_space(8.0);
        piano_roll(ui, &self.shared);
        ui.horizontal(|ui| {
            for (label, with_heard) in [("Export continuation", false), ("Export heard + continuation", true)] {
                if ui.button(label).on_hover_text("save as a Standard MIDI File with the host's tempo and meter").clicked() {
                    // The file's path also goes to the clipboard, to paste into an open dialog.
                    self.export_message = match export_midi(&self.shared, &self.params, with_heard) {
                        Ok(path) => {
                            ui.ctx().copy_text(path.display().to_string());
                            format!("saved {} (path copied)", path.display())
                        }
                        Err(why) => why,
                    };
                }
            }
            ui.separator();
            self.drag_handle(ui);
            ui.label(egui::RichText::new(&self.export_message).color(palette::MUTED));
        });
        ui.add_space(6.0);
        status_line(ui, &self.shared);
    }
}

/// The calibrate gesture's state (panel only).
#[derive(Default)]
pub struct CalibrateState {
    /// While on, a drag on the pad says "this is how it feels to me now" instead of moving the
    /// target.
    pub on: bool,
    /// Where the listener is pointing during the drag.
    pub felt: Option<(f32, f32)>,
}

/// Adds one calibration point (the raw live estimate now, and how it feels) and puts the fitted
/// calibration in force. GUI thread.
pub fn add_calibration_point(params: &MoodfaderParams, shared: &Shared, felt: (f32, f32)) -> usize {
    let raw = (shared.raw_valence.load(Ordering::Relaxed), shared.raw_arousal.load(Ordering::Relaxed));
    let mut points = params.calibration_points.write().unwrap_or_else(|e| e.into_inner());
    points.push([raw.0, raw.1, felt.0, felt.1]);
    // The last 64 points are plenty; older ones go.
    let excess = points.len().saturating_sub(64);
    points.drain(..excess);
    shared.set_calibration(&crate::fit_calibration(&points));
    points.len()
}

fn pad(ui: &mut egui::Ui, params: &MoodfaderParams, shared: &Shared, setter: &ParamSetter, cal: &mut CalibrateState) {
    // The pad grows with the window; the piano roll and the status rows keep ~220 px below it.
    let side = (ui.available_height() - 220.0).min(ui.available_width() - 440.0).clamp(200.0, 900.0);
    let (rect, response) = ui.allocate_exact_size(Vec2::splat(side), Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 6.0, palette::PANEL);
    painter.line_segment([Pos2::new(rect.center().x, rect.top()), Pos2::new(rect.center().x, rect.bottom())], Stroke::new(1.0, palette::GRID));
    painter.line_segment([Pos2::new(rect.left(), rect.center().y), Pos2::new(rect.right(), rect.center().y)], Stroke::new(1.0, palette::GRID));
    painter.circle_stroke(rect.center(), side * 0.5 - 2.0, Stroke::new(1.0, palette::GRID));
    for (name, v, a) in QUADRANTS {
        let p = va_to_pad(rect.shrink(side * 0.12), v * 0.8, a * 0.9);
        painter.text(p, Align2::CENTER_CENTER, name, FontId::proportional(13.0), palette::MUTED);
    }
    painter.text(Pos2::new(rect.right() - 4.0, rect.center().y - 4.0), Align2::RIGHT_BOTTOM, "valence +", FontId::proportional(10.0), palette::MUTED);
    painter.text(Pos2::new(rect.center().x + 4.0, rect.top() + 4.0), Align2::LEFT_TOP, "arousal +", FontId::proportional(10.0), palette::MUTED);

    // Trail of per-bar estimates, fading with age.
    let trail = shared.trail();
    let n = trail.len();
    for (i, &(v, a)) in trail.iter().enumerate() {
        let alpha = ((i + 1) as f32 / n.max(1) as f32 * 160.0) as u8;
        painter.circle_filled(va_to_pad(rect, v, a), 3.0, Color32::from_rgba_unmultiplied(0x4f, 0xd1, 0xc5, alpha));
    }
    // Live estimate with its spread: a wide ring when the model has little to go on.
    if shared.num_estimates.load(Ordering::Acquire) > 0 {
        let v = shared.valence.load(Ordering::Relaxed);
        let a = shared.arousal.load(Ordering::Relaxed);
        let conf = shared.confidence.load(Ordering::Relaxed).clamp(0.0, 1.0);
        let p = va_to_pad(rect, v, a);
        painter.circle_stroke(p, 8.0 + (1.0 - conf) * side * 0.15, Stroke::new(1.0, palette::ESTIMATE.gamma_multiply(0.6)));
        painter.circle_filled(p, 7.0, palette::ESTIMATE);
    }
    let target = va_to_pad(rect, params.target_valence.value(), params.target_arousal.value());
    if cal.on {
        // Calibrating: the drag marks how the music feels; on release it becomes a point.
        if let Some(pos) = response.interact_pointer_pos().filter(|_| response.dragged() || response.clicked() || response.drag_started()) {
            cal.felt = Some(pad_to_va(rect, pos));
        }
        if (response.drag_stopped() || response.clicked())
            && let Some(felt) = cal.felt.take()
        {
            add_calibration_point(params, shared, felt);
        }
        if let Some((v, a)) = cal.felt {
            painter.circle_stroke(va_to_pad(rect, v, a), 9.0, Stroke::new(2.0, palette::TEXT));
        }
        painter.text(rect.left_bottom() + Vec2::new(8.0, -8.0), Align2::LEFT_BOTTOM, "calibrating: drag to where the music feels to you", FontId::proportional(11.0), palette::TEXT);
        painter.circle_stroke(target, 9.0, Stroke::new(1.0, palette::TARGET.gamma_multiply(0.5)));
        return;
    }
    // The target, dragged with a begin/set/end gesture on both target parameters.
    if response.drag_started() || response.clicked() {
        setter.begin_set_parameter(&params.target_valence);
        setter.begin_set_parameter(&params.target_arousal);
    }
    if let Some(pos) = response.interact_pointer_pos().filter(|_| response.dragged() || response.clicked() || response.drag_started()) {
        let (v, a) = pad_to_va(rect, pos);
        setter.set_parameter(&params.target_valence, v);
        setter.set_parameter(&params.target_arousal, a);
    }
    if response.drag_stopped() || response.clicked() {
        setter.end_set_parameter(&params.target_valence);
        setter.end_set_parameter(&params.target_arousal);
    }
    painter.circle_stroke(target, 9.0, Stroke::new(2.0, palette::TARGET));
    painter.text(target + Vec2::new(12.0, -10.0), Align2::LEFT_BOTTOM, "target", FontId::proportional(10.0), palette::TARGET);
}

fn faders(ui: &mut egui::Ui, params: &MoodfaderParams, setter: &ParamSetter) {
    ui.label(egui::RichText::new("Attributes").color(palette::MUTED));
    let fader_height = (ui.available_height() * 0.24).clamp(150.0, 420.0);
    ui.horizontal(|ui| {
        ui.spacing_mut().item_spacing.x = 6.0;
        for a in Attribute::ALL {
            let p = params.attributes.get(a);
            ui.vertical(|ui| {
                ui.set_width(46.0);
                let (rect, resp) = ui.allocate_exact_size(Vec2::new(28.0, fader_height), Sense::click_and_drag());
                let painter = ui.painter_at(rect);
                let auto = p.auto.value();
                painter.rect_filled(rect, 4.0, palette::PANEL);
                let value = p.value.value();
                let y = rect.bottom() - value * rect.height();
                let fill = Rect::from_min_max(Pos2::new(rect.left() + 10.0, y), Pos2::new(rect.right() - 10.0, rect.bottom()));
                painter.rect_filled(fill, 2.0, if auto { palette::AUTO.gamma_multiply(0.5) } else { palette::TARGET });
                painter.line_segment([Pos2::new(rect.left() + 2.0, y), Pos2::new(rect.right() - 2.0, y)], Stroke::new(2.0, palette::TEXT));
                if resp.drag_started() {
                    setter.begin_set_parameter(&p.value);
                    if auto {
                        // Grabbing a fader takes it off auto, like touching a motor fader.
                        setter.begin_set_parameter(&p.auto);
                        setter.set_parameter(&p.auto, false);
                        setter.end_set_parameter(&p.auto);
                    }
                }
                if resp.dragged()
                    && let Some(pos) = resp.interact_pointer_pos() {
                        let v = ((rect.bottom() - pos.y) / rect.height()).clamp(0.0, 1.0);
                        setter.set_parameter(&p.value, v);
                    }
                if resp.drag_stopped() {
                    setter.end_set_parameter(&p.value);
                }
                ui.add(egui::Label::new(egui::RichText::new(a.label()).size(10.0)).wrap_mode(egui::TextWrapMode::Truncate));
                let text = if auto { "auto" } else { "man" };
                let button = egui::Button::new(egui::RichText::new(text).size(10.0).color(if auto { palette::AUTO } else { palette::MUTED }))
                    .wrap_mode(egui::TextWrapMode::Extend);
                if ui.add(button).on_hover_text(format!("{}: follow the valence/arousal target (auto) or the fader (manual)", a.label())).clicked() {
                    setter.begin_set_parameter(&p.auto);
                    setter.set_parameter(&p.auto, !auto);
                    setter.end_set_parameter(&p.auto);
                }
            });
        }
    });
}

/// Applies a factory preset through the host (begin/set/end on every parameter it touches).
pub fn apply_preset(params: &MoodfaderParams, setter: &ParamSetter, p: &crate::params::Preset) {
    fn set<P: Param>(setter: &ParamSetter, param: &P, v: P::Plain) {
        setter.begin_set_parameter(param);
        setter.set_parameter(param, v);
        setter.end_set_parameter(param);
    }
    set(setter, &params.target_valence, p.target_valence);
    set(setter, &params.target_arousal, p.target_arousal);
    set(setter, &params.steer, p.steer);
    set(setter, &params.trigger, p.trigger);
    set(setter, &params.continuation, true);
    for a in Attribute::ALL {
        set(setter, &params.attributes.get(a).auto, true);
    }
}

fn continuation_controls(ui: &mut egui::Ui, params: &MoodfaderParams, setter: &ParamSetter) {
    ui.horizontal(|ui| {
        ui.label(egui::RichText::new("Presets").color(palette::MUTED));
        for p in crate::params::PRESETS.iter() {
            if ui.small_button(p.name).on_hover_text(p.what).clicked() {
                apply_preset(params, setter, p);
            }
        }
    });
    ui.label(egui::RichText::new("Continuation").color(palette::MUTED));
    ui.horizontal(|ui| {
        toggle(ui, setter, &params.continuation);
        for (mode, label) in [
            (TriggerMode::OnDemand, "on demand"),
            (TriggerMode::Follow, "follow"),
            (TriggerMode::CallResponse, "call & response"),
        ] {
            if ui.selectable_label(params.trigger.value() == mode, label).clicked() {
                setter.begin_set_parameter(&params.trigger);
                setter.set_parameter(&params.trigger, mode);
                setter.end_set_parameter(&params.trigger);
            }
        }
        let generate = egui::Button::new(egui::RichText::new("Generate").color(palette::TEXT));
        let resp = ui.add_enabled(params.continuation.value(), generate);
        // A press is a momentary on/off of the `gen` parameter (the audio thread counts edges).
        if resp.clicked() {
            setter.begin_set_parameter(&params.generate);
            setter.set_parameter(&params.generate, true);
            setter.set_parameter(&params.generate, false);
            setter.end_set_parameter(&params.generate);
        }
    });
    ui.horizontal(|ui| {
        ui.label("Bars");
        ui.add(nice_plug_egui::widgets::ParamSlider::for_param(&params.bars, setter).with_width(56.0));
        ui.label("Temp");
        ui.add(nice_plug_egui::widgets::ParamSlider::for_param(&params.temperature, setter).with_width(56.0));
        ui.label("Seed");
        ui.add(nice_plug_egui::widgets::ParamSlider::for_param(&params.seed, setter).with_width(56.0));
    });
    ui.horizontal(|ui| {
        ui.label("Steer");
        ui.add(nice_plug_egui::widgets::ParamSlider::for_param(&params.steer, setter).with_width(120.0));
        ui.label("Out ch");
        ui.add(nice_plug_egui::widgets::ParamSlider::for_param(&params.out_channel, setter).with_width(60.0));
    });
    ui.horizontal(|ui| {
        toggle(ui, setter, &params.thru);
        toggle(ui, setter, &params.mood_cc);
        toggle(ui, setter, &params.preview).on_hover_text("play the continuation on the built-in voice, into the audio output");
    });
    ui.horizontal(|ui| {
        ui.label("Input");
        ui.add(nice_plug_egui::widgets::ParamSlider::for_param(&params.input_source, setter).with_width(80.0))
            .on_hover_text("what the ear hears: the track's MIDI, its audio (transcribed live by Basic Pitch), or both");
    });
}

/// A drag out of the panel in progress.
struct DragRun {
    #[cfg(any(target_os = "linux", target_os = "windows"))]
    handle: crate::dragout::DragHandle,
    path: std::path::PathBuf,
}

impl App {
    /// "Drag MIDI": past egui's drag threshold it writes the continuation (with the heard bars
    /// when ticked) to the drag cache and hands it to the platform's drag source; dimmed, saying
    /// why, when there is nothing to drag.
    fn drag_handle(&mut self, ui: &mut egui::Ui) {
        ui.checkbox(&mut self.drag_with_heard, "+ heard").on_hover_text("drag the bars heard before the continuation too");
        let bytes = midi_bytes(&self.shared, &self.params, self.drag_with_heard);
        let ready = bytes.is_some() && self.drag.is_none();
        let text = egui::RichText::new("Drag MIDI").color(if ready { palette::TEXT } else { palette::MUTED });
        let handle = ui.add(egui::Button::new(text).sense(Sense::drag()));
        let handle = match (&bytes, &self.drag) {
            (None, _) => handle.on_hover_text("nothing to drag yet: the continuation appears once it has been generated"),
            (_, Some(_)) => handle.on_hover_text("a drag is under way"),
            _ => handle.on_hover_text("drag onto a DAW track, a file manager or anything that takes file drops"),
        };
        if ready && handle.drag_started() {
            let kind = if self.drag_with_heard { "heard+continuation" } else { "continuation" };
            let written = bytes.ok_or_else(|| "nothing to drag yet".to_string()).and_then(|b| {
                self.drag_files.lock().unwrap_or_else(|e| e.into_inner()).write(&b, kind)
            });
            self.export_message = match written.and_then(start_drag) {
                Ok(run) => {
                    self.drag = Some(run);
                    "dragging…".into()
                }
                Err(why) => why,
            };
        }
        if let Some(run) = self.drag.take() {
            match finished_drag(run) {
                Ok(message) => self.export_message = message,
                Err(run) => {
                    self.drag = Some(run);
                    ui.ctx().request_repaint_after(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Starts the platform's drag of the file at `path`.
#[cfg(any(target_os = "linux", target_os = "windows"))]
fn start_drag(path: std::path::PathBuf) -> Result<DragRun, String> {
    let handle = crate::dragout::start(&path)?;
    Ok(DragRun { handle, path })
}

#[cfg(not(any(target_os = "linux", target_os = "windows")))]
fn start_drag(path: std::path::PathBuf) -> Result<DragRun, String> {
    let _ = DragRun { path: path.clone() };
    Err(format!("no drag-out on this platform yet: the file is at {}", path.display()))
}

/// How a finished drag went, for the export row; the drag back when it is still running.
fn finished_drag(run: DragRun) -> Result<String, DragRun> {
    #[cfg(any(target_os = "linux", target_os = "windows"))]
    {
        use crate::dragout::DragOutcome;
        if !run.handle.is_finished() {
            return Err(run);
        }
        let name = run.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(match run.handle.wait() {
            DragOutcome::Dropped => format!("dropped {name}"),
            DragOutcome::Cancelled => "drag cancelled".into(),
            DragOutcome::NoTarget => "dropped where nothing takes files".into(),
            DragOutcome::Failed(why) => why,
        })
    }
    #[cfg(not(any(target_os = "linux", target_os = "windows")))]
    Ok(run.path.display().to_string())
}

/// Folder the panel exports into: `$MOODFADER_EXPORT_DIR`, else `~/Moodfader`
/// (`%USERPROFILE%\Moodfader` on Windows).
pub fn export_dir() -> std::path::PathBuf {
    match std::env::var_os("MOODFADER_EXPORT_DIR").filter(|v| !v.is_empty()) {
        Some(d) => d.into(),
        None => std::env::var_os(if cfg!(windows) { "USERPROFILE" } else { "HOME" })
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join("Moodfader"),
    }
}

/// The roll's notes as a Standard MIDI File on the host's tempo and meter (GUI thread); `None`
/// when there is nothing to write.
fn midi_bytes(shared: &Shared, params: &MoodfaderParams, with_heard: bool) -> Option<Vec<u8>> {
    let roll = shared.roll();
    let tempo = shared.tempo_bpm.load(Ordering::Relaxed);
    let meter = (shared.sig_num.load(Ordering::Relaxed), shared.sig_den.load(Ordering::Relaxed));
    let channel = (params.out_channel.value() - 1).clamp(0, 15) as u8;
    moodfader_engine::play::compose::roll_to_smf(&roll, with_heard, tempo, meter, channel)
}

/// Writes the roll's notes as a MIDI file (GUI thread); returns what to tell the user.
fn export_midi(shared: &Shared, params: &MoodfaderParams, with_heard: bool) -> Result<std::path::PathBuf, String> {
    let Some(bytes) = midi_bytes(shared, params, with_heard) else {
        return Err("nothing to export yet".into());
    };
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let kind = if with_heard { "heard+continuation" } else { "continuation" };
    let path = export_dir().join(format!("moodfader-{kind}-{stamp}.mid"));
    moodfader_engine::files::write_atomically(&path, &bytes).map(|()| path).map_err(|e| format!("{e:#}"))
}

/// The bars heard (left of the playhead) and the continuation about to be played (right), with
/// bar lines and the playhead. Pitches span what is shown, at least two octaves.
fn piano_roll(ui: &mut egui::Ui, shared: &Shared) {
    use moodfader_engine::shared::{ROLL_BARS_AFTER, ROLL_BARS_BEFORE};
    let roll = shared.roll();
    let width = ui.available_width().max(200.0);
    // What the export row and the status lines below leave.
    let height = (ui.available_height() - 78.0).clamp(110.0, 480.0);
    let (rect, _) = ui.allocate_exact_size(Vec2::new(width, height), Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 6.0, palette::PANEL);
    let bar = if roll.bar_len_beats > 0.0 { roll.bar_len_beats } else { 4.0 };
    let from = roll.bar_start_beats - ROLL_BARS_BEFORE * bar;
    let to = roll.bar_start_beats + (ROLL_BARS_AFTER + 1.0) * bar;
    let x_of = |b: f64| rect.left() + ((b - from) / (to - from)).clamp(0.0, 1.0) as f32 * rect.width();
    let pitches = roll.heard.iter().chain(roll.generated.iter()).map(|n| n.pitch);
    let (lo, hi) = pitches.fold((127u8, 0u8), |(lo, hi), p| (lo.min(p), hi.max(p)));
    let (lo, hi) = if lo > hi { (48u8, 72u8) } else { (lo.min(hi.saturating_sub(24)), hi) };
    let row = (rect.height() - 8.0) / (hi - lo + 1) as f32;
    let y_of = |p: u8| rect.bottom() - 4.0 - (p - lo + 1) as f32 * row;
    for k in 0..=((ROLL_BARS_BEFORE + ROLL_BARS_AFTER + 1.0) as i32) {
        let x = x_of(from + k as f64 * bar);
        painter.line_segment([Pos2::new(x, rect.top()), Pos2::new(x, rect.bottom())], Stroke::new(1.0, palette::GRID));
    }
    let draw = |notes: &[moodfader_engine::shared::RollNote], color: Color32| {
        for n in notes.iter().filter(|n| n.end_beats > from && n.start_beats < to) {
            let r = Rect::from_min_max(
                Pos2::new(x_of(n.start_beats), y_of(n.pitch)),
                Pos2::new(x_of(n.end_beats).max(x_of(n.start_beats) + 2.0), y_of(n.pitch) + row.max(2.0) - 1.0),
            );
            painter.rect_filled(r, 1.5, color);
        }
    };
    draw(&roll.heard, palette::ESTIMATE.gamma_multiply(0.8));
    draw(&roll.generated, palette::TARGET);
    let x = x_of(roll.now_beats);
    painter.line_segment([Pos2::new(x, rect.top()), Pos2::new(x, rect.bottom())], Stroke::new(2.0, palette::TEXT));
    painter.text(rect.left_top() + Vec2::new(6.0, 4.0), Align2::LEFT_TOP, "heard", FontId::proportional(10.0), palette::ESTIMATE);
    painter.text(rect.right_top() + Vec2::new(-6.0, 4.0), Align2::RIGHT_TOP, "continuation", FontId::proportional(10.0), palette::TARGET);
}

fn toggle(ui: &mut egui::Ui, setter: &ParamSetter, p: &BoolParam) -> egui::Response {
    let on = p.value();
    let resp = ui.selectable_label(on, p.name());
    if resp.clicked() {
        setter.begin_set_parameter(p);
        setter.set_parameter(p, !on);
        setter.end_set_parameter(p);
    }
    resp
}

fn status_line(ui: &mut egui::Ui, shared: &Shared) {
    let status = shared.status();
    let color = match status {
        WorkerStatus::Ready => palette::ESTIMATE,
        WorkerStatus::Error => palette::ERROR,
        _ => palette::MUTED,
    };
    let dropped = shared.num_dropped_to_worker.load(Ordering::Relaxed)
        + shared.num_dropped_pending.load(Ordering::Relaxed)
        + shared.num_dropped_scheduled.load(Ordering::Relaxed)
        + shared.num_dropped_output.load(Ordering::Relaxed);
    let audio_dropped = shared.num_dropped_audio_samples.load(Ordering::Relaxed);
    ui.horizontal(|ui| {
        ui.label(egui::RichText::new(shared.status_text()).color(color));
    });
    if shared.continuation_ready.load(Ordering::Relaxed) {
        ui.label(
            egui::RichText::new(format!(
                "continuations {}  ·  first bar {:.0} ms, whole {:.0} ms  ·  late bars dropped {}, late notes {}",
                shared.num_generations.load(Ordering::Relaxed),
                shared.gen_first_bar_ms.load(Ordering::Relaxed),
                shared.gen_total_ms.load(Ordering::Relaxed),
                shared.num_late_bars.load(Ordering::Relaxed),
                shared.num_late_dropped.load(Ordering::Relaxed),
            ))
            .color(palette::MUTED),
        );
    }
    if shared.controls.input_source.load(Ordering::Relaxed) != moodfader_engine::shared::INPUT_MIDI {
        let text = if shared.transcriber_ready.load(Ordering::Relaxed) {
            format!(
                "audio: {} notes transcribed  ·  latency {:.0} ms (max {:.0})  ·  real-time factor {:.3}",
                shared.num_transcribed_notes.load(Ordering::Relaxed),
                shared.transcribe_latency_ms.load(Ordering::Relaxed),
                shared.transcribe_max_latency_ms.load(Ordering::Relaxed),
                shared.transcribe_rtf.load(Ordering::Relaxed),
            )
        } else {
            "audio input: the transcriber is not loaded (see the status above); MIDI is still heard".to_string()
        };
        ui.label(egui::RichText::new(text).color(palette::MUTED));
    }
    ui.label(
        egui::RichText::new(format!(
            "V {:+.2}  A {:+.2}  confidence {:.0}%  ·  update {:.0} µs  ·  dropped events {dropped}, audio samples {audio_dropped}",
            shared.valence.load(Ordering::Relaxed),
            shared.arousal.load(Ordering::Relaxed),
            shared.confidence.load(Ordering::Relaxed) * 100.0,
            shared.update_us.load(Ordering::Relaxed),
        ))
        .color(palette::MUTED),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_resizes_on_both_axes_within_its_limits() {
        let hint = resize_hint();
        assert!(hint.can_resize && hint.can_resize_horizontally && hint.can_resize_vertically && !hint.preserve_aspect_ratio);
        let current = NativeSize::new(960u32, 700u32);
        // A host asking for something tiny or huge gets the nearest size the panel allows.
        assert_eq!(hint.adjust_size(NativeSize::new(100, 100), current, 1.0), NativeSize::new(760, 600));
        assert_eq!(hint.adjust_size(NativeSize::new(9000, 9000), current, 1.0), NativeSize::new(2560, 1800));
        assert_eq!(hint.adjust_size(NativeSize::new(1200, 900), current, 1.0), NativeSize::new(1200, 900));
        // At 2x the limits are in physical pixels.
        assert_eq!(hint.adjust_size(NativeSize::new(100, 100), current, 2.0), NativeSize::new(1520, 1200));
    }

    #[test]
    fn saved_panel_size_is_reported_in_native_pixels_and_sanitised() {
        assert_eq!(native_panel_size([1200.0, 820.0], 1.0), NativeSize::new(1200, 820));
        assert_eq!(native_panel_size([1200.0, 820.0], 1.5), NativeSize::new(1800, 1230));
        assert_eq!(native_panel_size([1200.0, 820.0], f32::NAN), NativeSize::new(1200, 820));
        assert_eq!(native_panel_size([f32::NAN, 0.0], 1.0), NativeSize::new(960, 700));
        assert_eq!(native_panel_size([10.0, 1e9], 1.0), NativeSize::new(760, 1800));
    }

    #[test]
    fn editor_reports_the_saved_size_before_the_panel_opens() {
        let params = Arc::new(MoodfaderParams::default());
        let editor = create(params.clone(), Arc::new(Shared::default())).unwrap();
        assert_eq!(editor.size(), NativeSize::new(960, 700));
        *params.panel_size.write().unwrap() = [1440.0, 900.0];
        assert_eq!(editor.size(), NativeSize::new(1440, 900));
    }

    #[test]
    fn calibrate_gesture_fits_applies_and_is_saved() {
        let params = MoodfaderParams::default();
        let shared = Shared::default();
        shared.publish_estimate(0.4, 0.2, 1.0);
        assert_eq!(shared.valence.load(Ordering::Relaxed), 0.4);
        // The listener drags the dot: to them this feels sad, not bright.
        assert_eq!(add_calibration_point(&params, &shared, (-0.3, 0.2)), 1);
        shared.publish_estimate(0.4, 0.2, 1.0);
        let v = shared.valence.load(Ordering::Relaxed);
        assert!(v < 0.4 && v > -0.3, "one point moves the reading part of the way: {v}");
        assert_eq!(shared.raw_valence.load(Ordering::Relaxed), 0.4, "the raw value is kept for later fits");
        for _ in 0..8 {
            add_calibration_point(&params, &shared, (-0.3, 0.2));
        }
        shared.publish_estimate(0.4, 0.2, 1.0);
        assert!((shared.valence.load(Ordering::Relaxed) + 0.3).abs() < 0.15);
        // Saved with the project: the points are a persistent field, and refit on load.
        let saved = params.calibration_points.read().unwrap().clone();
        assert_eq!(saved.len(), 9);
        assert_eq!(crate::fit_calibration(&saved), shared.calibration());
    }

    #[test]
    fn presets_say_what_their_names_say() {
        let by = |n: &str| *crate::params::PRESETS.iter().find(|p| p.name == n).unwrap();
        for p in crate::params::PRESETS {
            assert!((-1.0..=1.0).contains(&p.target_valence) && (-1.0..=1.0).contains(&p.target_arousal) && (0.0..=1.0).contains(&p.steer));
        }
        assert!(by("Brighten").target_valence > 0.5 && by("Darken").target_valence < -0.5);
        assert!(by("Calm down").target_arousal < -0.5 && by("Build up").target_arousal > 0.5);
        assert!(by("Follow me").steer == 0.0 && by("Follow me").trigger == crate::params::TriggerMode::Follow);
    }

    #[test]
    fn pad_mapping_round_trips_and_clamps() {
        let rect = Rect::from_min_size(Pos2::new(10.0, 20.0), Vec2::new(200.0, 100.0));
        for (v, a) in [(0.0, 0.0), (1.0, 1.0), (-1.0, 0.5), (0.25, -0.75)] {
            let p = va_to_pad(rect, v, a);
            let (v2, a2) = pad_to_va(rect, p);
            assert!((v - v2).abs() < 1e-6 && (a - a2).abs() < 1e-6);
        }
        // Arousal is up, valence is right.
        assert_eq!(va_to_pad(rect, 1.0, 1.0), Pos2::new(210.0, 20.0));
        assert_eq!(pad_to_va(rect, Pos2::new(-50.0, 500.0)), (-1.0, -1.0));
    }
}
