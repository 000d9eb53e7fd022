"""One DICOM slice's stored pixels, decoded: from the offset discovery found (without parsing
the header again) or by an ordinary read, one decode per multi-frame or mosaic file, and the
reason in words when they cannot be used (missing, cut short, an undecodable transfer syntax,
the wrong size)."""

from __future__ import annotations

import os
import warnings as py_warnings
from typing import Optional

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from .dicom_mosaic import cut_tile
from .dicom_scan import DicomSlice

# what pydicom needs to decode pixels; reading only these skips big private headers
PIXEL_TAGS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
              "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
              "NumberOfFrames", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
              "PixelData", "FloatPixelData", "DoubleFloatPixelData"]


def pixel_bytes(s: DicomSlice) -> bytes:
    """The stored pixel data (compressed or not), to tell exact duplicates from conflicts."""
    if s.pixel_offset is not None:
        with open(s.path, "rb") as fp:
            fp.seek(int(s.pixel_offset))
            return fp.read()
    try:
        ds = pydicom.dcmread(s.path)
    except Exception:
        return b""
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            return bytes(ds[keyword].value)
    return b""


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


class Unusable(Exception):
    """This slice's pixels cannot be used; the message is the reason."""


def slice_pixels(s: DicomSlice, rows: int, cols: int) -> np.ndarray:
    """The slice's stored pixels; ``Unusable`` (with the reason) when there are none or the
    decoder fails."""
    if s.pixel_offset is not None:
        try:
            with py_warnings.catch_warnings():  # a damaged file is named below, not warned
                py_warnings.simplefilter("ignore")
                px = _pixels_at_offset(s)
            if px.shape == (rows, cols) or rows < 0:
                return px
        except Exception:  # anything unusual: take the ordinary full read below
            pass
    try:
        with py_warnings.catch_warnings():  # e.g. "End of file reached before delimiter"
            py_warnings.simplefilter("ignore")
            ds = pydicom.dcmread(s.path, specific_tags=PIXEL_TAGS)
    except Exception as exc:
        raise Unusable(f"cannot read DICOM file ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if s.pixel_offset is not None:  # discovery saw the element start: the file is cut short
            size = os.path.getsize(s.path)
            raise Unusable(f"damaged pixel data: the file ends at byte {size}, inside its "
                            "pixel data (cut short?)")
        raise Unusable("no pixel data")
    try:
        px = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f"{ts.name} ({ts})" if ts is not None and hasattr(ts, "name") else "?"
        text = " ".join(str(exc).split())[:200]
        raise Unusable(f"pixel data cannot be decoded, transfer syntax {what}: "
                        f"{type(exc).__name__}: {text}") from None
    if px.shape != (rows, cols) and rows >= 0:
        raise Unusable(f"pixel array {px.shape} does not match Rows×Columns {rows}×{cols}")
    return px


class FramePixels:
    """Decoded pixels of the last multi-frame or mosaic file read: its frames are consecutive
    in a volume, so one file is decoded once and only one is held."""

    def __init__(self) -> None:
        self.path: Optional[str] = None
        self.array: Optional[np.ndarray] = None
        self.error: Optional[str] = None

    def get(self, s: DicomSlice, rows: int, cols: int) -> np.ndarray:
        if s.path != self.path:
            self.path, self.array, self.error = s.path, None, None
            try:
                self.array = slice_pixels(DicomSlice(s.path, s.header, s.position), -1, -1)
            except Unusable as exc:
                self.error = str(exc)
        if self.error is not None:
            raise Unusable(self.error)
        array = self.array
        assert array is not None and s.frame is not None
        if s.tiles:
            px = cut_tile(array, s.frame, s.tiles)
        else:
            if array.ndim == 2:
                array = array[None]
            if s.frame >= array.shape[0]:
                raise Unusable(f"frame {s.frame + 1} is missing from the pixel data "
                                f"({array.shape[0]} frames)")
            px = array[s.frame]
        if px.shape != (rows, cols):
            raise Unusable(f"frame pixels {px.shape} do not match Rows×Columns {rows}×{cols}")
        return px
