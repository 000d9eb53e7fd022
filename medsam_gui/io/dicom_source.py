"""The DICOM instances behind a volume, as the SEG and RTSTRUCT writers need to reference them.

A derived object (SEG, RTSTRUCT) names its source by study, series and SOP instance UIDs, and
places itself in the source's frame of reference. ``source_instances`` re-reads the headers of
the slices the volume was built from, in the volume's slice order (``data[:, :, k]`` is file
``k``), and checks that they can be referenced.

Anonymised series sometimes blank these UIDs in the data set. The file meta information still
states each file's SOP class and instance, so those are taken from there (and said). A blank
study or series UID is replaced by one derived from the frame of reference, the same for every
export of this series, and the export says so: viewers that match by series will not link it.

An enhanced (multi-frame) source gives one data set per volume slice too: the file's header
without its functional groups, with that frame's ImagePositionPatient, ImageOrientationPatient
and PixelSpacing, and its frame number as ReferencedFrameNumber (an in-memory copy, never
written), so the RT writer references "instance + frame" and the SEG writer, given the file's
own header (``multiframe``), references source frames. A Siemens mosaic cannot be referenced
slice by slice (its slices are tiles of one image) and is refused with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..errors import MedsamError
from ..volume import Volume
from .dicom_enhanced import clone, frame_headers, is_enhanced
from .dicom_header import vendor_position

NO_DICOM_REFERENCES = ("it was opened from {kind}, so there are no DICOM instances for a SEG or "
                       "RT Structure Set to reference; export it as NIfTI (with its label "
                       "descriptions) instead")


@dataclass
class SourceInstances:
    """Headers of the volume's source slices, in volume slice order, ready to reference."""

    datasets: List[Dataset]
    notes: List[str] = field(default_factory=list)
    # 1-based frame of each slice in its enhanced source file; None for a classic file
    frame_numbers: List[Optional[int]] = field(default_factory=list)
    # the header of the one enhanced file all slices come from (None for a classic series)
    multiframe: Optional[Dataset] = None

    @property
    def enhanced(self) -> bool:
        return any(f is not None for f in self.frame_numbers)

    def uid_to_slice(self) -> Dict[str, int]:
        """SOP instance UID -> slice, for the UIDs that name one slice (not enhanced frames)."""
        seen: Dict[str, int] = {}
        twice = set()
        for k, uid in enumerate(self.sop_instance_uids):
            if uid in seen:
                twice.add(uid)
            seen[uid] = k
        return {uid: k for uid, k in seen.items() if uid not in twice}

    @property
    def sop_instance_uids(self) -> List[str]:
        return [str(ds.SOPInstanceUID) for ds in self.datasets]

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.datasets[0].FrameOfReferenceUID)


def require_dicom(volume: Volume) -> List[str]:
    """The volume's source files in slice order, or a clear error for a non-DICOM volume."""
    files = list(volume.source.extra.get("files") or [])
    if volume.source.kind != "dicom" or not files:
        kind = {"nifti": "a NIfTI file", "nrrd": "a NRRD file", "metaimage": "a MetaImage file",
                "mgh": "an MGH/MGZ file"}.get(volume.source.kind, "an array")
        raise MedsamError(NO_DICOM_REFERENCES.format(kind=kind), volume.source.path or None)
    if len(files) != volume.shape[2]:
        raise MedsamError(f"the volume has {volume.shape[2]} slices but {len(files)} source "
                          "files", volume.source.path)
    return files


def _blank(ds: Dataset, keyword: str) -> bool:
    return not str(ds.get(keyword, "") or "").strip()


_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def _frame_dataset(full: Dataset, frame: Dataset, number: int) -> Dataset:
    """The enhanced file's header as a single-frame one for frame ``number`` (see above)."""
    out = Dataset()
    for elem in full:
        if elem.keyword not in _GROUPS:
            out.add(elem)
    out = clone(out)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "SliceThickness"):
        if keyword in frame:
            out[keyword] = frame[keyword]
    out.ReferencedFrameNumber = number
    return out


