"""Label map on the volume grid; its label table is ``label_table``, its per-slice provenance
``slice_records``, its compact diffs ``change``.

Every edit of a ``LabelMap`` goes through ``paint`` (or the record / label-table methods) and
returns a ``Change`` (``annotation.change``); ``LabelMap.apply(change, undo)`` replays it either
way, which is all ``History`` needs.

The voxels are held in the smallest dtype that holds the labels (``label_dtype``): uint8 while
every value is at most 255 (half the memory of uint16: 200 MiB on a 512×512×800 CT), promoted
to uint16 when a larger value is painted, imported or restored; never demoted while open. The
export and the workspace write uint8 or uint16 by the values as well, and a saved map reloads
in the smallest dtype again.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from medsam_gui.annotation.change import (Change, RecordKey, Region, _Packed, _slices,
                                          bounding_region)
# the label map's parts, importable from here as before (hence the noqa)
from medsam_gui.annotation.label_table import PALETTE, Color, Label, LabelTable  # noqa: F401
from medsam_gui.annotation.slice_records import (  # noqa: F401
    FILLED, METHODS, REVIEWED, STATUSES, UNREVIEWED_METHODS, SliceRecord, mask_sha256, now_iso)
from medsam_gui.volume import ViewGeometry

MODES = ("replace", "add", "erase")
MAX_LABEL = 65535


def label_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned dtype that holds label values up to ``max_value``."""
    if not 0 <= int(max_value) <= MAX_LABEL:
        raise ValueError(f"label value {max_value} outside 0..{MAX_LABEL}")
    return np.dtype(np.uint8 if int(max_value) <= 255 else np.uint16)


