"""Label maps out: a NIfTI on the exact grid of the source image, written atomically and verified.

The label array is indexed like ``volume.data`` (the source voxel order), so it is written as
it is, with the source affine in both sform and qform. Codes come from the source NIfTI header;
a DICOM source gets 1/1 ("scanner"). A fresh header is built, so a float source's
scl_slope/scl_inter can never leak into the labels.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Tuple, Union

import nibabel as nib
import numpy as np

from ..errors import MedsamError
from ..volume import Volume
from .atomic import atomic_path, check_target

AFFINE_TOLERANCE_MM = 1e-3  # qform is stored as float32 quaternions: allow their rounding
NIFTI_INTENT_LABEL = 1002


TILE = 16  # voxel columns per side of a tile of the Fortran-order conversion


def fortran_labels(labels: np.ndarray, dtype) -> np.ndarray:
    """``labels`` as ``dtype`` in Fortran order, the order NIfTI and NRRD store (no copy when it
    is so already). A C-ordered map (512×512×800) is otherwise transposed twice by the export,
    slice by slice as nibabel writes it and again when the read-back is compared; copied here
    once, in tiles of TILE×TILE voxel columns, ~6× faster than numpy's whole-array copy."""
    if labels.flags.f_contiguous or labels.ndim != 3:
        return np.asfortranarray(labels.astype(dtype, copy=False))
    out = np.empty(labels.shape, dtype, order="F")
    for i in range(0, labels.shape[0], TILE):
        for j in range(0, labels.shape[1], TILE):
            out[i:i + TILE, j:j + TILE] = labels[i:i + TILE, j:j + TILE]
    return out


