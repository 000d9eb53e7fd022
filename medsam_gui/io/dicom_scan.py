"""DICOM discovery: which image series are in a folder, from headers only.

Every file is read with ``stop_before_pixels`` (and only the tags needed here). Images are grouped
by SeriesInstanceUID and, inside a UID, by orientation (ImageOrientationPatient), size
(Rows × Columns) and PixelSpacing. A UID that splits into several groups gets keys ``<uid>#1``, ``<uid>#2``…
(largest first) so each can be chosen. Non-image objects (RTSTRUCT, SR, presentation states…),
multi-frame and colour images and files that are not DICOM are skipped and counted.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..errors import MedsamError

MAX_FILES = 20000
_SCAN_CACHE: "OrderedDict[tuple, Tuple[List[SeriesGroup], Counter]]" = OrderedDict()
_SCAN_CACHE_SIZE = 2  # folders; headers only, so small
_SCAN_LOCK = threading.Lock()
NO_UID = "no-series-uid"  # key of images without a SeriesInstanceUID
NON_IMAGE_MODALITIES = {"RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "SEG",
                        "RWV", "PLAN", "FID", "RAW"}
NON_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.481.5",
                          "1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.",
                          "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.1.3.10")
HEADER_TAGS = ["SOPClassUID", "Modality", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber",
               "InstanceNumber", "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient",
               "ImagePositionPatient", "NumberOfFrames", "SamplesPerPixel", "RescaleSlope",
               "RescaleIntercept", "WindowCenter", "WindowWidth", "PhotometricInterpretation",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "PlanarConfiguration", "ExtendedOffsetTable", "ExtendedOffsetTableLengths"]
# (7FE0,0010) Pixel Data, (7FE0,0008/0009) Float/Double Float Pixel Data, as bytes on disk
_PIXEL_TAG_BYTES = {b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00",
                    b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09"}


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


@dataclass
class DicomSlice:
    path: str
    header: Dataset
    position: np.ndarray
    pixel_offset: Optional[int] = None  # where the pixel data element starts, when known


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
                          self.n_positions(), sorted(s.path for s in self.slices))


def description(h: Dataset) -> str:
    text = str(h.get("SeriesDescription", "") or "").strip()
    return text or f"series {h.get('SeriesNumber', '?')}"


def modality_of(h: Dataset) -> str:
    m = str(h.get("Modality", "") or "").upper()
    return m if m in ("CT", "MR") else "OT"


def first_number(value) -> Optional[float]:
    """First number of a possibly multi-valued DS element."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _read_header(path: Path) -> Tuple[Dataset, Optional[bool], Optional[int]]:
    """The header up to the pixel data, whether pixel data follows (None: cannot tell, e.g.
    deflated files) and the file offset of the pixel data element (so the pixel pass need not
    parse the header again)."""
    with open(path, "rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if ts is None or ts == pydicom.uid.DeflatedExplicitVRLittleEndian:
            return ds, None, None
        offset = fp.tell()
        present = fp.read(4) in _PIXEL_TAG_BYTES
    return ds, present, offset if present else None


def _classify(ds: Dataset) -> Optional[str]:
    """None for a usable slice of a volume, else the reason to skip it."""
    try:
        return _classify_unsafe(ds)
    except Exception:  # malformed values (e.g. text in a number field)
        return "unreadable header values"


def _classify_unsafe(ds: Dataset) -> Optional[str]:
    modality = str(ds.get("Modality", "") or "").upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    if not sop and hasattr(ds, "file_meta"):
        sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    if modality in NON_IMAGE_MODALITIES or sop.startswith(NON_IMAGE_SOP_PREFIXES):
        return f"non-image object ({modality or sop})"
    if "Rows" not in ds or "Columns" not in ds:
        return "no image (no Rows/Columns)"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return "multi-frame image (not supported)"
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return "colour image (not supported)"
    for tag, n in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6),
                   ("PixelSpacing", 2)):
        value = ds.get(tag)
        if value is None or len(value) != n:
            return f"no usable {tag}"
    try:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        spacing = np.array([float(v) for v in ds.PixelSpacing])
        position = np.array([float(v) for v in ds.ImagePositionPatient])
    except (TypeError, ValueError):
        return "unreadable position, orientation or spacing values"
    if not (np.all(np.isfinite(spacing)) and spacing.min() > 0 and np.all(np.isfinite(position))):
        return "invalid PixelSpacing or ImagePositionPatient"
    row, col = iop[:3], iop[3:]
    if not np.all(np.isfinite(iop)) or abs(np.linalg.norm(row) - 1) > 0.01 or abs(
            np.linalg.norm(col) - 1) > 0.01 or abs(float(row @ col)) > 0.01:
        return "invalid ImageOrientationPatient"
    return None


