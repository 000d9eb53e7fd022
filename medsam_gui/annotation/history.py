"""Undo/redo over ``Change`` diffs (model masks, brush strokes, records, label table)."""

from __future__ import annotations

from collections import deque
from typing import Deque, List, Optional

from medsam_gui.annotation.labels import Change, LabelMap


class History:
    """Linear undo/redo stack; pushing a new change drops the redo branch."""

    def __init__(self, max_steps: int = 200):
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        self.max_steps = int(max_steps)
        self._undo: Deque[Change] = deque(maxlen=self.max_steps)
        self._redo: List[Change] = []

    def push(self, change: Optional[Change]) -> bool:
        """Record an already applied change; empty changes are ignored (returns False)."""
        if change is None or change.empty:
            return False
        self._undo.append(change)
        self._redo.clear()
        return True

    def undo(self, labelmap: LabelMap) -> Optional[Change]:
        if not self._undo:
            return None
        change = self._undo.pop()
        labelmap.apply(change, undo=True)
        self._redo.append(change)
        return change

    def redo(self, labelmap: LabelMap) -> Optional[Change]:
        if not self._redo:
            return None
        change = self._redo.pop()
        labelmap.apply(change, undo=False)
        self._undo.append(change)
        return change

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()

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
        return sum(c.nbytes for c in self._undo) + sum(c.nbytes for c in self._redo)
