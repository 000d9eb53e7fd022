"""Chooser for a folder that holds several DICOM series."""

from __future__ import annotations

from typing import Optional, Sequence

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QLabel,
                             QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)


class SeriesDialog(QDialog):
    """Lists series (description, modality, size, slices); ``selected_uid`` after accept."""

    def __init__(self, series: Sequence[object], folder: str = "",
                 parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Choose a series")
        self.series = list(series)
        self.table = QTableWidget(len(self.series), 4)
        self.table.setHorizontalHeaderLabels(["Description", "Modality", "Size", "Slices"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        for row, s in enumerate(self.series):
            cells = [getattr(s, "description", "") or "(no description)",
                     getattr(s, "modality", "") or "",
                     f"{getattr(s, 'cols', '?')} × {getattr(s, 'rows', '?')}",
                     str(getattr(s, "n_slices", "?"))]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(getattr(s, "uid", "")))
                if col == 3:
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
        self.resize(620, 300)

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
