"""A label map out, in every format: NIfTI (+ label descriptions), DICOM SEG, RT Structure Set.

This is where the label map's meaning becomes the file's: only labels with voxels become
segments, numbered 1..n in label-value order; each keeps its name and colour, and its coded type
is the one chosen for this export, else the one chosen last time (``Label.property_type``), else
the guess from its name. How a segment was made comes from the slice provenance: a person's box
or points answered by a model, propagation, interpolation or an imported segmentation make it
SEMIAUTOMATIC (a person worked with an algorithm); brush strokes only, or voxels without any
record, make it MANUAL.

A NIfTI export also writes the label table beside it three ways: medsam-gui's JSON, an ITK-SNAP
label description file and a 3D Slicer colour table. Each writer verifies its own file.
"""

from __future__ import annotations

import json
import os
from typing import List, Mapping, Optional, Tuple, Union

from ..errors import MedsamError
from ..io.atomic import atomic_write_bytes
from ..io.formats import format_for, table_json_path
from ..io.label_descriptions import write_descriptions
from ..io.labels import save_label_map
from ..io.seg_terms import guess_property_type, property_type
from ..io.segments import MANUAL, SEMIAUTOMATIC, Export, Segment
from ..volume import Volume
from .labels import PALETTE, LabelMap
from .review import label_values

PathArg = Union[str, "os.PathLike[str]"]


def _origin(labelmap: LabelMap, value: int) -> Tuple[str, Tuple[str, ...]]:
    records = [rec for rec in labelmap.records.values() if rec.label == value]
    models = sorted({rec.model for rec in records if rec.model})
    filled = any(rec.method for rec in records)
    return (SEMIAUTOMATIC if models or filled else MANUAL), tuple(models)


def segments_of(labelmap: LabelMap, types: Optional[Mapping[int, str]] = None) -> List[Segment]:
    """Segments for every label with voxels; ``types`` overrides the property type per value."""
    types = dict(types or {})
    out: List[Segment] = []
    for number, value in enumerate(label_values(labelmap.array), 1):
        label = labelmap.table.get(value)
        name = label.name if label is not None else f"label {value}"
        color = tuple(label.color) if label is not None else PALETTE[(value - 1) % len(PALETTE)]
        key = (types.get(value) or (label.property_type if label is not None else "")
               or guess_property_type(name))
        algorithm_type, models = _origin(labelmap, value)
        out.append(Segment(number, value, name, color, property_type(key),  # type: ignore[arg-type]
                           algorithm_type, models))
    return out


def write_table_json(labelmap: LabelMap, volume: Volume, path: PathArg) -> "os.PathLike[str]":
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
    return Export(out, [], [f"label table also written as "
                            f"{', '.join(os.path.basename(p) for p in extra)}"])


def export_labels(labelmap: LabelMap, volume: Volume, path: PathArg, fmt: Optional[str] = None,
                  types: Optional[Mapping[int, str]] = None) -> Export:
    """Write ``labelmap`` (on ``volume``'s grid) as ``fmt`` (default: from the file name)."""
    fmt = format_for(path, fmt)
    if fmt == "nifti":
        return export_nifti(labelmap, volume, path)
    segments = segments_of(labelmap, types)
    if not segments:
        raise MedsamError("the label map is empty: there is nothing to export",
                          volume.source.path or None)
    if fmt == "seg":
        from ..io.dicom_seg import write_seg

        result = write_seg(labelmap.array, segments, volume, path)
    else:
        from ..io.rtstruct import write_rtstruct

        result = write_rtstruct(labelmap.array, segments, volume, path)
    exported = {s.value for s in segments}
    empty = [lab.name for lab in labelmap.table.labels if lab.value not in exported]
    if empty:
        result.notes.append(f"labels without voxels were left out: {', '.join(empty)}")
    return result
