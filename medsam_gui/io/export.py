"""One entry for every export format: NIfTI (+ label descriptions), DICOM SEG, RT Structure Set.

The format comes from the caller or from the file name when that is unambiguous: ``.nii`` /
``.nii.gz`` is NIfTI, ``.seg.dcm`` a SEG, ``.rtstruct.dcm`` / ``.rt.dcm`` an RT Structure Set;
a plain ``.dcm`` needs the format named. A NIfTI export also writes the label table beside it
three ways: medsam-gui's JSON, an ITK-SNAP label description file and a 3D Slicer colour table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Union

from ..annotation.labels import LabelMap
from ..errors import MedsamError
from ..volume import Volume
from .atomic import atomic_write_bytes
from .segments import Export
from .label_descriptions import write_descriptions
from .labels import save_label_map

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
    name = nifti.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return nifti.with_name(name + ".json")


def write_table_json(labelmap: LabelMap, volume: Volume, path: PathArg) -> Path:
    data = {"labels": labelmap.table.to_json(), "source": volume.source.path}
    try:
        return atomic_write_bytes(path, json.dumps(data, indent=1).encode("utf-8"))
    except OSError as exc:
        raise MedsamError(f"cannot write the label table ({exc.strerror})", path) from None


def export_nifti(labelmap: LabelMap, volume: Volume, path: PathArg) -> Export:
    out = save_label_map(labelmap.array, volume, path)
    try:
        extra = [write_table_json(labelmap, volume, table_json_path(out))]
        extra += write_descriptions(labelmap.table.labels, out)
    except OSError as exc:
        raise MedsamError(f"cannot write the label descriptions ({exc.strerror})", out) from None
    return Export(out, [], [f"label table also written as {', '.join(p.name for p in extra)}"])


def export_labels(labelmap: LabelMap, volume: Volume, path: PathArg, fmt: Optional[str] = None,
                  types: Optional[Mapping[int, str]] = None) -> Export:
    """Write ``labelmap`` (on ``volume``'s grid) in ``fmt``; each writer verifies its file."""
    fmt = format_for(path, fmt)
    if fmt == "nifti":
        return export_nifti(labelmap, volume, path)
    if fmt == "seg":
        from .dicom_seg import write_seg

        return write_seg(labelmap, volume, path, types)
    from .rtstruct import write_rtstruct

    return write_rtstruct(labelmap, volume, path, types)
