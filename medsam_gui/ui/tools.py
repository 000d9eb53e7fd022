"""Tool logic behind the canvas: prompt objects per slice, brush stamping, corrections.

``Annotator`` turns what the user did (a predicted mask for a box, a brush stroke, fill-hole,
clear, accept) into one ``LabelMap`` change pushed on the ``History``. It knows nothing about
widgets; the main window calls it and refreshes the overlay.

Objects: on each (view, slice, label) the boxes drawn so far are kept as objects (box, points,
model mask). A box that overlaps an object replaces that object's mask; a box that overlaps none
adds a new object (two kidneys, two lesions of one label), as does any box drawn with Shift;
point clicks refine the active object. On a slice whose label has pixels but no objects (brush,
interpolation, a label map from elsewhere), a box replaces only the connected parts of the
label it touches. Undo/redo restore the object lists too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from medsam_gui.annotation import Change, History, LabelMap, SliceRecord
from medsam_gui.annotation.history import merge
from medsam_gui.annotation.labels import mask_sha256
from medsam_gui.volume import Volume

TOOLS = ("box", "point", "brush", "eraser", "pan")
Box = Tuple[float, float, float, float]
Key = Tuple[str, int, int]  # (view, index, label)


def stamp_line(mask: np.ndarray, p0: Tuple[float, float], p1: Tuple[float, float],
               radius: float) -> None:
    """Set the pixels within ``radius`` of the segment p0-p1 (x, y pixel coords) in ``mask``."""
    h, w = mask.shape
    (x0, y0), (x1, y1) = p0, p1
    r = max(float(radius), 0.5)
    c0, c1 = int(max(np.floor(min(x0, x1) - r), 0)), int(min(np.ceil(max(x0, x1) + r) + 1, w))
    r0, r1 = int(max(np.floor(min(y0, y1) - r), 0)), int(min(np.ceil(max(y0, y1) + r) + 1, h))
    if c0 >= c1 or r0 >= r1:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1]
    px, py = xx + 0.5, yy + 0.5  # pixel centres
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.zeros_like(px) if length2 == 0 else np.clip(((px - x0) * dx + (py - y0) * dy) / length2, 0, 1)
    d2 = (px - (x0 + t * dx)) ** 2 + (py - (y0 + t * dy)) ** 2
    mask[r0:r1, c0:c1] |= d2 <= r * r


def untouched_parts(mask: np.ndarray, box: Box) -> np.ndarray:
    """The connected parts of ``mask`` (8-connected) with no pixel inside ``box``."""
    from scipy.ndimage import label

    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    parts, n = label(mask, structure=np.ones((3, 3), bool))
    h, w = mask.shape
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])) + 1, w), min(int(np.ceil(box[3])) + 1, h)
    touched = np.unique(parts[y0:y1, x0:x1])
    return (parts > 0) & ~np.isin(parts, touched[touched > 0])


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


@dataclass
class PromptObject:
    box: Box
    points: List[Tuple[float, float, int]] = field(default_factory=list)
    mask: Optional[np.ndarray] = None
    iou: Optional[float] = None


RESTORE_MARGIN = 2  # pixels around a restored box that still belong to its object


class Annotator:
    """Applies model masks and manual corrections to a LabelMap, one History step each."""

    def __init__(self, volume: Volume, labelmap: LabelMap, history: History):
        self.volume = volume
        self.labelmap = labelmap
        self.history = history
        self.objects: Dict[Key, List[PromptObject]] = {}
        self.active: Dict[Key, int] = {}
        # change id -> [(key, objects before, active before, objects after, active after)]
        self._object_log: Dict[int, List[Tuple[Key, list, int, list, int]]] = {}
        self._pending: Dict[int, Tuple[Key, list, int, list, int]] = {}  # fills not pushed yet
        self.restore_objects()

    def restore_objects(self) -> None:
        """Prompt objects back from saved provenance (reopened workspace), so the boxes show
        again and a new box replaces its object. The model masks themselves are not saved: each
        object takes the label's pixels inside its box widened by ``RESTORE_MARGIN`` pixels
        (a model mask may touch or cross its box's edge by a pixel or two)."""
        for (view, index, value), rec in self.labelmap.records.items():
            if not rec.boxes or view not in ("axial", "coronal", "sagittal"):
                continue
            current = self.labelmap.slice(self.volume.geometry(view), index) == value
            objs = []
            for box in rec.boxes:
                x0, y0, x1, y1 = (int(round(v)) for v in box)
                m = RESTORE_MARGIN
                inside = (slice(max(y0 - m, 0), y1 + m + 1), slice(max(x0 - m, 0), x1 + m + 1))
                mask = np.zeros_like(current)
                mask[inside] = current[inside]
                objs.append(PromptObject(tuple(float(v) for v in box), [], mask, rec.iou))
            objs[-1].points = [tuple(p) for p in rec.points]
            self.objects[(view, int(index), int(value))] = objs
            self.active[(view, int(index), int(value))] = len(objs) - 1

    # ---- prompts ---------------------------------------------------------------------------
    def slot_for_box(self, key: Key, box: Box, additive: bool) -> int:
        """Which object a new box replaces (index) or ``len(objects)`` for a new object."""
        objs = self.objects.get(key, [])
        if additive or not objs:
            return len(objs)
        overlaps = [_overlap(box, o.box) for o in objs]
        best = int(np.argmax(overlaps))
        return best if overlaps[best] > 0 else len(objs)  # nothing overlapped: a new object

    def point_target(self, key: Key) -> Optional[Tuple[int, PromptObject]]:
        objs = self.objects.get(key, [])
        if not objs:
            return None
        slot = min(self.active.get(key, len(objs) - 1), len(objs) - 1)
        return slot, objs[slot]

    def apply_prediction(self, key: Key, slot: int, box: Box,
                         points: Sequence[Tuple[float, float, int]], mask: np.ndarray,
                         iou: Optional[float], model: str, weights_sha256: str,
                         additive: bool = False,
                         model_input: Optional[dict] = None) -> Change:
        """Write a model mask as object ``slot`` of ``key`` and record its provenance
        (``model_input``: what the model saw, ``Prediction.model_input``)."""
        view, index, value = key
        geom = self.volume.geometry(view)
        before = list(self.objects.get(key, []))
        objs = list(before)
        obj = PromptObject(tuple(float(v) for v in box), [tuple(p) for p in points],
                           np.asarray(mask, bool), iou)
        current = self.labelmap.slice(geom, index) == value
        if slot < len(objs):  # replace that object's mask, keep the others and edits elsewhere
            others = [o.mask for i, o in enumerate(objs) if i != slot and o.mask is not None]
            old = objs[slot].mask
            new = current & ~old if old is not None else current.copy()
            for m in others:
                new |= m
            new |= obj.mask
            objs[slot] = obj
            mode, paint_mask = "replace", new
        elif objs or additive:  # Shift: another object of the same label
            objs.append(obj)
            slot = len(objs) - 1
            mode, paint_mask = "add", obj.mask
        else:  # first box: it replaces the parts of the label it touches, keeps the rest
            objs = [obj]
            slot = 0
            mode, paint_mask = "replace", untouched_parts(current, box) | obj.mask
        union = np.zeros_like(obj.mask)
        for o in objs:
            union |= o.mask
        record = SliceRecord(
            view, index, value, status="model",
            boxes=[list(o.box) for o in objs],
            points=[list(p) for o in objs for p in o.points],
            model=model, weights_sha256=weights_sha256,
            model_mask_sha256=mask_sha256(union), iou=None if iou is None else float(iou),
            model_input=dict(model_input or {}))
        change = self.labelmap.paint(geom, index, paint_mask, value, mode=mode, record=record)
        before_active = self.active.get(key, -1)
        self.objects[key] = objs
        self.active[key] = slot
        self._push(change, key, before, before_active)
        return change

    # ---- propagation and interpolation ------------------------------------------------------
    def fill(self, view: str, index: int, value: int, mask: np.ndarray, record: SliceRecord,
             objects: Sequence[Tuple[Box, np.ndarray, Optional[float]]] = ()) -> Change:
        """Write a propagated or interpolated mask on a slice (not pushed: ``push_fills``
        merges a whole run into one undo step). Voxels of other labels are kept; ``objects``
        (box, mask, iou) become the slice's prompt objects, so a box over one replaces it."""
        geom = self.volume.geometry(view)
        current = self.labelmap.slice(geom, index)
        own = np.asarray(mask, bool) & ((current == 0) | (current == int(value)))
        key = (view, int(index), int(value))
        change = self.labelmap.paint(geom, index, own, value, mode="replace", record=record)
        before, before_active = list(self.objects.get(key, [])), self.active.get(key, -1)
        objs = [PromptObject(tuple(float(v) for v in box), [], np.asarray(m, bool) & own, iou)
                for box, m, iou in objects]
        if objs:
            self.objects[key], self.active[key] = objs, len(objs) - 1
        else:
            self.objects.pop(key, None)
            self.active.pop(key, None)
        self._pending[id(change)] = (key, before, before_active, objs, len(objs) - 1)
        return change

    def push_fills(self, changes: Sequence[Change], description: str) -> Optional[Change]:
        """Push the changes of ``fill`` calls as one undo step (returns it, None if empty)."""
        merged = merge(self.labelmap, list(changes), description)
        entries: Dict[Key, tuple] = {}
        for c in changes:
            entry = self._pending.pop(id(c), None)
            if entry is None:
                continue
            key = entry[0]
            first = entries.get(key, entry)
            entries[key] = (key, first[1], first[2], entry[3], entry[4])
        if not self.history.push(merged):
            return None
        self._object_log[id(merged)] = list(entries.values())
        return merged

    # ---- manual corrections ----------------------------------------------------------------
    def stroke(self, view: str, index: int, value: int, mask: np.ndarray, erase: bool) -> Change:
        """Brush (add) or eraser (clear the active label) stroke; marks the slice edited."""
        geom = self.volume.geometry(view)
        change = self.labelmap.paint(geom, index, mask, value, mode="erase" if erase else "add")
        key = (view, int(index), int(value))
        before, before_active = list(self.objects.get(key, [])), self.active.get(key, -1)
        if erase and before:  # an object erased away loses its box too (undo brings it back)
            label = self.labelmap.slice(geom, index) == value

            def left(o: PromptObject) -> bool:  # any of the label inside the object's box
                x0, y0, x1, y1 = o.box
                return bool(label[max(int(y0), 0):int(np.ceil(y1)) + 1,
                                  max(int(x0), 0):int(np.ceil(x1)) + 1].any())

            kept = [o for o in before if left(o)]
            if len(kept) < len(before):
                self.objects[key] = kept
                self.active[key] = len(kept) - 1
                if not kept:
                    self.objects.pop(key, None)
                    self.active.pop(key, None)
                self._push(change, key, before, before_active)
                return change
        self._push(change)
        return change

    def fill_holes(self, view: str, index: int, value: int) -> Change:
        from scipy.ndimage import binary_fill_holes

        geom = self.volume.geometry(view)
        current = self.labelmap.slice(geom, index) == value
        change = self.labelmap.paint(geom, index, binary_fill_holes(current), value, mode="add")
        self._push(change)
        return change

    def clear_slice(self, view: str, index: int, value: int) -> Change:
        """Remove the label from this slice, with its prompt objects."""
        geom = self.volume.geometry(view)
        key = (view, int(index), int(value))
        current = self.labelmap.slice(geom, index) == value
        change = self.labelmap.paint(geom, index, current, value, mode="erase")
        before, before_active = list(self.objects.get(key, [])), self.active.get(key, -1)
        self.objects.pop(key, None)
        self.active.pop(key, None)
        self._push(change, key, before, before_active)
        return change

    def accept(self, view: str, index: int) -> Change:
        """Mark every label present on the slice as verified (one undo step)."""
        geom = self.volume.geometry(view)
        values = [int(v) for v in np.unique(self.labelmap.slice(geom, index)) if v]
        merged = Change(description=f"accept {view} {index}")
        for v in values:
            c = self.labelmap.mark_accepted(view, index, v)
            merged.records_before.update({k: r for k, r in c.records_before.items()
                                          if k not in merged.records_before})
            merged.records_after.update(c.records_after)
        self._push(merged)
        return merged

    # ---- undo / redo -----------------------------------------------------------------------
    def push(self, change: Change) -> None:
        """Record a change made directly on the label map (e.g. deleting a label)."""
        self._push(change)

    def push_import(self, change: Change) -> None:
        """Record an import: the prompt objects are derived again from the new records."""
        self._push(change)
        self.objects.clear()
        self.active.clear()
        self.restore_objects()

    def _push(self, change: Change, key: Optional[Key] = None, before: Optional[list] = None,
              before_active: int = -1) -> None:
        if not self.history.push(change):
            return
        if key is not None:
            self._object_log[id(change)] = [(key, before or [], before_active,
                                             list(self.objects.get(key, [])),
                                             self.active.get(key, -1))]
            if len(self._object_log) > 4 * self.history.max_steps:
                for k in list(self._object_log)[: len(self._object_log) // 2]:
                    del self._object_log[k]

    def _restore_objects(self, change: Change, undo: bool) -> None:
        for key, before, before_active, after, after_active in self._object_log.get(id(change), []):
            objs, active = (before, before_active) if undo else (after, after_active)
            if objs:
                self.objects[key] = list(objs)
                self.active[key] = active
            else:
                self.objects.pop(key, None)
                self.active.pop(key, None)

    def undo(self) -> Optional[Change]:
        change = self.history.undo(self.labelmap)
        if change is not None:
            self._restore_objects(change, undo=True)
        return change

    def redo(self) -> Optional[Change]:
        change = self.history.redo(self.labelmap)
        if change is not None:
            self._restore_objects(change, undo=False)
        return change

    def prompts(self, view: str, index: int, value: int) -> Tuple[List[Box], list, int]:
        """Boxes and points to draw on the canvas for this slice and label."""
        key = (view, int(index), int(value))
        objs = self.objects.get(key, [])
        return ([o.box for o in objs], [p for o in objs for p in o.points],
                self.active.get(key, -1))


def change_slice(change: Change, volume: Volume) -> Optional[Tuple[str, int]]:
    """(view, index) a change was made on, when it names one (for jumping there on undo)."""
    for key in list(change.records_after) + list(change.records_before):
        return key[0], key[1]
    return None


__all__ = ["Annotator", "PromptObject", "TOOLS", "stamp_line", "change_slice"]
