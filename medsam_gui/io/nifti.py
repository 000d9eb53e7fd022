"""NIfTI volumes in: nibabel header checks first, then the voxels exactly as stored.

Voxels are returned as ``np.asanyarray(img.dataobj)``: the on-disk dtype when the header has no
scl_slope/scl_inter, the scaled values (as nibabel's ``get_fdata`` would give them) when it
has. Nothing is resampled or reoriented; the affine is nibabel's (sform, else qform, else the
pixdim fallback).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

import nibabel as nib
import numpy as np

from ..errors import MedsamError
from ..volume import SourceInfo, Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Refuse headers whose voxel array could not be held in memory (checked before allocating).
MAX_VOXEL_BYTES = 16 << 30


def is_nifti_path(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def _memory_limit() -> int:
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        physical = MAX_VOXEL_BYTES
    return int(min(MAX_VOXEL_BYTES, physical))


def check_array_size(shape: Tuple[int, ...], itemsize: int, path: Path) -> None:
    """Refuse absurd dimensions before anything is allocated."""
    n = 1
    for s in shape:
        n *= int(s)
    limit = _memory_limit()
    if n * itemsize > limit:
        dims = "×".join(str(int(s)) for s in shape)
        raise MedsamError(
            f"header dimensions {dims} need {n * itemsize / 2**30:.1f} GiB, more than this "
            f"machine can hold ({limit / 2**30:.1f} GiB); the header is corrupt or the image "
            "is too large",
            path,
        )


def ensure_finite(data: np.ndarray, path: Path) -> None:
    """Refuse volumes with NaN or infinite voxels (they break display and the model input)."""
    if not np.issubdtype(data.dtype, np.floating):
        return
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise MedsamError(
            f"{bad} of {data.size} voxels are not finite (NaN or infinity); "
            "medsam-gui does not open volumes with non-finite values",
            path,
        )


def guess_modality(data: np.ndarray) -> str:
    """Guess "CT" or "MR" for a NIfTI volume, which has no modality field.

    CT is stored in Hounsfield units: integer values, air at about -1000 and nearly everything
    between air and dense bone/contrast. So: integer-valued data (checked on a sample), minimum
    <= -500, and at least 60% of voxels within -1100..3100 (60%, not more, because scanners pad
    outside the field of view with -2048 or -3024). A CT stored without its rescale (raw
    unsigned values, HU + 1024) is recognised by its two peaks: air (HU + 1024 below 224) and
    soft tissue (874..1324) hold >= 85% of the voxels together with bone, soft tissue >= 25%,
    and the band between lung and fat (574..874) < 5% (on the CT in ../shared/data: 95%/32%/1%
    and 94%/61%/3%; on raw MR: soft tissue <= 3%). Anything else (non-negative MR, z-scored or
    8-bit templates, phase images spread over -4096..4096) is "MR". Model ▸ Modality overrides.
    """
    if data.size == 0:
        return "MR"
    flat = np.ravel(data, order="K")
    sample = flat[:: max(1, flat.size // 200_000)]
    if np.issubdtype(sample.dtype, np.floating) and not np.array_equal(sample, np.round(sample)):
        return "MR"
    if float(data.min()) > -500:
        return "CT" if _looks_like_unrescaled_ct(sample) else "MR"
    inside = np.count_nonzero((sample >= -1100) & (sample <= 3100))
    return "CT" if inside >= 0.6 * sample.size else "MR"


def _looks_like_unrescaled_ct(sample: np.ndarray) -> bool:
    s = sample.astype(np.float64)
    n = float(s.size)
    air = np.count_nonzero((s >= -200) & (s < 224)) / n
    gap = np.count_nonzero((s >= 574) & (s < 874)) / n
    soft = np.count_nonzero((s >= 874) & (s < 1324)) / n
    bone = np.count_nonzero((s >= 1324) & (s < 4096)) / n
    return soft >= 0.25 and gap < 0.05 and air + soft + bone >= 0.85


def _gzip_hint(path: Path) -> str:
    """Name the common mix-up of a gzip file called .nii, or a plain file called .nii.gz."""
    with open(path, "rb") as f:
        is_gz = f.read(2) == b"\x1f\x8b"
    named_gz = path.name.lower().endswith(".gz")
    if is_gz and not named_gz:
        return "; the file is gzip-compressed: rename it to .nii.gz"
    if named_gz and not is_gz:
        return "; the file is not gzip-compressed: rename it to .nii"
    return ""


def _open(path: Path) -> nib.Nifti1Image:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if size == 0:
        raise MedsamError("the file is empty (0 bytes)", path)
    try:
        # no memory map for .nii: the volume must not change if the file does; (.gz cannot
        # be mapped anyway, and nibabel's default path reads it faster)
        gz = path.name.lower().endswith(".gz")
        img = nib.load(str(path)) if gz else nib.load(str(path), mmap=False)
    except MemoryError:
        raise MedsamError("the header asks for more memory than is available", path) from None
    except nib.filebasedimages.ImageFileError:
        raise MedsamError("not a readable NIfTI file (no valid NIfTI header)" + _gzip_hint(path),
                          path) from None
    except Exception as exc:  # nibabel raises many types for garbage input
        raise MedsamError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})"
                          + _gzip_hint(path), path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MedsamError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
    return img


def _spatial_shape(path: Path, shape: Tuple[int, ...]) -> Tuple[Tuple[int, int, int], int]:
    """(3D shape, number of volumes) after dropping trailing singleton dimensions."""
    dims = list(int(s) for s in shape)
    if any(s <= 0 for s in dims):
        raise MedsamError(f"the header has a zero-size dimension (shape {tuple(dims)})", path)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3 or min(dims[:3]) == 1:
        raise MedsamError(
            f"a 2D image (shape {tuple(shape)}); medsam-gui opens 3D volumes", path
        )
    if len(dims) > 4:
        raise MedsamError(f"a {len(dims)}D image (shape {tuple(shape)}) is not supported", path)
    return (dims[0], dims[1], dims[2]), (dims[3] if len(dims) == 4 else 1)


def _check_truncation(path: Path, img: nib.Nifti1Image, shape: Tuple[int, ...]) -> None:
    """For an uncompressed file, compare the bytes on disk with what the header promises."""
    if path.name.lower().endswith(".gz"):
        return
    hdr = img.header
    need = int(hdr.get_data_offset()) + int(np.prod(shape)) * hdr.get_data_dtype().itemsize
    have = path.stat().st_size
    if have < need:
        raise MedsamError(
            f"the file is truncated: the header promises {need} bytes, the file has {have}", path
        )


def _read_voxels(path: Path, img: nib.Nifti1Image, n_volumes: int, index: int) -> np.ndarray:
    try:
        if n_volumes > 1:
            data = np.asanyarray(img.dataobj[..., index])
        else:
            data = np.asanyarray(img.dataobj)
    except MemoryError:
        raise MedsamError("not enough memory to read the voxels", path) from None
    except Exception as exc:  # truncated gzip, zlib errors, short reads
        raise MedsamError(
            f"the voxel data is truncated or corrupt ({type(exc).__name__}: {exc})", path
        ) from None
    data = np.asarray(data)
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))  # same values, native byte order
    return data


def load_nifti(path: Path, volume_index: Optional[int] = None) -> Volume:
    """Load a 3D NIfTI file, or one volume of a 4D file (``volume_index``, default the first)."""
    img = _open(path)
    hdr = img.header
    try:
        full_shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = hdr.get_data_dtype()
    except Exception as exc:
        raise MedsamError(f"corrupt NIfTI header ({exc})", path) from None
    shape3, n_volumes = _spatial_shape(path, full_shape)
    if dtype.kind not in "biuf" or dtype.names:
        raise MedsamError(f"voxel type {dtype} (e.g. RGB or complex) is not supported", path)
    # nibabel moves scl_slope/inter from the header into the proxy on load
    scaled = getattr(img.dataobj, "slope", 1.0) != 1.0 or getattr(img.dataobj, "inter", 0.0) != 0.0
    itemsize = 8 if scaled else max(1, dtype.itemsize)
    check_array_size(shape3, itemsize, path)
    _check_truncation(path, img, full_shape)

    warnings = []
    index = 0
    if n_volumes > 1:
        if volume_index is None:
            warnings.append(
                f"4D file with {n_volumes} volumes: showing volume 0 (the first); "
                "choose another with volume_index"
            )
        else:
            index = int(volume_index)
            if not 0 <= index < n_volumes:
                raise MedsamError(
                    f"volume index {index} is outside 0..{n_volumes - 1} of this 4D file", path
                )
            warnings.append(f"4D file with {n_volumes} volumes: showing volume {index}")
    elif volume_index not in (None, 0):
        raise MedsamError(f"volume index {volume_index} requested but the file is 3D", path)

    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedsamError("the header's affine (sform/qform) is not a valid transform", path)

    if int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 0:
        warnings.append("the header has no sform or qform: patient orientation is unknown, "
                        "so view labels (R/L, A/P, S/I) may be wrong")
    data = _read_voxels(path, img, n_volumes, index)
    data = data.reshape(shape3, order="F") if data.shape != shape3 else data
    ensure_finite(data, path)

    descrip = hdr["descrip"].tobytes().split(b"\0", 1)[0].decode("latin-1").strip()
    source = SourceInfo(
        path=str(path),
        kind="nifti",
        description=descrip or path.name,
        warnings=warnings,
        nifti_header=hdr.copy(),
        extra={"volume_index": index, "n_volumes": n_volumes},
    )
    return Volume(data, affine, modality=guess_modality(data), source=source)
