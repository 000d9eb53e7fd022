"""Workspace: a folder of saved annotations, one subfolder per volume.

Where: by default one folder in the user's data directory (``user_workspace()``), so scans on
read-only media or in other people's folders are never written to; beside the scan
(``<scan>.medsam/``) or any folder on request. ``annotation.placement`` decides, finds work saved
beside a scan earlier, and falls back to the user folder, with a note, when the chosen place
cannot be written. A volume's subfolder is found by content hash, so a copied or renamed scan
finds its work.

Each subfolder (``<source stem>-<first 12 hex of content hash>``) holds ``labels.nii.gz`` on
the source grid (written by ``medsam_gui.io.save_label_map``), ``annotation.json`` (format
``medsam-gui-workspace/1``: source, label table, per-slice provenance, and the sha256 of the
label map it belongs to) and ``history/``, the last consistent generations
(``annotation.generations``). Saved work is never lost to a fault:

- every save is written whole into ``history/`` before the current pair is replaced, so a crash
  at any moment leaves a complete newest save (``annotation.saved_work`` reads it back);
- one writer per scan: ``open`` takes the folder's lock (``annotation.lock``); a second window
  opens the work read-only and says who has it;
- a file that cannot be read is never overwritten: it is moved aside
  (``annotation.broken-<time>.json``, ``labels.broken-<time>.nii.gz``) and the newest whole
  backup, or the voxels of a label map whose annotation file was lost, is restored; work saved
  by a newer version is opened read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from medsam_gui.annotation import generations as gens
from medsam_gui.annotation import lock
from medsam_gui.annotation.labels import LabelMap, now_iso
from medsam_gui.annotation.saved_lookup import find_saved
from medsam_gui.annotation.saved_work import (FORMAT, JSON_FILE, LABELS_FILE, DamagedWork,
                                              NewerFormat, TornPair, has_work, read_dir,
                                              read_work, recover_label_map)
from medsam_gui.errors import MedsamError
from medsam_gui.io.atomic import clean_stale_temps, fsync_dir
from medsam_gui.volume import HASH_SCHEME, Volume

__all__ = ["FORMAT", "JSON_FILE", "LABELS_FILE", "Restored", "Workspace", "WorkspaceEntry",
           "read_dir", "strip_nifti"]
PathLike = Union[str, os.PathLike]


@dataclass
class WorkspaceEntry:
    path: str  # the per-volume subfolder
    source_path: str
    series_uid: Optional[str]
    content_hash: str
    n_records: int


@dataclass
class Restored:
    """What ``Workspace.open`` found for a scan."""

    labelmap: Optional[LabelMap]  # None: nothing to restore (start empty)
    notes: List[str] = field(default_factory=list)  # what happened, in plain words, once
    read_only: str = ""  # why this session's changes cannot be saved there ("" = they can)
    lock_owner: Optional[lock.LockOwner] = None  # who holds the work, when read-only for that
    moved_aside: List[Path] = field(default_factory=list)  # damaged files kept under new names


def strip_nifti(name: str) -> str:
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
        stem = strip_nifti(p.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "volume"


def _array_digest(labelmap: LabelMap) -> str:
    arr = labelmap.array  # hashed in its memory order, without a copy
    flat = arr if arr.flags.c_contiguous else np.asfortranarray(arr).T
    return hashlib.blake2b(memoryview(flat).cast("B"), digest_size=16).hexdigest()


def move_aside(path: Path) -> Path:
    """Rename a damaged file to ``<stem>.broken-<time><suffixes>`` beside it; returns the new
    path (never overwriting an earlier one)."""
    name = path.name
    for ext in (".nii.gz", ".json", ".nii"):
        if name.endswith(ext):
            stem, suffix = name[: -len(ext)], ext
            break
    else:
        stem, suffix = name, ""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        target = path.with_name(f"{stem}.broken-{stamp}{'' if n == 0 else f'-{n}'}{suffix}")
        if not target.exists():
            os.rename(path, target)
            return target
    raise OSError(f"too many damaged copies of {path}")


class Workspace:
    """A folder of per-volume annotation subfolders.

    ``owner`` names who writes: every plain ``Workspace`` of a process shares one owner (a
    script's saves lock the scan's folder only while they write); a window passes its own token
    and holds the lock from ``open`` until ``close``.
    """

    keep_generations = gens.KEEP
    backup_interval_s = gens.MIN_INTERVAL_S

    def __init__(self, folder: PathLike, owner: str = lock.PROCESS_OWNER):
        self.folder = Path(folder)
        self.owner = owner
        self._saved_labels: Dict[Path, Tuple[str, str]] = {}  # labels file -> (array, file) digest
        self._generation: Dict[Path, int] = {}  # volume folder -> newest generation we know
        self._read_only: Dict[Path, str] = {}  # volume folder -> why it must not be written
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
            if (other / JSON_FILE).is_file() or gens.list_generations(other):
                self._found[volume.content_hash] = other
                return other
        other = find_saved(self.folder, volume)
        if other is not None:
            self._found[volume.content_hash] = other
            return other
        return exact

    def _read_work(self, folder: Path, volume: Volume):
        """``read_work`` accepting the volume's current and legacy content hash (the legacy
        one is computed only when the saved work names another hash)."""
        try:
            return read_work(folder, volume.known_content_hashes())
        except DamagedWork as exc:
            if "different scan" not in exc.problem or volume.legacy_hash_known:
                raise
        return read_work(folder, [volume.content_hash, volume.legacy_content_hash])

    # ---- opening -----------------------------------------------------------------------------
    def open(self, volume: Volume) -> Restored:
        """The saved work of ``volume`` for editing: takes the folder's lock, restores the
        newest whole save, moves damaged files aside (see the module doc). Never raises for
        what is found on disk: problems become notes and, where nothing may be written, a
        read-only reason."""
        folder = self.volume_dir(volume)
        owner: Optional[lock.LockOwner] = None
        read_only = ""
        try:
            lock.acquire(folder, self.owner)
        except lock.LockHeld as exc:
            owner, read_only = exc.owner, str(exc)
        except MedsamError:
            # a place that cannot take even a lock file (read-only media): the work is shown
            # and the first save fails there, so the caller can save it elsewhere
            pass
        if not folder.is_dir() or not has_work(folder):
            return self._remember(folder, Restored(None, read_only=read_only, lock_owner=owner))
        try:
            work = self._read_work(folder, volume)
        except NewerFormat as exc:
            return self._remember(folder, Restored(None, [str(exc)], read_only=str(exc),
                                                   lock_owner=owner))
        except DamagedWork as exc:
            return self._remember(folder, self._salvage(folder, volume, exc, read_only, owner))
        notes: List[str] = []
        moved: List[Path] = []
        damaged = [p for p in work.problems if not isinstance(p, TornPair)]
        if damaged:
            when = self._when(work)
            notes.append(f"The saved work was damaged ({damaged[0]}). Restored the last whole "
                         f"save{when}.")
            if not read_only:
                moved, more = self._move_damaged(folder, damaged)
                notes += more
        self._generation[folder] = work.generation
        lm = work.labelmap
        self._saved_labels.pop(folder / LABELS_FILE, None)  # the current file may be torn
        return self._remember(folder, Restored(lm, notes, read_only, owner, moved))

    @staticmethod
    def _when(work) -> str:
        saved = work.meta.get("saved")
        return f" (saved {saved})" if isinstance(saved, str) and saved else ""

    def _move_damaged(self, folder: Path, damaged: List[DamagedWork]) -> Tuple[List[Path],
                                                                              List[str]]:
        moved, notes = [], []
        # only the current pair: a damaged older backup stays where it is
        names = {Path(p.path).name for p in damaged if p.path and Path(p.path).parent == folder}
        for name in (JSON_FILE, LABELS_FILE):
            path = folder / name
            if name not in names and not (name == LABELS_FILE and JSON_FILE in names):
                continue  # a label map is only moved with its damaged JSON or on its own fault
            if not path.exists():
                continue
            try:
                moved.append(move_aside(path))
            except OSError as exc:
                notes.append(f"Could not move the damaged {path} aside ({exc}); this session "
                             "will not save there.")
                self._read_only[folder] = f"the damaged {path} could not be moved aside"
                return moved, notes
        if moved:
            notes.append("The damaged files are kept as " + ", ".join(str(m) for m in moved)
                         + ".")
        return moved, notes

    def _salvage(self, folder: Path, volume: Volume, exc: DamagedWork, read_only: str,
                 owner) -> Restored:
        """Nothing whole could be read: keep every file, recover the voxels if they can be."""
        notes = [f"The saved work could not be read ({exc})."]
        lm = recover_label_map(folder, volume.shape)
        if "different scan" in exc.problem:
            return Restored(None, notes + ["It is left as it is; this session is not saved "
                                           "there."], read_only=exc.problem, lock_owner=owner)
        if lm is not None:
            notes.append(f"Recovered the label map's voxels ({len(lm.table.labels)} labels); "
                         "label names and review states were lost.")
        moved: List[Path] = []
        if read_only:
            return Restored(lm, notes, read_only, owner)
        for name in (JSON_FILE, LABELS_FILE):
            path = folder / name
            if path.exists():
                try:
                    moved.append(move_aside(path))
                except OSError as err:
                    why = f"the damaged {path} could not be moved aside ({err})"
                    return Restored(lm, notes + [why[0].upper() + why[1:] + "."], why, owner)
        if moved:
            notes.append("The unreadable files are kept as " + ", ".join(map(str, moved)) + ".")
        return Restored(lm, notes, "", owner, moved)

    def _remember(self, folder: Path, restored: Restored) -> Restored:
        if restored.read_only:
            self._read_only[folder] = restored.read_only
        else:
            self._read_only.pop(folder, None)
        return restored

    def read_only_reason(self, volume: Volume) -> str:
        return self._read_only.get(self.volume_dir(volume), "")

    def take_over(self, volume: Volume) -> Tuple[bool, str]:
        """The user's explicit take-over of a lock held elsewhere (see ``lock.take_over``)."""
        folder = self.volume_dir(volume)
        ok, message = lock.take_over(folder, self.owner)
        if ok and folder in self._read_only and "open in" in self._read_only[folder]:
            del self._read_only[folder]
        return ok, message

    def close(self, volume: Optional[Volume] = None) -> None:
        """Give back the lock of ``volume``'s folder (of every folder if None)."""
        if volume is None:
            lock.release_all(self.owner)
        else:
            lock.release(self.volume_dir(volume), self.owner)

    # ---- saving ------------------------------------------------------------------------------
    def save(self, volume: Volume, labelmap: LabelMap) -> Path:
        """Save labels + annotation.json as one new generation; returns the per-volume folder.

        Refused (``MedsamError``) where the work is read-only or another program holds it.
        """
        if tuple(labelmap.array.shape) != volume.shape:
            raise ValueError(f"label map {labelmap.array.shape} is not on the grid {volume.shape}")
        folder = self.volume_dir(volume)
        if folder in self._read_only:
            raise MedsamError(f"not saved: {self._read_only[folder]}", folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MedsamError(f"cannot create the workspace folder ({exc})", folder) from None
        transient = not lock.holds(folder, self.owner)
        lock.acquire(folder, self.owner)
        try:
            self._save_locked(folder, volume, labelmap)
        finally:
            if transient and self.owner == lock.PROCESS_OWNER:
                lock.release(folder, self.owner)
        return folder

    def _save_locked(self, folder: Path, volume: Volume, labelmap: LabelMap) -> None:
        from medsam_gui.io import save_label_map

        clean_stale_temps(folder)
        clean_stale_temps(gens.history_dir(folder))
        lpath, jpath = folder / LABELS_FILE, folder / JSON_FILE
        digest = _array_digest(labelmap)
        cached = self._saved_labels.get(lpath)
        write_labels = cached is None or cached[0] != digest or not lpath.exists()
        ltmp = folder / f".labels.tmp-{os.getpid()}.nii.gz"
        jtmp = jpath.with_name(f"{jpath.name}.tmp-{os.getpid()}")
        number = gens.next_number(folder, self._generation.get(folder, 0))
        try:
            # the slow part (gzip + verify) goes to a temp name; then the generation is
            # written whole into history/; only then is the current pair replaced
            if write_labels:
                save_label_map(labelmap.array, volume, ltmp)  # verified by the writer
                file_sha = gens.file_sha256(ltmp)
            else:
                file_sha = cached[1]  # type: ignore[index]
            meta = self._meta(volume, labelmap)
            meta.update(generation=number, labels_sha256=file_sha)
            gen = gens.write_generation(folder, number, ltmp if write_labels else lpath,
                                        json.dumps(meta, indent=1).encode(), LABELS_FILE,
                                        JSON_FILE)
            gens.copy_synced(gen.folder / JSON_FILE, jtmp)
            if write_labels:
                os.replace(ltmp, lpath)
            os.replace(jtmp, jpath)
            fsync_dir(folder)
        except OSError as exc:
            raise MedsamError(f"cannot save the annotations ({exc.strerror or exc})",
                              folder) from None
        finally:
            for tmp in (ltmp, jtmp):
                if tmp.exists():
                    tmp.unlink()
        self._saved_labels[lpath] = (digest, file_sha)
        self._generation[folder] = number
        try:
            gens.prune(folder, self.keep_generations, self.backup_interval_s)
        except OSError:
            pass  # an extra backup is no harm

    @staticmethod
    def _meta(volume: Volume, labelmap: LabelMap) -> dict:
        import numpy as np

        src = volume.source
        return {
            "format": FORMAT,
            "saved": now_iso(),
            "source": {
                "path": os.path.abspath(src.path) if src.path else "",
                "kind": src.kind,
                "series_uid": src.series_uid,
                "content_hash": volume.content_hash,
                "content_hash_scheme": HASH_SCHEME,
                "shape": list(volume.shape),
                "affine": np.asarray(volume.affine).round(6).tolist(),
                "modality": volume.modality,
            },
            "labels": labelmap.table.to_json(),
            "slices": [r.to_json() for r in labelmap.records_for()],
        }

    # ---- reading -----------------------------------------------------------------------------
    def load(self, volume: Volume) -> Optional[LabelMap]:
        """The saved annotations of this volume (the newest whole save), or None if it has
        none here. Read-only: raises ``MedsamError`` when nothing whole can be read."""
        folder = self.volume_dir(volume)
        if not folder.is_dir() or not has_work(folder):
            return None
        work = self._read_work(folder, volume)
        self._generation[folder] = work.generation
        return work.labelmap

    def generations(self, volume: Volume) -> List[gens.Generation]:
        """The kept backups of this volume's work, newest first."""
        return gens.list_generations(self.volume_dir(volume))

    @staticmethod
    def read_generation(generation: gens.Generation) -> LabelMap:
        from medsam_gui.annotation.saved_work import read_pair

        return read_pair(generation.folder)[1]

    def entry_dirs(self) -> List[Path]:
        """Per-volume folders: the folder itself if it is one, else its subfolders."""
        if (self.folder / JSON_FILE).exists() or gens.list_generations(self.folder):
            return [self.folder]
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir()
                      if p.is_dir() and ((p / JSON_FILE).is_file()
                                         or gens.list_generations(p)))

    def entries(self) -> List[WorkspaceEntry]:
        """Saved volumes (folders with nothing readable are skipped)."""
        out = []
        for d in self.entry_dirs():
            try:
                work = read_work(d)
            except MedsamError:
                continue
            src = work.meta["source"]
            out.append(WorkspaceEntry(str(d), str(src.get("path") or ""), src.get("series_uid"),
                                      src["content_hash"], len(work.meta.get("slices", []))))
        return out

    def has(self, volume: Volume) -> bool:
        """Are there saved annotations of this volume here?"""
        d = self.volume_dir(volume)
        return (d / JSON_FILE).is_file() or bool(gens.list_generations(d))

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
