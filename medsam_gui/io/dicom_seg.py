"""DICOM Segmentation (SEG) out and in, with highdicom.

Out: a BINARY SEG with one segment per label that has voxels (see ``segments``), one frame per
source slice and segment that holds any voxel, each frame referencing its source instance. After
writing, the file is read back and checked: every frame's source instance maps to the slice it
came from and the decoded segments equal the label map voxel for voxel; only then is it renamed
into place. On an enhanced (multi-frame) source the frames reference the source file and its
frame number (Referenced SOP Instance UID + Referenced Frame Number, highdicom's multi-frame
source mode); a volume assembled from several enhanced files, or from enhanced and classic
files, is refused for SEG (one SEG references either single-frame images or one multi-frame
image) and can be written as an RT Structure Set.

Size: the default BINARY SEG, uncompressed, is what every SEG reader takes, and is large (one
1-bit frame per slice and segment: 17 MB for the 512²×20 CT with 31 labels). ``write_seg``
offers the LABELMAP type (one frame per slice holding the segment numbers; a newer SOP class
that fewer viewers read) and lossless compression (``COMPRESSION``: RLE, JPEG-LS and JPEG 2000
lossless for LABELMAP; highdicom allows only JPEG 2000 lossless for BINARY). Every variant is
read back and compared voxel for voxel before it is renamed into place. Sizes and times:
``benchmarks/bench_interop.py`` (on that CT: BINARY 17.3 MB, BINARY JPEG 2000 0.40 MB but twice
the write time, LABELMAP 5.3 MB, LABELMAP RLE 0.16 MB at a fifth of BINARY's write time).
"Compressed" in the window and the default of ``seg_compression`` is JPEG 2000 for BINARY (the
only choice) and RLE for LABELMAP (JPEG-LS is half RLE's size, but RLE is decoded by every
DICOM toolkit without a codec plugin). dciodvfy (dicom3tools 2022) validates BINARY with zero
errors, compressed or not; it predates the LABELMAP SOP class (Supplement 243, 2024), so
BINARY uncompressed stays the default.

In: a SEG that references the open series (by its source instances, or failing that by frame of
reference and plane positions) becomes a label array on the volume grid plus its segment names
and colours.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import List, Optional, Union

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.uid import (JPEG2000Lossless, JPEGLSLossless, ExplicitVRLittleEndian,
                         RLELossless)

from .. import __version__
from ..errors import MedsamError
from ..volume import Volume
from .atomic import atomic_path, check_target
from .dicom_source import SourceInstances, source_instances
from .segments import MANUFACTURER, Export, ImportedSegments, Segment, segment_numbers

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
COMPRESSION = {None: ExplicitVRLittleEndian, "rle": RLELossless, "jpegls": JPEGLSLossless,
               "jpeg2000": JPEG2000Lossless}
COMPRESSION_NAMES = {None: "uncompressed", "rle": "RLE lossless", "jpegls": "JPEG-LS lossless",
                     "jpeg2000": "JPEG 2000 lossless"}
LOSSLESS = {False: "jpeg2000", True: "rle"}  # "compressed" for BINARY / LABELMAP (see above)


def seg_compression(labelmap: bool, compressed: bool) -> Optional[str]:
    """The transfer syntax key a "compressed yes/no" choice means for the SEG type."""
    return LOSSLESS[bool(labelmap)] if compressed else None


def check_seg_options(labelmap: bool, compression: Optional[str]) -> None:
    """Refuse a type/compression pair highdicom cannot write, before any work."""
    if compression not in COMPRESSION:
        raise MedsamError(f"unknown SEG compression {compression!r}; choose one of "
                          f"{', '.join(str(k) for k in COMPRESSION)}")
    if not labelmap and compression not in (None, "jpeg2000"):
        raise MedsamError(f"a BINARY SEG can be compressed with JPEG 2000 lossless only, not "
                          f"{compression}; use the LABELMAP type for RLE or JPEG-LS")


def seg_variant(labelmap: bool, compression: Optional[str]) -> str:
    """In words, e.g. 'label map, RLE lossless'."""
    return f"{'label map' if labelmap else 'binary'}, {COMPRESSION_NAMES[compression]}"


def _frames(labels: np.ndarray) -> np.ndarray:
    """Volume-grid labels (col, row, slice) as source frames (slice, row, col)."""
    return np.ascontiguousarray(np.transpose(labels, (2, 1, 0)))


def _description(seg: Segment) -> hd.seg.SegmentDescription:
    algorithm = None
    if seg.algorithm_type != "MANUAL":
        algorithm = hd.AlgorithmIdentificationSequence(
            name=", ".join(seg.algorithms)[:64] or MANUFACTURER,
            family=codes.cid7162.ArtificialIntelligence,
            version=__version__)
    return hd.seg.SegmentDescription(
        segment_number=seg.number,
        segment_label=seg.name[:64],
        segmented_property_category=seg.prop.category,
        segmented_property_type=seg.prop.type,
        algorithm_type=seg.algorithm_type,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*seg.color))


def build_seg(labels: np.ndarray, segments: List[Segment], instances: SourceInstances,
              series_number: int = 900, labelmap: bool = False,
              compression: Optional[str] = None) -> hd.seg.Segmentation:
    """The SEG of ``labels`` (volume grid) with one segment per entry of ``segments``:
    BINARY (or LABELMAP) with the transfer syntax ``COMPRESSION[compression]``."""
    check_seg_options(labelmap, compression)
    pixels = segment_numbers(_frames(labels), segments)
    kind = (hd.seg.SegmentationTypeValues.LABELMAP if labelmap
            else hd.seg.SegmentationTypeValues.BINARY)
    with warnings.catch_warnings():  # names copied from the source as they are
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        return _segmentation(instances, pixels, segments, series_number, kind,
                             COMPRESSION[compression])


def _plane_positions(instances: SourceInstances) -> Optional[List]:
    """For an enhanced source, each slice's plane position (highdicom then matches them to the
    source frames); None for a classic series, whose slices are the source images."""
    if not instances.enhanced:
        return None
    if instances.multiframe is None:
        raise MedsamError("this volume was assembled from several files, some of them enhanced "
                          "(multi-frame): a SEG references either single-frame images or one "
                          "multi-frame image; export an RT Structure Set or NIfTI instead", None)
    return [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT,
                                     [float(v) for v in ds.ImagePositionPatient])
            for ds in instances.datasets]


def _keep_own_frames(seg: hd.seg.Segmentation, instances: SourceInstances) -> None:
    """highdicom references every source frame at a SEG frame's position; in a file holding
    several volumes (4D) that is one frame per volume. Keep the frame the volume was built
    from, so each SEG frame names exactly its source frame."""
    own = {int(f) for f in instances.frame_numbers}  # type: ignore[arg-type]
    for item in seg.PerFrameFunctionalGroupsSequence:
        for derivation in item.DerivationImageSequence:
            refs = derivation.SourceImageSequence
            kept = [r for r in refs if int(r.get("ReferencedFrameNumber", 0) or 0) in own]
            if kept and len(kept) < len(refs):
                derivation.SourceImageSequence = kept


def _segmentation(instances: SourceInstances, pixels: np.ndarray, segments: List[Segment],
                  series_number: int, kind: hd.seg.SegmentationTypeValues,
                  syntax: str) -> hd.seg.Segmentation:
    positions = _plane_positions(instances)
    seg = _new_segmentation(instances, pixels, segments, series_number, positions, kind,
                            syntax)
    if positions is not None:
        _keep_own_frames(seg, instances)
    return seg


def _new_segmentation(instances: SourceInstances, pixels: np.ndarray, segments: List[Segment],
                      series_number: int, positions: Optional[List],
                      kind: hd.seg.SegmentationTypeValues, syntax: str
                      ) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=[instances.multiframe] if positions is not None else instances.datasets,
        pixel_array=pixels,
        plane_positions=positions,
        segmentation_type=kind,
        transfer_syntax_uid=syntax,
        segment_descriptions=[_description(s) for s in segments],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER,
        software_versions=__version__,
        device_serial_number="0",
        content_label="MEDSAM",
        content_description="Segmentation made with medsam-gui",
        series_description="medsam-gui segmentation",
    )


def _check_written(path: Path, labels: np.ndarray, instances: SourceInstances,
                   segments: List[Segment], final: Path) -> None:
    try:
        back = hd.seg.segread(str(path))
    except Exception as exc:
        raise MedsamError(f"the written SEG cannot be read back ({exc})", final) from None
    uids = instances.sop_instance_uids
    referenced = {uid for _series, _sop_class, uid in back.get_source_image_uids()}
    if not referenced <= set(uids):
        raise MedsamError("the written SEG references instances outside the open series", final)
    got = _pixels_of(back, instances)
    want = segment_numbers(_frames(labels), segments)
    if got.shape != want.shape or not np.array_equal(got, want):
        n = int(np.count_nonzero(got != want)) if got.shape == want.shape else -1
        raise MedsamError(f"the written SEG failed verification ({n} voxels differ from the "
                          "label map)", final)


def _pixels_of(seg: hd.seg.Segmentation, instances: SourceInstances, **kw) -> np.ndarray:
    """The SEG's combined segment numbers for the volume's slices, (slice, row, col)."""
    options = dict(combine_segments=True, relabel=False, dtype=np.uint16)
    options.update(kw)
    if instances.enhanced:
        return seg.get_pixels_by_source_frame(
            source_sop_instance_uid=instances.sop_instance_uids[0],
            source_frame_numbers=[int(f) for f in instances.frame_numbers],  # type: ignore
            assert_missing_frames_are_empty=True, **options)
    return seg.get_pixels_by_source_instance(
        source_sop_instance_uids=instances.sop_instance_uids, **options)


def write_seg(labels: np.ndarray, segments: List[Segment], volume: Volume,
              path: Union[str, "os.PathLike[str]"], labelmap: bool = False,
              compression: Optional[str] = None) -> Export:
    """Write ``labels`` (volume grid) as a DICOM SEG referencing ``volume``'s source series,
    one segment per entry of ``segments`` (BINARY, or LABELMAP; ``compression`` one of
    ``COMPRESSION``); verified before it is renamed into place."""
    path = Path(os.fspath(path)).expanduser()
    check_target(path)
    instances = source_instances(volume)
    seg = build_seg(labels, segments, instances, labelmap=labelmap, compression=compression)
    try:
        with atomic_path(path) as tmp:
            seg.save_as(str(tmp))
            _check_written(tmp, labels, instances, segments, path)
    except OSError as exc:
        raise MedsamError(f"cannot write the SEG ({exc.strerror or exc})", path) from None
    size = path.stat().st_size / 1e6
    return Export(path, segments, [f"SEG {seg_variant(labelmap, compression)}, {size:.2f} MB"]
                  + list(instances.notes))


# ---- in ----------------------------------------------------------------------------------------
def dicom_object_kind(path: Path) -> str:
    """"SEG", "RTSTRUCT", another DICOM Modality, or "" when ``path`` is not DICOM."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "Modality"])
    except Exception:
        return ""
    sop = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None),
                                                    "MediaStorageSOPClassUID", "") or "")
    if sop in (SEG_SOP_CLASS, LABELMAP_SEG_SOP_CLASS):
        return "SEG"
    if sop == "1.2.840.10008.5.1.4.1.1.481.3":
        return "RTSTRUCT"
    return str(ds.get("Modality", "") or "?")


