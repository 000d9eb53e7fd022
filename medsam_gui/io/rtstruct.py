"""RT Structure Set out (one ROI per label, closed planar contours per source slice) and in.

Contours are the label's boundary on each source image, traced by marching squares at the 0.5
level (scikit-image), so each vertex lies half-way between a pixel inside and one outside, and
mapped to patient coordinates (LPS mm) through that image's own position, orientation and pixel
spacing. Holes are contours of their own; readers combine nested contours of a slice by the
even-odd rule, as radiotherapy planning systems do.

After writing, the file is read back: every contour must lie in the plane of the image it
references, and the contours are rasterised again (pixel centres inside, even-odd) and compared
with the label map. A ROI whose voxels differ by more than ``TOLERANCE`` of its size fails the
export.

In: each ROI's contours are placed on the source slice they reference (or, without a reference,
the image plane they lie in) and filled the same way; the label value is the ROI number. A
contour is left out, and named in the import's notes (ROI, contour number, referenced image,
distance), when its coordinates are not finite numbers, when it lies farther from the plane of
the image it references than half the spacing between image planes (it is then nearer another
image than its own, so the reference and the coordinates contradict each other), when it lies
in no image plane, or when it is not a closed planar polygon of at least 3 points.

Written with pydicom: highdicom has no RT Structure Set, and the usual helper package brings a
second OpenCV build with its own Qt, which clashes with the window's PyQt5.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
from skimage import draw, measure

from .. import __version__
from ..errors import MedsamError
from ..volume import Volume
from .atomic import atomic_path, check_target
from .dicom_source import SourceInstances, source_instances
from .segments import MANUFACTURER, Export, ImportedSegments, Segment

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
TOLERANCE = 0.01  # fraction of a ROI's voxels that may differ after re-rasterising
PLANE_TOLERANCE_MM = 0.01  # the writer's own contours lie in their plane to rounding
MAX_LISTED = 12  # contours named one by one in the notes; the rest are counted
# attributes copied from the source so that the structure set joins the same patient and study
_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                  "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
                  "StudyDescription", "StudyInstanceUID")


@dataclass(frozen=True)
class _Plane:
    origin: np.ndarray  # ImagePositionPatient
    col_dir: np.ndarray  # direction of increasing column index (IOP[:3])
    row_dir: np.ndarray  # direction of increasing row index (IOP[3:])
    spacing: Tuple[float, float]  # (between rows, between columns)

    @classmethod
    def of(cls, ds: Dataset) -> "_Plane":
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ps = [float(v) for v in ds.PixelSpacing]
        return cls(np.array([float(v) for v in ds.ImagePositionPatient]), iop[:3], iop[3:],
                   (ps[0], ps[1]))

    def to_patient(self, rc: np.ndarray) -> np.ndarray:
        """(n, 2) row/col pixel coordinates -> (n, 3) LPS mm."""
        return (self.origin + np.outer(rc[:, 1] * self.spacing[1], self.col_dir)
                + np.outer(rc[:, 0] * self.spacing[0], self.row_dir))

    def to_pixels(self, xyz: np.ndarray) -> Tuple[np.ndarray, float]:
        """(n, 3) LPS mm -> (n, 2) row/col, and the largest distance from the plane (mm)."""
        d = xyz - self.origin
        normal = np.cross(self.col_dir, self.row_dir)
        rc = np.stack([d @ self.row_dir / self.spacing[0], d @ self.col_dir / self.spacing[1]], 1)
        return rc, float(np.abs(d @ normal).max()) if len(d) else 0.0


def mask_contours(mask: np.ndarray) -> List[np.ndarray]:
    """Closed contours (row, col) around the True pixels of a 2D mask, holes included."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return []
    r0, c0 = int(rows[0]), int(cols[0])
    crop = mask[r0:int(rows[-1]) + 1, c0:int(cols[-1]) + 1]
    padded = np.pad(np.asarray(crop, dtype=np.uint8), 1)
    out = []
    for c in measure.find_contours(padded, 0.5):
        c = c[:-1] - 1.0 + (r0, c0)  # closed: last point repeats the first; undo crop, padding
        if len(c) >= 3:
            out.append(_drop_collinear(c))
    return out


