"""File side of the main window: open (dialog, recent, drop), load in a worker, workspace
autosave, export, and the question on close. A mixin of ``MainWindow``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication, QFileDialog, QMenu, QMessageBox

from medsam_gui.annotation import History, LabelMap, LabelTable, lock, place_workspace
from medsam_gui.engine.intensity import volume_modality
from medsam_gui.errors import MedsamError
from medsam_gui.ui.tools import Annotator
from medsam_gui.ui.workers import Task, error_text, run_task

MAX_RECENT = 10
NIFTI_FILTER = ("Volumes (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.mgz *.mgh *.hdr *.img);;"
                "NIfTI (*.nii *.nii.gz *.hdr *.img);;NRRD (*.nrrd *.nhdr);;"
                "MetaImage (*.mha *.mhd);;FreeSurfer (*.mgz *.mgh);;DICOM (*.dcm *);;All files (*)")
LABELS_FILTER = ("NIfTI (*.nii.gz *.nii);;NRRD label map (*.nrrd);;MetaImage (*.mha);;"
                 "3D Slicer segmentation (*.seg.nrrd)")


class FileActions:
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

    # ---- opening ------------------------------------------------------------------------
    def open_file_dialog(self) -> None:
        path, _f = QFileDialog.getOpenFileName(self, "Open a scan", self._last_dir(), NIFTI_FILTER)
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a DICOM folder", self._last_dir())
        if path:
            self.open_path(path)

    def _last_dir(self) -> str:
        recent = self._recent()
        return os.path.dirname(recent[0]) if recent else os.getcwd()

    def open_path(self, path: str, series_uid: Optional[str] = None) -> Optional[Task]:
        """Load a NIfTI file or DICOM folder in a worker; errors end in a dialog.

        The status bar shows the read's progress and a Cancel button (``cancel_open``); a
        cancelled open leaves the window as it was (the scan open before stays open and
        editable) and gives back the workspace lock the worker took for the new scan."""
        from medsam_gui.io import load_volume
        from medsam_gui.io.limits import LoadCancelled, check_cancel, read_progress

        path = os.fspath(path)
        if self.opening:
            self.statusBar().showMessage("Another scan is being opened: wait for it or cancel "
                                         "it (Cancel in the status bar) first.", 6000)
            return None
        if os.path.isdir(path) and series_uid is None:  # list its series in a worker first
            from medsam_gui.ui.series_dialog import scan_folder

            return scan_folder(self, path, lambda uid: self.open_path(path, series_uid=uid))
        if not self.flush_autosave() and not self.confirm_leave("open another scan"):
            return None
        place = self.workspace_place()
        owner = self.workspace_owner

        def work(task: Task):
            shown = [-1]

            def progress(done: int, total: int) -> None:
                percent = 100 * done // max(1, total)
                if percent != shown[0]:  # at most 101 signals, however many chunks
                    shown[0] = percent
                    task.report(percent, 100)

            from scipy import ndimage  # noqa: F401 (imported here, not on the GUI thread,
            # where the label sizes need it first: 0.4 s of a frozen window at the first open)

            with read_progress(progress, task.is_cancelled):
                volume = load_volume(path, series_uid=series_uid)
                check_cancel()
                placement = place_workspace(path, volume, place)  # hashes the voxels
                check_cancel()
            workspace = placement.workspace
            workspace.owner = owner
            folder = workspace.volume_dir(volume)
            held_before = lock.holds(folder, owner)  # the scan open now is this one
            restored = workspace.open(volume)  # takes the lock
            if task.cancelled:
                if not held_before:
                    lock.release(folder, owner)
                raise LoadCancelled("the open was cancelled", path)
            return volume, restored, workspace, placement.note, folder, held_before

        def loaded(result) -> None:
            volume, restored, workspace, note, folder, held_before = result
            if task.cancelled:  # cancelled after the worker had ended: undo its lock too
                if not held_before:
                    lock.release(folder, owner)
                return failed(LoadCancelled("the open was cancelled", path))
            self._end_open()
            self._on_loaded(path, volume, restored, workspace, note)
            self.show_load_warnings()

        def failed(exc) -> None:
            self._end_open()
            if isinstance(exc, LoadCancelled) or task.cancelled:
                self.statusBar().showMessage(f"Open of {os.path.basename(path)} cancelled; "
                                             "nothing changed.", 8000)
                return
            self.statusBar().clearMessage()
            self.show_error("Cannot open", error_text(exc))

        self.statusBar().showMessage(f"Opening {path} …")
        self._set_busy(True)
        task = run_task(work, loaded, failed, name="load", on_progress=self._open_progress)
        self._open_task = task
        self._show_open_progress(True)
        return task

    # ---- progress and cancel of an open -------------------------------------------------
    @property
    def opening(self) -> bool:
        """Is a scan being opened (its worker not yet handled)?"""
        return getattr(self, "_open_task", None) is not None

    def cancel_open(self) -> None:
        """Stop the open in progress; the window stays as it was."""
        task = getattr(self, "_open_task", None)
        if task is not None:
            task.cancel()
            self.statusBar().showMessage("Cancelling the open …")

    def _open_widgets(self):
        if getattr(self, "open_progress", None) is None:
            from PyQt5.QtWidgets import QProgressBar, QPushButton

            self.open_progress = QProgressBar(self)
            self.open_progress.setRange(0, 100)
            self.open_progress.setMaximumWidth(180)
            self.open_progress.setFormat("reading %p%")
            self.open_cancel_button = QPushButton("Cancel", self)
            self.open_cancel_button.setToolTip("Stop opening this scan (the open scan stays)")
            self.open_cancel_button.clicked.connect(self.cancel_open)
            self.statusBar().addPermanentWidget(self.open_progress)
            self.statusBar().addPermanentWidget(self.open_cancel_button)
        return self.open_progress, self.open_cancel_button

    def _show_open_progress(self, show: bool) -> None:
        bar, button = self._open_widgets()
        bar.setRange(0, 0)  # busy until the reader reports (DICOM and the other formats do not)
        bar.setVisible(show)
        button.setVisible(show)

    def _open_progress(self, done: int, total: int) -> None:
        if self.opening:
            bar = self._open_widgets()[0]
            bar.setRange(0, 100)
            bar.setValue(int(done))

    def _end_open(self) -> None:
        self._open_task = None
        self._set_busy(False)
        self._show_open_progress(False)

    def show_load_warnings(self) -> None:
        """The bar above the views: what the load of this volume warned about or left out."""
        from medsam_gui.ui.series_dialog import LoadWarningBar

        bar = getattr(self, "load_warning_bar", None)
        if bar is None:
            bar = self.load_warning_bar = LoadWarningBar(self)
            self.centralWidget().layout().insertWidget(0, bar)
        bar.show_for(self.volume)

    def _on_loaded(self, path: str, volume, restored, workspace, place_note="") -> None:
        self.precomputer.stop()
        self._release_previous_work(workspace, volume)
        self.volume = volume
        self.use_workspace(workspace)
        labelmap = restored.labelmap
        self.labelmap = labelmap or LabelMap(volume.shape, LabelTable())
        self._edits = self._saved_edits = 0
        self.history = History(max_steps=200)
        self.annotator = Annotator(volume, self.labelmap, self.history)
        self.session = None
        self.session_error = None
        self.reset_model_input()
        self.unexported = False
        self._indices = {}
        self.view, self.index = "axial", volume.n_slices("axial") // 2  # valid before any redraw
        presets = self._presets()
        self.preset_box.clear()
        self.preset_box.addItems(list(presets))
        from medsam_gui.ui.render import default_window

        self.window_lw = default_window(volume)
        self.preset_box.setCurrentText("DICOM" if "DICOM" in presets else
                                       "CT soft tissue" if volume.modality == "CT" else "Auto")
        self.cancel_fill()
        self._fill_run = None
        self.labels.set_table(self.labelmap.table)
        self.update_label_sizes()
        self._rebuild_lut()
        self.set_view("axial")
        self.slice_view.setFocus()  # wheel and arrow keys scroll slices right away
        self._add_recent(path)
        self.update_title()
        modality, source = volume_modality(volume)
        how = " (guessed from the voxels; Model ▸ Modality to change)" if source == "guess" else ""
        msg = f"Opened {volume.shape[0]}×{volume.shape[1]}×{volume.shape[2]} {modality}{how}"
        if labelmap is not None:
            msg += f"; restored {len(labelmap.records)} annotated slices from {workspace.folder}"
        notes = [str(w) for w in volume.source.warnings] + ([place_note] if place_note else [])
        self.statusBar().showMessage("; ".join([msg] + notes), 20000 if place_note else 12000)
        self.show_workspace_place()
        self.report_restored(restored)
        self.update_interop_actions()
        self.volume_loaded.emit()
        self.make_session()

    def make_session(self) -> None:
        """Session for the current volume and backend, built in a worker (normalisation)."""
        if self.volume is None or self.backend is None:
            return
        from medsam_gui.engine import EmbeddingCache, Session

        if self.cache is None:
            self.cache = (EmbeddingCache.with_user_disk_cache() if self.use_disk_cache
                          else EmbeddingCache())
        volume, backend, cache = self.volume, self.backend, self.cache
        choice = self.model_input

        def work(_task):
            session = Session(volume, backend, cache, model_input=choice)
            session.input_transform()  # resolve the model input off the GUI thread
            return session

        def done(session) -> None:
            if session.volume is not self.volume:
                return
            self.session = session
            self.session_error = None
            self.show_model_input(session.input_transform())
            if self.model_input != session.model_input:  # chosen while the session was made
                self.set_model_input(self.model_input)
            self._update_strip_cache()
            self.precomputer.follow(session, self.view, self.index, immediate=True)
            self.session_ready.emit()

        def failed(exc) -> None:
            if volume is not self.volume:
                return
            self.session_error = error_text(exc)
            self.input_label.setText("input: none")
            self.show_error("The model cannot segment this scan", self.session_error)

        run_task(work, done, failed, "session")

    # ---- recent files, drops -----------------------------------------------------------------
    def _recent(self) -> list:
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        recent = [path] + [p for p in self._recent() if p != path]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self._rebuild_recent()

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for p in self._recent():
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _c=False, p=p: self.open_path(p))
        self.recent_menu.setEnabled(bool(self._recent()))

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_path(paths[0])

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
