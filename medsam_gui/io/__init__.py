"""Volumes in (NIfTI, NRRD, MetaImage, MGH/MGZ, DICOM) and label maps out, on the source grid.

``load_volume`` decides by what the path is: ``.nii``/``.nii.gz`` and NIfTI/Analyze pairs
(``.hdr``/``.img``) are NIfTI; ``.nrrd``/``.nhdr`` NRRD and ``.mha``/``.mhd`` MetaImage
(``itk_formats``); ``.mgh``/``.mgz`` FreeSurfer (``mgh``); a folder or any other file is treated
as DICOM (a single file opens its whole series from its folder).
A device, FIFO or socket is refused before it is opened, and a file or folder that cannot be
read is refused as such ("permission denied"), not reported as empty.
``volume_index`` picks one volume of a 4D NIfTI or of a DICOM series that repeats its slice
positions (several volumes); the default is the first, with a note in ``source.warnings``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import List, Optional, Union

from ..errors import MedsamError
from ..volume import Volume
from .dicom import SeriesInfo, list_dicom_series, load_dicom
from .labels import save_label_map
from .itk_formats import is_itk_path, load_itk
from .mgh import is_mgh_path, load_mgh
from .nifti import is_nifti_path, load_nifti, special_file_kind

PathArg = Union[str, "os.PathLike[str]"]

__all__ = ["load_volume", "list_series", "save_label_map", "SeriesInfo", "MedsamError",
           "is_volume_file_name", "VOLUME_SUFFIXES"]
# every volume file name load_volume knows (the open dialog, drag-and-drop and the CLIs use it)
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".hdr.gz", ".img.gz", ".nrrd", ".nhdr",
                   ".mha", ".mhd", ".mgh", ".mgz")


def _existing(path: PathArg) -> Path:
    """``path`` as a Path, refused unless it is a readable regular file or folder.

    Devices, FIFOs and sockets are refused before they are opened (a FIFO would block, a
    device never ends); an unreadable file or folder is named as such, not as "empty".
    """
    if path is None or str(path) == "":
        raise MedsamError("no file or folder given")
    p = Path(os.fspath(path)).expanduser()
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise MedsamError("no such file or folder", p) from None
    except PermissionError:
        raise MedsamError("permission denied: a folder on this path cannot be entered", p) from None
    except OSError as exc:
        raise MedsamError(f"cannot access this path ({exc.strerror or exc})", p) from None
    kind = special_file_kind(st.st_mode)
    if kind is not None:
        raise MedsamError(f"not a regular file or folder: this is {kind}; open a NIfTI file, "
                          "a NRRD, MetaImage or MGZ file, a DICOM file or a DICOM folder", p)
    try:
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(p) as entries:
                next(entries, None)
        else:
            with open(p, "rb"):
                pass
    except PermissionError:
        what = "folder cannot be listed" if stat.S_ISDIR(st.st_mode) else "file cannot be read"
        raise MedsamError(f"permission denied: this {what}", p) from None
    except OSError as exc:
        raise MedsamError(f"cannot read this path ({exc.strerror or exc})", p) from None
    return p


def load_volume(
    path: PathArg, series_uid: Optional[str] = None, volume_index: Optional[int] = None
) -> Volume:
    """Open a volume file (NIfTI, NRRD, MetaImage, MGH/MGZ), a DICOM folder or one DICOM file
    of a series as a ``Volume``."""
    p = _existing(path)
    if p.is_dir():
        if is_volume_file_name(p):
            what = "a NIfTI file" if is_nifti_path(p) else "a volume file"
            raise MedsamError(f"this is a folder, not {what}", p)
        return load_dicom(p, series_uid=series_uid, volume_index=volume_index)
    if is_nifti_path(p):
        return load_nifti(p, volume_index=volume_index)
    if is_itk_path(p):
        return load_itk(p, volume_index=volume_index)
    if is_mgh_path(p):
        return load_mgh(p, volume_index=volume_index)
    return load_dicom(p, series_uid=series_uid, volume_index=volume_index)


def is_volume_file_name(path: PathArg) -> bool:
    """Whether the name is one of the volume file formats (anything else is tried as DICOM)."""
    p = Path(os.fspath(path))
    return is_nifti_path(p) or is_itk_path(p) or is_mgh_path(p)


def list_series(path: PathArg) -> List["SeriesInfo"]:
    """The DICOM series under ``path`` (largest first); ``[]`` for a volume file."""
    p = _existing(path)
    if p.is_file() and is_volume_file_name(p):
        return []
    return list_dicom_series(p)

