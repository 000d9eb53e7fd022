"""RT Structure Set out: one ROI per label, closed planar contours per source slice (reading one
in: ``rtstruct_read``; the shared contour geometry: ``rtstruct_geometry``).

Contours are the label's boundary on each source image, traced by marching squares at the 0.5
level (scikit-image), so each vertex lies half-way between a pixel inside and one outside, and
mapped to patient coordinates (LPS mm) through that image's own position, orientation and pixel
spacing. Holes are contours of their own; readers combine nested contours of a slice by the
even-odd rule, as radiotherapy planning systems do.

After writing, the file is read back: every contour must lie in the plane of the image it
references, and the contours are rasterised again (pixel centres inside, even-odd) and compared
with the label map. A ROI whose voxels differ by more than ``TOLERANCE`` of its size fails the
export.

Written with pydicom: highdicom has no RT Structure Set, and the usual helper package brings a
second OpenCV build with its own Qt, which clashes with the window's PyQt5.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from .. import __version__
from ..errors import MedsamError
from ..volume import Volume
from .atomic import atomic_path, check_target
from .dicom_source import SourceInstances, source_instances
from .rtstruct_geometry import Plane, mask_contours
from .rtstruct_read import RTSTRUCT_SOP_CLASS, read_contours
from .segments import MANUFACTURER, Export, Segment

DETACHED_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
TOLERANCE = 0.01  # fraction of a ROI's voxels that may differ after re-rasterising
PLANE_TOLERANCE_MM = 0.01  # the writer's own contours lie in their plane to rounding
# attributes copied from the source so that the structure set joins the same patient and study
_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                  "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
                  "StudyDescription", "StudyInstanceUID")


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

    planes = [Plane.of(s) for s in src]
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
