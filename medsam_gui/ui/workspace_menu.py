"""File ▸ Workspace: where the autosaved work goes, shown in the status bar. A mixin of
``MainWindow`` (the rules are ``annotation.placement.place_workspace``).

The default is the per-user data folder; "beside the scan" and a chosen folder are options,
kept in the settings. ``--workspace DIR`` overrides all of them for one run. When a save fails
where the work is going (read-only media, a drive that went away), the work is saved in the
user folder instead and the status bar says so: an autosave is never lost silently.

Also here: what opening found (a damaged file restored from a backup, work held by another
window, a newer format), Restore an earlier version, Take over editing, and the question before
unsaved changes would be left behind (``confirm_leave``).
"""

from __future__ import annotations

import sys
from typing import Optional

from PyQt5.QtCore import QUrl
from PyQt5.QtGui import QDesktopServices
from PyQt5.QtWidgets import QActionGroup, QFileDialog, QInputDialog, QLabel, QMessageBox

from medsam_gui.annotation import Workspace, beside_scan, user_workspace
from medsam_gui.errors import MedsamError
from medsam_gui.ui.workers import error_text

PLACE_KEY = "workspace/place"


class WorkspaceActions:
    """Needs MainWindow attributes (settings, workspace, workspace_dir, volume, statusBar…)."""

    def init_workspace_menu(self, file_menu) -> None:
        menu = file_menu.addMenu("Workspace")
        group = QActionGroup(self)
        self.place_actions = {}
        for place, text in (("user", "Save work in my user data folder (default)"),
                            ("beside", "Save work beside the scan")):
            act = self._action(menu, text, lambda p=place: self.set_workspace_place(p))
            act.setCheckable(True)
            group.addAction(act)
            self.place_actions[place] = act
        self.place_actions["folder"] = act = self._action(
            menu, "Save work in a folder I choose…", self.choose_workspace)
        act.setCheckable(True)
        group.addAction(act)
        menu.addSeparator()
        self._action(menu, "Show workspace folder", self.show_workspace_folder,
                     tip="Open the folder where this scan's work is saved")
        self._action(menu, "Restore an earlier version…", self.restore_earlier_version,
                     tip="Go back to one of the last saved versions of this scan's work "
                         "(undoable; the current version stays among them)")
        self.take_over_action = self._action(
            menu, "Take over editing", self.take_over_work,
            tip="Edit work that another window holds (only when that window has gone)")
        self.take_over_action.setEnabled(False)
        place = self.workspace_place()
        self.place_actions[place if place in ("user", "beside") else "folder"].setChecked(True)
        self.last_warning = ""  # the last "Your saved work" message (tests read it)
        self.workspace_label = QLabel("")
        self.workspace_label.setMinimumWidth(90)  # may be cut rather than widen the window
        self.statusBar().addPermanentWidget(self.workspace_label)

    def workspace_place(self) -> str:
        """"user", "beside" or a folder: ``--workspace`` first, then the settings."""
        if self.workspace_dir:
            return str(self.workspace_dir)
        value = self.settings.value(PLACE_KEY, "user")
        return str(value) if value else "user"

    def set_workspace_place(self, place: str) -> None:
        """Where new work goes from now on; the open scan's work is saved there at once (what
        was saved before stays where it is)."""
        self.settings.setValue(PLACE_KEY, place)
        self.workspace_dir = None if place in ("user", "beside") else place
        if self.volume is None:
            return
        from medsam_gui.annotation import place_workspace

        placement = place_workspace(self.volume.source.path or ".", self.volume, place)
        if placement.workspace.folder == getattr(self.workspace, "folder", None):
            return
        old = self.workspace
        placement.workspace.owner = self.workspace_owner
        self.use_workspace(placement.workspace, placement.note)
        if old is not None:
            old.close(self.volume)
        if self.labelmap is not None:
            self.changed()

    def choose_workspace(self) -> None:
        current = self.workspace.folder if self.workspace is not None else user_workspace()
        folder = QFileDialog.getExistingDirectory(self, "Save work in this folder",
                                                  str(current))
        if folder:
            self.set_workspace_place(folder)
        else:  # keep the check mark on the place in use
            place = self.workspace_place()
            self.place_actions[place if place in ("user", "beside") else "folder"].setChecked(True)

    def use_workspace(self, workspace: Workspace, note: str = "") -> None:
        self.workspace = workspace
        self.show_workspace_place()
        if note:
            self.statusBar().showMessage(note, 20000)

    def show_workspace_place(self) -> None:
        if self.workspace is None or self.volume is None:
            self.workspace_label.setText("")
            return
        folder = self.workspace.volume_dir(self.volume)
        read_only = self.workspace.read_only_reason(self.volume)
        self.take_over_action.setEnabled("open in" in read_only)
        if read_only:
            self.workspace_label.setText("NOT SAVED: read-only" if self.has_unsaved_work
                                         else "read-only")
            self.workspace_label.setStyleSheet("color: #e0a030; font-weight: bold")
            self.workspace_label.setToolTip(f"{folder}\n{read_only}\n\nYour changes are not "
                                            "saved there. File ▸ Workspace ▸ Save work in a "
                                            "folder I choose… keeps them.")
            return
        where = ("user data folder" if self.workspace.folder == user_workspace()
                 else "beside the scan" if self.workspace.folder == beside_scan(
                     self.volume.source.path or ".") else self.workspace.folder.name)
        unsaved = self.has_unsaved_work and not self._autosave_timer.isActive() \
            and self._save_task is None
        self.workspace_label.setText(f"NOT SAVED (saving in: {where} failed)" if unsaved
                                     else f"saved in: {where}")
        self.workspace_label.setStyleSheet("color: #e0a030; font-weight: bold" if unsaved
                                           else "")
        self.workspace_label.setToolTip(f"Work is saved automatically in\n{folder}\n"
                                        "(File ▸ Workspace to change)")

    # ---- what opening found, and leaving ---------------------------------------------------
    def report_restored(self, restored) -> None:
        """Tell, once and in plain words, what opening the scan's work found."""
        self.show_workspace_place()
        lines = list(restored.notes)
        if restored.lock_owner is not None:
            lines.append(f"This scan's work is open in {restored.lock_owner.describe()}. You "
                         "can look at it here, but not change it there. When that window has "
                         "closed, File ▸ Workspace ▸ Take over editing lets you edit here.")
        elif restored.read_only and restored.read_only not in " ".join(lines):
            lines.append(restored.read_only[0].upper() + restored.read_only[1:] + ".")
        if restored.read_only:
            lines.append("Changes made in this window are not saved there. To keep them, use "
                         "File ▸ Workspace ▸ Save work in a folder I choose…, or export them.")
            lines.append(f"Work folder: {self.workspace.volume_dir(self.volume)}")
        if lines:
            self.show_warning("Your saved work", "\n\n".join(lines))

    def show_warning(self, title: str, message: str) -> None:
        if self.confirm_close:  # tests switch dialogs off; the text is kept for them
            QMessageBox.warning(self, title, message)
        self.last_warning = message

    def _release_previous_work(self, workspace, volume) -> None:
        """Give back the lock of the scan that was open (not if the same work reopens)."""
        old_ws, old_vol = self.workspace, self.volume
        if old_ws is None or old_vol is None:
            return
        if old_ws.volume_dir(old_vol) != workspace.volume_dir(volume):
            old_ws.close(old_vol)

    def take_over_work(self) -> None:
        if self.workspace is None or self.volume is None:
            return
        ok, message = self.workspace.take_over(self.volume)
        if ok:  # what that window saved last is the base: reload it, keep nothing stale
            restored = self.workspace.open(self.volume)
            if restored.labelmap is not None and not self.has_unsaved_work:
                self._replace_labels(restored.labelmap, "take over the saved work")
            self.changed()
        self.show_workspace_place()
        QMessageBox.information(self, "Take over editing", message)

    def restore_earlier_version(self, choice: Optional[int] = None) -> bool:
        """Replace the labels with a kept earlier version (one undo step). ``choice`` (an
        index into the list, newest first) skips the dialog."""
        if self.workspace is None or self.volume is None:
            self.statusBar().showMessage("Open a scan first.", 3000)
            return False
        self.flush_autosave()
        gens = self.workspace.generations(self.volume)
        if not gens:
            QMessageBox.information(self, "Restore an earlier version",
                                    "No saved versions of this scan's work yet.")
            return False
        items = []
        for g in gens:
            at = g.saved_at
            items.append(f"{at:%Y-%m-%d %H:%M:%S}" if at else f"version {g.number}")
        if choice is None:
            text, ok = QInputDialog.getItem(self, "Restore an earlier version",
                                            "Saved versions (newest first):", items, 0, False)
            if not ok:
                return False
            choice = items.index(text)
        try:
            labelmap = self.workspace.read_generation(gens[choice])
        except Exception as exc:  # noqa: BLE001 - a damaged backup is reported, not raised
            self.show_error("Cannot restore", error_text(exc))
            return False
        self._replace_labels(labelmap, f"restore the version of {items[choice]}")
        self.changed()
        self.statusBar().showMessage(f"Restored the version of {items[choice]} (Ctrl+Z undoes "
                                     "it)", 10000)
        return True

    def _replace_labels(self, labelmap, description: str) -> None:
        change = self.labelmap.replace_all(labelmap.array, labelmap.table,
                                           dict(labelmap.records), description)
        self.annotator.push_import(change)
        self.labels.set_table(self.labelmap.table)
        self._rebuild_lut()
        self._refresh_overlay()
        self.update_label_sizes()

    def confirm_leave(self, action: str) -> bool:
        """Before unsaved changes would be left behind: Save elsewhere / Export / Discard /
        Cancel. True when it is fine to go on."""
        if not self.has_unsaved_work:
            return True
        if not self.confirm_close:  # scripted (tests): keep a rescue copy, then go on
            self.save_rescue_copy()
            return True
        why = self.workspace.read_only_reason(self.volume) if self.workspace else ""
        box = QMessageBox(QMessageBox.Warning, "Your changes are not saved",
                          "Your latest changes to this scan are NOT saved"
                          + (f" ({why})." if why else " (the last save failed).")
                          + f"\n\nSave them before you {action}?", parent=self)
        elsewhere = box.addButton("Save in another folder…", QMessageBox.AcceptRole)
        export = box.addButton("Export label map…", QMessageBox.ActionRole)
        discard = box.addButton("Discard changes", QMessageBox.DestructiveRole)
        box.addButton(QMessageBox.Cancel)
        box.exec_()
        clicked = box.clickedButton()
        if clicked is discard:
            return True
        if clicked is export:
            return self.export_labels() is not None
        if clicked is elsewhere:
            folder = QFileDialog.getExistingDirectory(self, "Save the work in this folder",
                                                      str(user_workspace()))
            return bool(folder) and self.save_in_folder(folder)
        return False

    def save_in_folder(self, folder: str) -> bool:
        """Save the work now in ``folder`` (a workspace) and keep saving there."""
        ws = Workspace(folder, owner=self.workspace_owner)
        try:
            restored = ws.open(self.volume)
            if restored.read_only:
                raise MedsamError(restored.read_only, folder)
            edits = self._edits
            ws.save(self.volume, self.labelmap)
        except Exception as exc:  # noqa: BLE001
            self.show_error("Not saved", error_text(exc))
            return False
        if self.workspace is not None:
            self.workspace.close(self.volume)
        self.use_workspace(ws, f"Your work is saved in {ws.volume_dir(self.volume)}")
        self._saved(ws.volume_dir(self.volume), edits)
        return True

    def save_rescue_copy(self) -> Optional[str]:
        """Last resort when the work's own place cannot be written (read-only, disk full) and
        the window must go (SIGTERM, logout): a copy in the user data folder's ``rescued/``."""
        if not self.has_unsaved_work or self.volume is None:
            return None
        import time

        from medsam_gui.annotation.placement import user_data_dir

        folder = user_data_dir() / "rescued" / time.strftime("%Y%m%d-%H%M%S")
        try:
            path = Workspace(folder, owner=self.workspace_owner).save(self.volume, self.labelmap)
        except Exception as exc:  # noqa: BLE001 - nothing else to try; say it on stderr
            print(f"medsam-gui: could not save a rescue copy in {folder}: {error_text(exc)}",
                  file=sys.stderr)
            return None
        self._saved_edits = self._edits
        print(f"medsam-gui: unsaved changes were saved in {path}", file=sys.stderr)
        return str(path)

    def show_workspace_folder(self) -> Optional[str]:
        if self.workspace is None or self.volume is None:
            self.statusBar().showMessage("Open a scan first.", 3000)
            return None
        folder = self.workspace.volume_dir(self.volume)
        if not folder.exists():
            folder = self.workspace.folder
        if folder.exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
        self.statusBar().showMessage(f"Work is saved in {folder}", 10000)
        return str(folder)

    def save_elsewhere(self, exc: BaseException) -> bool:
        """After a failed save: move to the user folder and save there now. True if saved."""
        fallback = Workspace(user_workspace(), owner=self.workspace_owner)
        if self.workspace is None or self.workspace.folder == fallback.folder:
            return False
        failed = self.workspace.folder
        try:
            if fallback.open(self.volume).read_only:
                return False
            edits = self._edits
            fallback.save(self.volume, self._snapshot())
        except Exception:  # noqa: BLE001 - the caller reports the first error
            return False
        self.workspace.close(self.volume)
        self._saved_edits = edits
        self.use_workspace(fallback, f"Could not save in {failed} ({error_text(exc)}); your "
                                     f"work is saved in {fallback.folder} instead")
        return True
