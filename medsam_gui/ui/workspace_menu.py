"""File ▸ Workspace: where the autosaved work goes, shown in the status bar. A mixin of
``MainWindow`` (the rules are ``annotation.store.place_workspace``).

The default is the per-user data folder; "beside the scan" and a chosen folder are options,
kept in the settings. ``--workspace DIR`` overrides all of them for one run. When a save fails
where the work is going (read-only media, a drive that went away), the work is saved in the
user folder instead and the status bar says so: an autosave is never lost silently.
"""

from __future__ import annotations

from typing import Optional

from PyQt5.QtCore import QUrl
from PyQt5.QtGui import QDesktopServices
from PyQt5.QtWidgets import QActionGroup, QFileDialog, QLabel

from medsam_gui.annotation import Workspace, beside_scan, user_workspace
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
        place = self.workspace_place()
        self.place_actions[place if place in ("user", "beside") else "folder"].setChecked(True)
        self.workspace_label = QLabel("")
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
        self.use_workspace(placement.workspace, placement.note)
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
        where = ("user data folder" if self.workspace.folder == user_workspace()
                 else "beside the scan" if self.workspace.folder == beside_scan(
                     self.volume.source.path or ".") else self.workspace.folder.name)
        self.workspace_label.setText(f"saved in: {where}")
        self.workspace_label.setToolTip(f"Work is saved automatically in\n{folder}\n"
                                        "(File ▸ Workspace to change)")

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
        fallback = Workspace(user_workspace())
        if self.workspace is None or self.workspace.folder == fallback.folder:
            return False
        failed = self.workspace.folder
        try:
            fallback.save(self.volume, self._snapshot())
        except Exception:  # noqa: BLE001 - the caller reports the first error
            return False
        self.use_workspace(fallback, f"Could not save in {failed} ({error_text(exc)}); your "
                                     f"work is saved in {fallback.folder} instead")
        return True
