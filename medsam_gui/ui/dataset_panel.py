"""The worklist: a dock listing a dataset's cases and where each stands; previous / next case,
mark done (asks when slices are unreviewed). A view of ``medsam_gui.dataset``: every rule
lives in the core.

Learning between cases is ``dataset_learning`` (marking a case done runs the adapt step in the
background; an adopted model is used at once; Roll back). Opening a dataset switches the
window to the dataset's current model.

The next case is prepared while the user works (``next_case.NextCase``): loaded and its first
slices encoded once the open case's background encoding is idle.

``install(window)`` adds File ▸ Open dataset…, File ▸ Export ▸ Dataset (nnU-Net v2)… and the
(hidden until used) dock. A case opens through the window's own ``open_path`` with the case's
workspace inside the dataset folder, so locking, restoring and autosave are the window's as for
any scan. Time is counted while a case is open and added to the manifest when the user leaves
it.
"""

from __future__ import annotations

import time
from typing import Optional

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import (QAbstractItemView, QDockWidget, QFileDialog, QHBoxLayout, QLabel,
                             QMessageBox, QPushButton, QTableWidget,
                             QTableWidgetItem, QVBoxLayout, QWidget)

from medsam_gui.dataset.adapt import model_name
from medsam_gui.dataset.manifest import Case, Dataset
from medsam_gui.dataset.status import _hms, dataset_status
from medsam_gui.errors import MedsamError
from medsam_gui.ui.dataset_learning import LearningBetweenCases

COLUMNS = ("Case", "Status", "Reviewed", "Unreviewed", "Time", "Labels", "Done by")