def read_seg(path: Union[str, "os.PathLike[str]"], volume: Volume) -> ImportedSegments:
    """Read a SEG made on ``volume``'s series as labels on the volume grid (see module doc)."""
    path = Path(os.fspath(path)).expanduser()
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise MedsamError(f"not a readable DICOM Segmentation ({type(exc).__name__}: {exc})",
                          path) from None
    instances = source_instances(volume)
    numbers = list(seg.segment_numbers)
    names, colors = {}, {}
    for n in numbers:
        desc = seg.get_segment_description(n)
        names[n] = str(desc.segment_label)
        lab = getattr(desc, "RecommendedDisplayCIELabValue", None)
        colors[n] = (tuple(int(c) for c in hd.color.CIELabColor.from_dicom_value(lab).to_rgb())
                     if lab is not None else None)
    if str(seg.get("FrameOfReferenceUID", "")) != instances.frame_of_reference_uid:
        raise MedsamError("this SEG was made on another scan: its frame of reference "
                          f"{seg.get('FrameOfReferenceUID', '?')} is not the open series' "
                          f"{instances.frame_of_reference_uid}", path)
    referenced = {uid for _s, _c, uid in seg.get_source_image_uids()}
    ours = instances.sop_instance_uids
    notes: List[str] = []
    overlap_note = "segments overlap; where they do, the higher segment number was kept"
    if referenced and referenced <= set(ours):
        try:
            frames = _pixels_of(seg, instances)
        except RuntimeError:  # overlapping segments; the failed call leaves ``seg`` unusable
            seg = hd.seg.segread(str(path))
            frames = _combine(_pixels_of(seg, instances, combine_segments=False,
                                         dtype=np.uint8), numbers)
            notes.append(overlap_note)
        array = np.ascontiguousarray(np.transpose(frames, (2, 1, 0)))
    else:
        if referenced:
            raise MedsamError("this SEG references instances that are not in the open series "
                              f"({len(referenced - set(ours))} of {len(referenced)} unknown): "
                              "it was made on another series", path)
        array = _by_geometry(seg, volume, numbers, notes, overlap_note, path)
    return ImportedSegments(array.astype(np.uint16), names, colors, notes)


def _combine(binary: np.ndarray, numbers: List[int]) -> np.ndarray:
    out = np.zeros(binary.shape[:-1], np.uint16)
    for i, n in enumerate(numbers):
        out[binary[..., i] > 0] = n
    return out


def _by_geometry(seg, volume: Volume, numbers: List[int], notes: List[str], overlap_note: str,
                 path: Path) -> np.ndarray:
    """A SEG without source references, in the same frame of reference: place by geometry."""
    from .resample import onto_volume_grid

    try:
        vol = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint16)
    except RuntimeError:  # overlapping segments; the failed call leaves ``seg`` unusable
        vol = hd.seg.segread(str(path)).get_volume(dtype=np.uint8)
        vol = vol.with_array(_combine(vol.array, numbers))
        notes.append(overlap_note)
    except Exception as exc:
        raise MedsamError(f"the SEG's frames do not form a regular volume ({exc})", path) from None
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(vol.affine, dtype=np.float64)
    placed = onto_volume_grid(np.asarray(vol.array), ras, volume, path)
    notes.extend(placed.notes)
    return placed.array
