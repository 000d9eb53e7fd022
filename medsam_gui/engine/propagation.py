"""Propagation: one segmented slice -> the whole structure, slice by slice, with brakes.

From a seed slice the structure is followed both ways along one axis, as MedSAM's official 3D
inference does: each slice is prompted by the bounding box of the previous slice's mask,
widened by ``margin`` pixels of the 256² decoder frame. The two fronts advance alternately,
outward from the seed, and each slice is encoded when its front reaches it (or taken from the
session's cache; never encoded twice): encoding is interleaved with propagation, so the first
slices appear after one encoder call each instead of after the whole volume has been encoded.

A look-ahead thread that encoded the next slice while the current one was decoded was measured
and dropped: on 2 CPU cores it made propagation slower (0.79 against 0.89 of the raw encoder's
throughput), because the decoder then shares the cores with an encoder.

A seed may hold several objects (two kidneys drawn as one label, two metastases): each is
followed on its own and the masks of a slice are their union; a direction stops when all of its
objects have stopped.

Stop rules (``StopRules``), checked on every new mask of an object against the previous one;
the mask that breaks a rule is dropped and that object stops there:

- empty: the mask has fewer than ``min_area`` pixels;
- low score: the model's own IoU estimate is below ``min_iou``;
- area jump: the area grew more than ``max_growth`` times from the previous slice;
- position jump: the centroid moved more than ``max_shift`` times the previous mask's
  equivalent diameter (2·sqrt(area/π));
- extent: the user's first/last slice (``extent``), the volume edge, or a slice a person drew,
  edited or accepted (``writable`` says which slices may be filled; they are never touched).

Defaults (min_iou 0.5, max_growth 2, max_shift 0.35, min_area 25 px) were chosen on all 23
structure/axis pairs with a reference label in the test data (BRATS FLAIR whole tumour on three
axes and T1c tumour core, abdominal CT organs axial and coronal, abdominal MR and DICOM CT
organs), each from one ground-truth box on its largest slice (``benchmarks/bench_propagation.py
--rules``). With no brake but the empty mask, fronts ran on to the volume edge (mean 3D Dice
0.741, the slice range off by 40 slices on average, up to 126); with the defaults, mean 3D Dice
0.765 and the range off by 5 slices on average. The position rule does most of the braking
(alone: 0.764, 7 slices); the IoU and area rules are mild backstops (alone: 0.757 / 0.751), and
the grid is flat around these values (IoU 0 to 0.5 and growth 2 to unlimited score the same), so
they were not tuned to the last digit. An IoU limit of 0.7 or more cuts fronts short at the
tumour poles, where the model is unsure but right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from medsam_gui.engine.evaluate import Box, mask_box


@dataclass(frozen=True)
class StopRules:
    """When a propagation front stops (see the module docstring for the measurements).
    ``StopRules(0, math.inf, math.inf, 1)`` keeps only the empty-mask stop, as upstream."""

    min_iou: float = 0.5  # the model's own IoU estimate of the new mask
    max_growth: float = 2.0  # area of the new mask ÷ area of the previous one
    max_shift: float = 0.35  # centroid move ÷ the previous mask's equivalent diameter
    min_area: int = 25  # pixels; smaller masks count as empty
    margin: float = 3.0  # box widening, pixels of the 256² decoder frame (3 upstream)
    extent: Optional[Tuple[int, int]] = None  # first, last slice that may be filled

    def limits(self, n: int) -> Tuple[int, int]:
        """First and last fillable slice index of an axis with ``n`` slices."""
        if self.extent is None:
            return 0, n - 1
        a, b = sorted(int(v) for v in self.extent)
        return max(a, 0), min(b, n - 1)


@dataclass
class Step:
    """One filled slice: the union of its objects' masks, and each object's box and score."""

    index: int
    direction: int  # +1 or -1 from the seed
    source: int  # the slice whose masks prompted this one
    mask: np.ndarray  # bool, display slice shape
    boxes: List[Box]
    ious: List[float]
    object_masks: List[np.ndarray] = field(default_factory=list)
    seed: int = -1  # the key slice its front started from
    between: Tuple[int, ...] = ()  # (a, b): shape-interpolated between these model slices

    @property
    def iou(self) -> float:
        return float(min(self.ious)) if self.ious else 0.0


@dataclass
class Stop:
    """Why one direction ended: ``index`` is the first slice that was not filled."""

    direction: int
    index: int
    reason: str
    last_filled: int  # the seed when nothing was filled that way
    seed: int = -1  # the key slice its front started from


Event = Union[Step, Stop]


def mask_features(mask: np.ndarray) -> Tuple[int, float, float]:
    """(area, centroid row, centroid column) of a binary mask (centroid NaN when empty)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0, math.nan, math.nan
    return int(ys.size), float(ys.mean()), float(xs.mean())


def prompt_box(mask: np.ndarray, pad: float) -> Box:
    """Bounding box of ``mask`` widened by ``pad`` pixels, clipped to the slice."""
    return mask_box(mask, pad)


def broken_rule(rules: StopRules, prev: np.ndarray, mask: np.ndarray, iou: float
                ) -> Optional[str]:
    """The stop rule ``mask`` breaks as the successor of ``prev``, in words, or None."""
    area, cy, cx = mask_features(mask)
    if area < rules.min_area:
        return "empty mask" if area == 0 else f"mask of {area} px (< {rules.min_area})"
    if iou < rules.min_iou:
        return f"model IoU {iou:.2f} below {rules.min_iou:.2f}"
    p_area, py, px = mask_features(prev)
    if p_area and area > rules.max_growth * p_area:
        return f"area grew {area / p_area:.1f}x (limit {rules.max_growth:g}x)"
    if p_area:
        diameter = 2.0 * math.sqrt(p_area / math.pi)
        moved = math.hypot(cy - py, cx - px) / diameter
        if moved > rules.max_shift:
            return f"moved {moved:.3f} of its diameter (limit {rules.max_shift:g})"
    return None


