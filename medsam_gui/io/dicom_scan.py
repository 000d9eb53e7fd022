"""DICOM discovery: which image series are in a folder, from headers only.

Every file is read with ``stop_before_pixels`` (only the tags ``dicom_header`` names, which also
judges whether a file is a stackable slice and why not). Images are grouped
by SeriesInstanceUID and, inside a UID, by orientation (ImageOrientationPatient), size
(Rows × Columns) and PixelSpacing. A UID that splits into several groups gets keys ``<uid>#1``, ``<uid>#2``…
(largest first) so each can be chosen. Non-image objects (RTSTRUCT, SR, presentation states…),
colour images and files that are not DICOM are skipped; each skipped file is kept with its
reason (``Skipped``), so a load can name what it left out. An enhanced multi-frame image
(``dicom_enhanced``) becomes one slice per frame and a Siemens mosaic (``dicom_mosaic``) one
slice per tile, each with its own position, so they group, sort and split like classic files. Special files (FIFOs,
sockets, devices) are recognised from ``os.stat`` and never opened: reading a FIFO would hang.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..errors import MedsamError
from .dicom_enhanced import frame_headers, is_enhanced
from .dicom_header import (DamagedHeader, classify, description, modality_of, no_pixels_reason,
                           read_header, unreadable_reason, vendor_position)
from .dicom_mosaic import mosaic_count, tile_headers

MAX_FILES = 20000
_SCAN_CACHE: "OrderedDict[tuple, Tuple[List[SeriesGroup], List[Skipped]]]" = OrderedDict()
_SCAN_CACHE_SIZE = 2  # folders; headers only, so small
_SCAN_LOCK = threading.Lock()
NO_UID = "no-series-uid"  # key of images without a SeriesInstanceUID
Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class ScanCancelled(Exception):
    """The caller's ``cancel()`` said stop; nothing was cached."""


class Skipped(NamedTuple):
    """A file discovery left out: its path, why, and its SeriesInstanceUID when readable."""

    path: str
    reason: str
    series_uid: Optional[str] = None


@dataclass
class SeriesInfo:
    """One loadable series; pass ``uid`` back to ``load_volume(path, series_uid=uid)``."""

    uid: str
    description: str
    modality: str
    rows: int
    cols: int
    n_slices: int
    files: List[str] = field(default_factory=list)
    # files of this series (or of no readable series) that discovery left out: (path, reason)
    skipped_files: List[Tuple[str, str]] = field(default_factory=list)


@dataclass
class DicomSlice:
    path: str
    header: Dataset
    position: np.ndarray
    pixel_offset: Optional[int] = None  # where the pixel data element starts, when known
    frame: Optional[int] = None  # 0-based frame (enhanced) or tile (mosaic) index in the file
    tiles: int = 0  # mosaic: tiles per side of the grid; 0 for any other image


@dataclass
class SeriesGroup:
    series_uid: str
    key: str
    iop: np.ndarray
    rows: int
    cols: int
    slices: List[DicomSlice] = field(default_factory=list)

    def n_positions(self) -> int:
        normal = np.cross(self.iop[:3], self.iop[3:])
        return len({round(float(s.position @ normal), 2) for s in self.slices})

    def info(self) -> SeriesInfo:
        h = self.slices[0].header
        return SeriesInfo(self.key, description(h), modality_of(h), self.rows, self.cols,
                          self.n_positions(), sorted({s.path for s in self.slices}))


