"""Workspace: a folder of saved annotations, one subfolder per volume.

Where: by default one folder in the user's data directory (``user_workspace()``), so scans on
read-only media or in other people's folders are never written to; beside the scan
(``<scan>.medsam/``) or any folder on request. ``place_workspace`` decides, finds work saved
beside a scan earlier, and falls back to the user folder, with a note, when the chosen place
cannot be written. A volume's subfolder is found by content hash, so a copied or renamed scan
finds its work.

Each subfolder (``<source stem>-<first 12 hex of content hash>``) holds ``labels.nii.gz`` on
the source grid (written by ``medsam_gui.io.save_label_map``) and ``annotation.json``
(format ``medsam-gui-workspace/1``: source, label table, per-slice provenance). Both files are
written atomically (temp file + ``os.replace``); the labels first, the JSON last, so an
interrupted autosave leaves the previous pair of files in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from medsam_gui.annotation.labels import LabelMap, LabelTable, SliceRecord, now_iso
from medsam_gui.errors import MedsamError
from medsam_gui.io.atomic import write_synced
from medsam_gui.volume import Volume

FORMAT = "medsam-gui-workspace/1"
LABELS_FILE = "labels.nii.gz"
JSON_FILE = "annotation.json"
PathLike = Union[str, os.PathLike]


@dataclass
class WorkspaceEntry:
    path: str  # the per-volume subfolder
    source_path: str
    series_uid: Optional[str]
    content_hash: str
    n_records: int


def _strip_nifti(name: str) -> str:
    low = name.lower()
    for ext in (".nii.gz", ".nii"):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _source_stem(volume: Volume) -> str:
    src = volume.source
    p = Path(src.path) if src.path else None
    if p is None:
        stem = "volume"
    elif src.kind == "dicom" and p.suffix:  # a single file of a series: name the folder
        stem = p.parent.name or p.stem
    else:
        stem = _strip_nifti(p.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "volume"


def read_dir(path: PathLike) -> Tuple[dict, LabelMap]:
    """Read one per-volume folder without the volume: (annotation.json dict, LabelMap)."""
    import nibabel as nib

    folder = Path(path)
    jpath = folder / JSON_FILE
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MedsamError("no annotation.json in this workspace folder", folder) from None
    except (OSError, ValueError) as exc:
        raise MedsamError(f"cannot read the annotation file ({exc})", jpath) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MedsamError(f"not a {FORMAT} annotation file", jpath)
    lpath = folder / LABELS_FILE
    shape = tuple(int(s) for s in meta["source"]["shape"])
    try:
        arr = np.asarray(nib.load(str(lpath)).dataobj)
    except FileNotFoundError:
        raise MedsamError("the label map is missing beside annotation.json", lpath) from None
    except Exception as exc:  # nibabel raises many types for a damaged file
        raise MedsamError(f"cannot read the label map ({exc})", lpath) from None
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if tuple(arr.shape) != shape:
        raise MedsamError(f"label map shape {arr.shape} does not match the source {shape}", lpath)
    try:
        table = LabelTable.from_json(meta["labels"])
        lm = LabelMap(shape, table, array=np.asarray(arr).astype(np.uint16))
        for d in meta.get("slices", []):
            rec = SliceRecord.from_json(d)
            lm.records[rec.key] = rec
    except (KeyError, TypeError, ValueError) as exc:
        raise MedsamError(f"damaged annotation file ({exc})", jpath) from None
    return meta, lm


class Workspace:
    """A folder of per-volume annotation subfolders."""

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        self._saved_labels: Dict[Path, str] = {}  # labels file -> digest of what we wrote
        self._found: Dict[str, Path] = {}  # content hash -> folder found under another name

    def key(self, volume: Volume) -> str:
        return f"{_source_stem(volume)}-{volume.content_hash[:12]}"

    def volume_dir(self, volume: Volume) -> Path:
        """``<stem>-<hash>``; a folder of the same content under another name (the scan was
        copied or renamed) is found by its content hash."""
        exact = self.folder / self.key(volume)
        if exact.exists() or not self.folder.is_dir():
            return exact
        known = self._found.get(volume.content_hash)
        if known is not None and known.exists():
            return known
        for other in self.folder.glob(f"*-{volume.content_hash[:12]}"):
            if (other / JSON_FILE).is_file():
                self._found[volume.content_hash] = other
                return other
        return exact

    def save(self, volume: Volume, labelmap: LabelMap) -> Path:
        """Save labels + annotation.json atomically; returns the per-volume folder."""
        from medsam_gui.io import save_label_map

        if tuple(labelmap.array.shape) != volume.shape:
            raise ValueError(f"label map {labelmap.array.shape} is not on the grid {volume.shape}")
        folder = self.volume_dir(volume)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MedsamError(f"cannot create the workspace folder ({exc})", folder) from None
        lpath = folder / LABELS_FILE
        jpath = folder / JSON_FILE
        digest = hashlib.blake2b(labelmap.array.tobytes(), digest_size=16).hexdigest()
        ltmp = folder / f".labels.tmp-{os.getpid()}.nii.gz"
        jtmp = jpath.with_name(f"{jpath.name}.tmp-{os.getpid()}")
        write_labels = self._saved_labels.get(lpath) != digest or not lpath.exists()
        try:
            # Both files go to temp names first (the slow part: gzip + verify) and are renamed
            # one after the other at the end, so a crash leaves the previous pair in place.
            if write_labels:
                save_label_map(labelmap.array, volume, ltmp)  # verified by the writer
            write_synced(jtmp, json.dumps(self._meta(volume, labelmap), indent=1).encode())
            if write_labels:
                os.replace(ltmp, lpath)
            os.replace(jtmp, jpath)
        except OSError as exc:
            raise MedsamError(f"cannot save the annotations ({exc})", folder) from None
        finally:
            for tmp in (ltmp, jtmp):
                if tmp.exists():
                    tmp.unlink()
        if write_labels:
            self._saved_labels[lpath] = digest
        return folder

    @staticmethod
    def _meta(volume: Volume, labelmap: LabelMap) -> dict:
        src = volume.source
        return {
            "format": FORMAT,
            "saved": now_iso(),
            "source": {
                "path": os.path.abspath(src.path) if src.path else "",
                "kind": src.kind,
                "series_uid": src.series_uid,
                "content_hash": volume.content_hash,
                "shape": list(volume.shape),
                "affine": np.asarray(volume.affine).round(6).tolist(),
                "modality": volume.modality,
            },
            "labels": labelmap.table.to_json(),
            "slices": [r.to_json() for r in labelmap.records_for()],
        }

    def load(self, volume: Volume) -> Optional[LabelMap]:
        """The saved annotations of this volume, or None if it has none here."""
        folder = self.volume_dir(volume)
        if not (folder / JSON_FILE).exists():
            return None
        meta, lm = read_dir(folder)
        if meta["source"].get("content_hash") != volume.content_hash:
            raise MedsamError("annotations belong to a different volume (content hash differs)",
                              folder / JSON_FILE)
        self._saved_labels[folder / LABELS_FILE] = hashlib.blake2b(
            lm.array.tobytes(), digest_size=16).hexdigest()
        return lm

    def entry_dirs(self) -> List[Path]:
        """Per-volume folders: the folder itself if it is one, else its subfolders."""
        if (self.folder / JSON_FILE).exists():
            return [self.folder]
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if (p / JSON_FILE).is_file())

    def entries(self) -> List[WorkspaceEntry]:
        """Saved volumes (unreadable annotation files are skipped)."""
        out = []
        for d in self.entry_dirs():
            try:
                meta = json.loads((d / JSON_FILE).read_text(encoding="utf-8"))
                src = meta["source"]
                out.append(WorkspaceEntry(str(d), src.get("path", ""), src.get("series_uid"),
                                          src["content_hash"], len(meta.get("slices", []))))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def has(self, volume: Volume) -> bool:
        """Are there saved annotations of this volume here?"""
        return (self.volume_dir(volume) / JSON_FILE).is_file()

    def check_writable(self) -> None:
        """Raise MedsamError (naming the folder and the reason) unless files can be written
        here: creates the folder and writes and removes a probe file."""
        probe = self.folder / f".medsam-write-test-{os.getpid()}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise MedsamError(f"cannot write here ({exc.strerror or exc})", self.folder) from None


# ------------------------------------------------------------------------- where work goes
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
        base = p.with_name(_strip_nifti(p.name))
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
