"""What the DICOM SEG and RT Structure Set writers and the importers exchange (no label map).

A ``Segment`` is one label as exported: its value in the label array, its number in the file
(1..n: a SEG's segment numbers must start at 1 and have no gaps), name, colour, coded type and
how it was made. ``annotation.exporting`` builds them from a label map and its provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .seg_terms import PropertyType

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