class DatasetPanel(LearningBetweenCases, QWidget):
    """The worklist of one dataset, driving ``window`` (a MainWindow)."""

    case_opened = pyqtSignal(str)  # case id, once its scan is shown
    learned = pyqtSignal(object)  # AdaptResult of a learning step
    learn_failed = pyqtSignal(str)  # why a learning step did not run to its end

    def __init__(self, window, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.window = window
        self.dataset: Optional[Dataset] = None
        self.current: Optional[str] = None  # case id shown in the window
        self._pending: Optional[Case] = None
        self._since: Optional[float] = None
        self.title = QLabel()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.cellDoubleClicked.connect(lambda row, _c: self.open_row(row))
        self.prev_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.done_button = QPushButton("Mark done")
        self.prev_button.setToolTip("The previous case (Alt+Left)")
        self.next_button.setToolTip("The next case (Alt+Right)")
        self.done_button.setToolTip("This case is finished: its reviewed slices become "
                                    "training data and go into the export")
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.done_button.clicked.connect(lambda: self.mark_done())
        buttons = QHBoxLayout()
        for b in (self.prev_button, self.next_button, self.done_button):
            b.setFocusPolicy(Qt.NoFocus)
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.title)
        lay.addWidget(self.table, 1)
        lay.addLayout(buttons)
        lay.addLayout(self._build_learning())
        window.volume_loaded.connect(self._on_loaded)
        from medsam_gui.ui.next_case import NextCase

        # the next case loaded and its first slices encoded once this one's encoding is idle
        self.next_case = NextCase(self)
        window.precomputer.idle.connect(self.next_case.start)
        self.next_case.ready.connect(lambda cid, n: n and window.statusBar().showMessage(
            f"Next case {cid} is ready ({n} slices encoded in the background).", 5000))
        self.next_case.failed.connect(lambda cid, why: window.statusBar().showMessage(
            f"Could not prepare the next case {cid}: {why}", 8000))

    # ---- dataset ---------------------------------------------------------------------------
    def open_dataset(self, folder: str, open_case: bool = True) -> Dataset:
        """Show the dataset's worklist and open the case where the user left off."""
        self.leave_case()
        self.cancel_learning()
        self.dataset = Dataset.open(folder)
        self.current = None
        self.refresh()
        self.use_dataset_model()
        if open_case:
            last = self.dataset.meta.get("last_case")
            ids = [c.id for c in self.dataset.active()]
            case = (self.dataset.case(last) if last in ids
                    else self.dataset.neighbour(None))
            if case is not None:
                self.open_case(case)
        return self.dataset

    def refresh(self) -> None:
        ds = self.dataset
        if ds is None:
            return
        rows = dataset_status(ds)
        self.table.setRowCount(len(rows))
        for r, st in enumerate(rows):
            values = (st.id, st.status, str(st.reviewed_slices), str(st.unreviewed_slices),
                      _hms(st.seconds), ", ".join(st.labels), st.done_by)
            for col, v in enumerate(values):
                item = QTableWidgetItem(v)
                if col == 0:
                    item.setToolTip(st.image + (f"\nseries {st.series_uid}" if st.series_uid
                                                else "") + (f"\n{st.problem}" if st.problem
                                                            else ""))
                if st.id == self.current:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(r, col, item)
            if st.id == self.current:
                self.table.selectRow(r)
        self.table.resizeColumnsToContents()
        done = sum(1 for s in rows if s.status == "done")
        self.title.setText(f"<b>{ds.name}</b>: {done} of {len(rows)} done; "
                           f"{model_name(ds)}")
        self.rollback_button.setEnabled(ds.current_model is not None and not self.learning)
        if ds.current_model is not None:
            self.rollback_button.setToolTip(f"Stop using {model_name(ds)}: go back to the "
                                            "model before it")

    def status_of(self, cid: str) -> str:
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).text() == cid:
                return self.table.item(r, 1).text()
        return ""

    # ---- moving between cases ----------------------------------------------------------------
    def open_row(self, row: int) -> None:
        if self.dataset is None:
            return
        self.open_case(self.dataset.case(self.table.item(row, 0).text()))

    def open_case(self, case: Case):
        """Open ``case``'s scan in the window with its work from the dataset folder."""
        w = self.window
        before = w.workspace_dir
        w.workspace_dir = str(self.dataset.case_dir(case))  # read when the load starts
        try:
            task = w.open_path(case.image, series_uid=case.series_uid or None)
        finally:
            w.workspace_dir = before
        if task is not None:
            self._pending = case
        return task

    def step(self, direction: int):
        if self.dataset is None:
            return None
        case = self.dataset.neighbour(self.current, direction)
        if case is None:
            self.window.statusBar().showMessage(
                "This is the " + ("last" if direction > 0 else "first") + " case.", 5000)
            return None
        return self.open_case(case)

    def _on_loaded(self) -> None:
        self.next_case.cancel()  # the user is somewhere else now
        case, self._pending = self._pending, None
        if case is None or self.dataset is None:
            if self.current is not None:  # another scan was opened outside the worklist
                self.leave_case()
                self.current = None
                self.refresh()
            return
        self.leave_case()
        self.current = case.id
        self._since = time.monotonic()
        try:
            self.dataset.update(lambda d: d.meta.__setitem__("last_case", case.id))
        except MedsamError as exc:
            self.window.statusBar().showMessage(str(exc), 10000)
        self.refresh()
        self.use_dataset_model()  # a model learned from other modalities is not used here
        self.case_opened.emit(case.id)

    def leave_case(self) -> None:
        """Add the time spent on the open case to the manifest."""
        if self.dataset is None or self.current is None or self._since is None:
            return
        spent, self._since = time.monotonic() - self._since, None
        try:
            self.dataset.add_time(self.current, spent)
        except MedsamError:
            pass  # a read-only dataset: time is not worth an error dialog

    # ---- done --------------------------------------------------------------------------------
    def unreviewed(self) -> int:
        """Slices of the open case with machine-made labels nobody has accepted or edited."""
        lm = self.window.labelmap
        if lm is None:
            return 0
        reviewed = {(r.axis, r.index) for r in lm.records.values() if r.reviewed}
        return len({(r.axis, r.index) for r in lm.records.values() if not r.reviewed}
                   - reviewed)

    def mark_done(self, go_next: bool = True) -> bool:
        if self.dataset is None or self.current is None:
            return False
        n = self.unreviewed()
        if n:
            answer = QMessageBox.question(
                self, "Mark done",
                f"{n} slice{'s are' if n != 1 else ' is'} not reviewed yet (made by the model, "
                "propagation or import, not accepted or edited). Training uses only reviewed "
                "slices.\n\nMark this case done anyway?",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                return False
        if not self.window.flush_autosave():
            self.window.statusBar().showMessage("The work could not be saved; the case was "
                                                "not marked done.", 10000)
            return False
        self.leave_case()
        self._since = time.monotonic()
        self.dataset.set_state(self.current, "done")
        self.refresh()
        self.window.statusBar().showMessage(f"Case {self.current} marked done.", 8000)
        if self.auto_learn:
            self.learn()
        if go_next:
            self.step(1)
        return True

def install(window) -> DatasetPanel:
    """File ▸ Open dataset… and the worklist dock (shown once a dataset is opened)."""
    panel = DatasetPanel(window)
    dock = QDockWidget("Worklist", window)
    dock.setObjectName("worklistDock")
    dock.setWidget(panel)
    window.addDockWidget(Qt.LeftDockWidgetArea, dock)
    dock.hide()
    window.dataset_panel, window.dataset_dock = panel, dock
    file_menu = window.menuBar().actions()[0].menu()
    anchor = next((a for a in file_menu.actions() if a.text().startswith("Open recent")), None)
    made = [window._action(file_menu, "Open dataset…", lambda: open_dataset_dialog(window),
                           "Ctrl+Alt+O", "Open a dataset folder: a worklist of scans"),
            window._action(file_menu, "Next case", lambda: panel.step(1), "Alt+Right"),
            window._action(file_menu, "Previous case", lambda: panel.step(-1), "Alt+Left"),
            window._action(file_menu, "Mark case done", lambda: panel.mark_done(), "Alt+D")]
    if anchor is not None:  # beside the other ways of opening
        for act in made:
            file_menu.removeAction(act)
            file_menu.insertAction(anchor, act)
    window.open_dataset_action = made[0]
    window.case_actions = made[1:]
    export_menu = next((a.menu() for a in file_menu.actions()
                        if a.menu() is not None and a.text().replace("&", "") == "Export"),
                       None)
    if export_menu is not None:  # File ▸ Export ▸ Dataset (nnU-Net v2)…
        from medsam_gui.ui.dataset_export import export_dataset_dialog

        export_menu.addSeparator()
        window.export_dataset_action = window._action(
            export_menu, "Dataset (nnU-Net v2)…", lambda: export_dataset_dialog(window),
            tip="The done cases of the open dataset in nnU-Net's raw layout (imagesTr, "
                "labelsTr, dataset.json), each on its scan's grid")
        window.case_actions.append(window.export_dataset_action)
    for act in window.case_actions:
        act.setEnabled(False)
    return panel


def open_dataset_dialog(window) -> None:
    folder = QFileDialog.getExistingDirectory(window, "Open a dataset folder")
    if folder:
        open_dataset(window, folder)


def open_dataset(window, folder: str) -> Optional[Dataset]:
    try:
        ds = window.dataset_panel.open_dataset(folder)
    except MedsamError as exc:
        window.show_error("Cannot open the dataset", str(exc))
        return None
    window.dataset_dock.show()
    for act in getattr(window, "case_actions", []):
        act.setEnabled(True)
    return ds
