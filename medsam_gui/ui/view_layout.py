"""The canvases of the linked views and their arrangement: one large view, or the axial,
coronal and sagittal views side by side (a splitter, so the user can widen one).

Only widgets live here; which slice each canvas shows is decided by the window from the shared
``ViewState``.
"""

from __future__ import annotations

from typing import Dict

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


class ViewLayout(QWidget):
    """Three ``SliceView`` canvases, one per view axis; ``arrange`` shows one or all three."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.views: Dict[str, SliceView] = {name: SliceView() for name in VIEWS}
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        for view in self.views.values():
            view.setMinimumSize(120, 120)
            self.splitter.addWidget(view)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.splitter)
        self.layout_name = "single"
        self.active = "axial"
        self.arrange("single", "axial")

    def arrange(self, layout: str, active: str) -> None:
        """Show ``active`` alone (``single``) or all three side by side (``three``)."""
        self.layout_name, self.active = layout, active
        for name, view in self.views.items():
            view.setVisible(layout == "three" or name == active)
            view.accent = QColor(*VIEW_COLORS[name]) if layout == "three" and name == active \
                else None
            view.viewport().update()
        if layout == "three":
            self.splitter.setSizes([1000] * len(self.views))

    def visible(self):
        return [name for name, view in self.views.items() if not view.isHidden()]


__all__ = ["VIEW_COLORS", "ViewLayout"]