def as_label_array(array: np.ndarray) -> np.ndarray:
    """``array`` (whole-number values in 0..65535) in the smallest label dtype, in its own
    memory order; no copy when it already is so."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8, order="K")
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if lo < 0 or hi > MAX_LABEL:
        raise ValueError(f"label values {lo}..{hi} outside 0..{MAX_LABEL}")
    want = label_dtype(hi)
    return array if array.dtype == want else array.astype(want, order="K")

class LabelMap:
    """Integer labels on the volume's source grid (uint8, uint16 from label 256 on: see the
    module docstring) with per-slice provenance."""

    def __init__(self, shape3d: Tuple[int, int, int], table: Optional[LabelTable] = None,
                 array: Optional[np.ndarray] = None):
        self.shape = tuple(int(s) for s in shape3d)
        if array is not None and tuple(array.shape) != self.shape:
            raise ValueError(f"label array shape {array.shape} is not {self.shape}")
        # Fortran order by default, like the volumes and NIfTI: the export then writes and
        # verifies it without transposing (a C-ordered array given is kept as it is)
        self.array = (np.zeros(self.shape, np.uint8, order="F") if array is None
                      else as_label_array(array))
        if not (self.array.flags.f_contiguous or self.array.flags.c_contiguous):
            self.array = np.asfortranarray(self.array)
        self.table = table if table is not None else LabelTable()
        self.records: Dict[RecordKey, SliceRecord] = {}

    def slice(self, geom: ViewGeometry, index: int) -> np.ndarray:
        """Writable display-oriented view of slice ``index`` (writes bypass undo)."""
        return geom.take(self.array, index)

    def hold(self, value: int) -> None:
        """Make the array's dtype hold label ``value`` (uint8 -> uint16 for 256 and more; a
        new array in the same memory order, so views taken before no longer see edits)."""
        if int(value) > np.iinfo(self.array.dtype).max:
            self.array = self.array.astype(label_dtype(value), order="K")

    def _region_of(self, geom: ViewGeometry, index: int, changed2d: np.ndarray) -> Region:
        rows = np.flatnonzero(changed2d.any(axis=1))
        cols = np.flatnonzero(changed2d.any(axis=0))
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        n_rows, n_cols = geom.slice_shape
        if geom.row_flip:
            r0, r1 = n_rows - r1, n_rows - r0
        if geom.col_flip:
            c0, c1 = n_cols - c1, n_cols - c0
        region = [(0, 0)] * 3
        region[geom.slice_axis] = (int(index), int(index) + 1)
        region[geom.row_axis] = (r0, r1)
        region[geom.col_axis] = (c0, c1)
        return tuple(region)  # type: ignore[return-value]

    def paint(self, geom: ViewGeometry, index: int, mask2d: np.ndarray, value: int,
              mode: str = "replace", record: Optional[SliceRecord] = None) -> Change:
        """Paint ``mask2d`` (display orientation) with label ``value`` on slice ``index``.

        replace: this label's pixels on the slice become exactly ``mask2d`` (other labels
        outside stay, inside are overwritten); add: OR; erase: clear ``value``'s pixels under
        the mask (value 0 clears every label there).
        Provenance: ``record`` (e.g. a fresh model record) is stored for (view, index, value);
        without one, a change to the pixels marks the slice "edited" by a person.
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not one of {MODES}")
        self.hold(value)
        view = geom.take(self.array, index)
        mask = np.asarray(mask2d, dtype=bool)
        if mask.shape != view.shape:
            raise ValueError(f"mask shape {mask.shape} is not the slice shape {view.shape}")
        value = int(value)
        new = view.copy()
        if mode == "replace":
            new[(view == value) & ~mask] = 0
            new[mask] = value
        elif mode == "add":
            new[mask] = value
        elif value == 0:
            new[mask] = 0
        else:
            new[mask & (view == value)] = 0
        changed = new != view
        change = Change(description=f"{mode} label {value} on {geom.view} {index}")
        if changed.any():
            region = self._region_of(geom, index, changed)
            sl = _slices(region)
            change.region = region
            change._before = _Packed(self.array[sl])
            view[...] = new
            change._after = _Packed(self.array[sl])
        key = (geom.view, int(index), value)
        if record is not None:
            rec: Optional[SliceRecord] = record.copy(axis=geom.view, index=int(index), label=value)
        elif change.region is not None and value != 0:
            old = self.records.get(key)
            rec = (old.copy(status="edited", time=now_iso()) if old is not None
                   else SliceRecord(geom.view, int(index), value, status="edited"))
        else:
            rec = None
        if rec is not None:
            change.records_before[key] = self.records.get(key)
            change.records_after[key] = rec
            self.records[key] = rec
        return change

    def _set_record(self, key: RecordKey, rec: Optional[SliceRecord], what: str) -> Change:
        change = Change(description=what)
        change.records_before[key] = self.records.get(key)
        change.records_after[key] = rec
        self._put_records(change.records_after)
        return change

    def _put_records(self, records: Dict[RecordKey, Optional[SliceRecord]]) -> None:
        for key, rec in records.items():
            if rec is None:
                self.records.pop(key, None)
            else:
                self.records[key] = rec

    def record(self, rec: SliceRecord) -> Change:
        """Store (replace) the provenance record of (rec.axis, rec.index, rec.label)."""
        return self._set_record(rec.key, rec, f"record {rec.key}")

    def _mark(self, axis: str, index: int, value: int, status: str) -> Change:
        key = (axis, int(index), int(value))
        old = self.records.get(key)
        rec = (old.copy(status=status, time=now_iso()) if old is not None
               else SliceRecord(axis, int(index), int(value), status=status))
        return self._set_record(key, rec, f"{status} {key}")

    def mark_accepted(self, axis: str, index: int, value: int) -> Change:
        """A person verified the mask of ``value`` on this slice as it is."""
        return self._mark(axis, index, value, "accepted")

    def mark_edited(self, axis: str, index: int, value: int) -> Change:
        return self._mark(axis, index, value, "edited")

    def remove_label(self, value: int) -> Change:
        """Delete a label: its voxels, its records and its table entry, as one undoable change."""
        value = int(value)
        change = Change(description=f"remove label {value}", table_before=self.table.to_json())
        self._write(change, self.array == value, 0)
        for key in [k for k in self.records if k[2] == value]:
            change.records_before[key] = self.records.pop(key)
            change.records_after[key] = None
        if self.table.get(value) is not None:
            self.table.remove(value)
        change.table_after = self.table.to_json()
        return change

    def replace_all(self, array: np.ndarray, table: LabelTable,
                    records: Dict[RecordKey, SliceRecord], description: str) -> Change:
        """Replace every voxel, the label table and all records at once (an import), as one
        undoable change holding only the bounding box of the voxels that differ."""
        if tuple(np.shape(array)) != self.shape:
            raise ValueError(f"label array shape {np.shape(array)} is not {self.shape}")
        array = as_label_array(array)
        self.hold(np.iinfo(array.dtype).max if array.dtype != self.array.dtype else 0)
        change = Change(description=description, table_before=self.table.to_json(),
                        table_after=table.to_json())
        self._write(change, array != self.array, array)
        for key in set(self.records) | set(records):
            if self.records.get(key) is not records.get(key):
                change.records_before[key] = self.records.get(key)
                change.records_after[key] = records.get(key)
        self._put_records(change.records_after)
        self.table.labels = LabelTable.from_json(change.table_after or []).labels
        return change

    def _write(self, change: Change, where: np.ndarray, new) -> None:
        """Set the voxels ``where`` (a whole-grid mask) to ``new`` (a value or a whole-grid
        array), keeping their bounding box before and after in ``change``."""
        region = bounding_region(where)
        if region is None:
            return
        sl = _slices(region)
        change.region = region
        change._before = _Packed(self.array[sl])
        self.array[sl] = np.where(where[sl], new if np.isscalar(new) else new[sl], self.array[sl])
        change._after = _Packed(self.array[sl])

    def apply(self, change: Change, undo: bool) -> None:
        """Put the voxels, records and label table to their state before (undo) or after."""
        if change.region is not None:
            data = change.before if undo else change.after
            if data.dtype.itemsize > self.array.dtype.itemsize:  # made on a promoted map
                self.hold(int(data.max()) if data.size else 0)
            self.array[_slices(change.region)] = data
        self._put_records(change.records_before if undo else change.records_after)
        table = change.table_before if undo else change.table_after
        if table is not None:
            self.table.labels = LabelTable.from_json(table).labels

    def records_for(self, status: Sequence[str] = STATUSES) -> List[SliceRecord]:
        return sorted((r for r in self.records.values() if r.status in status),
                      key=lambda r: (r.axis, r.index, r.label))
