"""The slice canvas: image + label overlay + prompt items, with zoom, pan and mouse tools.

Coordinates: the image item is placed so that its local coordinates are display-slice pixel
coordinates (x = column, y = row; pixel (c, r) covers [c, c+1) x [r, r+1)). Non-square pixels are
shown with their physical aspect by scaling that item, so every mouse position is mapped back
through it. The view only reports what the user did (signals); the main window decides what
happens to the label map.

Linked views: Ctrl+left click or drag moves the shared cursor (``cursor_moved``); the slices of
the other two views are drawn as two lines through it (``set_crosshair``); any press, wheel
turn or focus makes the view the active one (``activated``).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
from PyQt5.QtCore import QPoint, QPointF, QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap, QTransform
from PyQt5.QtWidgets import (QGraphicsEllipseItem, QGraphicsLineItem, QGraphicsPixmapItem,
                             QGraphicsRectItem, QGraphicsScene, QGraphicsView)

from medsam_gui.ui.tools import TOOLS, stamp_line

Box = Tuple[float, float, float, float]

_DRAG_PEN = QColor(0, 255, 255)


class SliceView(QGraphicsView):
    """Shows one slice; emits the user's boxes, points, strokes, hover and scroll requests."""

    box_drawn = pyqtSignal(object, bool)  # (x0, y0, x1, y1) pixels, additive (Shift held)
    point_clicked = pyqtSignal(float, float, int)  # x, y, 1 include / 0 exclude
    stroke_finished = pyqtSignal(object, bool)  # bool mask of the slice, erase
    hovered = pyqtSignal(int, int)  # row, col under the cursor, (-1, -1) outside the image
    slice_step = pyqtSignal(int)
    window_drag = pyqtSignal(float, float)  # right-drag dx, dy in screen pixels
    window_released = pyqtSignal()  # a window/level drag ended
    files_dropped = pyqtSignal(list)
    cursor_moved = pyqtSignal(int, int)  # row, col: Ctrl+left click or drag (linked views)
    activated = pyqtSignal()  # pressed, scrolled or focused: the user works in this view

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QColor(0, 0, 0))
        self.setRenderHint(QPainter.SmoothPixmapTransform, False)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setViewportUpdateMode(QGraphicsView.FullViewportUpdate)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setAcceptDrops(True)
        self._image = QGraphicsPixmapItem()
        self._image.setShapeMode(QGraphicsPixmapItem.BoundingRectShape)
        self._image.setTransformationMode(Qt.SmoothTransformation)  # labels stay crisp pixels
        self.scene().addItem(self._image)
        self._overlay = QGraphicsPixmapItem(self._image)
        self._stroke_item = QGraphicsPixmapItem(self._image)
        self._cursor = QGraphicsEllipseItem(self._image)
        self._cursor.setPen(self._pen(QColor(255, 255, 255), 1))
        self._cursor.hide()
        self._box_items: List[QGraphicsRectItem] = []
        self._point_items: List[QGraphicsEllipseItem] = []
        self._drag_rect = QGraphicsRectItem(self._image)
        self._drag_rect.setPen(self._pen(_DRAG_PEN, 2, Qt.DashLine))
        self._drag_rect.hide()
        self._lines = (QGraphicsLineItem(self._image), QGraphicsLineItem(self._image))
        for line in self._lines:
            line.hide()
        self._crosshair: Optional[Tuple[int, int]] = None
        self.accent: Optional[QColor] = None  # frame colour marking the active view
        self._shape: Tuple[int, int] = (0, 0)
        self._aspect: Tuple[float, float] = (1.0, 1.0)
        self.letters: Tuple[str, str, str, str] = ("", "", "", "")
        self.info_text = ""
        self.tool = "box"
        self.brush_radius = 5
        self.stroke_color: Tuple[int, int, int] = (255, 0, 0)
        self._auto_fit = True
        self._mode: Optional[str] = None  # current drag: box / pan / window / stroke / point
        self._press_img = QPointF()
        self._last_pos = QPoint()
        self._press_pos = QPoint()
        self._moved = False
        self._stroke: Optional[np.ndarray] = None
        self._boxes: List[Box] = []
        self._active_box = -1
        self._edges = ""  # edges of the active box being dragged: some of "lrtb"
        self._wheel_rest = 0

    # ---- content -------------------------------------------------------------------------
    @staticmethod
    def _pen(color: QColor, width: float, style=Qt.SolidLine) -> QPen:
        pen = QPen(color, width, style)
        pen.setCosmetic(True)
        return pen

    @property
    def slice_shape(self) -> Tuple[int, int]:
        return self._shape

    @property
    def pixel_aspect(self) -> Tuple[float, float]:
        """On-screen (width, height) of one pixel relative to the smaller of the two."""
        return self._aspect

    def set_image(self, image: QImage, aspect: Tuple[float, float] = (1.0, 1.0)) -> None:
        """Show a slice image; ``aspect`` = (column spacing, row spacing) in mm."""
        shape = (image.height(), image.width())
        sx, sy = aspect
        m = min(sx, sy) if min(sx, sy) > 0 else 1.0
        aspect = (sx / m, sy / m) if m > 0 else (1.0, 1.0)
        self._image.setPixmap(QPixmap.fromImage(image))
        if shape != self._shape or aspect != self._aspect:
            self._shape, self._aspect = shape, aspect
            self._image.setTransform(QTransform.fromScale(*aspect))
            r = self._image.sceneBoundingRect()
            self.scene().setSceneRect(r.adjusted(-r.width(), -r.height(), r.width(), r.height()))
            self.fit()  # new geometry: show it whole (same-shape slices keep zoom and pan)
        self.viewport().update()

    def set_overlay(self, image: Optional[QImage]) -> None:
        if image is None:
            self._overlay.hide()
        else:
            self._overlay.setPixmap(QPixmap.fromImage(image))
            self._overlay.show()

    def set_prompts(self, boxes: Sequence[Box], points: Sequence[Tuple[float, float, int]],
                    active: int = -1) -> None:
        """Boxes (the active one brighter) and points (green include, red exclude)."""
        for item in self._box_items + self._point_items:
            self.scene().removeItem(item)
        self._box_items, self._point_items = [], []
        self._boxes = [tuple(b) for b in boxes]
        self._active_box = active if 0 <= active < len(boxes) else len(boxes) - 1
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            item = QGraphicsRectItem(QRectF(x0, y0, x1 - x0, y1 - y0), self._image)
            # every object of a label in the label's colour; the active one solid and thicker
            item.setPen(self._pen(QColor(*self.stroke_color), 2 if i == active else 1,
                                  Qt.SolidLine if i == active or active < 0 else Qt.DashLine))
            self._box_items.append(item)
        for x, y, lab in points:
            r = 2.0
            item = QGraphicsEllipseItem(QRectF(x - r, y - r, 2 * r, 2 * r), self._image)
            color = QColor(0, 230, 0) if lab else QColor(255, 40, 40)
            item.setPen(self._pen(QColor(255, 255, 255), 1))
            item.setBrush(color)
            self._point_items.append(item)

    def set_crosshair(self, row: int, col: int, row_color: Tuple[int, int, int],
                      col_color: Tuple[int, int, int]) -> None:
        """Lines through pixel (row, col): a horizontal one where the view whose slice is that
        row cuts this one (``row_color``) and a vertical one for the column's view."""
        h, w = self._shape
        horizontal, vertical = self._lines
        horizontal.setLine(0.0, row + 0.5, float(w), row + 0.5)
        vertical.setLine(col + 0.5, 0.0, col + 0.5, float(h))
        horizontal.setPen(self._pen(QColor(*row_color), 1))
        vertical.setPen(self._pen(QColor(*col_color), 1))
        horizontal.show()
        vertical.show()
        self._crosshair = (int(row), int(col))

    def hide_crosshair(self) -> None:
        for line in self._lines:
            line.hide()
        self._crosshair = None

    @property
    def crosshair(self) -> Optional[Tuple[int, int]]:
        """(row, col) of the crosshair, None when it is hidden."""
        return self._crosshair

    def clear(self) -> None:
        self._image.setPixmap(QPixmap())
        self.set_overlay(None)
        self.set_prompts([], [])
        self.hide_crosshair()
        self._shape = (0, 0)
        self.info_text = ""
        self.letters = ("", "", "", "")
        self.viewport().update()

    # ---- geometry helpers ------------------------------------------------------------------
    def fit(self) -> None:
        if self._shape != (0, 0):
            self.fitInView(self._image.sceneBoundingRect(), Qt.KeepAspectRatio)
        self._auto_fit = True

    def zoom(self, factor: float) -> None:
        self._auto_fit = False
        self.scale(factor, factor)

    def to_image(self, pos: QPoint) -> QPointF:
        """Viewport position -> slice pixel coordinates (x = column, y = row)."""
        return self._image.mapFromScene(self.mapToScene(pos))

    def image_to_viewport(self, x: float, y: float) -> QPoint:
        """Slice pixel coordinates -> viewport position (used by tests and benchmarks)."""
        return self.mapFromScene(self._image.mapToScene(QPointF(x, y)))

    def _inside(self, p: QPointF) -> bool:
        return 0 <= p.x() < self._shape[1] and 0 <= p.y() < self._shape[0]

    def _clamped(self, p: QPointF) -> Tuple[float, float]:
        return (min(max(p.x(), 0.0), float(self._shape[1])),
                min(max(p.y(), 0.0), float(self._shape[0])))

    # ---- events ----------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._auto_fit:
            self.fit()

    def focusInEvent(self, event) -> None:
        super().focusInEvent(event)
        self.activated.emit()

    def wheelEvent(self, event) -> None:
        self.activated.emit()
        delta = event.angleDelta().y()
        if event.modifiers() & Qt.ControlModifier:
            self.zoom(1.15 ** (delta / 120.0))
            return
        self._wheel_rest += delta
        steps = int(self._wheel_rest / 120)
        if steps:
            self._wheel_rest -= steps * 120
            self.slice_step.emit(steps)

    def keyPressEvent(self, event) -> None:
        key = event.key()
        steps = {Qt.Key_Up: 1, Qt.Key_PageUp: 1, Qt.Key_Down: -1, Qt.Key_PageDown: -1}
        if key in steps:
            n = 10 if event.modifiers() & Qt.ShiftModifier else 1
            self.slice_step.emit(steps[key] * n)
        elif key in (Qt.Key_Plus, Qt.Key_Equal):
            self.zoom(1.25)
        elif key == Qt.Key_Minus:
            self.zoom(0.8)
        elif key == Qt.Key_F:
            self.fit()
        else:
            super().keyPressEvent(event)

    def mousePressEvent(self, event) -> None:
        if self._shape == (0, 0):
            return
        self.activated.emit()
        self._press_pos = self._last_pos = event.pos()
        self._press_img = self.to_image(event.pos())
        self._moved = False
        button = event.button()
        if button == Qt.MiddleButton or (button == Qt.LeftButton and self.tool == "pan"):
            self._mode = "pan"
            self.viewport().setCursor(Qt.ClosedHandCursor)
        elif button == Qt.LeftButton and event.modifiers() & Qt.ControlModifier:
            self._mode = "cursor"  # navigation: move the shared cursor, never paint
            self._emit_cursor(self._press_img)
        elif button == Qt.RightButton:
            self._mode = "window"
        elif button == Qt.LeftButton and self.tool == "box" and self._box_edges(event.pos()):
            self._mode, self._edges = "resize", self._box_edges(event.pos())
            x0, y0, x1, y1 = self._boxes[self._active_box]
            self._drag_rect.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
            self._drag_rect.show()
        elif button == Qt.LeftButton and self.tool == "box":
            self._mode = "box"
            self._drag_rect.setRect(QRectF(self._press_img, self._press_img))
            self._drag_rect.show()
        elif button == Qt.LeftButton and self.tool == "point":
            self._mode = "point"
        elif button == Qt.LeftButton and self.tool in ("brush", "eraser"):
            self._mode = "stroke"
            self._stroke = np.zeros(self._shape, bool)
            p = self._press_img
            stamp_line(self._stroke, (p.x(), p.y()), (p.x(), p.y()), self.brush_radius)
            self._show_stroke()
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        p = self.to_image(event.pos())
        inside = self._shape != (0, 0) and self._inside(p)
        self.hovered.emit(int(p.y()) if inside else -1, int(p.x()) if inside else -1)
        if self.tool in ("brush", "eraser") and self._shape != (0, 0):
            r = self.brush_radius
            self._cursor.setRect(QRectF(p.x() - r, p.y() - r, 2 * r, 2 * r))
            self._cursor.setVisible(inside)
        delta = event.pos() - self._last_pos
        if (event.pos() - self._press_pos).manhattanLength() > 3:
            self._moved = True
        if self._mode == "pan":
            self._auto_fit = False
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())
        elif self._mode == "cursor":
            self._emit_cursor(p)
        elif self._mode == "window" and self._moved:
            self.window_drag.emit(float(delta.x()), float(delta.y()))
        elif self._mode == "box":
            self._drag_rect.setRect(QRectF(self._press_img, p).normalized())
        elif self._mode == "resize":
            self._drag_rect.setRect(self._resized(p))
        elif self._mode is None and self.tool == "box":
            edges = self._box_edges(event.pos())
            cursor = (Qt.SizeFDiagCursor if edges in ("lt", "rb") else
                      Qt.SizeBDiagCursor if edges in ("lb", "rt") else
                      Qt.SizeHorCursor if edges in ("l", "r") else
                      Qt.SizeVerCursor if edges in ("t", "b") else Qt.CrossCursor)
            self.viewport().setCursor(cursor)
        elif self._mode == "stroke" and self._stroke is not None:
            last = self.to_image(self._last_pos)
            stamp_line(self._stroke, (last.x(), last.y()), (p.x(), p.y()), self.brush_radius)
            self._show_stroke()
        self._last_pos = event.pos()

    def mouseReleaseEvent(self, event) -> None:
        mode, self._mode = self._mode, None
        p = self.to_image(event.pos())
        if (event.pos() - self._press_pos).manhattanLength() > 3:
            self._moved = True
        if mode == "pan":
            self.viewport().unsetCursor()
        elif mode == "window" and self._moved:  # the rest of the drag since the last move
            delta = event.pos() - self._last_pos
            if not delta.isNull():
                self.window_drag.emit(float(delta.x()), float(delta.y()))
            self.window_released.emit()
        elif mode == "window" and self.tool == "point" and self._inside(p):
            self.point_clicked.emit(p.x(), p.y(), 0)
        elif mode == "box":
            self._drag_rect.hide()
            (x0, y0), (x1, y1) = self._clamped(self._press_img), self._clamped(p)
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                additive = bool(event.modifiers() & Qt.ShiftModifier)
                self.box_drawn.emit(box, additive)
        elif mode == "resize":  # the redrawn box replaces its object's mask
            self._drag_rect.hide()
            r = self._resized(p)
            (x0, y0), (x1, y1) = self._clamped(r.topLeft()), self._clamped(r.bottomRight())
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                self.box_drawn.emit((x0, y0, x1, y1), False)
        elif mode == "point" and self._inside(p):
            self.point_clicked.emit(p.x(), p.y(), 1)
        elif mode == "stroke" and self._stroke is not None:
            last = self.to_image(self._last_pos)
            stamp_line(self._stroke, (last.x(), last.y()), (p.x(), p.y()), self.brush_radius)
            stroke, self._stroke = self._stroke, None
            self._stroke_item.hide()
            self.stroke_finished.emit(stroke, self.tool == "eraser")
        event.accept()

    def _emit_cursor(self, p: QPointF) -> None:
        x, y = self._clamped(p)
        row = min(int(y), self._shape[0] - 1)
        col = min(int(x), self._shape[1] - 1)
        self.cursor_moved.emit(row, col)

    def _box_edges(self, pos: QPoint, tol: int = 5) -> str:
        """Which edges of the active box are under the mouse (viewport pixels), e.g. "lt"."""
        if not 0 <= self._active_box < len(self._boxes):
            return ""
        x0, y0, x1, y1 = self._boxes[self._active_box]
        a, b = self.image_to_viewport(x0, y0), self.image_to_viewport(x1, y1)
        if not (a.x() - tol <= pos.x() <= b.x() + tol and a.y() - tol <= pos.y() <= b.y() + tol):
            return ""
        horizontal = "l" if abs(pos.x() - a.x()) <= tol else "r" if abs(pos.x() - b.x()) <= tol else ""
        vertical = "t" if abs(pos.y() - a.y()) <= tol else "b" if abs(pos.y() - b.y()) <= tol else ""
        return horizontal + vertical

    def _resized(self, p: QPointF) -> QRectF:
        x0, y0, x1, y1 = self._boxes[self._active_box]
        x0 = p.x() if "l" in self._edges else x0
        x1 = p.x() if "r" in self._edges else x1
        y0 = p.y() if "t" in self._edges else y0
        y1 = p.y() if "b" in self._edges else y1
        return QRectF(QPointF(x0, y0), QPointF(x1, y1)).normalized()

    def leaveEvent(self, event) -> None:
        self._cursor.hide()
        self.hovered.emit(-1, -1)
        super().leaveEvent(event)

    def _show_stroke(self) -> None:
        from medsam_gui.ui.render import mask_image

        color = (255, 255, 255) if self.tool == "eraser" else self.stroke_color
        self._stroke_item.setPixmap(QPixmap.fromImage(mask_image(self._stroke, color)))
        self._stroke_item.show()

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self.tool = tool
        self._cursor.hide()
        self.viewport().setCursor(Qt.OpenHandCursor if tool == "pan" else Qt.CrossCursor)

    # ---- drag and drop of files ------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.files_dropped.emit(paths)

    # ---- letters and slice info on top -------------------------------------------------------
    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        if self._shape == (0, 0):
            return
        painter.save()
        painter.resetTransform()
        vp = self.viewport().rect()
        font = QFont(self.font())
        font.setPointSize(max(font.pointSize(), 10) + 2)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor(255, 200, 0))
        top, bottom, left, right = self.letters
        m = 6
        painter.drawText(vp.adjusted(0, m, 0, 0), Qt.AlignHCenter | Qt.AlignTop, top)
        painter.drawText(vp.adjusted(0, 0, 0, -m), Qt.AlignHCenter | Qt.AlignBottom, bottom)
        painter.drawText(vp.adjusted(m, 0, 0, 0), Qt.AlignLeft | Qt.AlignVCenter, left)
        painter.drawText(vp.adjusted(0, 0, -m, 0), Qt.AlignRight | Qt.AlignVCenter, right)
        if self.accent is not None:
            painter.setPen(QPen(self.accent, 3))
            painter.drawRect(vp.adjusted(1, 1, -2, -2))
        if self.info_text:
            font.setBold(False)
            font.setPointSize(font.pointSize() - 2)
            painter.setFont(font)
            painter.setPen(QColor(230, 230, 230))
            painter.drawText(vp.adjusted(m, 0, 0, -m), Qt.AlignLeft | Qt.AlignBottom,
                             self.info_text)
        painter.restore()
