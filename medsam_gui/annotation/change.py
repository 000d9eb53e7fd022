"""One undoable edit of a label map: the bounding box of the voxels it changed (on the source
grid) with their values before and after, zlib-compressed, plus the provenance records and the
label table before and after. ``LabelMap.apply`` replays it; ``History`` keeps a list of them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
    from medsam_gui.annotation.labels import SliceRecord

RecordKey = Tuple[str, int, int]  # (axis, index, label value)


class _Packed:
    """An array stored zlib-compressed (label maps compress ~100x), in the memory order of the
    label map it came from (a region of a Fortran-ordered map is not transposed)."""

    __slots__ = ("shape", "dtype", "blob", "order")

    def __init__(self, array: np.ndarray):
        self.shape = array.shape
        self.dtype = array.dtype
        self.order = "F" if array.ndim > 1 and array.strides[0] < array.strides[-1] else "C"
        self.blob = zlib.compress(array.tobytes(order=self.order), 1)

    def unpack(self) -> np.ndarray:
        flat = np.frombuffer(zlib.decompress(self.blob), dtype=self.dtype)
        return flat.reshape(self.shape, order=self.order).copy(order=self.order)


Region = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]


@dataclass
class Change:
    """One undoable edit: voxels in ``region`` (source grid, [start, stop) per axis) and
    records / label table before and after. Records map key -> SliceRecord or None (absent)."""

    region: Optional[Region] = None
    _before: Optional[_Packed] = None
    _after: Optional[_Packed] = None
    records_before: Dict[RecordKey, Optional[SliceRecord]] = field(default_factory=dict)
    records_after: Dict[RecordKey, Optional[SliceRecord]] = field(default_factory=dict)
    table_before: Optional[List[dict]] = None
    table_after: Optional[List[dict]] = None
    description: str = ""

    @property
    def before(self) -> Optional[np.ndarray]:
        return None if self._before is None else self._before.unpack()

    @property
    def after(self) -> Optional[np.ndarray]:
        return None if self._after is None else self._after.unpack()

    @property
    def empty(self) -> bool:
        return (self.region is None and self.records_before == self.records_after
                and self.table_before == self.table_after)

    @property
    def n_changed_voxels(self) -> int:
        if self.region is None:
            return 0
        return int(np.count_nonzero(self.before != self.after))

    @property
    def nbytes(self) -> int:
        """Approximate memory held by this change."""
        n = 512 + 256 * (len(self.records_before) + len(self.records_after))
        for p in (self._before, self._after):
            if p is not None:
                n += len(p.blob)
        return n


def _slices(region: Region) -> Tuple[slice, slice, slice]:
    return tuple(slice(a, b) for a, b in region)  # type: ignore[return-value]


def bounding_region(where: np.ndarray) -> Optional[Region]:
    """[start, stop) per axis of the True voxels of a 3D mask, None when there are none."""
    if not where.any():
        return None
    idx = [np.flatnonzero(where.any(axis=tuple(a for a in range(3) if a != ax)))
           for ax in range(3)]
    return tuple((int(i[0]), int(i[-1]) + 1) for i in idx)  # type: ignore[return-value]
