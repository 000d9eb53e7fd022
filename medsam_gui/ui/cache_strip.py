"""A thin strip beside the slice slider: which slices of the current view are encoded."""

from __future__ import annotations

from typing import Iterable, Set

from PyQt5.QtCore import QRectF, QSize
from PyQt5.QtGui import QColor, QPainter
from PyQt5.QtWidgets import QSizePolicy, QWidget

_EMPTY = QColor(60, 60, 64)
_CACHED = QColor(46, 160, 90)
_LABELLED = QColor(230, 160, 40)
_CURRENT = QColor(255, 255, 255)


class CacheStrip(QWidget):
    """Horizontal bar, one cell per slice: green = embedding cached, orange tick = has labels,
    white line = current slice. Left edge = slice 0, like the slider under it."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n = 0
        self.cached: Set[int] = set()
        self.labelled: Set[int] = set()
        self.current = -1
        self.inset = 8  # roughly half the slider handle, so cells line up with slider positions
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setFixedHeight(8)
        self.setToolTip("Slices whose image embedding is ready (green): a box there is instant.")

    def sizeHint(self) -> QSize:
        return QSize(200, 8)

    def set_state(self, n: int, cached: Iterable[int], current: int,
                  labelled: Iterable[int] = ()) -> None:
        self.n = int(n)
        self.cached = set(cached)
        self.labelled = set(labelled)
        self.current = int(current)
        self.update()

    def set_cached(self, cached: Iterable[int]) -> None:
        self.cached = set(cached)
        self.update()

    def set_current(self, current: int) -> None:
        self.current = int(current)
        self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        w, h = self.width() - 2 * self.inset, self.height()
        p.fillRect(self.rect(), self.palette().window())
        if self.n <= 0 or w <= 0:
            return
        p.fillRect(QRectF(self.inset, 0, w, h), _EMPTY)
        cell = w / self.n
        for i in self.cached:
            p.fillRect(QRectF(self.inset + i * cell, 0, max(cell, 1.0), h), _CACHED)
        for i in self.labelled:
            p.fillRect(QRectF(self.inset + i * cell, h - 3, max(cell, 1.0), 3), _LABELLED)
        if 0 <= self.current < self.n:
            x = self.inset + (self.current + 0.5) * cell
            p.setPen(_CURRENT)
            p.drawLine(int(x), 0, int(x), h)
        p.end()

    def minimumSizeHint(self) -> QSize:
        return QSize(40, 8)