def _special_kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def special_file_reason(path: Path) -> Optional[str]:
    """None for a regular file (symlinks followed), else why it is not read. Never opens it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(st.st_mode):
        return None
    return f"{_special_kind(st.st_mode)}, not a regular file: skipped without opening it"


def _files_under(folder: Path, cancel: Optional[Cancel] = None
                 ) -> Tuple[List[Tuple[Path, os.stat_result]], List[Skipped]]:
    """Regular files under ``folder`` with their stat, and the special files left out.

    Only ``os.stat`` looks at each entry: a FIFO, socket or device is never opened.
    """
    found: List[Tuple[Path, os.stat_result]] = []
    special: List[Skipped] = []
    for root, dirs, files in os.walk(folder):
        if cancel is not None and cancel():
            raise ScanCancelled()
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            try:
                st = os.stat(path)
            except OSError as exc:  # a dangling link, no permission
                special.append(Skipped(str(path), "cannot be read "
                                       f"({exc.strerror or type(exc).__name__})"))
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((path, st))
            else:
                special.append(Skipped(str(path), f"{_special_kind(st.st_mode)}, not a regular "
                                       "file: skipped without opening it"))
        if len(found) > MAX_FILES:
            raise MedsamError(f"more than {MAX_FILES} files under this folder; "
                              "open the folder of one series", folder)
    return found, special


def _scan(folder: Path, progress: Optional[Progress] = None,
          cancel: Optional[Cancel] = None) -> Tuple[List[SeriesGroup], List[Skipped]]:
    """``_scan_files`` with a small cache: the GUI lists a folder's series, then loads one.

    The cache key holds every file's name, size and modification time, so any change to the
    folder means a fresh scan. A cancelled scan raises ``ScanCancelled`` and caches nothing.
    """
    found, special = _files_under(folder, cancel)
    files = [f for f, _st in found]
    signature = (os.path.realpath(folder),
                 tuple((str(f), st.st_size, st.st_mtime_ns) for f, st in found),
                 tuple(special))
    with _SCAN_LOCK:
        hit = _SCAN_CACHE.get(signature)
        if hit is not None:
            _SCAN_CACHE.move_to_end(signature)
            return hit
    groups, skipped = _scan_files(files, progress, cancel)
    result = (groups, special + skipped)
    with _SCAN_LOCK:
        _SCAN_CACHE[signature] = result
        while len(_SCAN_CACHE) > _SCAN_CACHE_SIZE:
            _SCAN_CACHE.popitem(last=False)
    return result


def _uid_of(ds: Dataset) -> Optional[str]:
    try:
        return str(ds.get("SeriesInstanceUID", "") or "") or None
    except Exception:
        return None


def _scan_files(files: List[Path], progress: Optional[Progress] = None,
                cancel: Optional[Cancel] = None) -> Tuple[List[SeriesGroup], List[Skipped]]:
    """Group the image files; keep each skipped file with its reason."""
    skipped: List[Skipped] = []
    by_key: Dict[tuple, SeriesGroup] = {}
    for n, f in enumerate(files):
        if n % 16 == 0:
            if cancel is not None and cancel():
                raise ScanCancelled()
            if progress is not None:
                progress(n, len(files))
        try:
            ds, has_pixels, offset = read_header(f)
        except Exception as exc:
            skipped.append(Skipped(str(f), unreadable_reason(f, exc)))
            continue
        vendor_note = vendor_position(ds)  # a position a vendor keeps in a private tag
        reason = classify(ds)  # an enhanced image is classified frame by frame below
        if reason is not None and reason.startswith("multi-frame") and is_enhanced(ds):
            reason = None
        reason = reason or (no_pixels_reason(ds, f) if has_pixels is False else None)
        parts, tiles = [(ds, None)], 0
        if reason is None:
            try:
                parts, tiles = expand(ds)
            except ValueError as exc:
                reason = str(exc)
        if reason:
            skipped.append(Skipped(str(f), reason, _uid_of(ds)))
            continue
        frame_reasons: Counter = Counter()
        for h, frame in parts:
            reason = classify(h) if frame is not None else None
            if reason:
                frame_reasons[reason] += 1
                continue
            if vendor_note:
                _attach([h], notes_of(h) + [vendor_note])
            iop = np.array([float(v) for v in h.ImageOrientationPatient])
            uid = str(h.get("SeriesInstanceUID", "") or NO_UID)
            spacing = tuple(round(float(v), 4) for v in h.PixelSpacing)
            key = (uid, tuple(np.round(iop, 4)), int(h.Rows), int(h.Columns), spacing)
            if key not in by_key:
                by_key[key] = SeriesGroup(uid, uid, iop, int(h.Rows), int(h.Columns))
            pos = np.array([float(v) for v in h.ImagePositionPatient])
            by_key[key].slices.append(DicomSlice(str(f), h, pos, offset, frame, tiles))
        for why, n in frame_reasons.items():
            what = why if frame is None else (f"{n} of its {len(parts)} "
                                              f"{'tiles' if tiles else 'frames'}: {why}")
            skipped.append(Skipped(str(f), what, _uid_of(ds)))
    if progress is not None:
        progress(len(files), len(files))
    groups = sorted(by_key.values(), key=lambda g: (-g.n_positions(), -g.rows * g.cols, g.key))
    per_uid = Counter(g.series_uid for g in groups)
    numbering: Counter = Counter()
    for g in groups:
        if per_uid[g.series_uid] > 1:
            numbering[g.series_uid] += 1
            g.key = f"{g.series_uid}#{numbering[g.series_uid]}"
    return groups, skipped


def _attach(headers: List[Dataset], notes: List[str]) -> None:
    """Keep what cutting a file into slices noted, for the load's warnings."""
    for h in headers:
        object.__setattr__(h, "medsam_notes", notes)


def notes_of(h: Dataset) -> List[str]:
    return list(getattr(h, "medsam_notes", []) or [])


