"""Where the work on a scan is saved: the per-user workspace by default, beside the scan or a
named folder on request, with a fallback (and a note) when the chosen place cannot be written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medsam_gui.annotation.store import PathLike, Workspace, strip_nifti
from medsam_gui.errors import MedsamError
from medsam_gui.volume import Volume

DATA_DIR_ENV = "MEDSAM_GUI_DATA_DIR"  # overrides the per-user data folder (tests, portable use)
PLACES = ("user", "beside")  # or a folder path


def user_data_dir() -> Path:
    """The per-user data folder (platformdirs), or ``$MEDSAM_GUI_DATA_DIR``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("medsam-gui"))


def user_workspace() -> Path:
    """The default workspace: one folder of the user's, a subfolder per scan content hash."""
    return user_data_dir() / "workspaces"


def beside_scan(volume_path: PathLike) -> Path:
    """"<scan without .nii[.gz]>.medsam" beside a NIfTI, "<folder>.medsam" beside a DICOM
    folder (or beside the folder of one file of a series)."""
    p = Path(os.path.abspath(os.fspath(volume_path)))
    if p.is_dir():
        base = p
    elif p.name.lower().endswith((".nii", ".nii.gz")):
        base = p.with_name(strip_nifti(p.name))
    else:  # one file of a DICOM series
        base = p.parent
    return base.with_name(base.name + ".medsam")


@dataclass
class Placement:
    workspace: Workspace
    note: str = ""  # why it is not where the user asked, for the status bar / a dialog


def place_workspace(volume_path: PathLike, volume: Volume, place: str = "user") -> Placement:
    """Where the work on ``volume`` is saved.

    Work saved beside the scan earlier is found and kept there (unless ``place`` is a folder the
    user named). Otherwise ``place``: "user"
    (default: the per-user data folder, so a scan's own folder is never written to unless the
    user asks), "beside" the scan, or a folder path. A place that cannot be written (read-only
    media, a PACS mount, someone else's folder) falls back to the user folder with a note.
    """
    beside = Workspace(beside_scan(volume_path))
    try:
        if place in PLACES and beside.has(volume):
            return Placement(beside)
    except OSError:
        pass
    if place == "user":
        chosen = Workspace(user_workspace())
    elif place == "beside":
        chosen = beside
    else:
        chosen = Workspace(place)
    try:
        chosen.check_writable()
        return Placement(chosen)
    except MedsamError as exc:
        fallback = Workspace(user_workspace())
        if fallback.folder == chosen.folder:
            raise
        return Placement(fallback, f"{exc}; your work is saved in {fallback.folder} instead")
