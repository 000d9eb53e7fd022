"""RT Structure Set in.

Each ROI's contours are placed on the source slice they reference (or, without a reference,
the image plane they lie in) and filled the same way; the label value is the ROI number. A
contour is left out, and named in the import's notes (ROI, contour number, referenced image,
distance), when its coordinates are not finite numbers, when it lies farther from the plane of
the image it references than half the spacing between image planes (it is then nearer another
image than its own, so the reference and the coordinates contradict each other), when it lies
in no image plane, or when it is not a closed planar polygon of at least 3 points.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..errors import MedsamError
from ..volume import Volume
from .dicom_source import SourceInstances, source_instances
from .rtstruct_geometry import Plane, depths, plane_tolerance, rasterise
from .segments import ImportedSegments

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
MAX_LISTED = 12  # contours named one by one in the notes; the rest are counted


@dataclass
class _Contours:
    masks: Dict[int, np.ndarray]  # ROI number -> mask on the volume grid
    names: Dict[int, str]
    colors: Dict[int, Tuple[int, int, int]]
    off_plane: float  # largest distance of a placed contour from its image plane (mm)
    left_out: List[str]  # one line per contour that was not placed, saying why

    @property
    def skipped(self) -> int:
        return len(self.left_out)


def _referenced_uid(item: Dataset) -> Optional[str]:
    refs = getattr(item, "ContourImageSequence", None)
    if refs and "ReferencedSOPInstanceUID" in refs[0]:
        return str(refs[0].ReferencedSOPInstanceUID)
    return None


def _slice_of(item: Dataset, xyz: np.ndarray, by_uid: Dict[str, int],
              planes: List[Plane]) -> Optional[int]:
    """The source slice a contour belongs to: by its image reference, else by its plane."""
    k = by_uid.get(_referenced_uid(item) or "")
    if k is not None:
        return k
    depth = depths(planes)
    normal = np.cross(planes[0].col_dir, planes[0].row_dir)
    step = float(np.median(np.abs(np.diff(depth)))) if len(depth) > 1 else 1.0
    here = float(xyz.mean(axis=0) @ normal)
    k = int(np.argmin(np.abs(depth - here)))
    return k if abs(depth[k] - here) <= step / 2 else None


def _contour_problem(item: Dataset, xyz: np.ndarray, k: Optional[int], planes: List[Plane],
                     tolerance: float) -> Tuple[Optional[str], float]:
    """(why the contour cannot be placed, or None; its distance from slice k's plane)."""
    if not np.isfinite(xyz).all():
        bad = int((~np.isfinite(xyz).all(axis=1)).sum())
        return f"NaN or infinite coordinates in {bad} of its {len(xyz)} points", 0.0
    kind = str(item.get("ContourGeometricType", ""))
    if kind != "CLOSED_PLANAR":
        return f"it is {kind or 'of no stated type'}, not CLOSED_PLANAR", 0.0
    if len(xyz) < 3:
        return f"it has {len(xyz)} point(s), fewer than 3", 0.0
    if k is None:
        return "it lies in no image plane of this series", 0.0
    _, off = planes[k].to_pixels(xyz)
    if off > tolerance:
        return (f"it lies {off:.1f} mm off the plane of the image it references (tolerance "
                f"{tolerance:.2f} mm, half the spacing between images)"), off
    return None, off


def read_contours(path: Path, instances: SourceInstances,
                  shape3d: Tuple[int, int, int]) -> _Contours:
    """Every ROI of an RT Structure Set rasterised on the volume grid (even-odd per slice);
    contours that cannot be placed are left out and described in ``left_out``."""
    ds = pydicom.dcmread(str(path))
    by_uid = instances.uid_to_slice()  # enhanced frames share a UID: placed by their plane
    planes = [Plane.of(s) for s in instances.datasets]
    tolerance = plane_tolerance(instances)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    image_shape = (shape3d[1], shape3d[0])
    out = _Contours({}, names, {}, 0.0, [])
    for rc in ds.ROIContourSequence:
        number = int(rc.ReferencedROINumber)
        if "ROIDisplayColor" in rc:
            out.colors[number] = tuple(int(c) for c in rc.ROIDisplayColor)[:3]  # type: ignore
        per_slice: Dict[int, List[np.ndarray]] = {}
        for n, item in enumerate(getattr(rc, "ContourSequence", []), 1):
            xyz = np.asarray(item.ContourData, dtype=np.float64).reshape(-1, 3)
            k = _slice_of(item, xyz, by_uid, planes) if np.isfinite(xyz).all() else None
            why, off = _contour_problem(item, xyz, k, planes, tolerance)
            if why is not None:
                ref = _referenced_uid(item)
                out.left_out.append(
                    f"ROI {names.get(number, number)!r} contour #{n}"
                    + (f" (on image {ref})" if ref else " (no image reference)") + f": {why}")
                continue
            out.off_plane = max(out.off_plane, off)
            per_slice.setdefault(k, []).append(planes[k].to_pixels(xyz)[0])  # type: ignore
        mask = np.zeros(shape3d, dtype=bool)
        for k, contours in per_slice.items():
            mask[:, :, k] = rasterise(contours, image_shape).T
        out.masks[number] = mask
    return out


def read_rtstruct(path: Union[str, "os.PathLike[str]"], volume: Volume) -> ImportedSegments:
    """An RT Structure Set on ``volume``'s series as labels (value = ROI number)."""
    path = Path(os.fspath(path)).expanduser()
    instances = source_instances(volume)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        frames = {str(f.FrameOfReferenceUID) for f in ds.ReferencedFrameOfReferenceSequence}
    except Exception as exc:
        raise MedsamError(f"not a readable RT Structure Set ({type(exc).__name__}: {exc})",
                          path) from None
    if instances.frame_of_reference_uid not in frames:
        raise MedsamError("this RT Structure Set was made on another scan: its frame of "
                          f"reference is not the open series' {instances.frame_of_reference_uid}",
                          path)
    try:
        contours = read_contours(path, instances, volume.shape)
    except Exception as exc:
        raise MedsamError(f"the RT Structure Set's contours cannot be read ({exc})", path) \
            from None
    array = np.zeros(volume.shape, np.uint16)
    notes: List[str] = []
    overlap = False
    for number in sorted(contours.masks):
        if not 0 < number <= 65535:
            raise MedsamError(f"ROI number {number} is outside 1..65535", path)
        mask = contours.masks[number]
        overlap |= bool((array[mask] != 0).any())
        array[mask] = number
    if overlap:
        notes.append("structures overlap; where they do, the higher ROI number was kept")
    if contours.skipped:
        notes.append(f"{contours.skipped} contour(s) were left out:")
        notes.extend(contours.left_out[:MAX_LISTED])
        if contours.skipped > MAX_LISTED:
            notes.append(f"… and {contours.skipped - MAX_LISTED} more contour(s) left out")
    empty = [contours.names.get(n, str(n)) for n, m in contours.masks.items() if not m.any()]
    if empty:
        notes.append(f"structures without contours here: {', '.join(empty)}")
    return ImportedSegments(array, dict(contours.names), dict(contours.colors), notes)
