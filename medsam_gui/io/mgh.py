"""FreeSurfer MGH / MGZ volumes in, through nibabel's header and the NIfTI path's reader.

nibabel parses the header (dimensions, type, vox2ras); the voxels are then read by the same
code as a ``.nii``/``.nii.gz`` (``nifti._read_voxels``): sizes are checked before a buffer
exists, and an ``.mgz`` is decompressed to its end so gzip's CRC is verified. The affine is
the header's vox2ras (RAS+, like NIfTI's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import nibabel as nib
import numpy as np

from ..errors import MedsamError
from ..volume import SourceInfo, Volume
from .nifti import (_check_truncation, _gzip_hint, _read_voxels, _regular_size, _spatial_shape,
                    check_array_size, choose_volume, guess_modality, non_finite_note)

MGH_SUFFIXES = (".mgh", ".mgz", ".mgh.gz")


def is_mgh_path(path: Path) -> bool:
    return path.name.lower().endswith(MGH_SUFFIXES)


def open_mgh(path: Path) -> nib.MGHImage:
    """The header through nibabel (no voxels read)."""
    _regular_size(path)
    try:
        img = nib.MGHImage.from_filename(str(path))
    except MemoryError:
        raise MedsamError("the header asks for more memory than is available", path) from None
    except Exception as exc:  # nibabel raises many types for garbage input
        raise MedsamError(f"not a readable MGH/MGZ file ({type(exc).__name__}: {exc})"
                          + _gzip_hint(path).replace(".nii", ".mgh").replace(".mgh.gz", ".mgz"),
                          path) from None
    return img


def load_mgh(path: Path, volume_index: Optional[int] = None) -> Volume:
    """A 3D MGH/MGZ volume, or one frame of a 4D one (``volume_index``, default the first)."""
    img = open_mgh(path)
    hdr = img.header
    try:
        full_shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = hdr.get_data_dtype()
    except Exception as exc:
        raise MedsamError(f"corrupt MGH header ({exc})", path) from None
    shape3, n_volumes = _spatial_shape(path, full_shape)
    check_array_size(shape3, max(1, dtype.itemsize), path)
    _check_truncation(path, img, full_shape)
    index, warnings = choose_volume(n_volumes, volume_index, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedsamError("the header's vox2ras is not a valid transform", path)
    data = _read_voxels(path, img, n_volumes, index, warnings)
    note = non_finite_note(data, path, f" (frame {index} of this file with {n_volumes} "
                           "frames)" if n_volumes > 1 else "")
    if note:
        warnings.append(note)
    source = SourceInfo(path=str(path), kind="mgh", description=path.name, warnings=warnings,
                        extra={"volume_index": index, "n_volumes": n_volumes})
    return Volume(data, affine, modality=guess_modality(data), source=source)