def expand(ds: Dataset) -> Tuple[List[Tuple[Dataset, Optional[int]]], int]:
    """The slices one file holds: [(header, frame index)] and the mosaic tile grid side (0).
    A classic image is itself (frame None). ``ValueError`` says why a file cannot be cut."""
    if is_enhanced(ds):
        headers, notes = frame_headers(ds)
        _attach(headers, notes)
        return [(h, i) for i, h in enumerate(headers)], 0
    try:
        n = mosaic_count(ds)
    except Exception:
        n = None
    if n:
        try:
            headers, notes, side = tile_headers(ds)
            _attach(headers, notes)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"Siemens mosaic of {n} images that cannot be cut into slices "
                             f"({type(exc).__name__}: {exc})") from None
        return [(h, i) for i, h in enumerate(headers)], side
    return [(ds, None)], 0


def reason_counts(skipped: List[Skipped]) -> Counter:
    return Counter(s.reason if not s.reason.startswith(("damaged DICOM", "cannot be read"))
                   else s.reason.split(" (")[0].split(":")[0] for s in skipped)


def no_images_error(folder: Path, skipped: List[Skipped]) -> MedsamError:
    counts = reason_counts(skipped)
    detail = ", ".join(f"{n} {why}" for why, n in counts.most_common()) or "the folder is empty"
    named = [s for s in skipped if s.reason not in ("not DICOM",)
             and not s.reason.startswith(("NIfTI", "non-image"))][:3]
    examples = ("; for example " + "; ".join(f"{Path(s.path).name}: {s.reason}" for s in named)
                if named else "")
    return MedsamError(f"no DICOM image series found ({detail}){examples}", folder)


def _check_single_file(path: Path) -> None:
    """A file given directly must be a DICOM image with pixel data."""
    if path.stat().st_size == 0:
        raise MedsamError("the file is empty (0 bytes)", path)
    try:
        ds, has_pixels, _ = read_header(path)
    except pydicom.errors.InvalidDicomError:
        raise MedsamError("not a NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), MetaImage (.mha/.mhd), "
                          "MGH/MGZ or DICOM file", path) from None
    except DamagedHeader as exc:
        raise MedsamError(str(exc), path) from None
    except Exception as exc:
        raise MedsamError(f"unreadable DICOM file ({type(exc).__name__}: {exc})", path) from None
    reason = classify(ds)
    if reason is None or (reason.startswith("multi-frame") and is_enhanced(ds)):
        try:
            parts, _tiles = expand(ds)
            reasons = [classify(h) for h, _frame in parts]
            reason = None if None in reasons else reasons[0]
        except ValueError as exc:
            reason = str(exc)
    if reason:
        raise MedsamError(f"this DICOM file cannot be opened as a volume: {reason}", path)
    if has_pixels is False:
        raise MedsamError("this DICOM file has no pixel data", path)


def discover(path: Path, progress: Optional[Progress] = None, cancel: Optional[Cancel] = None
             ) -> Tuple[Path, List[SeriesGroup], List[Skipped], Optional[str]]:
    """(folder, groups, skipped files, file) for a folder or for one file of a series."""
    if path.is_file() and path.name.upper() == "DICOMDIR":  # the index: open its folder
        path = path.parent
    if not path.is_dir():
        special = special_file_reason(path)
        if special:
            raise MedsamError(special, path)
        _check_single_file(path)
        folder, groups, skipped = path.parent, *_scan(path.parent, progress, cancel)
        return folder, groups, skipped, str(path)
    groups, skipped = _scan(path, progress, cancel)
    return path, groups, skipped, None


def skipped_of(skipped: List[Skipped], series_uid: str) -> List[Tuple[str, str]]:
    """The skipped files that belong to this series or to no readable series."""
    return [(s.path, s.reason) for s in skipped if s.series_uid in (None, series_uid)]


def openable(groups: List[SeriesGroup]) -> List[SeriesGroup]:
    """The groups that can be opened as volumes (two positions or more); all of them when none
    can (so the caller says why). A stray single image of a series (another matrix size, say)
    is no choice to offer: the load names it as left out."""
    return [g for g in groups if g.n_positions() >= 2] or groups


def list_dicom_series(path: Path, progress: Optional[Progress] = None,
                      cancel: Optional[Cancel] = None) -> List[SeriesInfo]:
    """The image series under ``path`` (largest first). ``progress(done, total)`` is called
    during the header pass; ``cancel()`` returning True stops it with ``ScanCancelled``."""
    folder, groups, skipped, _ = discover(path, progress, cancel)
    if not groups:
        raise no_images_error(folder, skipped)
    infos = []
    for g in openable(groups):
        info = g.info()
        info.skipped_files = skipped_of(skipped, g.series_uid)
        infos.append(info)
    return infos
