"""Writing a propagation or an interpolation into the label map (no Qt).

Propagation goes through ``engine.key_slices`` as on the command line: the slices a person
drew, edited or accepted are the structure's key slices (``key_masks``; one cleared to empty is
an empty key slice that no front fills or crosses), and Propagate on a slice re-propagates the
gaps beside it from both ends, meeting where the key slices say; old unreviewed fills in those
gaps that the new fronts do not reach are removed, so the result is what a propagation from all
key slices (the command line's) gives.

A ``FillRun`` takes the slices of one run as they come (``add_step`` for a propagated slice,
``add_interpolated`` for an interpolated one), writes each at once so the window can show it,
records how it was made, and ``finish`` pushes the whole run as one undo step. The slices a
person drew or reviewed are fixed when the run starts (``protected``) and never written.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from medsam_gui.annotation import Change, SliceRecord, mask_sha256, review
from medsam_gui.annotation.interpolate import Filled
from medsam_gui.engine.key_slices import propagate_keys, rewritten_span
from medsam_gui.engine.propagation import Result, Step, Stop, StopRules


def seed_masks(annotator, view: str, index: int, value: int) -> List[np.ndarray]:
    """The objects to follow from a slice: each prompt object's mask (as the label stands
    now), or the label's whole mask on the slice when it has no objects."""
    current = annotator.labelmap.slice(annotator.volume.geometry(view), index) == int(value)
    objs = annotator.objects.get((view, int(index), int(value)), [])
    masks = [o.mask & current for o in objs if o.mask is not None]
    masks = [m for m in masks if m.any()]
    return masks if masks else ([current.copy()] if current.any() else [])


def key_masks(annotator, view: str, value: int, seed: Optional[int] = None
              ) -> Dict[int, List[np.ndarray]]:
    """The key slices of label ``value`` on ``view`` for ``propagate_keys``: every slice a
    person drew, edited or accepted (its objects; none when they cleared it: an empty key
    slice), plus ``seed``, the slice Propagate starts from, when it has a mask."""
    states = review.slice_states(annotator.labelmap, annotator.volume.geometry(view), value)
    keys = {i: seed_masks(annotator, view, i, value) for i, s in enumerate(states)
            if s in (review.DRAWN, review.REVIEWED)}
    if seed is not None and int(seed) not in keys:
        masks = seed_masks(annotator, view, int(seed), value)
        if masks:
            keys[int(seed)] = masks
    return keys


def fill_to_correct(annotator, key, slot: int) -> Optional[np.ndarray]:
    """The unreviewed fill that a box for object ``slot`` of ``key`` (view, slice, label)
    corrects (``Session.predict(..., previous_mask=)``), or None: the slice is not an
    unreviewed fill, or the box adds a new object beside the fill's."""
    view, index, value = key
    rec = annotator.labelmap.records.get((view, int(index), int(value)))
    if rec is None or not rec.unreviewed_fill:
        return None
    current = annotator.labelmap.slice(annotator.volume.geometry(view), index) == int(value)
    objs = annotator.objects.get((view, int(index), int(value)), [])
    if slot < len(objs) and objs[slot].mask is not None:
        fill = objs[slot].mask & current
    else:  # no objects (interpolated, imported): the label's whole fill there
        fill = current if not objs else None
    return fill if fill is not None and fill.any() else None


