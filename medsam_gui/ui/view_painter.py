"""One linked view's redraws, cached: the grey image per (slice, window), the label overlay
per (slice, label content in that plane, colours, style).

A mask change on axial slice k changes a coronal or sagittal plane in one row or column at most
and most planes not at all. Rather than tracking which planes an edit touched (undo,
propagation, interpolation and import all write the label map), the painter keeps the label
plane it last drew and compares it with the plane now: a comparison of two uint8/uint16
slices costs far less than colouring and uploading a new pixmap, and it can never miss a
change. The grey image is never redrawn when only the overlay changed.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from medsam_gui.ui import render
from medsam_gui.ui.slice_view import SliceView

Window = Tuple[float, float]


def window_text(window: Window) -> str:
    """W/L as a radiologist reads them: whole numbers ("W 476  L −4") for HU-like ranges,
    three significant digits for small ranges (standardised MR)."""
    level, width = (float(v) for v in window)
    fmt = (lambda v: f"{v:.0f}") if abs(width) >= 20 else (lambda v: f"{v:.3g}")
    return (f"W {fmt(width)}  L {fmt(level)}").replace("-", "\u2212")


class ViewPainter:
    """Draws ``view`` of a volume into its ``SliceView`` when (and only when) it changed."""

    def __init__(self, view: str, canvas: SliceView):
        self.view = view
        self.canvas = canvas
        self.image_renders = 0  # counters: what was really redrawn (tests, benchmarks)
        self.overlay_renders = 0
        self.reset()

    def reset(self) -> None:
        """Forget what was drawn (a new volume, label map or colour table)."""
        # keys hold the volume and label map themselves (compared by identity), not their
        # id(): a new scan may get the id of a freed one
        self._image_key: Optional[tuple] = None
        self._overlay_key: Optional[tuple] = None
        self._plane: Optional[np.ndarray] = None

    def show_image(self, volume, index: int, window: Window) -> bool:
        """Grey slice ``index`` through ``window``; False when it was on screen already."""
        key = (volume, int(index), tuple(window))
        if self._image_key is not None and key[0] is self._image_key[0] \
                and key[1:] == self._image_key[1:]:
            return False
        geom = volume.geometry(self.view)
        sp = volume.spacing
        image = render.gray_image(volume.slice(self.view, index), window)
        self.canvas.info_text = (f"{self.view} {index} / {geom.n_slices - 1}\n"
                                 + window_text(window))
        self.canvas.letters = geom.edge_letters
        self.canvas.set_image(image, (sp[geom.col_axis], sp[geom.row_axis]))
        self._image_key = key
        self.image_renders += 1
        return True

    def show_overlay(self, volume, labelmap, index: int, lut: np.ndarray, lut_version: int,
                     style: str) -> bool:
        """Label overlay of slice ``index``; False when the plane and its colours are unchanged."""
        plane = labelmap.slice(volume.geometry(self.view), index)  # a view, in any order
        key = (labelmap, int(index), lut_version, style)
        if self._overlay_key is not None and key[0] is self._overlay_key[0] \
                and key[1:] == self._overlay_key[1:] and self._plane is not None \
                and np.array_equal(plane, self._plane):
            return False
        # always a copy: the label map is written in place, so a kept view (an axial plane of
        # a Fortran-ordered map is one) would change with it and hide the next change
        plane = np.array(plane, order="C", copy=True)
        make = render.outline_image if style == "outline" else render.overlay_image
        self.canvas.set_overlay(make(plane, lut))
        self._overlay_key = key
        self._plane = plane
        self.overlay_renders += 1
        return True


__all__ = ["ViewPainter"]
