"""The annotator window: slice canvas, slider + cache strip, labels panel, tools, menus.

A box travels: ``SliceView.box_drawn`` -> ``MainWindow._on_box`` -> ``Session.predict`` (on
this thread when the slice's embedding is cached, ~50 ms; else in a worker with a busy cursor)
-> ``Annotator.apply_prediction`` (LabelMap.paint + History) -> ``_refresh_overlay``.
Corrections and undo live in ``edit_actions.EditActions``; opening in ``window_open``, saving
and exporting in ``window_io.FileActions``; the Model menu and whole-volume encoding in
``model_menu``.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from PyQt5.QtCore import QSettings, Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import (QAction, QActionGroup, QApplication, QComboBox, QDockWidget,
                             QLabel, QMainWindow, QMessageBox, QSlider, QSpinBox, QVBoxLayout,
                             QWidget)

from medsam_gui.ui.cache_strip import CacheStrip
from medsam_gui.ui.edit_actions import EditActions
from medsam_gui.ui.filling import fill_to_correct
from medsam_gui.ui.interop_actions import InteropActions
from medsam_gui.ui.label_panel import LabelPanel
from medsam_gui.ui.linked_views import LinkedViews
from medsam_gui.ui.messages import LoggingStatusBar, MessageLog, MessagesDialog
from medsam_gui.ui.model_input_menu import ModelInputActions
from medsam_gui.ui.model_menu import ModelActions
from medsam_gui.ui.propagation_actions import PropagationActions
from medsam_gui.ui.window_io import FileActions
from medsam_gui.ui.workspace_menu import WorkspaceActions
from medsam_gui.ui.workers import Precomputer, error_text, run_task
from medsam_gui.volume import VIEWS

TOOL_KEYS = {"box": "B", "point": "P", "brush": "N", "eraser": "E", "pan": "H"}
TOOL_TIPS = {
    "box": "Drag a box around a structure: the model draws its mask for the active label. "
           "A box over an existing box replaces that object; a box elsewhere adds another "
           "object of the same label (Shift+drag always adds); drag an edge of a box to redraw "
           "it. Ctrl+P then follows the mask through the volume.",
    "point": "Refine the last box: left click = include, right click = exclude.",
    "brush": "Paint the active label (size in the box next to the tools).",
    "eraser": "Erase the active label.",
    "pan": "Drag to move the image (the middle mouse button pans with any tool).",
}


class MainWindow(LinkedViews, EditActions, FileActions, InteropActions, ModelActions,
                 ModelInputActions, PropagationActions, WorkspaceActions, QMainWindow):
    """``background=False`` keeps background encoding off (tests); ``cache`` shares an
    EmbeddingCache; ``load_model=False`` skips loading the default backend at start;
    ``precision`` chooses the image encoder's runtime (``engine.runtime.PRECISIONS``)."""

    volume_loaded = pyqtSignal()
    session_ready = pyqtSignal()
    mask_applied = pyqtSignal()
    busy_changed = pyqtSignal(bool)

    def __init__(self, background: bool = True, model_kind: str = "litemedsam",
                 checkpoint: Optional[str] = None, workspace_dir: Optional[str] = None,
                 cache=None, settings: Optional[QSettings] = None, load_model: bool = True,
                 precision: str = "auto"):
        super().__init__()
        self.message_log = MessageLog(self)
        self.setStatusBar(LoggingStatusBar(self.message_log))  # every message kept
        self.statusBar().line.clicked.connect(self.show_messages)
        self.precision = precision  # image encoder runtime and precision (load_backend)
        self.setWindowTitle("medsam-gui")
        self.settings = settings or QSettings("medsam-gui", "medsam-gui")
        self.volume = self.session = self.backend = self.labelmap = self.annotator = None
        self.workspace = None
        self.workspace_dir = workspace_dir
        self.cache = cache
        self._indices = {}
        self.precomputer = Precomputer(parent=self)
        self.precomputer.enabled = background
        self.precomputer.encoded.connect(self._update_strip_cache)
        self.precomputer.failed.connect(lambda msg: self.show_error("Encoding failed", msg))
        self._build_widgets()
        self._build_actions()
        self.init_model_input()
        self.init_file_actions()
        self.init_model_actions(model_kind, checkpoint, load_model)
        from medsam_gui.ui.dataset_panel import install as install_worklist

        install_worklist(self)  # File > Open dataset… and the worklist dock
        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "Keys and mouse…", self.show_keys, "F1",
                     "Every shortcut and mouse gesture on one page")
        self.close_scan_action.setEnabled(False)
        self.volume_loaded.connect(lambda: self.close_scan_action.setEnabled(True))
        self.volume_loaded.connect(self.surfaces_follow)
        self.fit_to_screen(1280, 860)

    def fit_to_screen(self, width: int, height: int) -> None:
        """Take ``width``×``height``, or less on a smaller screen: a window taller than a
        1366×768 laptop screen hides its status bar and slice strip below the edge."""
        screen = self.screen() if hasattr(self, "screen") else None
        screen = screen or QApplication.primaryScreen()
        if screen is None:
            self.resize(width, height)
            return
        free = screen.availableGeometry()
        frame = 48  # title bar and borders, which the window manager adds after show()
        self.resize(max(480, min(width, free.width() - 16)),
                    max(320, min(height, free.height() - frame)))
        self.move(free.x() + max(0, (free.width() - self.width()) // 2),
                  free.y() + max(0, (free.height() - self.height() - frame) // 2))

    # ---- layout ------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        views = self.init_views()  # the slice canvases and the view state they share
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setFocusPolicy(Qt.NoFocus)
        self.slider.valueChanged.connect(self.set_index)
        self.strip = CacheStrip()
        # the strip's labelled/review bands scan the whole label map: redrawn once after a
        # burst of edits (a box, a propagated slice), not on each one
        self._strip_timer = QTimer(self)
        self._strip_timer.setSingleShot(True)
        self._strip_timer.setInterval(80)
        self._strip_timer.timeout.connect(self._update_strip_cache)
        self._bands = None  # (key, labelled slices, review states): scanned once per change
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(views, 1)
        lay.addWidget(self.strip)
        lay.addWidget(self.slider)
        lay.addWidget(self.statusBar().line)  # the last message, the window's full width
        self.setCentralWidget(central)
        self.labels = LabelPanel()
        self.labels.table_changed.connect(self._on_table_changed)
        self.labels.opacity_changed.connect(lambda _o: self._on_table_changed(save=False))
        self.labels.active_changed.connect(lambda _v: self._on_label_selected())
        self.labels.delete_requested.connect(self.delete_label)
        dock = QDockWidget("Labels", self)
        dock.setObjectName("labelsDock")
        dock.setWidget(self.labels)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)
        self.pos_label, self.model_label = QLabel(), QLabel("model: loading…")
        self.cursor_label = QLabel()  # the crosshair's voxel and mm, shown with three views
        self.cursor_label.hide()
        self.statusBar().addWidget(self.pos_label, 1)
        self.pos_label.setMinimumWidth(120)
        # permanent: a status message (an import's notes, say) must not be drawn over it, nor
        # hide it while the user reads the crosshair
        self.statusBar().addPermanentWidget(self.cursor_label)
        self.statusBar().addPermanentWidget(self.model_label)

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.setStatusTip(tip)
        act.triggered.connect(lambda _c=False: slot())
        menu.addAction(act)
        return act

    def _build_actions(self) -> None:
        bar = self.addToolBar("Tools")
        bar.setObjectName("toolsBar")
        edit = self.menuBar().addMenu("&Edit")
        self.undo_action = self._action(edit, "Undo", self.undo, QKeySequence.Undo)
        self.redo_action = self._action(edit, "Redo", self.redo, "Ctrl+Shift+Z")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        edit.addSeparator()
        group = QActionGroup(self)
        self.tool_actions = {}
        for tool, key in TOOL_KEYS.items():
            act = self._action(edit, tool.capitalize() if tool != "point" else "Points",
                               lambda t=tool: self.set_tool(t), key, TOOL_TIPS[tool])
            act.setToolTip(f"{act.text()} ({key}): {TOOL_TIPS[tool]}")
            act.setCheckable(True)
            group.addAction(act)
            bar.addAction(act)
            self.tool_actions[tool] = act
        self.tool_actions["box"].setChecked(True)
        self.brush_size = QSpinBox()
        self.brush_size.setRange(1, 60)
        self.brush_size.setValue(5)
        self.brush_size.setPrefix("brush ")
        self.brush_size.setSuffix(" px")
        self.brush_size.valueChanged.connect(self._set_brush_radius)
        bar.addWidget(self.brush_size)
        bar.addSeparator()
        edit.addSeparator()
        for text, slot, key in (("Fill holes", self.fill_holes, "Shift+F"),
                                ("Clear slice", self.clear_slice, "Shift+Del"),
                                ("Accept slice", self.accept_slice, "Ctrl+Return")):
            bar.addAction(self._action(edit, text, slot, key))
        bar.addSeparator()
        self.init_propagation_actions(bar)
        view = self.menuBar().addMenu("&View")
        self.init_view_actions(view)
        bar.addSeparator()
        self.view_box = QComboBox()
        self.view_box.addItems(list(VIEWS))
        self.view_box.currentTextChanged.connect(self.set_view)
        bar.addWidget(self.view_box)
        for i, name in enumerate(VIEWS):
            self._action(view, name.capitalize(), lambda n=name: self.set_view(n), f"Ctrl+{i + 1}")
        self.preset_box = QComboBox()
        self.preset_box.setToolTip("Display window (never changes the voxels); right-drag "
                                   "on the image to adjust")
        self.preset_box.activated.connect(lambda _i: self.apply_preset(self.preset_box.currentText()))
        bar.addWidget(self.preset_box)
        view.addSeparator()
        self._action(view, "Next slice", lambda: self.set_index(self.index + 1), "PgUp")
        self._action(view, "Previous slice", lambda: self.set_index(self.index - 1), "PgDown")
        self._action(view, "Fit to window", lambda: self.slice_view.fit(), "Ctrl+0")
        self._action(view, "Zoom in", lambda: self.slice_view.zoom(1.25), QKeySequence.ZoomIn)
        self._action(view, "Zoom out", lambda: self.slice_view.zoom(0.8), QKeySequence.ZoomOut)
        self.encode_action = self._action(view, "Encode whole volume…", self.encode_volume,
                                          tip="Compute every slice's embedding now")
        view.addSeparator()
        self.messages_action = self._action(view, "Messages…", self.show_messages, "Ctrl+M",
                                            "Every message of this session in full: warnings, "
                                            "why a propagation stopped, exports, imports")

    def _update_strip_cache(self, *_args) -> None:
        if self.volume is None:
            return
        cached = self.session.cached_indices(self.view) if self.session is not None else ()
        key = (id(self.labelmap), self.view, self.active_label if self.labelmap else 0)
        if self._bands is None or self._bands[0] != key:  # the label map changed since
            self._bands = (key, self._labelled_slices(), self.review_states())
        self.strip.set_state(self.volume.n_slices(self.view), cached, self.index,
                             self._bands[1], self._bands[2])

    def labels_changed(self) -> None:
        """The label map changed: the strip's label bands and the 3D surfaces are redrawn soon
        (debounced)."""
        self._bands = None
        self._strip_timer.start()
        if self.view3d is not None:
            if self.view3d.labelmap is not self.labelmap:  # replaced (import, restore)
                self.surfaces_follow()
            else:
                self.view3d.schedule()

    def _labelled_slices(self):
        if self.labelmap is None:
            return ()
        axis = self.volume.geometry(self.view).slice_axis
        other = tuple(a for a in range(3) if a != axis)
        return np.flatnonzero(self.labelmap.array.any(axis=other)).tolist()

    # ---- segmenting ------------------------------------------------------------------------
    @property
    def active_label(self) -> int:
        return self.labels.active_value

    def set_tool(self, tool: str) -> None:
        for canvas in self.view_layout.views.values():
            canvas.set_tool(tool)
        self.tool_actions[tool].setChecked(True)

    def _set_brush_radius(self, radius: int) -> None:
        for canvas in self.view_layout.views.values():
            canvas.brush_radius = radius

    def _on_box(self, box, additive: bool) -> None:
        if not self._ready_to_segment():
            return
        key = (self.view, self.index, self.active_label)
        slot = self.annotator.slot_for_box(key, box, additive)
        self._predict(key, slot, box, [], additive)

    def _on_point(self, x: float, y: float, label: int) -> None:
        if not self._ready_to_segment():
            return
        key = (self.view, self.index, self.active_label)
        target = self.annotator.point_target(key)
        if target is None:
            self.statusBar().showMessage("Draw a box first; points refine its mask.", 4000)
            return
        slot, obj = target
        self._predict(key, slot, obj.box, list(obj.points) + [(x, y, label)], False)

    def _ready_to_segment(self) -> bool:
        if self.edits_blocked():
            return False
        if self.session is None or self.labelmap is None:
            problem = getattr(self, "session_error", None)
            if problem and self.labelmap is not None:
                self.show_error("The model cannot segment this scan", problem)
            else:
                self.statusBar().showMessage("The model is still loading…", 3000)
            return False
        if not self.active_label:
            self.statusBar().showMessage("Add a label first (Labels panel).", 3000)
            return False
        return True

    def _predict(self, key, slot: int, box, points, additive: bool) -> None:
        view, index, _ = key
        session = self.session
        fill = None if points else fill_to_correct(self.annotator, key, slot)  # a correction
        if session.is_cached(view, index):
            try:
                pred = session.predict(view, index, box, points or None, fill)
            except Exception as exc:  # a failing model must not cost the window
                self.show_error("Segmentation failed", error_text(exc))
                return
            self._apply(key, slot, pred, additive, session.backend)
            return
        self._set_busy(True)
        run_task(lambda _t: session.predict(view, index, box, points or None, fill),
                 lambda pred: (self._set_busy(False), self._update_strip_cache(),
                               self._apply(key, slot, pred, additive, session.backend)),
                 lambda exc: (self._set_busy(False),
                              self.show_error("Segmentation failed", error_text(exc))),
                 name="predict")

    def _apply(self, key, slot: int, pred, additive: bool, backend) -> None:
        if self.labelmap is None or self.session is None or self.session.volume is not self.volume:
            return  # the volume was closed meanwhile
        self.annotator.apply_prediction(key, slot, pred.box, pred.points, pred.mask, pred.iou,
                                        backend.name, backend.weights_sha256, additive,
                                        pred.model_input)
        self._refresh_overlay()  # every visible view: the mask shows in the cross planes too
        self.changed()
        self.mask_applied.emit()

    def _set_busy(self, busy: bool) -> None:
        if busy:
            QApplication.setOverrideCursor(Qt.BusyCursor)
        else:
            QApplication.restoreOverrideCursor()
        self.busy_changed.emit(busy)

    def show_error(self, title: str, message: str) -> None:
        self.message_log.add(f"{title}: {message}", "error")
        QMessageBox.critical(self, title, message)

    def notify(self, text: str, timeout: int = 6000) -> None:
        """One short line in the status bar (it stays until the next message) and the full
        text in View ▸ Messages."""
        self.statusBar().showMessage(text, timeout)

    def show_keys(self) -> None:
        from medsam_gui.ui.help_keys import KeysDialog

        self._keys_dialog = KeysDialog(self)
        self._keys_dialog.show()

    def scan_name(self) -> str:
        """What the title calls the scan: the series description, else the file name."""
        if self.volume is None:
            return ""
        src = self.volume.source
        name = os.path.basename(src.path.rstrip("/\\")) or src.path
        described = src.description.strip()
        return f"{described} ({name})" if described and described != name else name

    def update_title(self) -> None:
        """"scan — label 1 “tumour” — medsam-gui": what is open and what an edit changes."""
        parts = [self.scan_name()] if self.volume is not None else []
        lab = self.labelmap.table.get(self.active_label) if self.labelmap is not None else None
        if lab is not None:
            parts.append(f"editing {lab.value} \u201c{lab.name}\u201d")
        self.setWindowTitle(" — ".join(parts + ["medsam-gui"]))

    def close_scan(self) -> bool:
        """File ▸ Close scan: save the work, give back its lock, empty the window."""
        if self.volume is None:
            return True
        if not self.flush_autosave() and not self.confirm_leave("close the scan"):
            return False
        self.cancel_fill()
        self.precomputer.stop(wait=True)
        if self.workspace is not None:
            self.workspace.close(self.volume)
        name = self.scan_name()
        self.volume = self.labelmap = self.annotator = self.session = None
        self.workspace = None
        self._bands = None
        for painter in self.painters.values():
            painter.reset()
        for canvas in self.view_layout.views.values():
            canvas.clear()
        self.labels.set_table(None)
        self.strip.set_state(0, (), 0, (), ())
        self.slider.setRange(0, 0)
        self.pos_label.setText("")
        self.cursor_label.setText("")
        self.show_workspace_place()
        self.update_interop_actions()
        bar = getattr(self, "load_warning_bar", None)
        if bar is not None:
            bar.hide()
        self.close_scan_action.setEnabled(False)
        self.surfaces_follow()
        self.update_title()
        self.notify(f"Closed {name}; the work is saved. File ▸ Open… for the next scan.")
        return True

    def show_messages(self) -> None:
        """View ▸ Messages: the full text of everything the window reported."""
        dialog = getattr(self, "_messages_dialog", None)
        if dialog is None:
            dialog = self._messages_dialog = MessagesDialog(self.message_log, self)
        dialog.refresh()
        dialog.show()
        dialog.raise_()


__all__ = ["MainWindow"]