def _drop_collinear(c: np.ndarray) -> np.ndarray:
    """The same polygon without vertices in the middle of straight runs (exact, no tolerance)."""
    before = c - np.roll(c, 1, axis=0)
    after = np.roll(c, -1, axis=0) - c
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    keep = np.abs(cross) > 1e-9
    return c[keep] if keep.sum() >= 3 else c


def rasterise(contours: List[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """Even-odd fill of (row, col) polygons: pixels whose centre lies inside."""
    out = np.zeros(shape, dtype=bool)
    for c in contours:
        lo = np.clip(np.floor(c.min(axis=0)).astype(int), 0, None)
        hi = np.minimum(np.ceil(c.max(axis=0)).astype(int) + 1, shape)
        if (hi <= lo).any():
            continue
        rr, cc = draw.polygon(c[:, 0] - lo[0], c[:, 1] - lo[1], tuple(hi - lo))
        out[rr + lo[0], cc + lo[1]] ^= True
    return out


def _frame(labels: np.ndarray, k: int) -> np.ndarray:
    return labels[:, :, k].T  # volume grid (col, row, slice) -> image (row, col)


def _ref_image(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    if "ReferencedFrameNumber" in ds:  # a frame of an enhanced source (see dicom_source)
        item.ReferencedFrameNumber = ds.ReferencedFrameNumber
    return item


def build_rtstruct(labels: np.ndarray, segments: List[Segment],
                   instances: SourceInstances) -> Dataset:
    """The RT Structure Set of ``labels`` (volume grid), one ROI per entry of ``segments``."""
    src = instances.datasets
    first = src[0]
    now = datetime.now()
    ds = Dataset()
    for keyword in _PATIENT_STUDY:
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if keyword not in ds:  # type 2: present, may be empty
            setattr(ds, keyword, "")
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 901
    ds.SeriesDescription = "medsam-gui structures"
    ds.InstanceNumber = 1
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = instances.frame_of_reference_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")  # type 2
    ds.StructureSetLabel = "MEDSAM"
    ds.StructureSetName = "medsam-gui"
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    ds.SpecificCharacterSet = "ISO_IR 192"

    series = Dataset()
    series.SeriesInstanceUID = instances.series_uid
    series.ContourImageSequence = Sequence([_ref_image(s) for s in src])
    study = Dataset()
    study.ReferencedSOPClassUID = DETACHED_STUDY_SOP_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = instances.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    planes = [_Plane.of(s) for s in src]
    by_value = {seg.value: seg for seg in segments}
    contours: Dict[int, List[Dataset]] = {seg.number: [] for seg in segments}
    for k, plane in enumerate(planes):
        frame = _frame(labels, k)
        for value in np.unique(frame):
            if int(value) not in by_value:
                continue
            for c in mask_contours(frame == value):
                item = Dataset()
                item.ContourImageSequence = Sequence([_ref_image(src[k])])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(c)
                item.ContourData = [round(float(v), 4) for v in plane.to_patient(c).ravel()]
                contours[by_value[int(value)].number].append(item)
    rois, roi_contours, observations = [], [], []
    for seg in segments:
        roi = Dataset()
        roi.ROINumber = seg.number
        roi.ReferencedFrameOfReferenceUID = instances.frame_of_reference_uid
        roi.ROIName = seg.name[:64]
        roi.ROIGenerationAlgorithm = seg.algorithm_type
        if seg.algorithms:
            roi.ROIGenerationDescription = ("medsam-gui with " + ", ".join(seg.algorithms))[:64]
        rois.append(roi)
        rc = Dataset()
        rc.ROIDisplayColor = list(seg.color)
        rc.ReferencedROINumber = seg.number
        rc.ContourSequence = Sequence(contours[seg.number])
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = seg.number
        obs.ReferencedROINumber = seg.number
        obs.RTROIInterpretedType = seg.prop.rt_type
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    ds.RTROIObservationsSequence = Sequence(observations)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


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


def _depths(planes: List[_Plane]) -> np.ndarray:
    normal = np.cross(planes[0].col_dir, planes[0].row_dir)
    return np.array([p.origin @ normal for p in planes])


def plane_tolerance(instances: SourceInstances) -> float:
    """How far (mm) a contour may lie from the plane of the image it references.

    Half the spacing between neighbouring image planes: farther than that, the contour is
    nearer another image's plane than its own, so its reference and its coordinates disagree
    and drawing it on the referenced image would put it on the wrong slice. (Half the slice
    thickness would be looser where slices overlap, e.g. 3 mm slices every 2 mm on the test
    CT.) A single image falls back to half its SliceThickness, else 1 mm."""
    planes = [_Plane.of(s) for s in instances.datasets]
    if len(planes) > 1:
        step = float(np.median(np.abs(np.diff(_depths(planes)))))
        if step > 0:
            return step / 2
    try:
        thickness = float(instances.datasets[0].SliceThickness)
    except (AttributeError, TypeError, ValueError):
        thickness = 0.0
    return thickness / 2 if np.isfinite(thickness) and thickness > 0 else 1.0


def _referenced_uid(item: Dataset) -> Optional[str]:
    refs = getattr(item, "ContourImageSequence", None)
    if refs and "ReferencedSOPInstanceUID" in refs[0]:
        return str(refs[0].ReferencedSOPInstanceUID)
    return None


def _slice_of(item: Dataset, xyz: np.ndarray, by_uid: Dict[str, int],
              planes: List[_Plane]) -> Optional[int]:
    """The source slice a contour belongs to: by its image reference, else by its plane."""
    k = by_uid.get(_referenced_uid(item) or "")
    if k is not None:
        return k
    depth = _depths(planes)
    normal = np.cross(planes[0].col_dir, planes[0].row_dir)
    step = float(np.median(np.abs(np.diff(depth)))) if len(depth) > 1 else 1.0
    here = float(xyz.mean(axis=0) @ normal)
    k = int(np.argmin(np.abs(depth - here)))
    return k if abs(depth[k] - here) <= step / 2 else None


def _contour_problem(item: Dataset, xyz: np.ndarray, k: Optional[int], planes: List[_Plane],
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
    planes = [_Plane.of(s) for s in instances.datasets]
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


def _check_written(tmp: Path, labels: np.ndarray, instances: SourceInstances,
                   segments: List[Segment], final: Path) -> List[str]:
    try:
        read = read_contours(tmp, instances, labels.shape)
    except MedsamError:
        raise
    except Exception as exc:
        raise MedsamError(f"the written RT Structure Set cannot be read back ({exc})",
                          final) from None
    if read.skipped:
        raise MedsamError(f"a written contour cannot be placed: {read.left_out[0]}", final)
    if read.off_plane > PLANE_TOLERANCE_MM:
        raise MedsamError(f"a written contour lies {read.off_plane:.3f} mm off its image plane",
                          final)
    notes = []
    worst = 0.0
    for seg in segments:
        want = labels == seg.value
        got = read.masks.get(seg.number)
        if got is None:
            raise MedsamError(f"the written structure set lost ROI {seg.name!r}", final)
        frac = float(np.count_nonzero(got != want)) / max(1, int(np.count_nonzero(want)))
        worst = max(worst, frac)
        if frac > TOLERANCE:
            raise MedsamError(f"ROI {seg.name!r}: the contours re-rasterise to a mask that "
                              f"differs in {100 * frac:.2f} % of its voxels (tolerance "
                              f"{100 * TOLERANCE:.0f} %)", final)
    notes.append(f"contours re-rasterise to the label map within {100 * worst:.2f} % of each "
                 "structure's voxels")
    return notes


def write_rtstruct(labels: np.ndarray, segments: List[Segment], volume: Volume,
                   path: Union[str, "os.PathLike[str]"]) -> Export:
    """Write ``labels`` (volume grid) as an RT Structure Set on ``volume``'s CT/MR series, one
    ROI per entry of ``segments``; verified before it is renamed into place."""
    path = Path(os.fspath(path)).expanduser()
    check_target(path)
    instances = source_instances(volume)
    modality = str(instances.datasets[0].get("Modality", ""))
    if modality not in ("CT", "MR"):
        raise MedsamError(f"RT Structure Sets are written for CT and MR series; this one is "
                          f"{modality or 'of unknown modality'}", volume.source.path)
    ds = build_rtstruct(labels, segments, instances)
    try:
        with atomic_path(path) as tmp:
            pydicom.dcmwrite(str(tmp), ds, enforce_file_format=True)
            notes = _check_written(tmp, labels, instances, segments, path)
    except OSError as exc:
        raise MedsamError(f"cannot write the RT Structure Set ({exc.strerror or exc})",
                          path) from None
    return Export(path, segments, list(instances.notes) + notes)
