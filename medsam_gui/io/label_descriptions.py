"""Label description files: names and colours beside a NIfTI label map, for other viewers.

- ITK-SNAP label description file (``*.itksnap.txt``; Segmentation ▸ Import Label
  Descriptions): ``IDX R G B A VIS MSH "LABEL"`` with the alpha as 0..1.
- 3D Slicer colour table (``*.ctbl``; load it, then the label map with it as its colour node):
  ``value name R G B A`` with the alpha as 0..255 and spaces in names replaced by ``_``.

Both are read back the same way, so a label map from either tool comes in with its names.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import List, Protocol, Sequence, Tuple, Union

from ..errors import MedsamError
from .atomic import atomic_write_bytes

PathArg = Union[str, "os.PathLike[str]"]
MAX_VALUE = 65535
_ITKSNAP_LINE = re.compile(r'^-?\d+(\s+\S+){6}\s+"')


class Described(Protocol):
    """A label as these files describe it (``annotation.labels.Label`` is one)."""

    value: int
    name: str
    color: Tuple[int, int, int]
    visible: bool


@dataclass(frozen=True)
class LabelDescription:
    value: int
    name: str
    color: Tuple[int, int, int]
    visible: bool = True


def itksnap_text(labels: Sequence[Described]) -> str:
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# written by medsam-gui",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    for lab in sorted(labels, key=lambda x: x.value):
        r, g, b = lab.color
        name = lab.name.replace('"', "'")
        vis = int(lab.visible)
        lines.append(f'{lab.value:5d} {r:5d} {g:4d} {b:4d}        1  {vis}  {vis}    "{name}"')
    return "\n".join(lines) + "\n"


def slicer_ctbl_text(labels: Sequence[Described], name: str = "medsam-gui") -> str:
    lines = [f"# Color table file {name}", f"# {len(labels) + 1} values",
             "0 Background 0 0 0 0"]
    for lab in sorted(labels, key=lambda x: x.value):
        r, g, b = lab.color
        safe = re.sub(r"\s+", "_", lab.name.strip().replace('"', "'")) or f"label_{lab.value}"
        lines.append(f"{lab.value} {safe} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


def description_paths(nifti: Path) -> Tuple[Path, Path]:
    """(ITK-SNAP, Slicer) file names beside a label map ``x.nii.gz``: x.itksnap.txt, x.ctbl."""
    stem = nifti.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha"):  # NRRD / MetaImage label maps too
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    return nifti.with_name(stem + ".itksnap.txt"), nifti.with_name(stem + ".ctbl")


def write_descriptions(labels: Sequence[Described], nifti: Path) -> List[Path]:
    """Write both description files beside ``nifti``; returns their paths."""
    itk, ctbl = description_paths(nifti)
    atomic_write_bytes(itk, itksnap_text(labels).encode("utf-8"))
    atomic_write_bytes(ctbl, slicer_ctbl_text(labels, ctbl.name).encode("utf-8"))
    return [itk, ctbl]


def _color(parts: Sequence[str], path: Path, n: int) -> Tuple[int, int, int]:
    try:
        rgb = tuple(int(float(v)) for v in parts)
    except ValueError:
        raise MedsamError(f"line {n}: colour {' '.join(parts)} is not three numbers", path) \
            from None
    if any(not 0 <= c <= 255 for c in rgb):
        raise MedsamError(f"line {n}: colour components must be within 0..255", path)
    return rgb  # type: ignore[return-value]


def _value(text: str, path: Path, n: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise MedsamError(f"line {n}: label value {text!r} is not a whole number", path) from None
    if not 0 <= value <= MAX_VALUE:
        raise MedsamError(f"line {n}: label value {value} is outside 0..{MAX_VALUE}", path)
    return value


def read_descriptions(path: PathArg) -> List[LabelDescription]:
    """Label names and colours from an ITK-SNAP description file or a Slicer colour table."""
    path = Path(os.fspath(path)).expanduser()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise MedsamError(f"cannot read ({exc.strerror})", path) from None
    out: List[LabelDescription] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if _ITKSNAP_LINE.match(line):  # IDX R G B A VIS MSH "LABEL"
            try:
                parts = shlex.split(line)
            except ValueError:
                raise MedsamError(f"line {n}: unbalanced quotes", path) from None
            if len(parts) < 8:
                raise MedsamError(f"line {n}: expected IDX R G B A VIS MSH \"LABEL\"", path)
            value = _value(parts[0], path, n)
            out.append(LabelDescription(value, parts[7], _color(parts[1:4], path, n),
                                        parts[5] != "0"))
        else:  # Slicer: value name R G B A
            parts = line.split()
            if len(parts) < 5:
                raise MedsamError(f"line {n}: expected 'value name R G B A' (Slicer) or an "
                                  "ITK-SNAP label line", path)
            value = _value(parts[0], path, n)
            out.append(LabelDescription(value, parts[1].replace("_", " "),
                                        _color(parts[2:5], path, n)))
    out = [d for d in out if d.value != 0]
    if not out:
        raise MedsamError("no label descriptions in this file (neither ITK-SNAP nor Slicer "
                          "colour table lines)", path)
    return out
