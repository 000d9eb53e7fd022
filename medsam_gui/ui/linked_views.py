"""The main window's slice views: one large view or three linked ones, and what they show.

A mixin of ``MainWindow``. The shared ``ViewState`` (Qt-free) owns the cursor, window/level,
overlay style, layout and the active view; this mixin observes it and redraws each visible
view through its ``ViewPainter`` (which skips what is on screen already). ``view`` and
``index`` are the active view and its slice: menus, keys, the slider, the strip, the
background encoder and every edit act on them. A press, wheel turn or focus in a view makes it
the active one, so a box drawn in the coronal view is a coronal box.
"""

from __future__ import annotations

import weakref
from typing import Set, Tuple

import numpy as np
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QAction, QActionGroup

from medsam_gui.ui import render
from medsam_gui.ui.slice_view import SliceView
from medsam_gui.ui.view_layout import VIEW_COLORS, ViewLayout
from medsam_gui.ui.view_painter import ViewPainter
from medsam_gui.view_state import ViewState, world_coordinates
from medsam_gui.volume import VIEWS

LAYOUT_KEY = "Ctrl+L"
QUAD_KEY = "Ctrl+Shift+L"
MULTI = ("three", "quad")  # layouts that show the three planes with their crosshair
OUTLINE_KEY = "O"


