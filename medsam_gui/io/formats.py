"""Export formats and how a file name names one.

The format comes from the caller or from the file name when that is unambiguous: ``.nii`` /
``.nii.gz`` is NIfTI, ``.seg.dcm`` a SEG, ``.rtstruct.dcm`` / ``.rt.dcm`` an RT Structure Set;
a plain ``.dcm`` needs the format named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ..errors import MedsamError

PathArg = Union[str, "os.PathLike[str]"]
FORMATS = ("nifti", "seg", "rtstruct")
FORMAT_NAMES = {"nifti": "NIfTI label map", "seg": "DICOM Segmentation",
                "rtstruct": "RT Structure Set"}


def format_for(path: PathArg, fmt: Optional[str] = None) -> str:
    """The export format for ``path``: ``fmt`` if given (checked against the name), else
    the one the file name implies."""
    name = Path(os.fspath(path)).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        implied: Optional[str] = "nifti"
    elif name.endswith(".seg.dcm"):
        implied = "seg"
    elif name.endswith((".rtstruct.dcm", ".rt.dcm")):
        implied = "rtstruct"
    else:
        implied = None
    if fmt is not None:
        if fmt not in FORMATS:
            raise MedsamError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
        if (fmt == "nifti") != (implied == "nifti") or (implied not in (None, "nifti", fmt)):
            want = ".nii.gz" if fmt == "nifti" else ".dcm"
            raise MedsamError(f"a {FORMAT_NAMES[fmt]} is not written to a file named like this; "
                              f"use a name ending in {want}", path)
        return fmt
    if implied is None:
        raise MedsamError("cannot tell the format from this name: use .nii.gz (NIfTI), "
                          ".seg.dcm (DICOM SEG) or .rtstruct.dcm (RT Structure Set), or name "
                          "the format", path)
    return implied


def table_json_path(nifti: Path) -> Path:
    """medsam-gui's label table beside a label map ``x.nii.gz``: ``x.json``."""
    name = nifti.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return nifti.with_name(name + ".json")
