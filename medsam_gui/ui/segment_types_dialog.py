"""Before a DICOM SEG / RT Structure Set export: what each label is, in coded terms.

One row per label with voxels: its colour and name, and a choice from the short list of
``io.seg_terms`` (preselected with the label's earlier choice or the guess from its name).
"""

from __future__ import annotations

from typing import Dict, Sequence

from PyQt5.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel,
                             QScrollArea, QVBoxLayout, QWidget)

from medsam_gui.annotation.labels import Label
from medsam_gui.io.seg_terms import PROPERTY_TYPES, guess_property_type


class SegmentTypesDialog(QDialog):
    def __init__(self, labels: Sequence[Label], title: str, parent=None, extra=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("What does each label show? Viewers and PACS list segments by "
                                "these terms.\nThe guess comes from the label's name."))
        rows = QWidget()
        form = QFormLayout(rows)
        self.combos: Dict[int, QComboBox] = {}
        for lab in labels:
            combo = QComboBox()
            combo.addItems(list(PROPERTY_TYPES))
            combo.setCurrentText(lab.property_type or guess_property_type(lab.name))
            r, g, b = lab.color
            name = QLabel(f'<span style="color: rgb({r},{g},{b})">&#9632;</span> {lab.name}')
            form.addRow(name, combo)
            self.combos[lab.value] = combo
        scroll = QScrollArea()  # a TotalSegmentator map has a hundred labels
        scroll.setWidget(rows)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(rows.sizeHint().width() + 24)
        scroll.setMinimumHeight(min(rows.sizeHint().height() + 4, 420))
        layout.addWidget(scroll)
        if extra is not None:  # e.g. the SEG's type and compression (ui.interop_actions)
            layout.addWidget(extra)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.button(QDialogButtonBox.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def types(self) -> Dict[int, str]:
        return {value: combo.currentText() for value, combo in self.combos.items()}
