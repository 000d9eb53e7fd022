"""DICOM series in: the chosen series' pixels, sorted, rescaled, with a RAS affine.

Slices are sorted by ImagePositionPatient projected on the slice normal, never by file name or
InstanceNumber; the slice step comes from the positions, not SliceThickness. Voxel order:
``data[i, j, k]`` = column i, row j of sorted slice k.

Nothing is left out silently: every file that is not used (damaged header, text in a position,
another matrix size, undecodable pixels, an exact duplicate…) is kept in
``source.dropped_files`` with its reason and named in ``source.warnings``. When slices are
missing from an otherwise regular stack, their positions stay in the volume as blank slices
(``source.extra["missing_slices"]``), so every other slice keeps its true position; a stack too
irregular for one grid is refused. The affine maps these indices to RAS+
millimetres (DICOM's LPS with x and y negated). Discovery is in ``dicom_scan``, decoding one
slice's pixels in ``dicom_pixels``.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..errors import MedsamError
from ..volume import SourceInfo, Volume
from .dicom_enhanced import frame_order_key
from .dicom_pixels import FramePixels, Unusable, pixel_bytes, slice_pixels
from .dicom_header import description, first_number, modality_of
from .dicom_scan import (NO_UID, DicomSlice, SeriesGroup, SeriesInfo, discover, list_dicom_series,
                         no_images_error, notes_of, openable, skipped_of)
from .limits import check_array_size
from .voxel_facts import non_finite_note

__all__ = ["load_dicom", "list_dicom_series", "SeriesInfo"]

def _choose(groups: List[SeriesGroup], folder: Path, series_uid: Optional[str],
            file: Optional[str], warnings: List[str]) -> SeriesGroup:
    listing = "; ".join(f"{g.key} ({description(g.slices[0].header)}, {g.cols}×{g.rows}, "
                        f"{g.n_positions()} slices)" for g in groups)
    if series_uid:
        exact = [g for g in groups if g.key == series_uid]
        if exact:
            return exact[0]
        same_uid = [g for g in groups if g.series_uid == series_uid]
        volumes = [g for g in same_uid if g.n_positions() >= 2]
        if len(volumes) == 1:  # the other parts are stray single images: named as left out
            return volumes[0]
        if same_uid:
            raise MedsamError(f"series {series_uid} mixes image sizes or orientations; choose one "
                              f"of its parts: {listing}", folder)
        raise MedsamError(f"no series with UID {series_uid} here (found: {listing})", folder)
    if file is not None:
        target = os.path.realpath(file)
        for g in groups:
            if any(os.path.realpath(s.path) == target for s in g.slices):
                return g
        raise MedsamError("this file's series could not be assembled from its folder", file)
    volumes = openable(groups)
    if len(volumes) > 1:
        warnings.append(f"{len(volumes)} series in this folder; opened the largest, "
                        f"{groups[0].key}. Others: {listing}")
    return groups[0]


Dropped = List[Tuple[str, str]]
NAMED = 3  # files named in a warning or error before "and N more"
MAX_BLANK_FRACTION = 0.5  # more blank slice positions than this is not a volume any more


def _short(path: str, folder: Path) -> str:
    """The path relative to the opened folder (just the name for its own files)."""
    try:
        return os.path.relpath(path, folder) if Path(path).is_relative_to(folder) else path
    except (ValueError, AttributeError):
        return path


def name_files(entries: Dropped, folder: Path, limit: int = NAMED) -> str:
    """``a.dcm (why); b.dcm (why) and 4 more`` for a warning or an error."""
    named = "; ".join(f"{_short(p, folder)} ({why})" for p, why in entries[:limit])
    more = len(entries) - limit
    return named + (f" and {more} more" if more > 0 else "")


def _other_parts(groups: List[SeriesGroup], group: SeriesGroup) -> Dropped:
    """Files of the same SeriesInstanceUID left out because their grid differs from ``group``'s
    (matrix size, orientation, pixel spacing)."""
    out: Dropped = []
    spacing = [float(v) for v in group.slices[0].header.PixelSpacing]
    for g in groups:
        if g is group or g.series_uid != group.series_uid:
            continue
        why = []
        if (g.rows, g.cols) != (group.rows, group.cols):
            why.append(f"matrix {g.cols}×{g.rows}, not {group.cols}×{group.rows} like the rest "
                       "of the series")
        if not np.allclose(g.iop, group.iop, atol=1e-4):
            why.append("another ImageOrientationPatient than the rest of the series")
        other = [float(v) for v in g.slices[0].header.PixelSpacing]
        if not np.allclose(other, spacing, atol=1e-4):
            why.append(f"PixelSpacing {other[0]:g}×{other[1]:g}, not "
                       f"{spacing[0]:g}×{spacing[1]:g}")
        reason = "; ".join(why) + f" (series part {g.key})"
        per_file = Counter(s.path for s in g.slices)
        for path in sorted(per_file):
            frames = [s for s in g.slices if s.path == path and s.frame is not None]
            out.append((path, f"{len(frames)} of its frames: {reason}" if frames else reason))
    return out


def _drop_duplicates(slices: List[DicomSlice], folder: Path, dropped: Dropped
                     ) -> List[DicomSlice]:
    """Leave out exact copies (same SOPInstanceUID, same pixel data, same position), naming
    them; refuse two different files that claim the same SOPInstanceUID."""
    by_sop: Dict[Tuple[str, Optional[int]], List[DicomSlice]] = defaultdict(list)
    for s in slices:
        sop = str(s.header.get("SOPInstanceUID", "") or "").strip()
        if sop:  # the frames of one enhanced file (or tiles of a mosaic) share it
            by_sop[(sop, s.frame)].append(s)
    gone, conflicts = set(), []
    digests: Dict[str, str] = {}

    def pixels_of(s: DicomSlice) -> str:  # frames of one file share it: read each file once
        if s.path not in digests:
            digests[s.path] = hashlib.sha256(pixel_bytes(s)).hexdigest()
        return digests[s.path]

    for (sop, _frame), same in by_sop.items():
        if len(same) < 2:
            continue
        same = sorted(same, key=lambda s: s.path)
        first = pixels_of(same[0])
        for other in same[1:]:
            if other.frame is not None and other.path == same[0].path:
                continue  # one file seen twice (a link): discovery keeps real paths apart
            if np.allclose(other.position, same[0].position) and pixels_of(other) == first:
                if other.path not in gone:  # named once, not once per frame
                    dropped.append((other.path, "exact duplicate of "
                                    f"{_short(same[0].path, folder)} (same SOPInstanceUID "
                                    "and pixel data)"))
                gone.add(other.path)
            elif (same[0].path, other.path, sop) not in conflicts:
                conflicts.append((same[0].path, other.path, sop))
    if conflicts:
        pairs = "; ".join(f"{_short(a, folder)} and {_short(b, folder)} (SOPInstanceUID {u})"
                          for a, b, u in conflicts[:NAMED])
        more = f" and {len(conflicts) - NAMED} more" if len(conflicts) > NAMED else ""
        raise MedsamError(f"{len(conflicts)} pair(s) of different files claim the same "
                          f"SOPInstanceUID, so which one is right is unknown: {pairs}{more}; "
                          "remove the wrong copies", folder)
    return [s for s in slices if s.path not in gone]


def _select_volume(group: SeriesGroup, slices: List[DicomSlice], normal: np.ndarray,
                   volume_index: Optional[int], folder: Path,
                   warnings: List[str]) -> List[DicomSlice]:
    """Sort by position along the normal; split repeated positions into volumes."""
    by_pos: Dict[float, List[DicomSlice]] = defaultdict(list)
    for s in slices:
        by_pos[round(float(s.position @ normal), 2)].append(s)
    if len(by_pos) == 1 and len(slices) > 1:
        (d, at), = by_pos.items()
        raise MedsamError(f"all {len(at)} image files of series {group.key} lie at one "
                          f"position ({d:.2f} mm along the slice normal; same "
                          f"ImagePositionPatient), so they do not stack into a volume: "
                          f"{_names(at, folder)}", folder)
    counts = Counter(len(v) for v in by_pos.values())
    if len(counts) > 1:
        usual = counts.most_common(1)[0][0]
        odd = sorted((d, v) for d, v in by_pos.items() if len(v) != usual)
        where = "; ".join(f"{len(v)} at {d:.2f} mm ({_names(v, folder)})" for d, v in odd[:NAMED])
        more = f" and {len(odd) - NAMED} more positions" if len(odd) > NAMED else ""
        raise MedsamError(f"series {group.key} repeats some slice positions but not others "
                          f"({len(slices)} files at {len(by_pos)} positions, {usual} at most of "
                          f"them): {where}{more}", folder)
    n_vol = counts.most_common(1)[0][0]
    index = 0 if volume_index is None else int(volume_index)
    if not 0 <= index < n_vol:
        raise MedsamError(f"volume index {index} is outside 0..{n_vol - 1} of series "
                          f"{group.key}", folder)
    if n_vol > 1:
        order = ("temporal position order" if any(s.frame is not None and not s.tiles
                                                  for s in slices) else "InstanceNumber order")
        warnings.append(f"series holds {n_vol} volumes at the same positions; showing volume "
                        f"{index} (in {order})")
    chosen = []
    for d in sorted(by_pos):
        at = sorted(by_pos[d], key=_volume_order)
        chosen.append(at[index])
    return chosen


def _volume_order(s: DicomSlice) -> tuple:
    """Order of the images at one position: InstanceNumber (file), then an enhanced frame's
    temporal position and stack, then its frame number."""
    try:
        number = int(s.header.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        number = 0
    return (number, s.path) + frame_order_key(s.header) + (s.frame or 0,)


def _names(slices: List[DicomSlice], folder: Path) -> str:
    names = [_short(s.path, folder) for s in sorted(slices, key=lambda s: s.path)]
    more = len(names) - NAMED
    return ", ".join(names[:NAMED]) + (f" and {more} more" if more > 0 else "")


def _read_slices(slices: List[DicomSlice], rows: int, cols: int, folder: Path,
                 dropped: Dropped) -> Tuple[List[DicomSlice], List[np.ndarray]]:
    """Read pixels of the chosen slices; a file whose pixels are missing or cannot be decoded
    is dropped with its reason. Refused when fewer than two slices (or under half) are left."""
    check_array_size((cols, rows, len(slices)), 4, folder)
    kept, arrays, bad = [], [], []
    frames = FramePixels()
    for s in slices:
        try:
            arrays.append(frames.get(s, rows, cols) if s.frame is not None
                          else slice_pixels(s, rows, cols))
            kept.append(s)
        except Unusable as exc:
            bad.append((s.path, str(exc)))
    if bad and (len(kept) < 2 or len(kept) < len(slices) * MAX_BLANK_FRACTION):
        if len(bad) == 1:
            raise MedsamError(bad[0][1], bad[0][0])
        raise MedsamError(f"{len(bad)} of the {len(slices)} image files of this series cannot "
                          f"be used: {name_files(bad, folder)}", folder)
    dropped.extend(bad)
    return kept, arrays


def _rescaled(slices: List[DicomSlice], raw: List[np.ndarray], rows: int, cols: int,
              slots: List[int], n_slots: int) -> np.ndarray:
    """Stack the slices as data[col, row, slot] with RescaleSlope/Intercept applied; slice
    positions without an image (slots not in ``slots``) hold the volume's minimum.

    Integer data with slope 1 and a whole intercept stays integer (the narrowest type holding
    the rescaled range); anything else becomes float32. ``raw`` is emptied as it is copied, so
    the peak memory is one volume plus one slice.
    """
    scale = [(first_number(s.header.get("RescaleSlope")) or 1.0,
              first_number(s.header.get("RescaleIntercept")) or 0.0) for s in slices]
    integral = all(a == 1.0 and float(b).is_integer() for a, b in scale) and all(
        np.issubdtype(p.dtype, np.integer) for p in raw)
    if integral:
        lo = min(int(p.min()) + int(b) for p, (_, b) in zip(raw, scale))
        hi = max(int(p.max()) + int(b) for p, (_, b) in zip(raw, scale))
        dtype = next(np.dtype(t) for t in (raw[0].dtype, np.int16, np.uint16, np.int32, np.int64)
                     if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    else:
        dtype = np.dtype(np.float32)
    out = np.empty((cols, rows, n_slots), dtype=dtype, order="F")
    for k, (slot, (a, b)) in enumerate(zip(slots, scale)):
        p, raw[k] = raw[k], None  # type: ignore[call-overload]
        if integral:
            out[:, :, slot] = (p.astype(np.int64) + int(b)).T if b else p.T
        else:
            out[:, :, slot] = (p.astype(np.float64) * a + b).T
    blank = sorted(set(range(n_slots)) - set(slots))
    if blank:
        out[:, :, blank] = out[:, :, list(slots)].min()
    return out


def _grid(group: SeriesGroup, slices: List[DicomSlice], normal: np.ndarray, folder: Path,
          warnings: List[str]) -> Tuple[np.ndarray, List[int], int]:
    """The slice step (LPS vector), each slice's place on the regular grid and the grid's size.

    A gap that is a whole number of steps (±10 %) is slices missing from a regular stack: the
    grid keeps their positions (blank), so nothing moves. Other unevenness is fitted with the
    mean step and said with the largest displacement it causes; over half a step is refused.
    """
    d = np.array([float(s.position @ normal) for s in slices])
    gaps = np.diff(d)
    if gaps.min() <= 1e-3:
        raise MedsamError(f"slices of series {group.key} do not advance along the slice normal",
                          folder)
    base = float(np.median(gaps))
    whole = np.rint(gaps / base).astype(int)
    missing_gap = (whole >= 2) & (np.abs(gaps - whole * base) <= 0.1 * base)
    steps = np.where(missing_gap, whole, 1)
    slots = np.concatenate([[0], np.cumsum(steps)]).astype(int)
    n_slots = int(slots[-1]) + 1
    first = slices[0].position
    step = (slices[-1].position - first) / slots[-1]
    positions = np.array([s.position for s in slices])
    off = np.linalg.norm(positions - (first + slots[:, None] * step), axis=1)
    worst = int(np.argmax(off))
    if off[worst] > 0.5 * base:
        raise MedsamError(
            f"slice positions of series {group.key} are too irregular for one voxel grid "
            f"(spacing {gaps.min():.3f}..{gaps.max():.3f} mm): "
            f"{_short(slices[worst].path, folder)} would be drawn {off[worst]:.2f} mm from its "
            "ImagePositionPatient", folder)
    if off[worst] > max(0.01 * base, 0.01):
        warnings.append(f"uneven slice spacing ({gaps.min():.3f}..{gaps.max():.3f} mm); the "
                        f"affine uses the mean spacing {float(np.linalg.norm(step)):.3f} mm, "
                        f"which places slices up to {off[worst]:.2f} mm from their stated "
                        f"positions ({_short(slices[worst].path, folder)})")
    blank = n_slots - len(slices)
    if blank > MAX_BLANK_FRACTION * n_slots:
        raise MedsamError(f"only {len(slices)} of the {n_slots} slice positions of series "
                          f"{group.key} (every {base:.3f} mm) have an image: not a volume",
                          folder)
    check_array_size((group.cols, group.rows, n_slots), 4, folder)
    return step, [int(k) for k in slots], n_slots


def _affine(group: SeriesGroup, slices: List[DicomSlice], step: np.ndarray,
            normal: np.ndarray, warnings: List[str]) -> np.ndarray:
    """RAS affine from IOP, PixelSpacing, the first position and the grid step."""
    h = slices[0].header
    row_sp, col_sp = (float(v) for v in h.PixelSpacing)
    cos = abs(float(step @ normal)) / float(np.linalg.norm(step))
    tilt = float(np.degrees(np.arccos(min(1.0, cos))))
    if tilt > 0.1:
        warnings.append(f"gantry tilt / sheared stack ({tilt:.1f}°): the affine keeps the shear; "
                        "voxels are not resampled")
    lps = np.eye(4)
    lps[:3, 0] = group.iop[:3] * col_sp
    lps[:3, 1] = group.iop[3:] * row_sp
    lps[:3, 2] = step
    lps[:3, 3] = slices[0].position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _loss_warnings(dropped: Dropped, blank: List[int], step: np.ndarray, folder: Path,
                   warnings: List[str]) -> None:
    """Say what was left out, naming the files (first few) and the blank slices."""
    if dropped:
        warnings.insert(0, f"{len(dropped)} file(s) left out: {name_files(dropped, folder)}")
    if blank:
        where = ", ".join(str(k) for k in blank[:10]) + (" …" if len(blank) > 10 else "")
        warnings.insert(1 if dropped else 0,
                        f"{len(blank)} slice(s) missing from the regular "
                        f"{float(np.linalg.norm(step)):.3f} mm spacing: slice(s) {where} shown "
                        "blank, so every other slice keeps its true position")


GE_PULSE_SEQUENCE = pydicom.tag.Tag(0x0019, 0x109C)  # GEMS_ACQU_01 block 0x10
GE_USER_DATA_12 = pydicom.tag.Tag(0x0019, 0x10B3)


def _ge_private(h: Dataset, tag: pydicom.tag.BaseTag) -> Optional[str]:
    creator = h.get(pydicom.tag.Tag(0x0019, 0x0010))
    if creator is None or "GEMS_ACQU" not in str(creator.value).upper() or tag not in h:
        return None
    value = h[tag].value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip("\x00 ")


def _ge_reverse_polarity(h: Dataset, volume_index: int) -> Optional[bool]:
    """Whether this GE volume's rows are stored reversed (research ``epi_pepolar`` sequence),
    as dcm2niix decides it: the pulse sequence name (0019,109C) and user data 12 (0019,10B3):
    1 = every volume reversed, 2 = reverse then forward (volumes 1, 3, … counted from 1
    reversed), 3 = forward then reverse (volumes 2, 4, …). None when the series is no GE
    pepolar series."""
    name = _ge_private(h, GE_PULSE_SEQUENCE)
    if not name or "epi_pepolar" not in name.lower():
        return None
    try:
        mode = int(float(_ge_private(h, GE_USER_DATA_12) or 0))
    except ValueError:
        mode = 0
    if mode == 1:
        return True
    number = volume_index + 1
    if mode == 2:
        return number % 2 == 1
    if mode == 3:
        return number % 2 == 0
    return False


def load_dicom(path: Path, series_uid: Optional[str] = None,
               volume_index: Optional[int] = None) -> Volume:
    """Load one series from a folder, or the series of one file, as a Volume."""
    folder, groups, skipped, file = discover(path)
    if not groups:
        raise no_images_error(folder, skipped)
    warnings: List[str] = []
    group = _choose(groups, folder, series_uid, file, warnings)
    dropped: Dropped = skipped_of(skipped, group.series_uid) + _other_parts(groups, group)
    normal = np.cross(group.iop[:3], group.iop[3:])
    unique = _drop_duplicates(group.slices, folder, dropped)
    slices = _select_volume(group, unique, normal, volume_index, folder, warnings)
    if len(slices) < 2:
        lost = f"; left out: {name_files(dropped, folder)}" if dropped else ""
        raise MedsamError(f"series {group.key} has a single slice (a 2D image); medsam-gui opens "
                          f"3D volumes{lost}", file or folder)
    slices, raw = _read_slices(slices, group.rows, group.cols, folder, dropped)
    step, slots, n_slots = _grid(group, slices, normal, folder, warnings)
    data = _rescaled(slices, raw, group.rows, group.cols, slots, n_slots)
    if _ge_reverse_polarity(slices[0].header, int(volume_index or 0)):
        data = np.asfortranarray(data[:, ::-1, :])
        warnings.append("GE reverse phase-encoding polarity (epi_pepolar): the stored rows are "
                        "upside down; flipped, as dcm2niix does")
    note = non_finite_note(data, folder)  # float pixel data: NaN opens, said once
    if note:
        warnings.append(note)
    affine = _affine(group, slices, step, normal, warnings)
    blank = sorted(set(range(n_slots)) - set(slots))
    _loss_warnings(dropped, blank, step, folder, warnings)
    h = slices[0].header
    for note in dict.fromkeys(n for s in slices for n in notes_of(s.header)):
        warnings.append(note)
    center, width = first_number(h.get("WindowCenter")), first_number(h.get("WindowWidth"))
    if str(h.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        warnings.append("MONOCHROME1: low values are meant to display bright")
    source = SourceInfo(
        path=str(folder if file is None else file),
        kind="dicom",
        series_uid=None if group.series_uid == NO_UID else group.series_uid,
        description=description(h),
        window_preset=(center, width) if center is not None and width else None,
        warnings=warnings,
        extra={"series_key": group.key, "files": [s.path for s in slices],
               # 1-based frame number in its file for an enhanced source, else None
               "frames": [None if s.frame is None or s.tiles else s.frame + 1 for s in slices],
               "mosaic": any(s.tiles for s in slices),
               "missing_slices": blank, "dicom_modality": str(h.get("Modality", "")),
               "folder": str(folder)},
        dropped_files=dropped,
    )
    return Volume(data, affine, modality=modality_of(h), source=source)
