"""Labels panel: the label table (name, value, colour, visibility), opacity and active label."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QColor, QIcon, QPixmap
from PyQt5.QtWidgets import (QColorDialog, QHBoxLayout, QInputDialog, QLabel, QListWidget,
                             QListWidgetItem, QPushButton, QSlider, QVBoxLayout, QWidget)

from medsam_gui.annotation import LabelTable
from medsam_gui.annotation.review import LabelSize


def _swatch(color: Tuple[int, int, int]) -> QIcon:
    pm = QPixmap(14, 14)
    pm.fill(QColor(*color))
    return QIcon(pm)


class LabelPanel(QWidget):
    """Edits a LabelTable in place; deleting (which clears voxels) is left to the window so it
    can be undone."""

    active_changed = pyqtSignal(int)
    table_changed = pyqtSignal()  # names, colours, visibility or a new label
    opacity_changed = pyqtSignal(float)
    delete_requested = pyqtSignal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table: Optional[LabelTable] = None
        self.sizes: Dict[int, LabelSize] = {}  # value -> volume and extent (set_sizes)
        self.size_view = "axial"
        self.list = QListWidget()
        self.list.setObjectName("labelList")
        self.list.currentRowChanged.connect(self._on_row)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.itemDoubleClicked.connect(lambda _i: self.rename())
        self.list.setToolTip("Tick to show, double-click to rename; the selected label is where "
                             "new masks and brush strokes go.")
        buttons = QHBoxLayout()
        for text, slot, tip in (("Add", self.new_label, "Add a label and name it"),
                                ("Rename", self.rename, "Rename the selected label"),
                                ("Colour", self.recolor, "Change the colour"),
                                ("Delete", self._ask_delete, "Delete the label and its voxels")):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _c=False, f=slot: f())
            buttons.addWidget(b)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.valueChanged.connect(lambda v: self.opacity_changed.emit(v / 100.0))
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("Opacity"))
        opacity_row.addWidget(self.opacity)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        layout.addLayout(opacity_row)
        self._filling = False

    # ---- state -----------------------------------------------------------------------------
    def set_table(self, table: LabelTable, active: Optional[int] = None) -> None:
        self.table = table
        self.refresh(active)

    def refresh(self, active: Optional[int] = None) -> None:
        if active is None:
            active = self.active_value
        self._filling = True
        self.list.clear()
        row = 0
        for i, lab in enumerate(self.table.labels if self.table else []):
            item = QListWidgetItem(_swatch(lab.color), self._text(lab))
            item.setData(Qt.UserRole, lab.value)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if lab.visible else Qt.Unchecked)
            self.list.addItem(item)
            if lab.value == active:
                row = i
        self._filling = False
        if self.list.count():
            self.list.setCurrentRow(row)
            self.active_changed.emit(self.active_value)

    def _text(self, lab) -> str:
        size = self.sizes.get(lab.value)
        if size is None or not size.voxels:
            return f"{lab.value}  {lab.name}"
        return (f"{lab.value}  {lab.name}\n      {size.millilitres:.3g} mL · "
                f"{self.size_view} {size.extent_text(self.size_view)}")

    def set_sizes(self, sizes: Dict[int, LabelSize], view: str) -> None:
        """Show each label's volume (mL) and its slice extent on ``view``."""
        self.sizes, self.size_view = dict(sizes), view
        if self.table is None:
            return
        self._filling = True
        for i in range(self.list.count()):
            item = self.list.item(i)
            lab = self.table.get(int(item.data(Qt.UserRole)))
            if lab is not None:
                item.setText(self._text(lab))
        self._filling = False

    @property
    def active_value(self) -> int:
        item = self.list.currentItem()
        return int(item.data(Qt.UserRole)) if item is not None else 0

    def set_active(self, value: int) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.UserRole) == value:
                self.list.setCurrentRow(i)

    @property
    def opacity_value(self) -> float:
        return self.opacity.value() / 100.0

    # ---- edits -----------------------------------------------------------------------------
    def add_label(self, name: Optional[str] = None) -> int:
        if self.table is None:
            return 0
        lab = self.table.add(name=name)
        self.refresh(active=lab.value)
        self.table_changed.emit()
        return lab.value

    def new_label(self) -> int:
        """The Add button: a new label named at once (the field holds the default name,
        selected: type a name, or Enter keeps the default; Cancel adds no label)."""
        if self.table is None:
            return 0
        value = max((lab.value for lab in self.table.labels), default=0) + 1
        default = f"label {value}"  # LabelTable.add's default name
        dialog = QInputDialog(self)
        dialog.setWindowTitle("New label")
        dialog.setLabelText(f"Name of label {value} (what it marks: tumour, liver, …):")
        dialog.setTextValue(default)
        self._name_dialog = dialog  # tests type into it
        if not dialog.exec_():
            return 0
        name = dialog.textValue().strip()
        return self.add_label(name or default)

    def rename(self, value: Optional[int] = None, name: Optional[str] = None) -> None:
        value = self.active_value if value is None else value
        lab = self.table.get(value) if self.table else None
        if lab is None:
            return
        if name is None:
            name, ok = QInputDialog.getText(self, "Rename label", f"Name of label {value}:",
                                            text=lab.name)
            if not ok or not name.strip():
                return
        self.table.rename(value, name.strip())
        self.refresh(active=value)
        self.table_changed.emit()

    def recolor(self, value: Optional[int] = None,
                color: Optional[Tuple[int, int, int]] = None) -> None:
        value = self.active_value if value is None else value
        lab = self.table.get(value) if self.table else None
        if lab is None:
            return
        if color is None:
            c = QColorDialog.getColor(QColor(*lab.color), self, f"Colour of {lab.name}")
            if not c.isValid():
                return
            color = (c.red(), c.green(), c.blue())
        self.table.recolor(value, color)
        self.refresh(active=value)
        self.table_changed.emit()

    def set_visible(self, value: int, visible: bool) -> None:
        lab = self.table.get(value) if self.table else None
        if lab is not None and lab.visible != visible:
            lab.visible = visible
            self.refresh(active=self.active_value)
            self.table_changed.emit()

    def _ask_delete(self) -> None:
        if self.active_value:
            self.delete_requested.emit(self.active_value)

    def _on_row(self, _row: int) -> None:
        if not self._filling and self.active_value:
            self.active_changed.emit(self.active_value)

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if self._filling or self.table is None:
            return
        lab = self.table.get(int(item.data(Qt.UserRole)))
        visible = item.checkState() == Qt.Checked
        if lab is not None and lab.visible != visible:
            lab.visible = visible
            self.table_changed.emit()
