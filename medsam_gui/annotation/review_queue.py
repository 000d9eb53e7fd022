"""The review queue: the filled, unreviewed slices of a label ranked by how much they need a
look, and the reason in words (no Qt).

A slice is queued when it is ``filled`` (propagated, interpolated or imported, not reviewed;
see ``annotation.review``), and so is the first empty slice beyond each end of the structure
when the front there stopped on a brake rather than on an empty mask (the structure may go on).
Signals of one filled slice, each scaled to 0..1 (1 = needs a look most):

- ``iou``: 1 − the model's own IoU estimate recorded by propagation (``SliceRecord.iou``).
- ``area``: how much the area differs from the nearer (in area) of the neighbouring labelled
  slices (|log area ratio| / log 2, capped at 1: a doubling counts fully). The nearer one, so
  that a slice that jumped ranks above its two neighbours.
- ``shape``: 1 − the Dice of the slice's mask with its best-overlapping labelled neighbour's:
  a mask that overlaps none of the slices around it.
- ``end``: the slice is the last one its front filled before a brake stopped it.

``WEIGHTS`` combine them. ``benchmarks/bench_propagation.py --queue`` measures how well each
signal ranks the propagated slices by their Dice (Spearman ρ with −Dice within each structure;
one ground-truth box on the largest slice, default stop rules; abdominal CT and MR organs, 7
structures with 5 or more filled slices): the model's IoU estimate is the signal that counts
(mean ρ +0.48, median +0.76, positive on 6 of 7); shape (+0.31, 5 of 7) and area (+0.15, 4 of
7) are weaker and added to it lowered the mean ρ (iou+area+shape+end: +0.37), the end flag is
set on too few slices to move ρ (+0.31 where defined), and the distance from the seed slice
(+0.21) and the box-jitter instability (4 extra decoder calls a slice; measured on abdominal CT
liver only, ρ +0.88 against +0.82 for the IoU) were left out. So the IoU leads; area and shape
keep a small weight because interpolated and imported slices have no IoU, and they name a jump
in the reason.

The queue also says where a correction pays: the score is multiplied by the slice's size
(its area ÷ the label's largest area on that view, ``SIZE_POWER``), so an unsure slice in the
body of a structure comes before an unsure sliver at its end, where a fixed slice changes few
voxels; and a braked end no longer adds to the score (``WEIGHTS["end"]`` 0; the slice beyond
it is still queued, scored by the end slice's IoU and size). Measured with
``benchmarks/bench_queue.py`` (a simulated person fixes the queue's first slice not yet
touched, then the window's re-propagation; CT and MR organs, BRATS FLAIR and T1c; the kinds
weigh the same): see that script's docstring for the tables. With size and no end weight the
mean 3D Dice after 1, 2, 3 corrections rose above the previous weights (end 0.5, no size),
which sent the person to the organs' ends first; with box-only corrections (no fix of the
box's mask) the previous order was better, because on the large slices a box often gets the
same unsure mask back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from medsam_gui.annotation import review
from medsam_gui.annotation.labels import LabelMap
from medsam_gui.volume import ViewGeometry

SIGNALS = ("iou", "area", "shape", "end")
# from bench_propagation --queue, see the module docstring
WEIGHTS: Dict[str, float] = {"iou": 1.0, "area": 0.25, "shape": 0.25, "end": 0.0}
SIZE_POWER = 1.0  # score × (slice area ÷ the label's largest slice area) ** SIZE_POWER
_SOFT_STOPS = ("empty mask", "volume edge", "a person", "end of the given extent", "cancelled",
               "mask of ", "key slice",  # key slice: a key slice, an empty one, the other front
               "agrees with the fill")  # a re-propagation handed over to the old fill


@dataclass
class QueueItem:
    """One slice to review: ``score`` 0..(sum of weights), most needed first."""

    axis: str
    slice: int
    label: int
    score: float
    reason: str
    signals: Dict[str, float] = field(default_factory=dict)
    beyond_end: bool = False

    def as_json(self) -> Dict[str, object]:
        return {"axis": self.axis, "slice": int(self.slice), "label": int(self.label),
                "score": round(float(self.score), 4), "reason": self.reason}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _stop_words(text: str) -> str:
    """"stopped at axial 101: moved 0.41 of its diameter (limit 0.35)" -> short words."""
    why = text.split(": ", 1)[-1]
    where = text.split(":", 1)[0].replace("stopped at ", "")
    short = ("position jump" if why.startswith("moved") else
             "area jump" if why.startswith("area grew") else
             "low model score" if why.startswith("model IoU") else why)
    return f"stopped at {where.split()[-1]} by {short}"


def _hard_stop(text: str) -> bool:
    """True when a front stopped on a brake (the structure may go on beyond)."""
    return bool(text) and not any(s in text for s in _SOFT_STOPS)


def slice_signals(labelmap: LabelMap, geometry: ViewGeometry, value: int,
                  states: Optional[Sequence[str]] = None) -> Dict[int, Dict[str, float]]:
    """The raw signals (see the module docstring) of every ``filled`` slice, plus ``iou_raw``
    (the model's estimate, NaN if none) and ``area_ratio`` (≥ 1) for the reasons."""
    value = int(value)
    states = list(states) if states is not None else review.slice_states(labelmap, geometry,
                                                                         value)
    present = review.present_slices(labelmap, geometry, value)
    n = len(states)
    cache: Dict[int, np.ndarray] = {}

    def mask(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = np.asarray(geometry.take(labelmap.array, i) == value)
        return cache[i]

    largest = max((int(mask(i).sum()) for i in range(n) if present[i]), default=0)
    out: Dict[int, Dict[str, float]] = {}
    for i, state in enumerate(states):
        if state != review.FILLED:
            continue
        rec = labelmap.records.get((geometry.view, i, value))
        iou = float(rec.iou) if rec is not None and rec.iou is not None else math.nan
        m = mask(i)
        area = int(m.sum())
        ratios, overlaps = [], []
        for j in (i - 1, i + 1):
            if 0 <= j < n and present[j]:
                other = mask(j)
                a = int(other.sum())
                ratios.append(max(area, a) / max(min(area, a), 1))
                overlaps.append(_dice(m, other))
        ratio = min(ratios) if ratios else 1.0  # the nearer neighbour: a jumped slice
        # differs from both, its neighbours each from one
        stop = rec.stop_reason if rec is not None else ""
        at_end = any(0 <= j < n and not present[j] for j in (i - 1, i + 1))
        out[i] = {
            "iou": 0.0 if math.isnan(iou) else min(max(1.0 - iou, 0.0), 1.0),
            "area": min(math.log(ratio) / math.log(2.0), 1.0),
            "shape": 1.0 - max(overlaps) if overlaps else 0.0,
            "end": 1.0 if at_end and _hard_stop(stop) else 0.0,
            "iou_raw": iou, "area_ratio": ratio, "size": area / largest if largest else 0.0,
        }
    return out


def _reason(sig: Dict[str, float], stop: str, weights: Dict[str, float]) -> str:
    parts = {
        "iou": f"model unsure: IoU {sig['iou_raw']:.2f}" if not math.isnan(sig["iou_raw"])
        else "",
        "area": f"area jumped {sig['area_ratio']:.1f}×",
        "shape": f"shape changed: overlap {1 - sig['shape']:.2f} with its neighbour",
        "end": f"end: {_stop_words(stop)}" if stop else "end of the structure",
    }
    ranked = sorted((s for s in SIGNALS if parts[s]), key=lambda s: -weights.get(s, 0) * sig[s])
    return parts[ranked[0]] if ranked else "not reviewed"


def label_queue(labelmap: LabelMap, geometry: ViewGeometry, value: int,
                weights: Optional[Dict[str, float]] = None,
                size_power: Optional[float] = None) -> List[QueueItem]:
    """The queue of one label on one view, most needed first."""
    weights = dict(WEIGHTS if weights is None else weights)
    power = SIZE_POWER if size_power is None else float(size_power)
    value = int(value)
    states = review.slice_states(labelmap, geometry, value)
    signals = slice_signals(labelmap, geometry, value, states)
    items: List[QueueItem] = []
    for i, sig in signals.items():
        rec = labelmap.records.get((geometry.view, i, value))
        stop = rec.stop_reason if rec is not None else ""
        score = sum(weights.get(s, 0.0) * sig[s] for s in SIGNALS) * sig["size"] ** power
        items.append(QueueItem(geometry.view, i, value, score, _reason(sig, stop, weights),
                               {s: sig[s] for s in SIGNALS}))
    # beyond each end that a brake stopped: the structure may go on there
    present = review.present_slices(labelmap, geometry, value)
    for i, sig in signals.items():
        if not sig["end"]:
            continue
        rec = labelmap.records.get((geometry.view, i, value))
        for j in (i - 1, i + 1):
            if 0 <= j < len(states) and not present[j] and states[j] == review.EMPTY:
                score = (weights.get("end", 0.0) + weights.get("iou", 0.0) * sig["iou"]
                         ) * sig["size"] ** power
                items.append(QueueItem(geometry.view, j, value, score,
                                       f"beyond the end: {_stop_words(rec.stop_reason)}",
                                       {}, beyond_end=True))
    items.sort(key=lambda it: (-it.score, it.slice))
    return items


def build_queue(labelmap: LabelMap, geometries: Dict[str, ViewGeometry],
                values: Optional[Iterable[int]] = None,
                weights: Optional[Dict[str, float]] = None) -> List[QueueItem]:
    """The queue over every view and label (default: labels with any record), most needed
    first."""
    if values is None:
        values = sorted({k[2] for k in labelmap.records})
    items: List[QueueItem] = []
    for value in values:
        for geom in geometries.values():
            items.extend(label_queue(labelmap, geom, value, weights))
    items.sort(key=lambda it: (-it.score, it.label, it.axis, it.slice))
    return items


def write_queue(path, labelmap: LabelMap, geometries: Dict[str, ViewGeometry],
                values: Optional[Iterable[int]] = None) -> List[QueueItem]:
    """Write the queue as a JSON list of ``{"axis", "slice", "label", "score", "reason"}``,
    most needed first (atomically); returns it. ``axis`` is the voxel axis (0, 1, 2) and
    ``slice`` the index along it, as in the command line's boxes; ``view`` names the view."""
    import json

    from medsam_gui.io.atomic import atomic_write_bytes

    items = build_queue(labelmap, geometries, values)
    rows = []
    for it in items:
        row = it.as_json()
        row["axis"] = int(geometries[it.axis].slice_axis)
        row["view"] = it.axis
        rows.append(row)
    text = json.dumps(rows, indent=1, ensure_ascii=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
    return items


def next_in_queue(queue: Sequence[QueueItem], current: int, step: int = 1) -> Optional[QueueItem]:
    """The item after (step +1) or before (step −1) slice ``current`` in queue order; from a
    slice not in the queue, the first (or last) item."""
    if not queue:
        return None
    order = [it.slice for it in queue]
    if current in order:
        k = order.index(current) + step
        return queue[k] if 0 <= k < len(queue) else None
    return queue[0] if step > 0 else queue[-1]


__all__ = ["QueueItem", "SIGNALS", "SIZE_POWER", "WEIGHTS", "build_queue", "label_queue",
           "next_in_queue", "slice_signals", "write_queue"]
