"""Opening a scan in the main window: the dialogs, recent files and drops, the load in a
worker with progress and Cancel, and the session that follows. A mixin of ``MainWindow``
(through ``window_io.FileActions``)."""

from __future__ import annotations

import os
from typing import Optional

from PyQt5.QtWidgets import QFileDialog

from medsam_gui.annotation import History, LabelMap, LabelTable, lock, place_workspace
from medsam_gui.engine.intensity import volume_modality
from medsam_gui.ui.tools import Annotator
from medsam_gui.ui.workers import Task, error_text, run_task

MAX_RECENT = 10
NIFTI_FILTER = ("Volumes (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.mgz *.mgh *.hdr *.img);;"
                "NIfTI (*.nii *.nii.gz *.hdr *.img);;NRRD (*.nrrd *.nhdr);;"
                "MetaImage (*.mha *.mhd);;FreeSurfer (*.mgz *.mgh);;DICOM (*.dcm *);;All files (*)")


class OpenActions:
    """Needs the MainWindow attributes (volume, labelmap, settings, …) and the state that
    ``FileActions.init_file_actions`` sets up."""

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
