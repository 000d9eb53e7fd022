"""What one DICOM file's header says: the tags discovery reads (and only those), whether the
file is a slice that can be stacked into a volume, and, when it is not, why, in words that name
the tag or the vendor convention at fault (United Imaging's private positions included)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .dicom_mosaic import MOSAIC_TAGS

NON_IMAGE_MODALITIES = {"RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "SEG",
                        "RWV", "PLAN", "FID", "RAW"}
NON_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.481.5",
                          "1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.",
                          "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.1.3.10")
HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber",
               "InstanceNumber", "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient",
               "ImagePositionPatient", "NumberOfFrames", "SamplesPerPixel", "RescaleSlope",
               "RescaleIntercept", "WindowCenter", "WindowWidth", "PhotometricInterpretation",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "PlanarConfiguration", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
               "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
               "RealWorldValueMappingSequence", "StudyInstanceUID", "FrameOfReferenceUID",
               "AcquisitionNumber", "TemporalPositionIdentifier", "StackID"] + MOSAIC_TAGS + [
               pydicom.tag.Tag(0x0019, 0x109C), pydicom.tag.Tag(0x0019, 0x10B3)]  # GE pepolar
# United Imaging's "Image Private Header" (group 0065, private blocks 0x10..0x12): the number of
# images in a grid (xx50) and the MRVFrameSequence (xx51) whose items hold ImagePositionPatient
UIH_CREATOR = "Image Private Header"
UIH_BLOCKS = (0x10, 0x11, 0x12)
HEADER_TAGS += [pydicom.tag.Tag(0x0065, b) for b in UIH_BLOCKS] + [
    pydicom.tag.Tag(0x0065, (b << 8) | e) for b in UIH_BLOCKS for e in (0x50, 0x51)]
# (7FE0,0010) Pixel Data, (7FE0,0008/0009) Float/Double Float Pixel Data, as bytes on disk
_PIXEL_TAG_BYTES = {b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00",
                    b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09"}


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


class DamagedHeader(Exception):
    """A DICOM file whose header cannot be trusted (cut short, unparsable)."""


def read_header(path: Path) -> Tuple[Dataset, Optional[bool], Optional[int]]:
    """The header up to the pixel data, whether pixel data follows (None: cannot tell, e.g.
    deflated files) and the file offset of the pixel data element (so the pixel pass need not
    parse the header again).

    pydicom reads a file cut short inside its header without complaint (it seeks past the end
    over the elements it skips); that raises ``DamagedHeader`` here, so the file is named as
    damaged rather than as "no pixel data".
    """
    with open(path, "rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        size = os.fstat(fp.fileno()).st_size
        offset = fp.tell()
        if offset > size or _short_value(ds):
            raise DamagedHeader(f"damaged DICOM: the file ends at byte {size}, inside its "
                                "header (cut short?)")
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if ts is None or ts == pydicom.uid.DeflatedExplicitVRLittleEndian:
            return ds, None, None
        present = fp.read(4) in _PIXEL_TAG_BYTES
    return ds, present, offset if present else None


def _short_value(ds: Dataset) -> bool:
    """True when an element read holds fewer bytes than its header promised (end of file)."""
    for elem in ds._dict.values():
        length, value = getattr(elem, "length", None), getattr(elem, "value", None)
        if isinstance(value, bytes) and length is not None and length != 0xFFFFFFFF \
                and len(value) < length:
            return True
    return False


def no_pixels_reason(ds: Dataset, path: Path) -> str:
    """"no pixel data", with a hint when the file is too small to have held them."""
    try:
        size = os.path.getsize(path)
        need = int(ds.Rows) * int(ds.Columns) * int(ds.get("BitsAllocated", 8) or 8) // 8
    except Exception:
        return "no pixel data"
    if size < need:
        return f"no pixel data (the file ends after {size} bytes: cut short?)"
    return "no pixel data"


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why a file that raised while its header was read is left out."""
    if isinstance(exc, DamagedHeader):
        return str(exc)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        return "NIfTI file(s): open the file itself"
    try:
        with open(path, "rb") as fp:
            magic = fp.read(132)[128:]
            if fp.tell() == 0:
                return "empty file (0 bytes)"
    except OSError as err:
        return f"cannot be read ({err.strerror or type(err).__name__})"
    if magic == b"DICM":
        return f"damaged DICOM header ({type(exc).__name__}: {exc})"
    return "not DICOM"


