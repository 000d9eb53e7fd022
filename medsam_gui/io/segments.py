"""The labels of a label map as exportable segments: name, colour, coded type, how they were made.

Shared by the DICOM SEG and RT Structure Set writers. Only labels with voxels become segments
(a SEG segment and an RT ROI are meant to hold something), numbered 1..n in label-value order,
because a SEG's segment numbers must start at 1 and have no gaps.

How a segment was made comes from the slice provenance: a person's box or points answered by a
model, propagation, interpolation or an imported segmentation make it SEMIAUTOMATIC (a person
worked with an algorithm); only brush strokes, or voxels with no record, make it MANUAL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..annotation.labels import LabelMap
from .seg_terms import guess_property_type, property_type, PropertyType

MANUAL, SEMIAUTOMATIC = "MANUAL", "SEMIAUTOMATIC"
MANUFACTURER = "medsam-gui"  # Manufacturer of the SEG and RT Structure Set series


@dataclass(frozen=True)
class Segment:
    number: int  # 1..n in the exported object
    value: int  # label value in the label map
    name: str
    color: Tuple[int, int, int]
    prop: PropertyType
    algorithm_type: str  # MANUAL | SEMIAUTOMATIC
    algorithms: Tuple[str, ...]  # models / sources involved, for the algorithm identification


def _origin(labelmap: LabelMap, value: int) -> Tuple[str, Tuple[str, ...]]:
    models = sorted({rec.model for rec in labelmap.records.values()
                     if rec.label == value and rec.model})
    filled = any(rec.label == value and rec.method for rec in labelmap.records.values())
    return (SEMIAUTOMATIC if models or filled else MANUAL), tuple(models)


def segments_of(labelmap: LabelMap, types: Optional[Mapping[int, str]] = None) -> List[Segment]:
    """Segments for every label with voxels; ``types`` overrides the property type per value.

    Without an override a label keeps the type it was given before (``Label.property_type``)
    or the one guessed from its name.
    """
    types = dict(types or {})
    present = [int(v) for v in np.unique(labelmap.array) if v]
    out: List[Segment] = []
    for number, value in enumerate(present, 1):
        label = labelmap.table.get(value)
        name = label.name if label is not None else f"label {value}"
        color = tuple(label.color) if label is not None else (255, 0, 0)
        key = types.get(value) or (label.property_type if label is not None else "") \
            or guess_property_type(name)
        algorithm_type, models = _origin(labelmap, value)
        out.append(Segment(number, value, name, color, property_type(key),  # type: ignore[arg-type]
                           algorithm_type, models))
    return out


def segment_numbers(labels: np.ndarray, segments: List[Segment]) -> np.ndarray:
    """The label array with each label value replaced by its segment number (uint16)."""
    lut: Dict[int, int] = {s.value: s.number for s in segments}
    out = np.zeros(labels.shape, np.uint16)
    for value, number in lut.items():
        out[labels == value] = number
    return out


@dataclass
class ImportedSegments:
    """Labels read from a file, already on the open volume's grid, with what the file named."""

    array: np.ndarray  # uint16 on the volume grid (values as in the file)
    names: Dict[int, str]
    colors: Dict[int, Optional[Tuple[int, int, int]]]
    notes: List[str] = field(default_factory=list)


@dataclass
class Export:
    """What an export wrote and what the user should know about it."""

    path: Path
    segments: List[Segment]
    notes: List[str] = field(default_factory=list)
