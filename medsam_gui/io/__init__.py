"""Volumes in (NIfTI, DICOM) and label maps out, on the source grid.

``load_volume`` decides by what the path is: a ``.nii``/``.nii.gz`` file is NIfTI; a folder
or any other file is treated as DICOM (a single file opens its whole series from its folder).
``volume_index`` picks one volume of a 4D NIfTI or of a DICOM series that repeats its slice
positions (several volumes); the default is the first, with a note in ``source.warnings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

from ..errors import MedsamError
from ..volume import Volume
from .dicom import SeriesInfo, list_dicom_series, load_dicom
from .labels import save_label_map
from .nifti import is_nifti_path, load_nifti

PathArg = Union[str, "os.PathLike[str]"]

__all__ = ["load_volume", "list_series", "save_label_map", "SeriesInfo", "MedsamError"]


def _existing(path: PathArg) -> Path:
    if path is None or str(path) == "":
        raise MedsamError("no file or folder given")
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise MedsamError("no such file or folder", p)
    return p


def load_volume(
    path: PathArg, series_uid: Optional[str] = None, volume_index: Optional[int] = None
) -> Volume:
    """Open a NIfTI file, a DICOM folder or one DICOM file of a series as a ``Volume``."""
    p = _existing(path)
    if p.is_dir():
        if is_nifti_path(p):
            raise MedsamError("this is a folder, not a NIfTI file", p)
        return load_dicom(p, series_uid=series_uid, volume_index=volume_index)
    if is_nifti_path(p):
        return load_nifti(p, volume_index=volume_index)
    return load_dicom(p, series_uid=series_uid, volume_index=volume_index)


def list_series(path: PathArg) -> List["SeriesInfo"]:
    """The DICOM series under ``path`` (largest first); ``[]`` for a NIfTI file."""
    p = _existing(path)
    if p.is_file() and is_nifti_path(p):
        return []
    return list_dicom_series(p)

