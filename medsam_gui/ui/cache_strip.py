"""A thin strip beside the slice slider: which slices of the current view are encoded, and the
review state of the active label on each (see ``annotation.review``). Shift-drag (or Shift-click,
from the current slice) selects a range of slices: ``rangeSelected(first, last)``, which the
window accepts as one undo step."""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Set

from PyQt5.QtCore import QRectF, QSize, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QPainter
from PyQt5.QtWidgets import QSizePolicy, QWidget

_EMPTY = QColor(60, 60, 64)
_CACHED = QColor(46, 160, 90)
_LABELLED = QColor(150, 150, 150)  # another label has voxels here
_REVIEW = {"filled": QColor(255, 214, 0), "drawn": QColor(240, 110, 40),
           "reviewed": QColor(40, 170, 255)}
_CURRENT = QColor(255, 255, 255)
_SELECTION = QColor(255, 255, 255, 90)


class CacheStrip(QWidget):
    """Horizontal bar, one cell per slice, left edge = slice 0 like the slider under it. Top
    half: green = embedding cached. Bottom half, the active label: yellow = filled by
    propagation/interpolation, not reviewed; orange = drawn (box), not accepted; blue =
    reviewed (edited or accepted); grey = only other labels. White line = current slice.
    A filled slice's yellow is bright when the review queue ranks it as needing a look
    (``set_scores``: 0..1 per slice, ``annotation.review_queue``) and dim when it looks fine."""

    rangeSelected = pyqtSignal(int, int)  # first, last slice (Shift-drag / Shift-click)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n = 0
        self.cached: Set[int] = set()
        self.labelled: Set[int] = set()
        self.review: List[str] = []
        self.scores: Dict[int, float] = {}
        self.current = -1
        self.inset = 8  # roughly half the slider handle, so cells line up with slider positions
        self.selection: Optional[List[int]] = None  # [anchor, end] while Shift-dragging
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setFixedHeight(12)
        self.setToolTip("Top: slices whose image embedding is ready (green): a box there is "
                        "instant.\nBottom, active label: yellow = propagated/interpolated, not "
                        "reviewed, brighter = needs a look more (] goes there, most needed "
                        "first); orange = drawn, not accepted; blue = "
                        "reviewed; grey = other labels only.\nShift-drag (or Shift-click from "
                        "the current slice) accepts a range of slices in one step.")

    def sizeHint(self) -> QSize:
        return QSize(200, 12)

    def set_state(self, n: int, cached: Iterable[int], current: int,
                  labelled: Iterable[int] = (), review: Sequence[str] = ()) -> None:
        self.n = int(n)
        self.cached = set(cached)
        self.labelled = set(labelled)
        self.review = list(review)
        self.current = int(current)
        self.update()

    def set_scores(self, scores: Dict[int, float]) -> None:
        """How much each slice needs a review, 0..1 (brightness of its yellow)."""
        self.scores = {int(k): min(max(float(v), 0.0), 1.0) for k, v in scores.items()}
        self.update()

    def color_of(self, index: int, state: str) -> QColor:
        color = _REVIEW.get(state)
        if color is None or state != "filled" or index not in self.scores:
            return color
        return QColor(color).darker(int(round(250 - 150 * self.scores[index])))

    def set_cached(self, cached: Iterable[int]) -> None:
        self.cached = set(cached)
        self.update()

    def set_current(self, current: int) -> None:
        self.current = int(current)
        self.update()

    def index_at(self, x: float) -> int:
        """The slice under x (widget pixels), clipped to the strip."""
        w = self.width() - 2 * self.inset
        if self.n <= 0 or w <= 0:
            return 0
        return min(max(int((x - self.inset) / (w / self.n)), 0), self.n - 1)

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.LeftButton and event.modifiers() & Qt.ShiftModifier and self.n:
            i = self.index_at(event.pos().x())
            self.selection = [i, i]
            self.update()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self.selection is not None:
            self.selection[1] = self.index_at(event.pos().x())
            self.update()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self.selection is None:
            super().mouseReleaseEvent(event)
            return
        a, b = self.selection[0], self.index_at(event.pos().x())
        self.selection = None
        self.update()
        if a == b and 0 <= self.current < self.n:  # Shift-click: from the current slice
            a = self.current
        self.rangeSelected.emit(min(a, b), max(a, b))

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        w, h = self.width() - 2 * self.inset, self.height()
        p.fillRect(self.rect(), self.palette().window())
        if self.n <= 0 or w <= 0:
            return
        p.fillRect(QRectF(self.inset, 0, w, h), _EMPTY)
        cell = w / self.n
        top = h // 2
        for i in self.cached:
            p.fillRect(QRectF(self.inset + i * cell, 0, max(cell, 1.0), top), _CACHED)
        for i in self.labelled:
            p.fillRect(QRectF(self.inset + i * cell, top, max(cell, 1.0), h - top), _LABELLED)
        for i, state in enumerate(self.review):
            color = self.color_of(i, state)
            if color is not None:
                p.fillRect(QRectF(self.inset + i * cell, top, max(cell, 1.0), h - top), color)
        if self.selection is not None:
            a, b = sorted(self.selection)
            p.fillRect(QRectF(self.inset + a * cell, 0, (b - a + 1) * cell, h), _SELECTION)
        if 0 <= self.current < self.n:
            x = self.inset + (self.current + 0.5) * cell
            p.setPen(_CURRENT)
            p.drawLine(int(x), 0, int(x), h)
        p.end()

    def minimumSizeHint(self) -> QSize:
        return QSize(40, 12)

