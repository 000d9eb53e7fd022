"""Undo/redo over ``Change`` diffs (model masks, brush strokes, records, label table), and
``merge``, which makes many changes one undo step.

The history is bounded by steps and by bytes (``DEFAULT_MAX_BYTES``): when a new step would
pass either bound the oldest steps are dropped, and ``note`` says so in words the window can
show. The newest step is always kept, whatever its size, so the last edit can be undone."""

from __future__ import annotations

from collections import deque
from typing import Deque, List, Optional, Sequence

from medsam_gui.annotation.change import Change, _Packed, _slices
from medsam_gui.annotation.labels import LabelMap


def merge(labelmap: LabelMap, changes: Sequence[Change], description: str) -> Change:
    """One change equal to ``changes`` applied in order (they must be the latest edits of
    ``labelmap``): a propagation through many slices becomes a single undo step."""
    merged = Change(description=description)
    regions = [c.region for c in changes if c.region is not None]
    if regions:
        region = tuple((min(r[a][0] for r in regions), max(r[a][1] for r in regions))
                       for a in range(3))
        sl = _slices(region)  # type: ignore[arg-type]
        after = labelmap.array[sl].copy(order="K")  # the label map's memory order
        before = after.copy(order="K")
        for c in reversed(changes):  # unwind to the state before the first change
            if c.region is not None:
                inner = tuple(slice(a - o[0], b - o[0]) for (a, b), o in zip(c.region, region))
                before[inner] = c.before
        merged.region = region  # type: ignore[assignment]
        merged._before, merged._after = _Packed(before), _Packed(after)
    for c in changes:
        for key, rec in c.records_before.items():
            merged.records_before.setdefault(key, rec)
        merged.records_after.update(c.records_after)
    tables = [c for c in changes if c.table_before is not None or c.table_after is not None]
    if tables:
        merged.table_before, merged.table_after = tables[0].table_before, tables[-1].table_after
    return merged


# Changes are stored zlib-compressed (a label-map diff shrinks ~100x): 256 MiB holds hundreds
# of 800-slice propagations
DEFAULT_MAX_BYTES = 256 << 20


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


class History:
    """Linear undo/redo stack; pushing a new change drops the redo branch."""

    def __init__(self, max_steps: int = 200, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        self.max_steps = int(max_steps)
        self.max_bytes = int(max_bytes)
        self._undo: Deque[Change] = deque()
        self._sizes: Deque[int] = deque()  # nbytes of each undo step, in the same order
        self._redo: List[Change] = []
        self.dropped = 0  # oldest steps dropped to keep the bounds, since the last clear
        self.note = ""  # what was dropped, in plain words ("" while nothing was)

    def push(self, change: Optional[Change]) -> bool:
        """Record an already applied change; empty changes are ignored (returns False). Drops
        the oldest steps beyond ``max_steps`` or ``max_bytes`` (see ``note``)."""
        if change is None or change.empty:
            return False
        self._undo.append(change)
        self._sizes.append(change.nbytes)
        self._redo.clear()
        self._bound()
        return True

    def _bound(self) -> None:
        dropped, by_bytes = 0, False
        total = sum(self._sizes)
        while len(self._undo) > 1 and (len(self._undo) > self.max_steps
                                       or total > self.max_bytes):
            by_bytes = by_bytes or len(self._undo) <= self.max_steps
            self._undo.popleft()
            total -= self._sizes.popleft()
            dropped += 1
        if dropped:
            self.dropped += dropped
            n = self.dropped
            bound = (f"within {_mib(self.max_bytes)} of memory" if by_bytes
                     else f"at {self.max_steps} steps")
            self.note = (f"The oldest {n} undo step{'s were' if n > 1 else ' was'} dropped to "
                         f"keep the undo history {bound}.")

    def undo(self, labelmap: LabelMap) -> Optional[Change]:
        if not self._undo:
            return None
        change = self._undo.pop()
        self._sizes.pop()
        labelmap.apply(change, undo=True)
        self._redo.append(change)
        return change

    def redo(self, labelmap: LabelMap) -> Optional[Change]:
        if not self._redo:
            return None
        change = self._redo.pop()
        labelmap.apply(change, undo=False)
        self._undo.append(change)
        self._sizes.append(change.nbytes)
        return change

    def clear(self) -> None:
        self._undo.clear()
        self._sizes.clear()
        self._redo.clear()
        self.dropped, self.note = 0, ""

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def n_undo(self) -> int:
        return len(self._undo)

    @property
    def nbytes(self) -> int:
        """Approximate memory held by all stored changes."""
        return sum(self._sizes) + sum(c.nbytes for c in self._redo)
