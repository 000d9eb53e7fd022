"""Enhanced (multi-frame) DICOM images as per-frame slices for the ordinary series pipeline.

An enhanced CT/MR/PET image (and the legacy-converted enhanced images) holds every slice of a
series, or several stacks and volumes, in one file; each frame's geometry and rescale live in
functional groups: the Shared Functional Groups Sequence, overridden per frame by the Per-frame
Functional Groups Sequence. ``frame_headers`` turns one such file into one small header per
frame carrying the classic attributes the loader already understands (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, RescaleSlope/Intercept, WindowCenter/Width) plus the
frame's place in the file. ``dicom_scan`` then groups, sorts by position on the slice normal,
splits repeated positions into volumes (first volume of 4D, with the classic warning), fills
gaps and names dropped frames exactly as it does for classic files, so a mix of classic and
enhanced files, or several enhanced files of one series, is one series.

What is taken from maintained readers and what is written here:

- Pixel decoding of the frames is pydicom's (``Dataset.pixel_array``, every transfer syntax
  its handlers support).
- highdicom's ``Image.get_volume`` and nibabel's ``MultiframeWrapper`` both assemble a volume
  from one enhanced file. This loader must also do what the classic series pipeline already
  does and those readers do not offer together: take several enhanced files, or enhanced and
  classic files, as one series; keep the positions of missing frames as blank slices; pick
  one volume of a 4D file with the classic warning; name each frame it leaves out. So each
  frame goes through that pipeline, and only the lookup of the functional-group attributes
  (shared, overridden per frame) is written here; the tests compare the result with
  highdicom's volume and with the classic series the test file was converted from.
- Rescale: the Pixel Value Transformation Sequence (RescaleSlope/Intercept) per frame or
  shared, as dcm2niix uses; when a file has none, a Real World Value Mapping with a linear
  slope/intercept (Philips writes one) is used and said.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Tuple

from pydicom.dataset import Dataset

# top-level attributes copied into every frame's header (what discovery, the loader and the
# DICOM writers read from a slice header)
COPIED = ("SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesDescription",
          "SeriesNumber", "InstanceNumber", "Rows", "Columns", "SamplesPerPixel",
          "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
          "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames", "Manufacturer",
          "StudyInstanceUID", "FrameOfReferenceUID", "SpacingBetweenSlices", "SliceThickness",
          "WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept")


def clone(ds: Dataset) -> Dataset:
    """A copy whose elements can be reassigned without touching ``ds`` (``Dataset.update``
    shares the element objects, so setting a value on the copy would change the original)."""
    out = Dataset()
    for elem in ds:
        out.add(copy.copy(elem))
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    return out


def is_enhanced(ds: Dataset) -> bool:
    """An image whose geometry is in functional groups (enhanced or legacy-converted)."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _lookup(frame: Optional[Dataset], shared: Optional[Dataset], macro: str
            ) -> Optional[Dataset]:
    """Macro ``macro`` of a frame: its per-frame item, else the shared one."""
    for group in (frame, shared):
        if group is not None:
            seq = group.get(macro)
            if seq:
                return seq[0]
    return None


def _rescale(frame: Optional[Dataset], shared: Optional[Dataset], top: Dataset
             ) -> Tuple[Optional[float], Optional[float], str]:
    """(slope, intercept, source) from Pixel Value Transformation, else a linear Real World
    Value Mapping, else the top-level Rescale attributes."""
    pvt = _lookup(frame, shared, "PixelValueTransformationSequence")
    if pvt is not None and "RescaleSlope" in pvt:
        return float(pvt.RescaleSlope), float(pvt.get("RescaleIntercept", 0) or 0), "pvt"
    rwv = _lookup(frame, shared, "RealWorldValueMappingSequence")
    if rwv is None and "RealWorldValueMappingSequence" in top:
        rwv = top.RealWorldValueMappingSequence[0]
    if rwv is not None and "RealWorldValueSlope" in rwv:
        return (float(rwv.RealWorldValueSlope),
                float(rwv.get("RealWorldValueIntercept", 0) or 0), "rwvm")
    if "RescaleSlope" in top:
        return float(top.RescaleSlope), float(top.get("RescaleIntercept", 0) or 0), "top"
    return None, None, ""


def frame_headers(ds: Dataset) -> Tuple[List[Dataset], List[str]]:
    """One classic-looking header per frame of an enhanced image (frame order), and notes.

    A frame without a position, orientation or pixel spacing gets a header without it, so the
    ordinary classification names what is missing. Each header carries ``InStackPositionNumber``
    ``TemporalPositionIndex`` and ``StackID`` when the file gives them, and ``FrameIndex``
    (0-based, as Python attributes: ``frame_index``).
    """
    n = int(ds.get("NumberOfFrames", 1) or 1)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    notes: List[str] = []
    base = Dataset()
    for keyword in COPIED:
        if keyword in ds:
            base[keyword] = ds[keyword]
    if hasattr(ds, "file_meta"):
        base.file_meta = ds.file_meta
    out: List[Dataset] = []
    used_rwvm = False
    for i in range(n):
        frame = per_frame[i] if i < len(per_frame) else None
        h = clone(base)
        position = _lookup(frame, shared, "PlanePositionSequence")
        if position is not None and "ImagePositionPatient" in position:
            h.ImagePositionPatient = position.ImagePositionPatient
        orientation = _lookup(frame, shared, "PlaneOrientationSequence")
        if orientation is not None and "ImageOrientationPatient" in orientation:
            h.ImageOrientationPatient = orientation.ImageOrientationPatient
        measures = _lookup(frame, shared, "PixelMeasuresSequence")
        if measures is not None:
            for keyword in ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"):
                if keyword in measures:
                    h[keyword] = measures[keyword]
        slope, intercept, source = _rescale(frame, shared, ds)
        if slope is not None:
            h.RescaleSlope, h.RescaleIntercept = slope, intercept
            used_rwvm |= source == "rwvm"
        voi = _lookup(frame, shared, "FrameVOILUTSequence")
        if voi is not None:
            for keyword in ("WindowCenter", "WindowWidth"):
                if keyword in voi:
                    h[keyword] = voi[keyword]
        content = _lookup(frame, None, "FrameContentSequence")
        if content is not None:
            for keyword in ("InStackPositionNumber", "TemporalPositionIndex", "StackID"):
                if keyword in content:
                    h[keyword] = content[keyword]
        h.NumberOfFrames = 1  # this header describes one frame
        out.append(h)
    if used_rwvm:
        notes.append("rescaled with the Real World Value Mapping (no Pixel Value Transformation "
                     "in the file)")
    return out, notes


def frame_order_key(h: Dataset) -> Tuple[int, int]:
    """How frames at one position are ordered into volumes: temporal index, then stack."""
    def number(keyword: str) -> int:
        try:
            return int(h.get(keyword, 0) or 0)
        except (TypeError, ValueError):
            return 0
    return number("TemporalPositionIndex"), number("StackID")
