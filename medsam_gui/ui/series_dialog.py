"""Opening a DICOM folder: its series are listed in a worker (progress and Cancel in the status
bar, so a huge or hanging folder never freezes the window), a chooser when it holds several,
and the warning bar that says what a load left out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QFrame, QHBoxLayout,
                             QHeaderView, QLabel, QProgressBar, QPushButton, QTableWidget,
                             QTableWidgetItem, QToolButton, QVBoxLayout, QWidget)

from medsam_gui.ui.workers import Task, error_text, run_task

MAX_TOOLTIP_FILES = 40


class SeriesDialog(QDialog):
    """Lists series (description, modality, size, slices, files left out); ``selected_uid``
    after accept."""

    def __init__(self, series: Sequence[object], folder: str = "",
                 parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Choose a series")
        self.series = list(series)
        self.table = QTableWidget(len(self.series), 5)
        self.table.setHorizontalHeaderLabels(["Description", "Modality", "Size", "Slices",
                                              "Left out"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        for row, s in enumerate(self.series):
            skipped = list(getattr(s, "skipped_files", []) or [])
            cells = [getattr(s, "description", "") or "(no description)",
                     getattr(s, "modality", "") or "",
                     f"{getattr(s, 'cols', '?')} × {getattr(s, 'rows', '?')}",
                     str(getattr(s, "n_slices", "?")),
                     f"{len(skipped)} file(s)" if skipped else ""]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(dropped_tooltip(skipped) if col == 4 and skipped
                                else str(getattr(s, "uid", "")))
                if col >= 3:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(row, col, item)
        if self.series:
            self.table.selectRow(0)
        self.table.doubleClicked.connect(lambda _i: self.accept())
        buttons = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{folder or 'This folder'} holds {len(self.series)} series. "
                                "Which one do you want to open?"))
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(680, 300)

    @property
    def selected_uid(self) -> Optional[str]:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return getattr(self.series[rows[0].row()], "uid", None)

    def select(self, row: int) -> None:
        self.table.selectRow(row)


def choose_series(series: Sequence[object], folder: str,
                  parent: Optional[QWidget] = None) -> Optional[str]:
    """Ask which series to open; None when cancelled."""
    dialog = SeriesDialog(series, folder, parent)
    if dialog.exec_() != QDialog.Accepted:
        return None
    return dialog.selected_uid


def dropped_tooltip(dropped: Sequence[tuple]) -> str:
    """Every left-out file with its reason (the first ``MAX_TOOLTIP_FILES``)."""
    lines = [f"{path}: {why}" for path, why in list(dropped)[:MAX_TOOLTIP_FILES]]
    if len(dropped) > MAX_TOOLTIP_FILES:
        lines.append(f"… and {len(dropped) - MAX_TOOLTIP_FILES} more")
    return "\n".join(lines)


class LoadWarningBar(QFrame):
    """A bar above the views with what the last load warned about or left out (the files are
    named); stays until closed or until a scan without warnings is opened."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setObjectName("loadWarningBar")
        self.setFrameShape(QFrame.StyledPanel)
        self.setStyleSheet("#loadWarningBar { background: #fff3cd; border: 1px solid #e0b000; }"
                           " #loadWarningBar QLabel { color: #4a3800; }")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.PlainText)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Hide this message")
        self.close_button.setAutoRaise(True)
        self.close_button.clicked.connect(self.hide)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        lay.addWidget(QLabel("⚠"), 0, Qt.AlignTop)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.close_button, 0, Qt.AlignTop)
        self.hide()

    def show_for(self, volume) -> None:
        """Show the volume's warnings (and left-out files in the tooltip), or hide."""
        source = getattr(volume, "source", None)
        warnings = [str(w) for w in getattr(source, "warnings", []) or []]
        dropped = list(getattr(source, "dropped_files", []) or [])
        if dropped and not any("left out" in w for w in warnings):
            warnings.insert(0, f"{len(dropped)} file(s) left out")
        if not warnings:
            self.hide()
            return
        self.label.setText("\n".join(warnings))
        self.label.setToolTip(dropped_tooltip(dropped))
        self.show()


class ScanProgress(QWidget):
    """Progress bar and Cancel for a folder scan, in the status bar."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(160)
        self.bar.setFormat("headers %v/%m")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop reading this folder")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.bar)
        lay.addWidget(self.cancel_button)
        self.cancel_button.clicked.connect(self.cancel)
        self.task: Optional[Task] = None
        self.hide()

    def start(self, task: Task) -> None:
        self.task = task
        self.bar.setRange(0, 0)  # busy until the first count arrives
        self.show()

    def set_progress(self, done: int, total: int) -> None:
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(done)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def finish(self, task: Task) -> None:
        if self.task is task:
            self.task = None
            self.hide()


def scan_folder(window, path: str, open_series: Callable[[str], object]) -> Task:
    """List the DICOM series of ``path`` in a worker, ask which one when there are several,
    then call ``open_series(uid)``. Errors end in ``window.show_error``; Cancel just stops."""
    from medsam_gui.io.dicom_scan import ScanCancelled, list_dicom_series

    progress: Optional[ScanProgress] = getattr(window, "scan_progress", None)
    if progress is None:
        progress = window.scan_progress = ScanProgress()
        window.statusBar().addPermanentWidget(progress)
    if progress.task is not None:  # a newer open replaces a scan still running
        progress.task.cancel()

    def work(task: Task):
        return list_dicom_series(Path(path), progress=task.report, cancel=task.is_cancelled)

    def done(series) -> None:
        if progress.task is not task:
            return  # replaced or cancelled meanwhile
        progress.finish(task)
        window.statusBar().clearMessage()
        if len(series) > 1:
            uid = choose_series(series, path, window)
            if uid is None:
                return
        else:
            uid = series[0].uid
        open_series(uid)

    def failed(exc: BaseException) -> None:
        current = progress.task is task
        progress.finish(task)
        if isinstance(exc, ScanCancelled):
            if current:
                window.statusBar().showMessage(f"Stopped reading {path}", 5000)
            return
        if current:
            window.statusBar().clearMessage()
            window.show_error("Cannot open", error_text(exc))

    window.statusBar().showMessage(f"Reading the DICOM headers in "
                                   f"{os.path.basename(path.rstrip('/')) or path} …")
    task = run_task(work, done, failed, name="scan", on_progress=progress.set_progress)
    progress.start(task)
    return task
