"""The canvases of the linked views and their arrangement: one large view, the axial,
coronal and sagittal views together, or 2×2 with a 3D pane (axial and sagittal above,
coronal and 3D below, as ITK-SNAP; splitters, so the user can widen one).

The three views use the space they get: side by side in a row when the area is wide enough
for that, otherwise the active view large on the left and the other two stacked beside it
(three side by side in a 1366×768 window left each image 359 px in a 362×634 pane; the
stacked arrangement shows the active one at about 630 px). Which one is chosen by the image
area the three fitted images cover, for the images' own aspect, again when the area changes
by much.

Only widgets live here; which slice each canvas shows is decided by the window from the shared
``ViewState``.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

from PyQt5.QtCore import Qt
from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import QSplitter, QVBoxLayout, QWidget

from medsam_gui.ui.slice_view import SliceView
from medsam_gui.volume import VIEWS

# Each view's colour: its slice line in the other views and its frame when active (the
# colours 3D Slicer uses: axial red, coronal green, sagittal yellow).
VIEW_COLORS: Dict[str, tuple] = {
    "axial": (230, 60, 60),
    "coronal": (60, 200, 80),
    "sagittal": (235, 205, 40),
}


QUAD = (("axial", "sagittal"), ("coronal", "3d"))  # the 2×2 grid, row by row
STACK_SHARES = (0.5, 0.55, 0.6, 0.65)  # the large view's share of the width, tried in turn


def fitted_area(size: Tuple[float, float], width: float, height: float) -> float:
    """Area of an image of ``size`` (w, h) fitted whole into a ``width`` × ``height`` pane."""
    w, h = max(size[0], 1e-6), max(size[1], 1e-6)
    scale = max(min(width / w, height / h), 0.0)
    return scale * scale * w * h


def three_arrangement(sizes: Dict[str, Tuple[float, float]], active: str, width: float,
                      height: float) -> Tuple[str, float, float]:
    """("row" | "stack", the large view's width share for "stack", the area's gain over the
    other arrangement) for three images of ``sizes`` in a ``width`` × ``height`` area, ``active``
    the one that would be large."""
    row = sum(fitted_area(sz, width / 3, height) for sz in sizes.values())
    others = [n for n in sizes if n != active]
    stack, share = max((fitted_area(sizes[active], f * width, height)
                        + sum(fitted_area(sizes[n], (1 - f) * width, height / 2) for n in others),
                        f) for f in STACK_SHARES)
    if row >= stack:
        return "row", share, row / max(stack, 1e-6)
    return "stack", share, stack / max(row, 1e-6)


class ViewLayout(QWidget):
    """Three ``SliceView`` canvases, one per view axis, and the 3D pane (made on first use by
    ``make_3d``); ``arrange`` shows one, all three, or the 2×2 grid."""

    def __init__(self, parent=None, make_3d: Optional[Callable[[], QWidget]] = None):
        super().__init__(parent)
        self.views: Dict[str, SliceView] = {name: SliceView() for name in VIEWS}
        self.make_3d = make_3d
        self.view3d: Optional[QWidget] = None
        self.rows = QSplitter(Qt.Vertical)
        self.rows.setChildrenCollapsible(False)
        self.top, self.bottom = QSplitter(Qt.Horizontal), QSplitter(Qt.Horizontal)
        for split in (self.top, self.bottom):
            split.setChildrenCollapsible(False)
            self.rows.addWidget(split)
        self.splitter = self.top  # the row of the single and three-view layouts
        for view in self.views.values():
            view.setMinimumSize(120, 120)
            self.top.addWidget(view)
        self.side = QSplitter(Qt.Vertical)  # the two smaller views of the stacked three
        self.side.setChildrenCollapsible(False)
        self.top.addWidget(self.side)
        self.side.hide()
        self.three_mode = "row"
        self.large = "axial"
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.rows)
        self.layout_name = "single"
        self.active = "axial"
        self.arrange("single", "axial")

    def pane_3d(self) -> Optional[QWidget]:
        """The 3D pane, made on first use (an OpenGL context costs start-up time)."""
        if self.view3d is None and self.make_3d is not None:
            self.view3d = self.make_3d()
            self.view3d.setMinimumSize(120, 120)
            self.bottom.addWidget(self.view3d)
        return self.view3d

    def arrange(self, layout: str, active: str) -> None:
        """Show ``active`` alone (``single``), all three side by side (``three``) or the 2×2
        grid with the 3D pane (``quad``). Splitter sizes are set when a layout is entered,
        not when another view becomes active (a Ctrl+click between press and release, or the
        user's own splitter drag, must not see the panes move)."""
        entering = layout != self.layout_name
        if layout == "three" and entering:
            self.large = active  # stays large while the user clicks the others active
        self.layout_name, self.active = layout, active
        many = layout in ("three", "quad")
        if layout == "three":
            self._arrange_three(self.three_mode)
        elif layout == "quad":
            pane = self.pane_3d()
            for split, names in zip((self.top, self.bottom), QUAD):
                for i, name in enumerate(names):
                    widget = pane if name == "3d" else self.views[name]
                    if widget is not None and split.indexOf(widget) != i:
                        split.insertWidget(i, widget)
            if pane is not None:
                pane.show()
            self.bottom.show()
        else:
            self._row(VIEWS)
        if layout != "three":
            self.side.hide()
        for name, view in self.views.items():
            view.setVisible(many or name == active)
            view.accent = QColor(*VIEW_COLORS[name]) if many and name == active else None
            view.viewport().update()
        if layout == "three" and entering:
            self._three_sizes()
        elif layout == "quad" and entering:
            self.top.setSizes([1000, 1000])
            self.bottom.setSizes([1000, 1000])
            self.rows.setSizes([1000, 1000])

    def _row(self, names: Sequence[str]) -> None:
        """``names`` in the top row in this order, the bottom row hidden."""
        for i, name in enumerate(names):
            if self.top.indexOf(self.views[name]) != i:
                self.top.insertWidget(i, self.views[name])
        self.bottom.hide()

    def _image_sizes(self) -> Dict[str, Tuple[float, float]]:
        sizes = {}
        for name, view in self.views.items():
            rect = view._image.sceneBoundingRect()
            sizes[name] = (rect.width(), rect.height()) if not rect.isEmpty() else (1.0, 1.0)
        return sizes

    def _arrange_three(self, mode: str) -> None:
        """"row": the three side by side; "stack": the active one large, the others stacked
        on its right (top to bottom in the order of VIEWS)."""
        self.three_mode = mode
        if mode == "row":
            self._row(VIEWS)
            self.side.hide()
            return
        others = [n for n in VIEWS if n != self.large]
        self._row([self.large])
        for i, name in enumerate(others):
            if self.side.indexOf(self.views[name]) != i:
                self.side.insertWidget(i, self.views[name])
        if self.top.indexOf(self.side) != 1:
            self.top.insertWidget(1, self.side)
        self.side.show()

    def _three_sizes(self) -> None:
        width, height = max(self.width(), 1), max(self.height(), 1)
        mode, share, _gain = three_arrangement(self._image_sizes(), self.large, width, height)
        if mode != self.three_mode:
            self._arrange_three(mode)
        if mode == "row":
            self.top.setSizes([1000, 1000, 1000, 0])
        else:
            self.top.setSizes([int(share * 1000), int((1 - share) * 1000)])
            self.side.setSizes([1000, 1000])

    def refit_three(self) -> None:
        """After the area or the images changed: the better arrangement, when it is clearly
        better (10 % more image area), so a small resize does not swap the views around."""
        if self.layout_name != "three":
            return
        mode, _share, gain = three_arrangement(self._image_sizes(), self.large,
                                               max(self.width(), 1), max(self.height(), 1))
        if mode != self.three_mode and gain >= 1.1:
            self._three_sizes()
            for name in self.visible():
                self.views[name].fit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.refit_three()

    def visible(self):
        return [name for name, view in self.views.items() if not view.isHidden()]


__all__ = ["VIEW_COLORS", "ViewLayout"]
