"""File side of the main window: the File menu, workspace autosave, export, and the question
on close; opening a scan is ``window_open.OpenActions``. A mixin of ``MainWindow``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication, QFileDialog, QMenu, QMessageBox

from medsam_gui.annotation import LabelMap, LabelTable
from medsam_gui.errors import MedsamError
from medsam_gui.ui.window_open import OpenActions
from medsam_gui.ui.workers import Task, error_text, run_task
LABELS_FILTER = ("NIfTI (*.nii.gz *.nii);;NRRD label map (*.nrrd);;MetaImage (*.mha);;"
                 "3D Slicer segmentation (*.seg.nrrd)")


class FileActions(OpenActions):
    """Needs the MainWindow attributes (volume, labelmap, settings, …)."""

    confirm_close = True  # tests switch the question off
    autosave_delay_ms = 400
    use_disk_cache = True  # embeddings also kept on disk between sessions

    def init_file_actions(self) -> None:
        menu = QMenu("&File", self)
        first = self.menuBar().actions()
        if first:
            self.menuBar().insertMenu(first[0], menu)
        else:
            self.menuBar().addMenu(menu)
        self._action(menu, "Open file…", self.open_file_dialog, "Ctrl+O")
        self._action(menu, "Open DICOM folder…", self.open_folder_dialog, "Ctrl+Shift+O")
        self.recent_menu = menu.addMenu("Open recent")
        self.close_scan_action = self._action(menu, "Close scan", self.close_scan, "Ctrl+W",
                                              "Save the work and close the scan")
        menu.addSeparator()
        self.init_workspace_menu(menu)
        menu.addSeparator()
        self.init_interop_actions(menu)
        menu.addSeparator()
        self._action(menu, "Quit", self.close, "Ctrl+Q")
        self._rebuild_recent()
        self.setAcceptDrops(True)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.timeout.connect(self.autosave)
        self._save_task: Optional[Task] = None
        self._save_pending = False
        self._save_error_shown = False
        self.unexported = False
        self._tasks = []
        self._open_task: Optional[Task] = None  # the open in progress (cancel_open stops it)
        self.open_progress = None  # its progress bar and Cancel button, made on first use
        self.last_saved_folder: Optional[Path] = None
        self._edits = self._saved_edits = 0  # label changes made / covered by the last save
        self.workspace_owner = f"window-{os.getpid()}-{id(self):x}"  # this window's lock token

    # ---- autosave ----------------------------------------------------------------------------
    def changed(self) -> None:
        """After every change of the labels: debounce an autosave, update actions."""
        self.unexported = True
        self._edits += 1
        self._sizes_timer.start()
        self.labels_changed()  # strip bands: debounced, off the box -> mask path
        self.undo_action.setEnabled(self.history.can_undo)
        self.redo_action.setEnabled(self.history.can_redo)
        note = self.history.note
        if note and note != getattr(self, "_history_note_shown", ""):
            self._history_note_shown = note  # once per new drop, in the bar and the log
            self.statusBar().showMessage(note)
        self._autosave_timer.start(self.autosave_delay_ms)

    def _snapshot(self) -> LabelMap:
        lm = self.labelmap
        snap = LabelMap(lm.shape, LabelTable.from_json(lm.table.to_json()),
                        lm.array.copy(order="K"))  # same memory order: a plain copy
        snap.records = dict(lm.records)
        return snap

    def autosave(self) -> None:
        """Save a snapshot of the labels in a worker (one save at a time)."""
        if self.labelmap is None or self.workspace is None:
            return
        self._update_strip_cache()
        if self.workspace.read_only_reason(self.volume):
            self.show_workspace_place()  # "not saved" stays in the status bar
            return
        if self._save_task is not None:
            self._save_pending = True
            return
        volume, workspace, snap, edits = self.volume, self.workspace, self._snapshot(), self._edits
        self._save_pending = False
        self._save_task = run_task(lambda _t: workspace.save(volume, snap),
                                   lambda folder: self._saved(folder, edits),
                                   self._save_failed, name="autosave")

    @property
    def has_unsaved_work(self) -> bool:
        """Changes that are in no saved file: a failed or refused save, or one not yet run."""
        return self.labelmap is not None and self._edits != self._saved_edits

    def _saved(self, folder, edits: Optional[int] = None) -> None:
        self._save_task = None
        self.last_saved_folder = Path(folder)
        self._saved_edits = self._edits if edits is None else edits
        self.show_workspace_place()
        if self._save_pending:
            self.autosave()

    def _save_failed(self, exc) -> None:
        self._save_task = None
        if self.save_elsewhere(exc):
            return
        self.show_workspace_place()
        self.statusBar().showMessage("Autosave failed: " + error_text(exc), 10000)
        if not self._save_error_shown:  # once per session; the status bar repeats it
            self._save_error_shown = True
            self.show_error("Autosave failed", error_text(exc))

    def flush_autosave(self) -> bool:
        """Finish any pending save now (before closing or opening another scan). False when
        the work could not be saved (the caller asks before anything is discarded)."""
        if self._save_task is not None:
            self._save_task.wait()
            QApplication.processEvents()
        pending = self._autosave_timer.isActive() or self._save_pending or self.has_unsaved_work
        if pending and self.labelmap is not None and self.workspace is not None:
            self._autosave_timer.stop()
            self._save_pending = False
            if self.workspace.read_only_reason(self.volume):
                self.show_workspace_place()
                return False
            try:
                edits = self._edits
                self._saved(self.workspace.save(self.volume, self.labelmap), edits)
            except Exception as exc:
                if self.save_elsewhere(exc):
                    return True
                self.show_workspace_place()
                return False
        return True

    # ---- export ------------------------------------------------------------------------------
    def _default_export(self, suffix: str) -> str:
        """The last export folder (remembered), else the user's documents folder: never the
        scan's own folder (often a read-only data or PACS folder)."""
        from PyQt5.QtCore import QStandardPaths

        src = self.volume.source.path.rstrip("/")
        base = os.path.basename(src)
        from medsam_gui.io import VOLUME_SUFFIXES

        for ext in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
            if base.lower().endswith(ext):
                base = base[: -len(ext)]
                break
        folder = str(self.settings.value("export/folder", "") or "")
        if not (folder and os.path.isdir(folder) and os.access(folder, os.W_OK)):
            folder = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation)
            if not (folder and os.path.isdir(folder)):
                folder = os.path.expanduser("~")
        return os.path.join(folder, base + suffix)

    def remember_export(self, path) -> None:
        """The next export dialog starts in this file's folder."""
        self.settings.setValue("export/folder", os.path.dirname(os.path.abspath(str(path))))

    def export_labels(self, path: Optional[str] = None) -> Optional[Path]:
        """The label map on the source grid, by default in the source's family (NIfTI, NRRD or
        MetaImage, with the label table beside it: JSON, ITK-SNAP, Slicer), or a 3D Slicer
        segmentation (.seg.nrrd) when that name is chosen."""
        if self.labelmap is None:
            return None
        from medsam_gui.io.formats import FORMAT_NAMES, SUFFIXES, family_format, format_for

        if path is None:
            if not self.confirm_export_reviewed():  # unreviewed slices: export anyway?
                return None
            family = family_format(self.volume.source.kind)
            path, _f = QFileDialog.getSaveFileName(
                self, "Export labels", self._default_export("_labels" + SUFFIXES[family][0]),
                LABELS_FILTER)
            if not path:
                return None
        from medsam_gui.annotation.exporting import export_labels as write_labels

        try:
            result = write_labels(self.labelmap, self.volume, path)
        except Exception as exc:
            self.show_error("Export failed", error_text(exc))
            return None
        self.unexported = False
        self.remember_export(result.path)
        self.report_export(FORMAT_NAMES[format_for(result.path)], result.path, result.notes)
        return result.path

    def export_table(self, path: Optional[str] = None, quiet: bool = False) -> Optional[Path]:
        if self.labelmap is None:
            return None
        if path is None:
            path, _f = QFileDialog.getSaveFileName(self, "Export label table",
                                                   self._default_export("_labels.json"),
                                                   "JSON (*.json)")
            if not path:
                return None
        from medsam_gui.annotation.exporting import write_table_json

        try:
            out = write_table_json(self.labelmap, self.volume, path)
        except MedsamError as exc:
            if quiet:  # the caller reports it
                raise
            self.show_error("Export failed", error_text(exc))
            return None
        if not quiet:
            QMessageBox.information(self, "Label table exported", f"Saved to\n{out}")
        return out

    # ---- closing -----------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if not self.flush_autosave() and not self.confirm_leave("close the window"):
            event.ignore()
            return
        if self.unexported and self.confirm_close and self.labelmap is not None \
                and not self.has_unsaved_work:
            answer = QMessageBox.question(
                self, "Export labels?",
                "The labels changed since the last export. They are saved in the workspace "
                f"({self.workspace.folder}) either way.\n\nExport them as NIfTI now?",
                QMessageBox.Yes | QMessageBox.No | QMessageBox.Cancel, QMessageBox.Yes)
            if answer == QMessageBox.Cancel:
                event.ignore()
                return
            if answer == QMessageBox.Yes and self.export_labels() is None:
                event.ignore()
                return
        self.shutdown()
        event.accept()

    def shutdown(self, task_wait_ms: Optional[int] = None) -> bool:
        """Save what is pending and stop every worker (also used by tests). ``task_wait_ms``
        bounds the wait for each worker (a signal must not wait for a model conversion);
        returns False if one is still running then."""
        self.precomputer.stop(wait=True)
        task = getattr(self, "_encode_task", None)
        if task is not None:
            task.cancel()
        if self.labelmap is not None and self.workspace is not None:
            if not self.flush_autosave():
                self.save_rescue_copy()
        ended = True
        for t in list(Task._alive):
            t.cancel()
            ended = (t.wait() if task_wait_ms is None else t.wait(task_wait_ms)) and ended
        from medsam_gui.annotation import lock

        lock.release_all(self.workspace_owner)
        return ended
