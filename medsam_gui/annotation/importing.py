"""Apply a segmentation made elsewhere to a label map: one undoable change, marked "imported".

Every slice an imported label covers gets a provenance record on the scan's acquisition view
(the view across the source's slice axis): status "model", method "imported", ``model`` naming
the file. Such slices count as unreviewed (the slice strip shows them, ``]``/``[`` visit them)
and training skips them until a person accepts or edits them.

Two modes:

- ``replace``: the label map becomes the imported one (values, names and colours as in the
  file); earlier labels and records go (undo brings them back);
- ``merge``: the imported labels are added under new values after the existing ones, and only
  where the label map is still background, so nothing a person drew is overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..io.segments import ImportedSegments
from ..volume import ViewGeometry
from .change import Change, RecordKey
from .labels import PALETTE, Label, LabelMap, LabelTable, SliceRecord, label_dtype
from .review import label_values

MODES = ("replace", "merge")


def _present_slices(array: np.ndarray, geometry: ViewGeometry) -> Dict[int, List[int]]:
    """label value -> the slices of ``geometry``'s view where it has voxels."""
    axis = geometry.slice_axis
    out: Dict[int, List[int]] = {}
    for k in range(array.shape[axis]):
        plane = np.take(array, k, axis=axis)
        for v in np.unique(plane):
            if v:
                out.setdefault(int(v), []).append(k)
    return out


def _label(value: int, imported: ImportedSegments, source_value: int,
           old: Optional[Label]) -> Label:
    name = imported.names.get(source_value) or (old.name if old is not None else
                                                f"label {value}")
    color = imported.colors.get(source_value) or (old.color if old is not None else
                                                  PALETTE[(value - 1) % len(PALETTE)])
    return Label(value, name, tuple(int(c) for c in color))  # type: ignore[arg-type]


def import_segmentation(labelmap: LabelMap, imported: ImportedSegments, geometry: ViewGeometry,
                        source: Path, mode: str = "replace") -> Tuple[Change, Dict[int, int]]:
    """Apply ``imported`` to ``labelmap`` (see the module docstring).

    Returns the change (push it on the history) and the map from each value in the file to
    the value it got in the label map.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} not one of {MODES}")
    if imported.array.shape != labelmap.shape:
        raise ValueError(f"imported shape {imported.array.shape} is not {labelmap.shape}")
    values = label_values(imported.array)
    if mode == "replace":
        mapping = {v: v for v in values}
        array = imported.array.astype(np.uint16, copy=True)
        table = LabelTable([_label(v, imported, v, labelmap.table.get(v)) for v in values])
        records: Dict[RecordKey, SliceRecord] = {}
    else:
        start = max([lab.value for lab in labelmap.table.labels]
                    + [int(labelmap.array.max())] + [0])
        if start + len(values) > 65535:
            raise ValueError("no free label values left for the imported labels")
        mapping = {v: start + n for n, v in enumerate(values, 1)}
        array = labelmap.array.astype(label_dtype(start + len(values)), order="K")  # a copy
        free = array == 0
        for v, new in mapping.items():
            array[free & (imported.array == v)] = new
        table = LabelTable(list(LabelTable.from_json(labelmap.table.to_json()).labels)
                           + [_label(new, imported, v, None) for v, new in mapping.items()])
        records = dict(labelmap.records)
    origin = f"import: {source.name}"
    imported_values = set(mapping.values())
    for value, slices in _present_slices(array, geometry).items():
        if value not in imported_values:
            continue
        for k in slices:
            rec = SliceRecord(geometry.view, k, value, status="model", method="imported",
                              model=origin)
            records[rec.key] = rec
    change = labelmap.replace_all(array, table, records,
                                  f"import {len(values)} labels from {source.name} ({mode})")
    return change, mapping