class LinkedViews:
    """Needs MainWindow attributes (volume, labelmap, annotator, session, slider, strip, …)."""

    # ---- construction ----------------------------------------------------------------------
    def init_views(self) -> ViewLayout:
        """The three canvases and the state they share (called before any other widget)."""
        self.view_state = ViewState()
        self.view_state.subscribe(self._on_view_state)
        self.view_layout = ViewLayout(make_3d=self._make_3d)
        self.painters = {name: ViewPainter(name, canvas)
                         for name, canvas in self.view_layout.views.items()}
        self._lut = np.zeros((1, 4), np.uint8)
        self._lut_version = 0
        for name, canvas in self.view_layout.views.items():
            self._connect_canvas(name, canvas)
        # cross-plane overlays during a propagation: redrawn once after a burst of slices
        self._overlay_timer = QTimer(self)
        self._overlay_timer.setSingleShot(True)
        self._overlay_timer.setInterval(100)
        self._overlay_timer.timeout.connect(self._refresh_overlay)
        return self.view_layout

    def _connect_canvas(self, name: str, canvas: SliceView) -> None:
        canvas.activated.connect(lambda n=name: self._activate(n))
        canvas.box_drawn.connect(self._on_box)
        canvas.point_clicked.connect(self._on_point)
        canvas.stroke_finished.connect(self._on_stroke)
        canvas.hovered.connect(lambda r, c, n=name: self._on_hover(r, c, n))
        canvas.slice_step.connect(lambda k, n=name: self._step(n, k))
        canvas.window_drag.connect(self._on_window_drag)
        canvas.window_released.connect(self.display_window_settled)
        canvas.files_dropped.connect(lambda paths: self.open_path(paths[0]))
        canvas.cursor_moved.connect(lambda r, c, n=name: self._on_cursor(n, r, c))

    def init_view_actions(self, menu) -> None:
        """View menu: layouts (Ctrl+L switches) and the overlay style (O toggles outlines)."""
        group = QActionGroup(self)
        self.layout_actions = {}
        for layout, text in (("single", "One large view"),
                             ("three", "Three views: axial, coronal, sagittal"),
                             ("quad", "Four views: the three planes and 3D")):
            act = QAction(text, self)
            act.setCheckable(True)
            act.setStatusTip("Ctrl+L switches between one view and three linked views, "
                             "Ctrl+Shift+L shows 2×2 with the 3D view; Ctrl+click or Ctrl+drag "
                             "moves the crosshair")
            act.triggered.connect(lambda _c=False, l=layout: self.set_layout(l))
            group.addAction(act)
            menu.addAction(act)
            self.layout_actions[layout] = act
        self.layout_actions["single"].setChecked(True)
        self._action(menu, "Switch layout", self.toggle_layout, LAYOUT_KEY,
                     "One large view ↔ three linked views")
        self.layout_actions["quad"].setShortcut(QUAD_KEY)
        self.outline_action = self._action(menu, "Label outlines", self.toggle_outlines,
                                           OUTLINE_KEY, "Show labels as outlines instead of "
                                           "filled (easier review across planes)")
        self.outline_action.setCheckable(True)
        menu.addSeparator()
        saved = self.settings.value("layout", "single")
        if saved in self.layout_actions:  # the layout chosen last time
            self.set_layout(saved)

    # ---- the active view and its slice -----------------------------------------------------
    @property
    def view(self) -> str:
        return self.view_state.active

    @view.setter
    def view(self, name: str) -> None:
        self.view_state.set_active(name)

    @property
    def index(self) -> int:
        if self.volume is None or self.view_state.volume is not self.volume:
            return 0
        return self.view_state.index(self.view)

    @index.setter
    def index(self, value: int) -> None:
        if self.volume is not None:
            self.view_state.bind(self.volume)
            self.view_state.set_index(self.view, value)

    @property
    def window_lw(self) -> Tuple[float, float]:
        return self.view_state.window

    @window_lw.setter
    def window_lw(self, window: Tuple[float, float]) -> None:
        self.view_state.set_window(window)

    @property
    def slice_view(self) -> SliceView:
        """The active view's canvas."""
        return self.view_layout.views[self.view]

    def _ready(self) -> bool:
        return self.volume is not None and self.view_state.volume is self.volume

    # ---- commands --------------------------------------------------------------------------
    def set_view(self, view: str, fit: bool = True) -> None:
        """Make ``view`` the active view (in the single layout: the one shown). ``fit=False``
        is a click into another of the three views: zoom and pan stay, the labels panel shows
        the slice ranges on this view from the sizes it has (they cover every view), and the
        strip (a whole-volume scan) follows a moment later, off the press."""
        if self.volume is None or view not in VIEWS:
            return
        self.view_state.bind(self.volume)
        self.view_state.set_active(view)
        self._sync_active()
        self.show_slice()
        if fit or self.view_state.layout == "single":
            self._update_strip_cache()
            self.update_label_sizes()
            self.slice_view.fit()
        else:
            self._strip_timer.start()
            self.labels.set_sizes(self.labels.sizes, view)

    def set_index(self, index: int) -> None:
        if not self._ready():
            return
        index = int(min(max(index, 0), self.volume.n_slices(self.view) - 1))
        if index == self.index and self.slider.value() == index:
            return
        self.view_state.set_index(self.view, index)  # the observer redraws

    def set_layout(self, layout: str) -> None:
        """"single" (one large view), "three" (axial, coronal, sagittal side by side) or
        "quad" (2×2 with the 3D view)."""
        self.view_state.set_layout(layout)
        self.layout_actions[layout].setChecked(True)
        self.settings.setValue("layout", layout)

    def toggle_layout(self) -> None:
        self.set_layout("single" if self.view_state.layout in MULTI else "three")

    def toggle_outlines(self) -> None:
        outline = self.view_state.overlay != "outline"
        self.view_state.set_overlay("outline" if outline else "fill")
        self.outline_action.setChecked(outline)

    def _activate(self, name: str) -> None:
        if name != self.view and self._ready():
            self.set_view(name, fit=False)

    def _step(self, name: str, steps: int) -> None:
        self._activate(name)
        self.set_index(self.index + steps)

    def _on_cursor(self, name: str, row: int, col: int) -> None:
        """Ctrl+click/drag in ``name``: the other two views go to the voxel under the mouse."""
        if self._ready():
            self.view_state.set_cursor(self.volume.voxel_index(name, self.index, row, col))

    # ---- the 3D pane ---------------------------------------------------------------------------
    @property
    def view3d(self):
        """The 3D pane once the 2×2 layout has been shown (None before)."""
        return self.view_layout.view3d

    def _make_3d(self):
        from medsam_gui.ui.view3d import View3D

        pane = View3D()
        if self.volume is not None and self.labelmap is not None:
            pane.set_volume(self.volume, self.labelmap)
            pane.set_cursor(self.view_state.cursor)
        return pane

    def surfaces_follow(self) -> None:
        """A new scan or label map: the 3D pane starts over (when it exists)."""
        if self.view3d is not None:
            self.view3d.set_volume(self.volume, self.labelmap)
            if self.volume is not None:
                self.view3d.set_cursor(self.view_state.cursor)

    # ---- observing the shared state --------------------------------------------------------
    def _on_view_state(self, changed: Set[str]) -> None:
        if "layout" in changed:  # the single view keeps its status bar as it was
            self.cursor_label.setVisible(self.view_state.layout in MULTI)
        if not self._ready():
            if "layout" in changed or "active" in changed:
                self.view_layout.arrange(self.view_state.layout, self.view_state.active)
            return
        if "volume" in changed:  # a new scan: nothing drawn before is valid (or kept alive)
            for painter in self.painters.values():
                painter.reset()
        if "layout" in changed or "active" in changed:
            self.view_layout.arrange(self.view_state.layout, self.view_state.active)
        if "cursor" in changed or "layout" in changed:
            self.show_slice()
            self._update_cursor_label()
            if self.view3d is not None:
                self.view3d.set_cursor(self.view_state.cursor)
        elif "window" in changed:
            self._show_image()
        elif "overlay" in changed:
            self._refresh_overlay()
        if "layout" in changed:
            self.view_layout.refit_three()  # the images are drawn now: their aspect is known
            for name in self.view_layout.visible():
                self.view_layout.views[name].fit()

    def _sync_active(self) -> None:
        """The slider, the view chooser and the strip follow the active view."""
        n = self.volume.n_slices(self.view)
        self.view_box.blockSignals(True)
        self.view_box.setCurrentText(self.view)
        self.view_box.blockSignals(False)
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.setValue(self.index)
        self.slider.blockSignals(False)

    # ---- drawing ---------------------------------------------------------------------------
    def show_slice(self) -> None:
        if not self._ready():
            return
        self._sync_active()
        self._show_image()
        self._refresh_overlay()
        self._update_pos_label()
        self.strip.set_current(self.index)
        if not self.filling:  # a propagation encodes the slices it needs itself
            self.precomputer.follow(self.session, self.view, self.index)

    def _show_image(self) -> None:
        if not self._ready():
            return
        state = self.view_state
        for name in state.visible_views():
            self.painters[name].show_image(self.volume, state.index(name), state.window)
        self._draw_crosshairs()

    def _refresh_overlay(self) -> None:
        """Overlays and prompts of the visible views (a view whose plane is unchanged is not
        redrawn)."""
        if self.labelmap is None or not self._ready():
            return
        state = self.view_state
        for name in state.visible_views():
            index = state.index(name)
            self.painters[name].show_overlay(self.volume, self.labelmap, index, self._lut,
                                             self._lut_version, state.overlay)
            boxes, points, active = self.annotator.prompts(name, index, self.active_label)
            self.view_layout.views[name].set_prompts(boxes, points, active)

    def refresh_overlay_soon(self) -> None:
        self._overlay_timer.start()

    def _draw_crosshairs(self) -> None:
        state = self.view_state
        for name, canvas in self.view_layout.views.items():
            if state.layout not in MULTI:
                canvas.hide_crosshair()
                continue
            row, col = state.cursor_pixel(name)
            across, down = state.crossing_views(name)
            canvas.set_crosshair(row, col, VIEW_COLORS[across], VIEW_COLORS[down])
            canvas.viewport().update()

    def _rebuild_lut(self) -> None:
        table = self.labelmap.table.labels
        self._lut = render.color_lut([(l.value, l.color, l.visible) for l in table],
                                     self.labels.opacity_value)
        self._lut_version += 1
        color = next((l.color for l in table if l.value == self.active_label), (255, 0, 0))
        for canvas in self.view_layout.views.values():
            canvas.stroke_color = color

    # ---- display window ----------------------------------------------------------------------
    def _presets(self) -> dict:
        cached = getattr(self, "_auto_window", None)  # (weak ref to the volume, window)
        if cached is None or cached[0]() is not self.volume:  # once per scan: reads all voxels
            cached = (weakref.ref(self.volume), render.auto_window(self.volume.data))
            self._auto_window = cached
        presets = {"Auto": cached[1]}
        if self.volume.source.window_preset:
            presets["DICOM"] = tuple(self.volume.source.window_preset)
        presets.update(render.presets_for(self.volume))
        return presets

    def apply_preset(self, name: str) -> None:
        if self.volume is not None and name in self._presets():
            self.window_lw = tuple(float(v) for v in self._presets()[name])
            self._show_image()
            self.display_window_settled()

    def _on_window_drag(self, dx: float, dy: float) -> None:
        c, w = self.window_lw
        w = max(w * (1.0 + dx * 0.005), 1e-3)
        c = c - dy * w * 0.005
        self.window_lw = (c, w)  # every view shows it (ViewState observer)

    # ---- status bar --------------------------------------------------------------------------
    def _on_hover(self, row: int, col: int, name: str = "") -> None:
        self._hover = (row, col, name or self.view) if row >= 0 else None
        self._update_pos_label()

    def _update_pos_label(self) -> None:
        """Slice and the voxel under the mouse, for the slice shown now: redone when the slice
        changes under a still mouse (wheel, keys), so it never names a slice left behind."""
        if not self._ready():
            self.pos_label.setText("")
            return
        hover = getattr(self, "_hover", None)
        name = hover[2] if hover else self.view
        index, last = self.view_state.index(name), self.volume.n_slices(name) - 1
        text = f"{name} slice {index} (0–{last})"
        # the slice part is never cut, whatever the permanent fields beside it take
        self.pos_label.setMinimumWidth(self.pos_label.fontMetrics().horizontalAdvance(
            f"sagittal slice {last} (0–{last})") + 16)
        if hover is not None:
            i, j, k = self.volume.voxel_index(name, index, hover[0], hover[1])
            value = self.volume.data[i, j, k]
            lab = int(self.labelmap.array[i, j, k]) if self.labelmap is not None else 0
            text += f"   voxel ({i}, {j}, {k})   value {float(value):.5g}   label {lab}"
        self.pos_label.setText(text)
        self.pos_label.setToolTip("Slices count from 0 (the file's voxel index), as in "
                                  "medsam-segment and the exported files")

    def _update_cursor_label(self) -> None:
        if not self._ready():
            self.cursor_label.setText("")
            return
        voxel = self.view_state.cursor
        frame, xyz = world_coordinates(self.volume, voxel)
        mm = ", ".join(f"{v:.1f}" if round(v, 1) != 0 else "0.0" for v in xyz)  # no "-0.0"
        text = f"cursor ({voxel[0]}, {voxel[1]}, {voxel[2]})  {frame} {mm} mm"
        self.cursor_label.setText(text)
        # the coordinates are what a review in three planes reads: never cut them off
        self.cursor_label.setMinimumWidth(self.cursor_label.fontMetrics().horizontalAdvance(text)
                                          + 24)  # + the style sheet's padding (cut at 8)
        self.cursor_label.setToolTip(f"Crosshair: source voxel (i, j, k) and the scanner's "
                                     f"{frame} coordinates of its centre (Ctrl+click moves it)")


__all__ = ["LAYOUT_KEY", "LinkedViews", "OUTLINE_KEY"]