def _read_sources(volume: Volume, files: List[str]
                  ) -> tuple:
    """(per-slice data sets, frame numbers, the enhanced header when there is exactly one)."""
    frames = list(volume.source.extra.get("frames") or [None] * len(files))
    if volume.source.extra.get("mosaic"):
        raise MedsamError("this series is a Siemens mosaic: its slices are tiles of one image, "
                          "which a SEG or RT Structure Set cannot reference one by one; export "
                          "it as NIfTI instead", volume.source.path)
    cache: Dict[str, tuple] = {}
    datasets = []
    for path, number in zip(files, frames):
        if path not in cache:
            try:
                full = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as exc:
                raise MedsamError(f"cannot re-read this source file of the open series "
                                  f"({type(exc).__name__}: {exc}); was it moved or changed?",
                                  path) from None
            vendor_position(full)  # as the volume was built (United Imaging private tags)
            cache[path] = (full, frame_headers(full)[0] if is_enhanced(full) else None)
        full, per_frame = cache[path]
        if number is None:
            datasets.append(full)
            continue
        if per_frame is None or not 1 <= number <= len(per_frame):
            raise MedsamError(f"frame {number} of this source file is gone; was it changed?",
                              path)
        datasets.append(_frame_dataset(full, per_frame[number - 1], number))
    enhanced = [p for p, (_full, per_frame) in cache.items() if per_frame is not None]
    multiframe = cache[enhanced[0]][0] if len(enhanced) == 1 and len(cache) == 1 else None
    return datasets, frames, multiframe


def source_instances(volume: Volume) -> SourceInstances:
    """Read and check the headers of ``volume``'s source files (see the module docstring)."""
    files = require_dicom(volume)
    datasets, frame_numbers, multiframe = _read_sources(volume, files)
    notes: List[str] = []
    from_meta = 0
    for ds, path in zip(datasets, files):
        meta = getattr(ds, "file_meta", None)
        for keyword, meta_keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                      ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if _blank(ds, keyword):
                value = str(getattr(meta, meta_keyword, "") or "") if meta is not None else ""
                if not value:
                    raise MedsamError(f"has no {keyword}, not even in its file meta "
                                      "information: it cannot be referenced", path)
                setattr(ds, keyword, value)
                from_meta += 1
        if _blank(ds, "FrameOfReferenceUID"):
            raise MedsamError("has no FrameOfReferenceUID: a segmentation could not be placed "
                              "in its patient space", path)
    if from_meta:
        notes.append("the source files have blank SOP class/instance UIDs in their data sets; "
                     "the ones in their file meta information were referenced")
    frames = {str(ds.FrameOfReferenceUID) for ds in datasets}
    if len(frames) > 1:
        raise MedsamError(f"the series' slices lie in {len(frames)} frames of reference",
                          volume.source.path)
    for keyword, what in (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series")):
        values = {str(ds.get(keyword, "") or "").strip() for ds in datasets}
        if values == {""}:
            uid = generate_uid(entropy_srcs=[what, str(datasets[0].FrameOfReferenceUID),
                                             volume.content_hash])
            for ds in datasets:
                setattr(ds, keyword, uid)
            notes.append(f"the source series has no {keyword} (anonymised?): the export uses "
                         f"{uid}, derived from its frame of reference; viewers that match by "
                         f"{what} will not link it to these files")
        elif len(values) > 1:
            raise MedsamError(f"the slices disagree on their {keyword}", volume.source.path)
    if multiframe is not None:
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                        "SeriesInstanceUID"):
            multiframe[keyword] = datasets[0][keyword]
    return SourceInstances(datasets, notes, frame_numbers, multiframe)


def slice_positions(instances: SourceInstances) -> np.ndarray:
    """ImagePositionPatient (LPS mm) of each source slice, shape (n, 3)."""
    return np.array([[float(v) for v in ds.ImagePositionPatient] for ds in instances.datasets])


def source_folder(volume: Volume) -> Path:
    return Path(str(volume.source.extra.get("folder") or volume.source.path))