def step_objects(session, axis: str, step: Step, objects: Sequence[np.ndarray],
                 rules: StopRules, pad: float, reasons: List[str]) -> List[np.ndarray]:
    """Prompt ``step``'s slice with each object's box from its mask on the slice before; add
    the masks that keep the stop rules to ``step`` (mask, boxes, ious, object masks) and return
    them; why the others stopped goes to ``reasons``."""
    alive = []
    for prev in objects:
        box = prompt_box(prev, pad)
        pred = session.predict(axis, step.index, box)
        why = broken_rule(rules, prev, pred.mask, float(pred.iou))
        if why is not None:
            reasons.append(why)
            continue
        alive.append(pred.mask)
        step.mask |= pred.mask
        step.boxes.append(box)
        step.ious.append(float(pred.iou))
        step.object_masks.append(pred.mask)
    return alive


def front_start(session, axis: str, seed: int, seed_masks: Sequence[np.ndarray],
                rules: StopRules) -> Tuple[int, Tuple[int, int], float, Tuple[int, int],
                                           List[np.ndarray]]:
    """What a propagation needs before its first step: the slice count along ``axis``, the
    slice shape, the prompt box margin in pixels, the slices it may fill (``rules.limits``)
    and the seed's non-empty object masks. A seed outside the volume is an ``IndexError``."""
    n = session.volume.n_slices(axis)
    if not 0 <= seed < n:
        raise IndexError(f"{axis} seed slice {seed} outside 0..{n - 1}")
    h, w = session.volume.geometry(axis).slice_shape
    pad = rules.margin * max(h, w) / 256.0
    objects = [np.asarray(m, bool) for m in seed_masks if np.asarray(m, bool).any()]
    return n, (h, w), pad, rules.limits(n), objects


def blocked_before(i: int, n: int, extent: Tuple[int, int],
                   writable: Optional[Callable[[int], bool]] = None,
                   cancel: Optional[Callable[[], bool]] = None) -> Optional[str]:
    """Why a front may not go on to slice ``i`` before asking the model, or None."""
    if cancel is not None and cancel():
        return "cancelled"
    if not 0 <= i < n:
        return "volume edge"
    if not extent[0] <= i <= extent[1]:
        return "end of the given extent"
    if writable is not None and not writable(i):
        return "a slice a person drew or reviewed"
    return None


def propagate(session, axis: str, seed: int, seed_masks: Sequence[np.ndarray],
              rules: StopRules = StopRules(),
              writable: Optional[Callable[[int], bool]] = None,
              cancel: Optional[Callable[[], bool]] = None,
              directions: Sequence[int] = (1, -1), stride: int = 1) -> Iterator[Event]:
    """Follow the objects of slice ``seed`` through ``axis`` of ``session.volume``.

    Yields a ``Step`` for each filled slice (both fronts alternately, nearest first) and one
    ``Stop`` per direction. ``writable(i)`` False makes a front stop before slice ``i``
    (a person's slice); ``cancel()`` True ends every front with reason "cancelled".
    ``stride`` > 1: encode about one slice in ``stride`` and fill the slices between by shape
    interpolation where the model's masks agree (``engine.sparse_propagation``).
    """
    if stride > 1:
        from medsam_gui.engine.sparse_propagation import propagate_sparse

        yield from propagate_sparse(session, axis, seed, seed_masks, rules, writable, cancel,
                                    directions, stride=stride)
        return
    n, (h, w), pad, extent, objects = front_start(session, axis, seed, seed_masks, rules)
    fronts = {d: {"at": seed, "objects": list(objects), "reasons": []} for d in directions}
    if not objects:
        for d in directions:
            yield Stop(d, seed + d, "the seed slice has no mask", seed, seed)
        return

    while fronts:
        for d in list(fronts):
            front = fronts[d]
            i = front["at"] + d
            reason = blocked_before(i, n, extent, writable, cancel)
            if reason is not None:
                del fronts[d]
                yield Stop(d, i, reason, front["at"], seed)
                continue
            step = Step(i, d, front["at"], np.zeros((h, w), bool), [], [], seed=seed)
            alive = step_objects(session, axis, step, front["objects"], rules, pad,
                                 front["reasons"])
            if not alive:
                del fronts[d]
                yield Stop(d, i, "; ".join(dict.fromkeys(front["reasons"])), front["at"], seed)
                continue
            if len(alive) == 1:  # one object: its mask is the union (held once, not twice)
                step.mask = alive[0]
            front["objects"], front["at"] = alive, i
            yield step


@dataclass
class Result:
    """All steps of a propagation and the stop of each direction."""

    steps: List[Step]
    stops: List[Stop]

    @property
    def indices(self) -> List[int]:
        return sorted(s.index for s in self.steps)

    def stop(self, direction: int) -> Optional[Stop]:
        return next((s for s in self.stops if s.direction == direction), None)


def run(session, axis: str, seed: int, seed_masks: Sequence[np.ndarray],
        rules: StopRules = StopRules(), **kwargs) -> Result:
    """``propagate`` collected (for the command line, tests and benchmarks)."""
    steps, stops = [], []
    for event in propagate(session, axis, seed, seed_masks, rules, **kwargs):
        (steps if isinstance(event, Step) else stops).append(event)
    return Result(steps, stops)


__all__ = ["Event", "Result", "Step", "Stop", "StopRules", "broken_rule", "mask_features",
           "prompt_box", "propagate", "run"]