class FillRun:
    """One run of propagation or interpolation of label ``value`` on ``view``."""

    def __init__(self, annotator, view: str, value: int, model: str = "",
                 weights_sha256: str = "", model_input: Optional[dict] = None):
        self.annotator = annotator
        self.view, self.value = view, int(value)
        self.model, self.weights_sha256 = model, weights_sha256
        self.model_input = dict(model_input or {})
        geom = annotator.volume.geometry(view)
        states = review.slice_states(annotator.labelmap, geom, self.value)
        self.protected: Set[int] = {i for i, s in enumerate(states) if s not in review.FILLABLE}
        self.changes: List[Change] = []
        self.filled: Dict[int, SliceRecord] = {}
        self.stops: List[Stop] = []
        self._front: Dict[int, tuple] = {}  # propagated slice -> (key slice, direction)
        # slices (first, last) whose old unreviewed fills a whole run replaces (propagation)
        self.replaces: Optional[Tuple[int, int]] = None

    def writable(self, index: int) -> bool:
        return int(index) not in self.protected

    def add_step(self, step: Step) -> Change:
        record = SliceRecord(
            self.view, step.index, self.value, status="model", boxes=[list(b) for b in step.boxes],
            model=self.model, weights_sha256=self.weights_sha256,
            model_mask_sha256=mask_sha256(step.mask), iou=step.iou,
            model_input=dict(self.model_input), method="propagated", from_slices=[step.source])
        objects = list(zip(step.boxes, step.object_masks, step.ious))
        self._front[step.index] = (step.seed, step.direction)
        return self._write(step.index, step.mask, record, objects)

    def add_stop(self, stop: Stop) -> None:
        """Note on each slice filled by that front why it stopped."""
        self.stops.append(stop)
        text = f"stopped at {self.view} {stop.index}: {stop.reason}"
        for index, front in self._front.items():
            if front == (stop.seed, stop.direction):
                self.annotator.labelmap.records[(self.view, index, self.value)].stop_reason = text

    def add_interpolated(self, filled: Filled) -> Change:
        record = SliceRecord(self.view, filled.index, self.value, status="model",
                             model="morphological contour interpolation",
                             method="interpolated", from_slices=list(filled.between))
        return self._write(filled.index, filled.mask, record, ())

    def _write(self, index: int, mask: np.ndarray, record: SliceRecord, objects) -> Change:
        if not self.writable(index):
            raise ValueError(f"{self.view} slice {index} holds a person's work")
        change = self.annotator.fill(self.view, index, self.value, mask, record, objects)
        self.changes.append(change)
        self.filled[int(index)] = self.annotator.labelmap.records[(self.view, int(index),
                                                                   self.value)]
        return change

    def clear_stale(self, span: Tuple[int, int]) -> List[int]:
        """Remove this label's unreviewed fills on slices ``span`` (first, last) that this run
        did not write: old fills beyond where the new fronts stopped. Call it only after a run
        that ended by itself (not cancelled); returns the slices cleared."""
        geom = self.annotator.volume.geometry(self.view)
        states = review.slice_states(self.annotator.labelmap, geom, self.value)
        cleared = []
        for i in range(max(span[0], 0), min(span[1], len(states) - 1) + 1):
            if i in self.filled or not self.writable(i) or states[i] != review.FILLED:
                continue
            empty = np.zeros(self.annotator.labelmap.slice(geom, i).shape, bool)
            change = self.annotator.fill(self.view, i, self.value, empty,
                                         SliceRecord(self.view, i, self.value, status="model"))
            key = (self.view, i, self.value)
            change.records_after[key] = None  # no record: an empty slice, not an empty key
            self.annotator.labelmap.records.pop(key, None)
            self.changes.append(change)
            cleared.append(i)
        return cleared

    def finish(self, description: str, completed: bool = True) -> Optional[Change]:
        """Push everything written as one undo step (None when nothing changed); a run that
        ``completed`` (not cancelled, no error) first clears the stale fills it replaces."""
        if completed and self.replaces is not None:
            self.clear_stale(self.replaces)
        change = self.annotator.push_fills(self.changes, description)
        self.changes = []
        return change


def propagate_into(annotator, session, view: str, seed: int, value: int,
                   rules: StopRules = StopRules(), cancel=None) -> Result:
    """Propagate label ``value`` from slice ``seed`` into the gaps beside it and write it, as
    the window does, in this thread (tests use it; the window runs ``propagate_keys`` in a
    worker)."""
    backend = session.backend
    run = FillRun(annotator, view, value, backend.name, backend.weights_sha256,
                  session.input_transform().provenance())
    steps, stops = [], []
    keys = key_masks(annotator, view, value, seed)
    if seed not in keys:  # no mask to follow: nothing to do (as propagate says)
        keys[int(seed)] = []
    for event in propagate_keys(session, view, keys, rules, writable=run.writable,
                                cancel=cancel, around=seed):
        if isinstance(event, Step):
            run.add_step(event)
            steps.append(event)
        else:
            run.add_stop(event)
            stops.append(event)
    if keys[int(seed)]:
        run.replaces = stale_span(keys, seed, rules, annotator.volume.n_slices(view))
    run.finish(f"propagate label {value} from {view} {seed}",
               completed=not any(stop.reason == "cancelled" for stop in stops))
    return Result(steps, stops)


def stale_span(keys, seed: int, rules: StopRules, n: int) -> Tuple[int, int]:
    """The slices where a re-propagation from ``seed`` replaces old fills, within the extent
    the user set."""
    lo, hi = rewritten_span(keys, seed, n)
    first, last = rules.limits(n)
    return max(lo, first), min(hi, last)


def interpolate_into(annotator, view: str, value: int,
                     fills: Sequence[Filled]) -> Optional[Change]:
    """Write interpolated slices as one undo step."""
    run = FillRun(annotator, view, value)
    for f in fills:
        if run.writable(f.index):
            run.add_interpolated(f)
    return run.finish(f"interpolate label {value} on {view}")


__all__ = ["FillRun", "fill_to_correct", "interpolate_into", "key_masks", "propagate_into",
           "seed_masks", "stale_span"]
