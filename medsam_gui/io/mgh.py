"""FreeSurfer MGH / MGZ volumes in, through nibabel's header and the NIfTI path's reader.

nibabel's ``MGHHeader`` parses the header (dimensions, type, vox2ras); the voxels are then read by the same
code as a ``.nii``/``.nii.gz`` (``nifti._read_voxels``, ``verified_read``): sizes are checked before a buffer
exists, and an ``.mgz`` is decompressed to its end so gzip's CRC is verified. The affine is
the header's vox2ras (RAS+, like NIfTI's).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
from nibabel.freesurfer.mghformat import MGHHeader

from ..errors import MedsamError
from ..volume import SourceInfo, Volume
from .limits import check_array_size
from .nifti import (_check_truncation, _gzip_hint, _raw_header_bytes, _read_voxels,
                    _regular_size, _spatial_shape, choose_volume, header_shape_dtype)
from .voxel_facts import guess_modality, non_finite_note

MGH_SUFFIXES = (".mgh", ".mgz")
MGH_HEADER_BYTES = 284
# the scan parameters and tags after the voxels: gzip's length may exceed the voxels' end by this
# much and still size the buffer at once (larger: the stream is verified before the buffer)
MGH_FOOTER_SLACK = 1 << 20


def is_mgh_path(path: Path) -> bool:
    return path.name.lower().endswith(MGH_SUFFIXES)


def open_mgh(path: Path) -> SimpleNamespace:
    """The header through nibabel's ``MGHHeader`` (no voxels read), shaped like a nibabel image
    for the NIfTI reader: ``header``, ``affine``, ``dataobj.offset/slope/inter``, ``file_map``.

    Only the 284 header bytes are decompressed: ``nib.load`` would also seek to the footer
    after the voxels, inflating a ``.mgz`` once more (a 2.5x slower open)."""
    _regular_size(path)
    raw, _broken = _raw_header_bytes(path)
    try:
        if len(raw) < MGH_HEADER_BYTES:
            raise ValueError(f"the file ends inside the {MGH_HEADER_BYTES}-byte header "
                             f"({len(raw)} bytes)")
        hdr = MGHHeader(binaryblock=raw[:MGH_HEADER_BYTES], check=True)
        affine = hdr.get_affine()
    except Exception as exc:  # nibabel raises many types for garbage input
        hint = _gzip_hint(path).replace(".nii.gz", ".mgz").replace(".nii", ".mgh")
        raise MedsamError(f"not a readable MGH/MGZ file ({exc}){hint}", path) from None
    proxy = SimpleNamespace(offset=int(hdr.get_data_offset()), slope=1.0, inter=0.0)
    return SimpleNamespace(header=hdr, affine=affine, dataobj=proxy, file_map={})


def load_mgh(path: Path, volume_index: Optional[int] = None) -> Volume:
    """A 3D MGH/MGZ volume, or one frame of a 4D one (``volume_index``, default the first)."""
    img = open_mgh(path)
    hdr = img.header
    full_shape, dtype = header_shape_dtype(hdr, path, "MGH")
    shape3, n_volumes = _spatial_shape(path, full_shape)
    check_array_size(shape3, max(1, dtype.itemsize), path)
    _check_truncation(path, img, full_shape)
    index, warnings = choose_volume(n_volumes, volume_index, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedsamError("the header's vox2ras is not a valid transform", path)
    data = _read_voxels(path, img, n_volumes, index, warnings, slack=MGH_FOOTER_SLACK)
    note = non_finite_note(data, path, f" (frame {index} of this file with {n_volumes} "
                           "frames)" if n_volumes > 1 else "")
    if note:
        warnings.append(note)
    source = SourceInfo(path=str(path), kind="mgh", description=path.name, warnings=warnings,
                        extra={"volume_index": index, "n_volumes": n_volumes})
    return Volume(data, affine, modality=guess_modality(data), source=source)
