"""What the window told the user, kept: a status bar whose messages stay (one short line, the
last message, until the next one) and go into a log, and View ▸ Messages, which shows the full
text of every message, warning, stop reason and export/import report of this session.

``LoggingStatusBar.showMessage`` is the one door: every ``statusBar().showMessage`` call of the
window's parts goes through it (menu status tips, which Qt shows itself, do not: they are not
messages). Errors shown in a dialog are logged with ``MessageLog.add`` by the window.
"""

from __future__ import annotations

import time
from typing import List, Tuple

from PyQt5.QtCore import QObject, Qt, pyqtSignal
from PyQt5.QtGui import QFontMetrics
from PyQt5.QtWidgets import (QDialog, QDialogButtonBox, QLabel, QMessageBox, QPlainTextEdit,
                             QStatusBar, QVBoxLayout)


class MessageLog(QObject):
    """Every message of the session: (time, kind, full text)."""

    added = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.entries: List[Tuple[float, str, str]] = []

    def add(self, text: str, kind: str = "info") -> None:
        text = str(text).strip()
        if not text:
            return
        if self.entries and self.entries[-1][1:] == (kind, text):
            return  # the same message again (a hint repeated on each press): logged once
        self.entries.append((time.time(), kind, text))
        self.added.emit(text)

    def as_text(self) -> str:
        lines = []
        for stamp, kind, text in self.entries:
            head = time.strftime("%H:%M:%S", time.localtime(stamp))
            mark = "" if kind == "info" else f" [{kind}]"
            lines.append(f"{head}{mark}  {text}")
        return "\n\n".join(lines)


class MessageLine(QLabel):
    """The last message on one line, cut with "…" to the space it has (the full text in the
    tool tip and in View ▸ Messages); a click opens the log."""

    clicked = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.full_text = ""
        self.setMinimumWidth(80)
        self.setContentsMargins(6, 0, 6, 2)
        self.setCursor(Qt.PointingHandCursor)

    def set_message(self, text: str) -> None:
        self.full_text = text
        self.setToolTip(f"{text}\n\n(click: all messages)" if text else "")
        self._elide()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        first = self.full_text.splitlines()[0] if self.full_text else ""
        if first != self.full_text.strip():
            first += " …"
        super().setText(QFontMetrics(self.font()).elidedText(first, Qt.ElideRight,
                                                              max(self.width() - 4, 40)))

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt)
        self.clicked.emit()
        super().mousePressEvent(event)


class LoggingStatusBar(QStatusBar):
    """``showMessage`` logs the full text and shows it on the persistent message line (the
    timeout is ignored: a message stays until the next one, so nothing vanishes unread). The
    window places ``line`` above the status bar, across its whole width: beside the permanent
    fields (position, crosshair, model, input, workspace) it had ~100 px at 1366 px."""

    def __init__(self, log: MessageLog, parent=None):
        super().__init__(parent)
        self.log = log
        self.line = MessageLine()

    def showMessage(self, text: str, timeout: int = 0) -> None:  # noqa: N802 (Qt)
        text = str(text or "")
        if text.strip():
            self.log.add(text)
            self.line.set_message(text.strip())

    def clearMessage(self) -> None:  # noqa: N802 (Qt)
        """A progress message ("Reading…", "Opening…") is over: the line empties (the log
        keeps it)."""
        super().clearMessage()
        self.line.set_message("")

    def currentMessage(self) -> str:  # noqa: N802 (Qt)
        """The full text of the message on the line (a status tip shown over it aside)."""
        return self.line.full_text


class MessagesDialog(QDialog):
    """View ▸ Messages: every message of this session, newest at the bottom, selectable."""

    def __init__(self, log: MessageLog, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Messages")
        self.resize(720, 420)
        self.log = log
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.close)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Everything the window reported in this session (warnings, why a "
                             "propagation stopped, exports and imports):"))
        lay.addWidget(self.text, 1)
        lay.addWidget(buttons)
        log.added.connect(lambda _t: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        self.text.setPlainText(self.log.as_text() or "No messages yet.")
        bar = self.text.verticalScrollBar()
        bar.setValue(bar.maximum())




# ---- reports a clinician reads ----------------------------------------------------------------
def label_lines(labelmap, volume, view: str = "axial") -> List[str]:
    """One line per label with voxels: name, slices on ``view`` (counted from 0) and how many
    of them a person reviewed (accepted or edited) — what an export or import wrote."""
    import numpy as np
    from scipy.ndimage import find_objects

    geom = volume.geometry(view)
    axis = geom.slice_axis
    other = tuple(a for a in range(3) if a != axis)
    array = labelmap.array
    boxes = find_objects(array) if array.any() else []
    reviewed: dict = {}
    for (v, index, value), rec in labelmap.records.items():
        if v == view and rec.reviewed:
            reviewed.setdefault(int(value), set()).add(int(index))
    lines = []
    for lab in labelmap.table.labels:
        box = boxes[lab.value - 1] if 0 < lab.value <= len(boxes) else None
        if box is None:
            continue
        present = np.flatnonzero((array[box] == lab.value).any(axis=other)) + box[axis].start
        if not len(present):
            continue
        done = len(reviewed.get(lab.value, set()) & set(present.tolist()))
        rest = len(present) - done
        state = ("all reviewed by you" if rest == 0 else
                 f"{done} reviewed by you, {rest} not yet reviewed" if done else
                 "none reviewed yet")
        lines.append(f"• {lab.value} \u201c{lab.name}\u201d: {len(present)} {view} slices "
                     f"({int(present[0])}–{int(present[-1])}), {state}")
    return lines


def show_report(window, title: str, text: str, details: str = "") -> QMessageBox:
    """An information box that does not block the window, with the technical part (paths,
    UIDs, notes) behind its "Show Details…" button; the whole of it goes into the message log
    and the last report stays in ``window.last_report``."""
    log = getattr(window, "message_log", None)
    if log is not None:
        log.add(f"{title}: {text}" + (f"\n{details}" if details else ""), "report")
    box = QMessageBox(QMessageBox.Information, title, text, QMessageBox.Ok, window)
    if details:
        box.setDetailedText(details)
    box.setWindowModality(Qt.WindowModal)
    box.setAttribute(Qt.WA_DeleteOnClose)
    window.last_report = (title, text, details)
    box.open()
    return box


__all__ = ["LoggingStatusBar", "MessageLine", "MessageLog", "MessagesDialog", "label_lines",
           "show_report"]
