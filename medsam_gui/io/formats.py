"""Export formats and how a file name names one.

The format comes from the caller or from the file name when that is unambiguous: ``.nii`` /
``.nii.gz`` is NIfTI, ``.nrrd`` a NRRD label map, ``.seg.nrrd`` a 3D Slicer segmentation,
``.mha`` a MetaImage label map, ``.seg.dcm`` a SEG, ``.rtstruct.dcm`` / ``.rt.dcm`` an RT
Structure Set; a plain ``.dcm`` needs the format named. ``family_format`` gives the label-map
format of a source's own family (a NRRD scan's labels as NRRD, ...), NIfTI for the rest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

from ..errors import MedsamError

PathArg = Union[str, "os.PathLike[str]"]
FORMATS = ("nifti", "nrrd", "metaimage", "slicer-seg", "seg", "rtstruct")
FORMAT_NAMES = {"nifti": "NIfTI label map", "nrrd": "NRRD label map",
                "metaimage": "MetaImage label map", "slicer-seg": "3D Slicer segmentation",
                "seg": "DICOM Segmentation", "rtstruct": "RT Structure Set"}
# file name endings per format, the first the one to suggest (longest endings are tested first)
SUFFIXES = {"nifti": (".nii.gz", ".nii"), "slicer-seg": (".seg.nrrd",), "nrrd": (".nrrd",),
            "metaimage": (".mha",), "seg": (".seg.dcm",), "rtstruct": (".rtstruct.dcm", ".rt.dcm")}
# label-map formats: one file on the source grid, with the label tables written beside it
LABEL_MAP_FORMATS = ("nifti", "nrrd", "metaimage")
SOURCE_FAMILY = {"nrrd": "nrrd", "metaimage": "metaimage"}  # Volume.source.kind -> format


def implied_format(path: PathArg) -> Optional[str]:
    """The format a file name names, or None (a plain .dcm, or anything else)."""
    name = Path(os.fspath(path)).name.lower()
    for fmt in ("slicer-seg", "nifti", "nrrd", "metaimage", "seg", "rtstruct"):
        if name.endswith(SUFFIXES[fmt]):
            return fmt
    return None


def format_for(path: PathArg, fmt: Optional[str] = None) -> str:
    """The export format for ``path``: ``fmt`` if given (checked against the name), else
    the one the file name implies."""
    implied = implied_format(path)
    if fmt is not None:
        if fmt not in FORMATS:
            raise MedsamError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
        dicom_free = fmt in ("seg", "rtstruct") and implied is None
        if implied != fmt and not dicom_free:
            want = SUFFIXES[fmt][0] if fmt not in ("seg", "rtstruct") else ".dcm"
            raise MedsamError(f"a {FORMAT_NAMES[fmt]} is not written to a file named like this; "
                              f"use a name ending in {want}", path)
        return fmt
    if implied is None:
        raise MedsamError("cannot tell the format from this name: use .nii.gz (NIfTI), .nrrd "
                          "(NRRD), .mha (MetaImage), .seg.nrrd (3D Slicer segmentation), "
                          ".seg.dcm (DICOM SEG) or .rtstruct.dcm (RT Structure Set), or name "
                          "the format", path)
    return implied


def family_format(source_kind: str) -> str:
    """The label-map format of a source's family: NRRD for NRRD, MetaImage for MetaImage,
    NIfTI for everything else."""
    return SOURCE_FAMILY.get(source_kind, "nifti")


def split_label_name(path: Path) -> Tuple[str, str]:
    """(stem, ending) of a label-map file name: ``x.nii.gz`` -> ("x", ".nii.gz")."""
    name = path.name
    for fmt in ("slicer-seg", "nifti", "nrrd", "metaimage"):
        for ext in SUFFIXES[fmt]:
            if name.lower().endswith(ext):
                return name[: -len(ext)], name[-len(ext):]
    return name, ""


def table_json_path(labels: Path) -> Path:
    """medsam-gui's label table beside a label map ``x.nii.gz`` / ``x.nrrd`` / ``x.mha``:
    ``x.json``."""
    return labels.with_name(split_label_name(labels)[0] + ".json")
