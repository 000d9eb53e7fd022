"""DICOM series in: the chosen series' pixels, sorted, rescaled, with a RAS affine.

Slices are sorted by ImagePositionPatient projected on the slice normal, never by file name or
InstanceNumber; the slice step comes from the positions, not SliceThickness. Voxel order:
``data[i, j, k]`` = column i, row j of sorted slice k. The affine maps these indices to RAS+
millimetres (DICOM's LPS with x and y negated). Discovery is in ``dicom_scan``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from ..errors import MedsamError
from ..volume import SourceInfo, Volume
from .dicom_scan import (NO_UID, DicomSlice, SeriesGroup, SeriesInfo, description, discover,
                         first_number, list_dicom_series, modality_of, no_images_error)
from .nifti import check_array_size, ensure_finite

__all__ = ["load_dicom", "list_dicom_series", "SeriesInfo"]

# what pydicom needs to decode pixels; reading only these skips big private headers
PIXEL_TAGS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
              "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
              "NumberOfFrames", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
              "PixelData", "FloatPixelData", "DoubleFloatPixelData"]


def _choose(groups: List[SeriesGroup], folder: Path, series_uid: Optional[str],
            file: Optional[str], warnings: List[str]) -> SeriesGroup:
    listing = "; ".join(f"{g.key} ({description(g.slices[0].header)}, {g.cols}×{g.rows}, "
                        f"{g.n_positions()} slices)" for g in groups)
    if series_uid:
        exact = [g for g in groups if g.key == series_uid]
        if exact:
            return exact[0]
        same_uid = [g for g in groups if g.series_uid == series_uid]
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
    if len(groups) > 1:
        warnings.append(f"{len(groups)} series in this folder; opened the largest, {groups[0].key}"
                        f". Others: {listing}")
    return groups[0]


def _select_volume(group: SeriesGroup, normal: np.ndarray, volume_index: Optional[int],
                   warnings: List[str]) -> List[DicomSlice]:
    """Sort by position along the normal; split repeated positions into volumes."""
    by_pos: Dict[float, List[DicomSlice]] = defaultdict(list)
    for s in group.slices:
        by_pos[round(float(s.position @ normal), 2)].append(s)
    counts = {len(v) for v in by_pos.values()}
    if len(counts) > 1:
        raise MedsamError(f"series {group.key} repeats some slice positions but not others "
                          f"({len(group.slices)} files at {len(by_pos)} positions)",
                          Path(group.slices[0].path).parent)
    n_vol = counts.pop()
    index = 0 if volume_index is None else int(volume_index)
    if not 0 <= index < n_vol:
        raise MedsamError(f"volume index {index} is outside 0..{n_vol - 1} of series "
                          f"{group.key}", Path(group.slices[0].path).parent)
    if n_vol > 1:
        warnings.append(f"series holds {n_vol} volumes at the same positions; showing volume "
                        f"{index} (in InstanceNumber order)")
    chosen = []
    for d in sorted(by_pos):
        at = sorted(by_pos[d], key=lambda s: (int(s.header.get("InstanceNumber", 0) or 0), s.path))
        chosen.append(at[index])
    return chosen


def _pixels_at_offset(s: DicomSlice) -> np.ndarray:
    """Decode the pixel data element found during discovery, without parsing the header again."""
    ts = s.header.file_meta.TransferSyntaxUID
    with open(s.path, "rb") as fp:
        fp.seek(int(s.pixel_offset))  # type: ignore[arg-type]
        tail = read_dataset(fp, ts.is_implicit_VR, ts.is_little_endian)
    ds = Dataset()
    ds.file_meta = s.header.file_meta
    ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian)
    for keyword in PIXEL_TAGS:
        if keyword in s.header:
            ds[keyword] = s.header[keyword]
        elif keyword in tail:
            ds[keyword] = tail[keyword]
    return ds.pixel_array


def _pixels(s: DicomSlice, rows: int, cols: int) -> Optional[np.ndarray]:
    """The slice's stored pixels, or None when the file has no pixel data."""
    if s.pixel_offset is not None:
        try:
            px = _pixels_at_offset(s)
            if px.shape == (rows, cols):
                return px
        except Exception:  # anything unusual: take the ordinary full read below
            pass
    try:
        ds = pydicom.dcmread(s.path, specific_tags=PIXEL_TAGS)
    except Exception as exc:
        raise MedsamError(f"cannot read DICOM file ({type(exc).__name__}: {exc})", s.path) from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    try:
        px = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise MedsamError(f"cannot decode pixel data (transfer syntax {ts}): {exc}",
                          s.path) from None
    if px.shape != (rows, cols):
        raise MedsamError(f"pixel array {px.shape} does not match Rows×Columns {rows}×{cols}",
                          s.path)
    return px


