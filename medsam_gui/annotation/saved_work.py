"""Reading one scan's saved work back, whatever happened to it.

A per-scan folder holds the current pair (``labels.nii.gz`` + ``annotation.json``) and complete
earlier generations in ``history/`` (``annotation.generations``). ``read_work`` takes the current
pair when it is whole and consistent, else the newest generation that is, and says what it found
wrong. Nothing here writes: moving damaged files aside is the caller's decision
(``Workspace.open``), made only by the process that holds the folder's lock.

Every way a file can be wrong ends in a ``MedsamError`` naming it: ``NewerFormat`` for work
saved by a newer medsam-gui (never read as ours, never overwritten), ``DamagedWork`` for the
rest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from medsam_gui.annotation.generations import file_sha256, list_generations
from medsam_gui.annotation.labels import (PALETTE, Label, LabelMap, LabelTable, SliceRecord,
                                          as_label_array)
from medsam_gui.errors import MedsamError

FORMAT_NAME = "medsam-gui-workspace"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
LABELS_FILE = "labels.nii.gz"
JSON_FILE = "annotation.json"
MAX_JSON_BYTES = 512 << 20  # a bigger annotation file is not one of ours


class DamagedWork(MedsamError):
    """A saved file that cannot be read as it is."""


class TornPair(DamagedWork):
    """The current pair's files come from two different saves (a crash between the renames,
    or another program): no file is damaged, a backup holds the whole newest save."""


class NewerFormat(MedsamError):
    """Work saved by a newer medsam-gui: kept as it is, opened read-only."""


@dataclass
class WorkRead:
    meta: dict
    labelmap: LabelMap
    generation: int  # 0: the current pair of an older save without history
    from_history: bool = False  # the current pair was damaged or torn
    problems: List[DamagedWork] = field(default_factory=list)  # what was wrong with newer files


def _format_version(meta: dict, jpath: Path) -> None:
    fmt = meta.get("format")
    m = re.fullmatch(re.escape(FORMAT_NAME) + r"/(\d+)", fmt) if isinstance(fmt, str) else None
    if m is None:
        raise DamagedWork(f"not a {FORMAT} annotation file (format {fmt!r})", jpath)
    if int(m.group(1)) > FORMAT_VERSION:
        raise NewerFormat(f"saved by a newer medsam-gui (format {fmt}; this version reads "
                          f"{FORMAT}): left as it is; update medsam-gui to edit it", jpath)
    if int(m.group(1)) < 1:
        raise DamagedWork(f"unknown annotation format {fmt}", jpath)


def read_meta(jpath: Path) -> dict:
    """The annotation JSON, checked field by field (``DamagedWork`` names what is wrong)."""
    try:
        if jpath.stat().st_size > MAX_JSON_BYTES:
            raise DamagedWork("the annotation file is far too large to be one of ours", jpath)
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedWork("the annotation file is missing", jpath) from None
    except RecursionError:
        raise DamagedWork("the annotation file is nested too deeply to be one of ours",
                          jpath) from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise DamagedWork(f"cannot read the annotation file ({exc})", jpath) from None
    if not isinstance(meta, dict):
        raise DamagedWork("the annotation file does not hold an object", jpath)
    _format_version(meta, jpath)
    src = meta.get("source")
    if not isinstance(src, dict):
        raise DamagedWork("the annotation file has no \"source\" section", jpath)
    shape = src.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise DamagedWork(f"the source shape {shape!r} is not three positive integers", jpath)
    if not isinstance(src.get("content_hash"), str) or not src["content_hash"]:
        raise DamagedWork("the annotation file does not name its scan's content hash", jpath)
    affine = src.get("affine")
    if affine is not None:
        try:
            a = np.asarray(affine, np.float64)
            if a.shape != (4, 4) or not np.isfinite(a).all():
                raise ValueError
        except (TypeError, ValueError):
            raise DamagedWork("the source affine is not a finite 4x4 matrix", jpath) from None
    if not isinstance(meta.get("labels"), list):
        raise DamagedWork("the label table (\"labels\") is not a list", jpath)
    if not isinstance(meta.get("slices", []), list):
        raise DamagedWork("the slice records (\"slices\") are not a list", jpath)
    return meta


def read_labels_array(lpath: Path, shape: Tuple[int, ...]) -> np.ndarray:
    """The label voxels of ``lpath`` (whole stream read, so a gzip CRC error shows)."""
    import nibabel as nib

    try:
        img = nib.load(str(lpath))
        if tuple(int(s) for s in img.shape[:3]) != tuple(shape) or \
                (len(img.shape) == 4 and img.shape[3] != 1) or len(img.shape) > 4:
            raise DamagedWork(f"label map shape {img.shape} does not match the scan {shape}",
                              lpath)
        arr = np.asarray(img.dataobj)
    except FileNotFoundError:
        raise DamagedWork("the label map is missing", lpath) from None
    except DamagedWork:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel, gzip and zlib raise many types
        raise DamagedWork(f"cannot read the label map ({exc or type(exc).__name__})",
                          lpath) from None
    if arr.ndim == 4:
        arr = arr[..., 0]
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise DamagedWork("the label map holds values that are not whole numbers", lpath)
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.uint16).max):
        raise DamagedWork("the label map holds values outside 0..65535", lpath)
    return as_label_array(arr)  # uint8 unless a label is above 255


def read_pair(folder: Path) -> Tuple[dict, LabelMap]:
    """One (annotation.json, labels.nii.gz) pair, checked: format, fields, that the JSON names
    this very label map (its sha256, written since generations exist), and the voxels."""
    jpath, lpath = folder / JSON_FILE, folder / LABELS_FILE
    meta = read_meta(jpath)
    want = meta.get("labels_sha256")
    if isinstance(want, str) and want:
        try:
            got = file_sha256(lpath)
        except FileNotFoundError:
            raise DamagedWork("the label map is missing beside annotation.json", lpath) from None
        except OSError as exc:
            raise DamagedWork(f"cannot read the label map ({exc})", lpath) from None
        if got != want:
            raise TornPair("the label map is not the one annotation.json was saved with "
                           "(an interrupted save or another program)", lpath)
    shape = tuple(meta["source"]["shape"])
    arr = read_labels_array(lpath, shape)
    try:
        table = LabelTable.from_json(meta["labels"])
        lm = LabelMap(shape, table, array=arr)
        for d in meta.get("slices", []):
            rec = SliceRecord.from_json(d)
            lm.records[rec.key] = rec
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DamagedWork(f"damaged annotation file ({type(exc).__name__}: {exc})",
                          jpath) from None
    return meta, lm


def _is_a_backup(path: Path, folder: Path) -> bool:
    """Is ``path`` byte for byte the label map of a kept generation?"""
    try:
        digest = file_sha256(path)
        return any(file_sha256(g.folder / LABELS_FILE) == digest
                   for g in list_generations(folder) if (g.folder / LABELS_FILE).exists())
    except OSError:
        return False


def has_work(folder: Path) -> bool:
    return ((folder / JSON_FILE).exists() or (folder / LABELS_FILE).exists()
            or bool(list_generations(folder)))


def read_work(folder: Path, content_hash: Union[None, str, Sequence[str]] = None) -> WorkRead:
    """The newest whole, consistent saved work in ``folder`` (see the module doc).

    ``content_hash`` (the open scan's, or a list of its hashes: current, legacy) refuses
    work saved for another scan. Raises
    ``NewerFormat`` when the newest work is a newer format (older backups are not silently
    shown in its place), ``DamagedWork`` when nothing can be read.
    """
    folder = Path(folder)
    problems: List[DamagedWork] = []
    candidates = [(folder, 0, False)] + [(g.folder, g.number, True)
                                         for g in list_generations(folder)]
    for where, number, from_history in candidates:
        if not from_history and not (where / JSON_FILE).exists() \
                and not (where / LABELS_FILE).exists():
            continue
        try:
            meta, lm = read_pair(where)
        except NewerFormat:
            raise
        except TornPair as exc:
            if not from_history and not _is_a_backup(folder / LABELS_FILE, folder):
                # not a file of ours from another save: damaged, or put there by someone
                exc = DamagedWork("the label map is not the one annotation.json was saved "
                                  "with, and no backup holds it", exc.path)
            problems.append(exc)
            continue
        except DamagedWork as exc:
            problems.append(exc)
            continue
        saved_hash = meta["source"]["content_hash"]
        accepted = [content_hash] if isinstance(content_hash, str) else content_hash
        if accepted is not None and saved_hash not in accepted:
            raise DamagedWork("this work belongs to a different scan (content hash "
                              f"{saved_hash[:12]}, the open scan is {accepted[0][:12]})",
                              where / JSON_FILE)
        g = meta.get("generation", 0)
        gen = number or (g if isinstance(g, int) and not isinstance(g, bool) else 0)
        return WorkRead(meta, lm, gen, from_history or bool(problems), problems)
    if problems:
        raise DamagedWork("; ".join(str(p) for p in problems[:3])
                          + (f"; and {len(problems) - 3} more" if len(problems) > 3 else ""),
                          None)
    raise DamagedWork("no saved work in this folder", folder)


def recover_label_map(folder: Path, shape: Tuple[int, int, int]) -> Optional[LabelMap]:
    """The voxels of a label map whose annotation file is lost: label names and review states
    are gone, every label value present gets a row in a new table. None if unreadable."""
    try:
        arr = read_labels_array(folder / LABELS_FILE, shape)
    except DamagedWork:
        return None
    values = [int(v) for v in np.unique(arr) if v]
    table = LabelTable([Label(v, f"label {v}", PALETTE[(v - 1) % len(PALETTE)])
                        for v in values])
    return LabelMap(shape, table, array=arr)


def read_dir(path) -> Tuple[dict, LabelMap]:
    """Read one per-volume folder without the volume: (annotation dict, LabelMap) of the
    newest consistent saved work (the current pair or, if it is damaged, a backup)."""
    work = read_work(Path(path))
    return work.meta, work.labelmap