def _files_under(folder: Path) -> List[Path]:
    found: List[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                found.append(Path(root) / name)
        if len(found) > MAX_FILES:
            raise MedsamError(f"more than {MAX_FILES} files under this folder; "
                              "open the folder of one series", folder)
    return found


def _scan(folder: Path) -> Tuple[List[SeriesGroup], Counter]:
    """``_scan_files`` with a small cache: the GUI lists a folder's series, then loads one.

    The cache key holds every file's name, size and modification time, so any change to the
    folder means a fresh scan.
    """
    files = _files_under(folder)
    try:
        signature = (os.path.realpath(folder),
                     tuple((str(f), st.st_size, st.st_mtime_ns) for f, st in
                           ((f, f.stat()) for f in files)))
    except OSError:  # a file vanished while we looked: scan without the cache
        return _scan_files(files)
    with _SCAN_LOCK:
        hit = _SCAN_CACHE.get(signature)
        if hit is not None:
            _SCAN_CACHE.move_to_end(signature)
            return hit
    result = _scan_files(files)
    with _SCAN_LOCK:
        _SCAN_CACHE[signature] = result
        while len(_SCAN_CACHE) > _SCAN_CACHE_SIZE:
            _SCAN_CACHE.popitem(last=False)
    return result


def _scan_files(files: List[Path]) -> Tuple[List[SeriesGroup], Counter]:
    """Group the image files; count what was skipped and why."""
    skipped: Counter = Counter()
    by_key: Dict[tuple, SeriesGroup] = {}
    for f in files:
        try:
            ds, has_pixels, offset = _read_header(f)
        except Exception:
            nifti = f.name.lower().endswith((".nii", ".nii.gz"))
            skipped["NIfTI file(s): open the file itself" if nifti else "not DICOM"] += 1
            continue
        reason = _classify(ds) or ("no pixel data" if has_pixels is False else None)
        if reason:
            skipped[reason] += 1
            continue
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        uid = str(ds.get("SeriesInstanceUID", "") or NO_UID)
        spacing = tuple(round(float(v), 4) for v in ds.PixelSpacing)
        key = (uid, tuple(np.round(iop, 4)), int(ds.Rows), int(ds.Columns), spacing)
        if key not in by_key:
            by_key[key] = SeriesGroup(uid, uid, iop, int(ds.Rows), int(ds.Columns))
        pos = np.array([float(v) for v in ds.ImagePositionPatient])
        by_key[key].slices.append(DicomSlice(str(f), ds, pos, offset))
    groups = sorted(by_key.values(), key=lambda g: (-g.n_positions(), -g.rows * g.cols, g.key))
    per_uid = Counter(g.series_uid for g in groups)
    numbering: Counter = Counter()
    for g in groups:
        if per_uid[g.series_uid] > 1:
            numbering[g.series_uid] += 1
            g.key = f"{g.series_uid}#{numbering[g.series_uid]}"
    return groups, skipped


def no_images_error(folder: Path, skipped: Counter) -> MedsamError:
    detail = ", ".join(f"{n} {why}" for why, n in skipped.most_common()) or "the folder is empty"
    return MedsamError(f"no DICOM image series found ({detail})", folder)


def _check_single_file(path: Path) -> None:
    """A file given directly must be a DICOM image with pixel data."""
    if path.stat().st_size == 0:
        raise MedsamError("the file is empty (0 bytes)", path)
    try:
        ds, has_pixels, _ = _read_header(path)
    except pydicom.errors.InvalidDicomError:
        raise MedsamError("not a NIfTI (.nii/.nii.gz) or DICOM file", path) from None
    except Exception as exc:
        raise MedsamError(f"unreadable DICOM file ({type(exc).__name__}: {exc})", path) from None
    reason = _classify(ds)
    if reason:
        raise MedsamError(f"this DICOM file cannot be opened as a volume: {reason}", path)
    if has_pixels is False:
        raise MedsamError("this DICOM file has no pixel data", path)


def discover(path: Path) -> Tuple[Path, List[SeriesGroup], Counter, Optional[str]]:
    """(folder, groups, skipped, file) for a folder or for one file of a series."""
    if path.is_file() and path.name.upper() == "DICOMDIR":  # the index: open its folder
        path = path.parent
    if path.is_file():
        _check_single_file(path)
        folder, groups, skipped = path.parent, *_scan(path.parent)
        return folder, groups, skipped, str(path)
    groups, skipped = _scan(path)
    return path, groups, skipped, None


def list_dicom_series(path: Path) -> List[SeriesInfo]:
    folder, groups, skipped, _ = discover(path)
    if not groups:
        raise no_images_error(folder, skipped)
    return [g.info() for g in groups]