def _read_slices(slices: List[DicomSlice], rows: int, cols: int,
                 warnings: List[str]) -> Tuple[List[DicomSlice], List[np.ndarray]]:
    """Read pixels of the chosen slices; files without pixel data are left out with a note."""
    check_array_size((cols, rows, len(slices)), 4, Path(slices[0].path).parent)
    kept, arrays, missing = [], [], []
    for s in slices:
        px = _pixels(s, rows, cols)
        if px is None:
            missing.append(s.path)
        else:
            kept.append(s)
            arrays.append(px)
    if missing and len(kept) < 2:
        raise MedsamError("DICOM file has no pixel data" + (
            f" (nor do {len(missing) - 1} other files of its series)" if len(missing) > 1 else ""),
            missing[0])
    if missing:
        names = ", ".join(Path(m).name for m in missing[:3])
        warnings.append(f"{len(missing)} file(s) without pixel data left out: {names}")
    return kept, arrays


def _rescaled(slices: List[DicomSlice], raw: List[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """Stack the slices as data[col, row, k] with RescaleSlope/Intercept applied.

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
    out = np.empty((cols, rows, len(slices)), dtype=dtype, order="F")
    for k, (a, b) in enumerate(scale):
        p, raw[k] = raw[k], None  # type: ignore[call-overload]
        if integral:
            out[:, :, k] = (p.astype(np.int64) + int(b)).T if b else p.T
        else:
            out[:, :, k] = (p.astype(np.float64) * a + b).T
    return out


def _affine(group: SeriesGroup, slices: List[DicomSlice], normal: np.ndarray,
            warnings: List[str]) -> np.ndarray:
    """RAS affine from IOP, PixelSpacing and the first/last positions; geometry warnings."""
    h = slices[0].header
    row_sp, col_sp = (float(v) for v in h.PixelSpacing)
    first, last = slices[0].position, slices[-1].position
    step = (last - first) / (len(slices) - 1)
    d = np.array([float(s.position @ normal) for s in slices])
    gaps = np.diff(d)
    med = float(np.median(gaps))
    if med <= 1e-3:
        raise MedsamError(f"slices of series {group.key} do not advance along the slice normal",
                          Path(slices[0].path).parent)
    big = np.nonzero(gaps > 1.5 * med)[0]
    if big.size:
        where = ", ".join(f"after slice {i} ({gaps[i]:.2f} mm)" for i in big[:5])
        warnings.append(f"{big.size} gap(s) larger than 1.5× the median spacing {med:.3f} mm: "
                        f"slices may be missing ({where}); the affine uses the mean spacing")
    elif float(np.abs(gaps - med).max()) > max(0.01 * med, 0.01):
        warnings.append(f"uneven slice spacing ({gaps.min():.3f}..{gaps.max():.3f} mm); "
                        f"the affine uses the mean spacing {float(np.linalg.norm(step)):.3f} mm")
    cos = abs(float(step @ normal)) / float(np.linalg.norm(step))
    tilt = float(np.degrees(np.arccos(min(1.0, cos))))
    if tilt > 0.1:
        warnings.append(f"gantry tilt / sheared stack ({tilt:.1f}°): the affine keeps the shear; "
                        "voxels are not resampled")
    lps = np.eye(4)
    lps[:3, 0] = group.iop[:3] * col_sp
    lps[:3, 1] = group.iop[3:] * row_sp
    lps[:3, 2] = step
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def load_dicom(path: Path, series_uid: Optional[str] = None,
               volume_index: Optional[int] = None) -> Volume:
    """Load one series from a folder, or the series of one file, as a Volume."""
    folder, groups, skipped, file = discover(path)
    if not groups:
        raise no_images_error(folder, skipped)
    warnings: List[str] = []
    group = _choose(groups, folder, series_uid, file, warnings)
    normal = np.cross(group.iop[:3], group.iop[3:])
    slices = _select_volume(group, normal, volume_index, warnings)
    if len(slices) < 2:
        raise MedsamError(f"series {group.key} has a single slice (a 2D image); medsam-gui opens "
                          "3D volumes", file or folder)
    slices, raw = _read_slices(slices, group.rows, group.cols, warnings)
    data = _rescaled(slices, raw, group.rows, group.cols)
    ensure_finite(data, folder)
    affine = _affine(group, slices, normal, warnings)
    h = slices[0].header
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
               "dicom_modality": str(h.get("Modality", "")), "folder": str(folder)},
    )
    return Volume(data, affine, modality=modality_of(h), source=source)
