"""What the linked slice views share, without Qt: cursor, window/level, overlay style, layout.

Several views (axial, coronal, sagittal) show one volume. They do not know each other: each
observes a ``ViewState`` and shows the slice through the shared cursor voxel. A view's slice
index is the cursor's voxel index along that view's ``slice_axis``, so moving the cursor in
one plane moves the other two to the same voxel, and scrolling one view moves the cursor along
its normal only.

World coordinates come from the volume's affine (RAS+ millimetres). DICOM scanners state
positions in LPS, so a DICOM source is shown in LPS and a NIfTI in RAS, labelled.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Set, Tuple

import numpy as np

from medsam_gui.volume import VIEWS, Volume

Voxel = Tuple[int, int, int]
Window = Tuple[float, float]  # (center, width)

LAYOUTS: Tuple[str, ...] = ("single", "three", "quad")  # quad: the three views and 3D
OVERLAY_STYLES: Tuple[str, ...] = ("fill", "outline")


def world_coordinates(volume: Volume, voxel: Voxel) -> Tuple[str, Tuple[float, float, float]]:
    """(frame, (x, y, z) mm) of a voxel centre: LPS for a DICOM source, RAS otherwise."""
    ras = volume.affine @ np.array([voxel[0], voxel[1], voxel[2], 1.0])
    if volume.source.kind == "dicom":
        return "LPS", (float(-ras[0]), float(-ras[1]), float(ras[2]))
    return "RAS", (float(ras[0]), float(ras[1]), float(ras[2]))


class ViewState:
    """Shared state of the linked views; observers get the set of fields that changed.

    Fields: ``cursor`` (source voxel), ``window`` (display centre, width), ``overlay``
    ("fill" or "outline"), ``layout`` ("single", "three" or "quad"), ``active`` (the view the
    user last worked in: menus, keys, the slider and the background encoder act on it).
    """

    def __init__(self) -> None:
        self.shape: Tuple[int, int, int] = (1, 1, 1)
        self.cursor: Voxel = (0, 0, 0)
        self.window: Window = (0.5, 1.0)
        self.overlay: str = "fill"
        self.layout: str = "single"
        self.active: str = "axial"
        self._volume: Optional[Volume] = None
        self._observers: List[Callable[[Set[str]], None]] = []

    # ---- observers -------------------------------------------------------------------------
    def subscribe(self, fn: Callable[[Set[str]], None]) -> None:
        self._observers.append(fn)

    def _notify(self, changed: Set[str]) -> None:
        if changed:
            for fn in list(self._observers):
                fn(changed)

    # ---- volume and cursor -----------------------------------------------------------------
    @property
    def volume(self) -> Optional[Volume]:
        return self._volume

    def bind(self, volume: Volume) -> None:
        """Follow ``volume``; a new volume puts the cursor at its centre voxel."""
        if volume is self._volume:
            return
        self._volume = volume
        self.shape = volume.shape
        self.cursor = tuple(s // 2 for s in self.shape)  # type: ignore[assignment]
        self._notify({"volume", "cursor"})

    def clamp(self, voxel: Voxel) -> Voxel:
        return tuple(int(min(max(int(v), 0), s - 1))  # type: ignore[return-value]
                     for v, s in zip(voxel, self.shape))

    def set_cursor(self, voxel: Voxel) -> None:
        voxel = self.clamp(voxel)
        if voxel != self.cursor:
            self.cursor = voxel
            self._notify({"cursor"})

    def index(self, view: str) -> int:
        """Slice index of ``view`` through the cursor."""
        return int(self.cursor[self._volume.geometry(view).slice_axis])

    def set_index(self, view: str, index: int) -> None:
        """Move the cursor along ``view``'s normal (scrolling that view)."""
        axis = self._volume.geometry(view).slice_axis
        voxel = list(self.cursor)
        voxel[axis] = int(index)
        self.set_cursor(tuple(voxel))  # type: ignore[arg-type]

    def cursor_pixel(self, view: str) -> Tuple[int, int]:
        """(row, col) of the cursor on ``view``'s slice: where the other two slices cut it."""
        _index, row, col = self._volume.geometry(view).display_pixel(self.cursor)
        return row, col

    def crossing_views(self, view: str) -> Tuple[str, str]:
        """The views whose slices show as (the horizontal, the vertical) line in ``view``."""
        geom = self._volume.geometry(view)
        by_axis = {self._volume.geometry(v).slice_axis: v for v in VIEWS}
        return by_axis[geom.row_axis], by_axis[geom.col_axis]

    # ---- display settings ------------------------------------------------------------------
    def set_window(self, window: Window) -> None:
        window = (float(window[0]), float(window[1]))
        if window != self.window:
            self.window = window
            self._notify({"window"})

    def set_overlay(self, style: str) -> None:
        if style not in OVERLAY_STYLES:
            raise ValueError(f"overlay style {style!r}; expected one of {OVERLAY_STYLES}")
        if style != self.overlay:
            self.overlay = style
            self._notify({"overlay"})

    def set_layout(self, layout: str) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}; expected one of {LAYOUTS}")
        if layout != self.layout:
            self.layout = layout
            self._notify({"layout"})

    def set_active(self, view: str) -> None:
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}")
        if view != self.active:
            self.active = view
            self._notify({"active"})

    def visible_views(self) -> Tuple[str, ...]:
        return VIEWS if self.layout in ("three", "quad") else (self.active,)


__all__ = ["LAYOUTS", "OVERLAY_STYLES", "ViewState", "world_coordinates"]