def classify(ds: Dataset) -> Optional[str]:
    """None for a usable slice of a volume, else the reason to skip it."""
    try:
        return _classify_unsafe(ds)
    except Exception:  # malformed values (e.g. text in a number field)
        return "unreadable header values"


def _numbers(ds: Dataset, tag: str, n: int) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """``n`` numbers from a DS element, or the reason they cannot be used (naming the tag)."""
    try:
        value = ds.get(tag)
    except Exception:
        return None, f"unreadable {tag}"
    if value is None or value == "":
        return None, f"no usable {tag}"
    items = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) \
        else [value]
    try:
        numbers = np.array([float(v) for v in items])
    except (TypeError, ValueError):
        text = "\\".join(str(v) for v in items).strip()
        return None, f"{tag} is not {n} numbers ({text[:40]!r})"
    if len(numbers) != n:
        return None, f"no usable {tag} ({len(items)} values, {n} expected)"
    return numbers, None


def _uih_element(ds: Dataset, element: int):
    """United Imaging's private element ``element`` (0x50, 0x51) of its Image Private Header
    block, or None."""
    for block in UIH_BLOCKS:
        creator = ds.get((0x0065, block))
        if creator is not None and UIH_CREATOR in str(creator.value):
            return ds.get((0x0065, (block << 8) | element))
    return None


def _uih_grid_count(ds: Dataset) -> int:
    elem = _uih_element(ds, 0x50)
    try:
        return int(round(float(elem.value))) if elem is not None and elem.value else 0
    except (TypeError, ValueError):
        return 0


def vendor_position(ds: Dataset) -> Optional[str]:
    """A United Imaging slice without a top-level ImagePositionPatient gets the position its
    private MRVFrameSequence (0065,xx51) holds, as dcm2niix reads it (dcm2niix takes the first
    ImagePositionPatient anywhere in the file); returns the note to show, else None. A grid
    image (several slices tiled in one image, 0065,xx50 > 1) is left alone: ``_vendor_hint``
    refuses it by name."""
    if "ImagePositionPatient" in ds and ds.ImagePositionPatient not in (None, ""):
        return None
    if _uih_grid_count(ds) > 1:
        return None
    seq = _uih_element(ds, 0x51)
    try:
        items = list(seq.value) if seq is not None else []
    except TypeError:
        return None
    for item in items:
        position = item.get("ImagePositionPatient")
        if position is not None and len(position) == 3:
            ds.ImagePositionPatient = list(position)
            return ("United Imaging images without ImagePositionPatient: each slice's position "
                    "was read from its private MRVFrameSequence (0065,xx51), as dcm2niix does")
    return None


def _vendor_hint(ds: Dataset, tag: str) -> str:
    """Why a vendor's image may lack a classic position: said with the refusal."""
    maker = str(ds.get("Manufacturer", "") or "").upper()
    if tag != "ImagePositionPatient":
        return ""
    n = _uih_grid_count(ds)
    if n > 1:
        return (f" (a United Imaging grid image: {n} slices tiled in one image, their positions "
                "in its private MRVFrameSequence; this grid storage is not supported: export "
                "the series from the scanner as one image per slice, or convert it with "
                "dcm2niix)")
    if "UIH" in maker or "UNITED IMAGING" in maker:
        return (" (a United Imaging image whose position is neither in ImagePositionPatient "
                "nor in its private MRVFrameSequence (0065,xx51), where dcm2niix also looks: "
                "its place in the volume is unknown)")
    return ""


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
        return ("multi-frame image without per-frame geometry (no functional groups): "
                "not supported")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return "colour image (not supported)"
    values = {}
    for tag, n in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6),
                   ("PixelSpacing", 2)):
        values[tag], reason = _numbers(ds, tag, n)
        if reason:
            return reason + _vendor_hint(ds, tag)
    iop, spacing, position = (values["ImageOrientationPatient"], values["PixelSpacing"],
                              values["ImagePositionPatient"])
    if not (np.all(np.isfinite(spacing)) and spacing.min() > 0 and np.all(np.isfinite(position))):
        return "invalid PixelSpacing or ImagePositionPatient"
    row, col = iop[:3], iop[3:]
    if not np.all(np.isfinite(iop)) or abs(np.linalg.norm(row) - 1) > 0.01 or abs(
            np.linalg.norm(col) - 1) > 0.01 or abs(float(row @ col)) > 0.01:
        return "invalid ImageOrientationPatient"
    return None