def label_array(labels: np.ndarray, volume: Volume, path: Path) -> np.ndarray:
    """``labels`` checked against the volume's grid, as uint8 (labels < 256) or uint16, in
    Fortran order."""
    labels = np.asanyarray(labels)
    if labels.shape != volume.shape:
        raise MedsamError(
            f"label map shape {labels.shape} does not match the volume's {volume.shape}", path
        )
    if labels.dtype == bool:
        return fortran_labels(labels, np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.array_equal(
            labels, np.round(labels)
        ):
            raise MedsamError(f"label values must be whole numbers (got {labels.dtype})", path)
    lo = labels.min() if labels.size else 0
    hi = labels.max() if labels.size else 0
    if lo < 0 or hi > 65535:
        raise MedsamError(f"label values must be within 0..65535 (found {lo}..{hi})", path)
    return fortran_labels(labels, np.uint8 if hi < 256 else np.uint16)


def _codes(volume: Volume) -> Tuple[int, int, object]:
    """(sform_code, qform_code, xyzt units) for the export."""
    hdr = volume.source.nifti_header
    if volume.source.kind == "nifti" and hdr is not None:
        return int(hdr["sform_code"]), int(hdr["qform_code"]), hdr.get_xyzt_units()[0]
    return 1, 1, "mm"


def _qform_representable(affine: np.ndarray) -> bool:
    """qform holds rotation + zooms only; a sheared affine (gantry tilt) does not fit."""
    m = affine[:3, :3]
    zooms = np.sqrt((m**2).sum(axis=0))
    r = m / zooms
    return bool(np.allclose(r.T @ r, np.eye(3), atol=1e-6))


def build_label_image(labels: np.ndarray, volume: Volume, path: Path) -> nib.Nifti1Image:
    arr = label_array(labels, volume, path)
    affine = volume.affine
    sform_code, qform_code, units = _codes(volume)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(arr.dtype)
    img = nib.Nifti1Image(arr, affine, header=hdr)
    img.set_sform(affine, code=sform_code)
    if _qform_representable(affine):
        img.set_qform(affine, code=qform_code)
    else:
        img.set_qform(affine, code=0)  # closest rigid; readers use the exact sform
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_xyzt_units(xyz=units if units != "unknown" else "mm")
    img.header.set_intent(NIFTI_INTENT_LABEL)
    img.header["descrip"] = b"medsam-gui label map"
    img.header["cal_min"], img.header["cal_max"] = 0, float(arr.max()) if arr.size else 0
    return img


VERIFY_CHUNK = 8 << 20  # bytes of voxels compared at a time when a written file is re-read


def _same_voxels(f, offset: int, want_arr: np.ndarray) -> bool:
    """Do the bytes of ``f`` from ``offset`` to its end equal ``want_arr`` in Fortran order?
    Read a chunk at a time (a gzip stream is decompressed to its end, so its CRC is checked)."""
    want = memoryview(np.asfortranarray(want_arr).T).cast("B") if want_arr.size else b""
    f.seek(offset)
    pos = 0
    while True:
        chunk = f.read(VERIFY_CHUNK)
        if not chunk:
            return pos == len(want)
        if want[pos:pos + len(chunk)] != chunk:
            return False
        pos += len(chunk)


def _verify(raw: Union[bytes, Path], img: nib.Nifti1Image, path: Path) -> None:
    """Re-read what was written (the bytes, or the file, read a chunk at a time so a big label
    map costs no second copy) and compare shape, affines and voxels."""
    want_arr = np.asanyarray(img.dataobj)
    try:
        if isinstance(raw, Path):
            with open(raw, "rb") as probe:
                gz = probe.read(2) == b"\x1f\x8b"
            with (gzip.open(raw, "rb") if gz else open(raw, "rb")) as f:
                hdr = nib.Nifti1Header.from_fileobj(f)
                same = (hdr.get_data_dtype() == want_arr.dtype
                        and tuple(hdr.get_data_shape()) == want_arr.shape
                        and _same_voxels(f, int(hdr.get_data_offset()), want_arr))
            shape = tuple(hdr.get_data_shape())
        else:
            back = nib.Nifti1Image.from_bytes(raw)
            data = np.asanyarray(back.dataobj)
            shape, hdr = back.shape, back.header
            same = data.dtype == want_arr.dtype and np.array_equal(data, want_arr)
    except Exception as exc:
        raise MedsamError(f"written label map cannot be read back ({exc})", path) from None
    problems = []
    if shape != want_arr.shape:
        problems.append(f"shape {shape} != {want_arr.shape}")
    elif not same:
        problems.append("voxels differ")
    want = img.header.get_sform()
    if not np.allclose(hdr.get_sform(), want, atol=AFFINE_TOLERANCE_MM):
        problems.append("sform differs")
    if int(img.header["qform_code"]) > 0 or _qform_representable(want):
        if not np.allclose(hdr.get_qform(), want, atol=AFFINE_TOLERANCE_MM):
            problems.append("qform differs")
    if problems:
        raise MedsamError("label map failed verification: " + ", ".join(problems), path)


def save_label_map(
    labels: np.ndarray, volume: Volume, path: Union[str, "os.PathLike[str]"]
) -> Path:
    """Write ``labels`` (on ``volume``'s grid) as NIfTI at ``path`` (.nii or .nii.gz); a
    ``.nrrd`` / ``.mha`` name writes NRRD / MetaImage (``itk_formats.save_itk_label_map``).

    uint8 when every label is < 256, else uint16. Written to a temporary file, read back
    from disk and verified, then renamed into place; on any failure nothing is left behind and
    an existing file at ``path`` is untouched.
    """
    path = Path(os.fspath(path)).expanduser()
    name = path.name.lower()
    if name.endswith((".nrrd", ".mha")) and not name.endswith(".seg.nrrd"):
        from .itk_formats import save_itk_label_map  # NRRD / MetaImage, verified the same way

        return save_itk_label_map(labels, volume, path)
    if not name.endswith((".nii", ".nii.gz")):
        raise MedsamError("label maps are saved as .nii or .nii.gz (NIfTI), .nrrd (NRRD) or "
                          ".mha (MetaImage)", path)
    check_target(path, "a file name ending in .nii.gz")
    img = build_label_image(labels, volume, path)
    compress = name.endswith(".gz")
    try:
        with atomic_path(path) as tmp:
            # streamed to the file slab by slab, then re-read a chunk at a time: a label map
            # of a 1,000-slice CT is never held as bytes beside its array
            with open(tmp, "wb") as fh:
                if compress:
                    with gzip.GzipFile("", "wb", 1, fh, mtime=0) as gz:
                        img.to_stream(gz)
                else:
                    img.to_stream(fh)
                fh.flush()
                os.fsync(fh.fileno())
            _verify(Path(tmp), img, path)
    except OSError as exc:
        raise MedsamError(f"cannot write the label map ({exc.strerror or exc})", path) from None
    return path
