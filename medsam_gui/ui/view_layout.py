"""The canvases of the linked views and their arrangement: one large view, the axial,
coronal and sagittal views side by side, or 2×2 with a 3D pane (axial and sagittal above,
coronal and 3D below, as ITK-SNAP; splitters, so the user can widen one).

Only widgets live here; which slice each canvas shows is decided by the window from the shared
``ViewState``.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

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
        grid with the 3D pane (``quad``)."""
        self.layout_name, self.active = layout, active
        many = layout in ("three", "quad")
        if layout == "quad":
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
            for i, name in enumerate(VIEWS):
                if self.top.indexOf(self.views[name]) != i:
                    self.top.insertWidget(i, self.views[name])
            self.bottom.hide()
        for name, view in self.views.items():
            view.setVisible(many or name == active)
            view.accent = QColor(*VIEW_COLORS[name]) if many and name == active else None
            view.viewport().update()
        if layout == "three":
            self.top.setSizes([1000] * len(self.views))
        elif layout == "quad":
            self.top.setSizes([1000, 1000])
            self.bottom.setSizes([1000, 1000])
            self.rows.setSizes([1000, 1000])

    def visible(self):
        return [name for name, view in self.views.items() if not view.isHidden()]


__all__ = ["VIEW_COLORS", "ViewLayout"]
