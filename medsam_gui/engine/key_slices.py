"""Key slices: a structure propagated from every slice a person fixed, never over one (no Qt).

A structure on one axis has key slices: slices a person drew, edited or accepted (the window),
or the boxes of one label on one axis (``medsam-segment --boxes``). A key slice holds the
structure's objects there, or none: an *empty* key slice says "the structure is absent here"
(a boxes entry with ``"empty": true``, the window's Clear slice).

``propagate_keys`` propagates from every key slice that holds objects (``propagation.propagate``
with its stop rules), outward beyond the first and last key slice, and into every gap between
two keys. A key slice is never written and never crossed: a front stops before it. So an empty
key slice ends the fronts that reach it, and a gap between an empty key and a full one is
filled only by the full one's front.

Between two full key slices both fronts run; where they meet (``meet``):

- ``score`` (default): both fronts cross the whole gap; each slice takes the mask with the
  higher model IoU estimate (twice the decoder calls in the gap; embeddings are shared).
- ``nearest``: each slice takes the mask of the front from its nearer key slice; a front goes
  on past the middle only into slices the other front has not filled (the other stopped
  early), so the fronts cost no more decoder calls than one propagation.

Measured (``benchmarks/bench_queue.py --meets nearest,score,interp``, abdominal CT and MR, 4
organs each, a ground-truth box on the largest slice then 1, 2, 3 more on evenly spaced slices,
mean 3D Dice over the two kinds): score 0.795 / 0.808 / 0.809, nearest 0.773 / 0.786 / 0.798,
contour interpolation between the two key masks (no model) 0.778 / 0.785 / 0.795; score was
best or equal on 7 of 8 structures after 2 corrections and took 1.25x the time of nearest.

The window re-propagates only the gaps beside a fixed slice (``around``). ``current`` (the model
IoU of the fills already there) makes a slice keep its old fill unless the new front is surer
there. Measured with ``benchmarks/bench_queue.py`` (queue-guided corrections that a person fixes;
mean over CT, MR, BRATS FLAIR and T1c, 3D Dice after 1 / 2 / 3): ``around`` 0.763 / 0.778 /
0.796, ``around`` + ``current`` 0.761 / 0.769 / 0.779 (it helped the CT liver, 0.943 against
0.932, and cost the T1c tumour core 0.482 against 0.547), every gap again from all key slices
(the command line) 0.771 / 0.788 / 0.814. So the window does not pass ``current``. What the
full run adds over ``around`` is that it drops the old fills the new fronts do not reach (a
front that ran past the fixed slice leaves them; on the T1c core 0.616 against 0.547).

``fills`` (a front hands over to the old fill where it agrees with it, Dice >= ``AGREE``, so a
correction changes the mask near it only) was measured the same way and is not used either:
mean 3D Dice after 1 / 2 / 3 corrections, a person who fixes the slice 0.765 / 0.780 / 0.793
against 0.771 / 0.788 / 0.813 for the full update; box corrections of a fill
(``engine.correction``) 0.730 / 0.735 / 0.742 (5 of 30 corrections lowered a structure's 3D
Dice) against 0.732 / 0.752 / 0.756 (1 of 30). Stopping where the fronts agree also stops a
correction's gain from spreading (CT spleen, box corrections: 0.769 against 0.804 after 3).

A box on a slice that the key slices before it fill is a correction of that fill
(``corrected_keys``; the window does the same, ``Session.predict(..., previous_mask=)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from medsam_gui.engine.evaluate import dice
from medsam_gui.engine.propagation import Event, Result, Step, Stop, StopRules, propagate

MEETS = ("nearest", "score")
DEFAULT_MEET = "score"  # measured: see the module docstring
AGREE = 0.9  # Dice with the old fill at which a front hands over to it (``fills``)
AGREED = "agrees with the fill"  # the start of such a front's stop reason


@dataclass
class _Gap:
    """Two fronts running toward each other between full key slices ``low`` and ``high``."""

    low: int
    high: int
    meet: str
    done: int = 0  # fronts that have stopped
    emitted: Dict[int, int] = field(default_factory=dict)  # slice -> key slice of its mask
    held: Dict[int, List[Step]] = field(default_factory=dict)  # slice -> steps not yet out
    stops: List[Stop] = field(default_factory=list)

    def owner(self, index: int) -> int:
        """The nearer key slice (the lower one on a tie)."""
        return self.low if index - self.low <= self.high - index else self.high

    def take(self, step: Step) -> List[Step]:
        """The steps to hand out now for a new step of one of the fronts."""
        if self.meet == "nearest" and self.owner(step.index) == step.seed:
            self.emitted[step.index] = step.seed
            self.held.pop(step.index, None)  # the other front got there first: dropped
            return [step]
        self.held.setdefault(step.index, []).append(step)
        return []

    def resolve(self) -> List[Step]:
        """Both fronts have stopped: the held steps that win, in slice order."""
        out = []
        for index in sorted(self.held):
            steps = self.held[index]
            if index in self.emitted:
                continue
            best = max(steps, key=lambda s: s.iou) if self.meet == "score" else steps[0]
            out.append(best)
            self.emitted[index] = best.seed
        self.held.clear()
        return out


def key_indices(keys: Mapping[int, Sequence[np.ndarray]]) -> List[int]:
    return sorted(int(k) for k in keys)


def rewritten_span(keys: Mapping[int, Sequence[np.ndarray]], around: int, n: int
                   ) -> Tuple[int, int]:
    """First and last slice (inclusive) that ``propagate_keys(..., around=around)`` may write:
    the gaps beside that key slice, up to the neighbouring key slices or, beyond the first or
    last key, the volume's edge. An old fill there that the new fronts did not reach is stale:
    a propagation from all key slices would not have it (dropping such fills raised the mean
    3D Dice after 3 corrections from 0.796 to 0.814, most on the BRATS tumour core)."""
    order = key_indices(keys)
    i = order.index(int(around))
    return (order[i - 1] + 1 if i > 0 else 0,
            order[i + 1] - 1 if i + 1 < len(order) else n - 1)


def propagate_keys(session, axis: str, keys: Mapping[int, Sequence[np.ndarray]],
                   rules: StopRules = StopRules(),
                   writable: Optional[Callable[[int], bool]] = None,
                   cancel: Optional[Callable[[], bool]] = None,
                   meet: str = DEFAULT_MEET, around: Optional[int] = None,
                   current: Optional[Mapping[int, float]] = None,
                   fills: Optional[Mapping[int, np.ndarray]] = None,
                   agree: float = AGREE, stride: int = 1) -> Iterator[Event]:
    """Propagate one structure from its key slices ``keys`` (slice -> its object masks; an empty
    list is an empty key slice) along ``axis``.

    Yields a ``Step`` per filled slice (never a key slice, never a slice ``writable`` refuses;
    each slice once) and a ``Stop`` per front (``Stop.seed`` names its key slice). The fronts
    advance in turn, one slice each, so every part of the structure grows at once.
    ``around``: only the two gaps beside that key slice (beyond it when it is the first or the
    last key): the window's re-propagation from a fixed slice, which leaves the rest alone.
    ``current``: slices that hold a fill now (slice -> its model IoU estimate): a new mask
    replaces one only when its IoU is higher, so a re-propagation keeps the old fill where its
    front is less sure (the front goes on from its own mask). Measured and not used by the
    window (see the module docstring).
    ``fills``: the old unreviewed fills (slice -> mask). A front whose new mask agrees with the
    old fill there (Dice >= ``agree``) stops (reason ``AGREED``) and leaves that fill and the
    old fills beyond it (``kept_fills``): a correction changes the mask near it only.
    ``stride`` > 1: each front encodes about one slice in ``stride`` (``propagation.propagate``).
    """
    if meet not in MEETS:
        raise ValueError(f"meet {meet!r} not one of {MEETS}")
    n = session.volume.n_slices(axis)
    objects = {int(k): [np.asarray(m, bool) for m in v if np.asarray(m, bool).any()]
               for k, v in keys.items()}
    for k in objects:
        if not 0 <= k < n:
            raise IndexError(f"{axis} key slice {k} outside 0..{n - 1}")
    order = key_indices(objects)
    if not order:
        return

    def free(i: int) -> bool:
        return i not in objects and (writable is None or writable(i))

    if around is not None and int(around) not in objects:
        raise ValueError(f"{axis} slice {around} is not a key slice")
    fronts = []  # [generator, gap or None, key, direction]

    def near(a: int, b: int) -> bool:  # the gap a..b touches ``around``
        return around is None or int(around) in (a, b)

    def add(key: int, direction: int, gap: Optional[_Gap]) -> None:
        if not objects[key]:
            return
        if gap is not None and gap.meet == "nearest":
            other = gap.high if key == gap.low else gap.low

            def ok(i: int, gap=gap, other=other) -> bool:  # not where the other front has been
                return free(i) and gap.emitted.get(i) != other
        else:
            ok = free
        gen = propagate(session, axis, key, objects[key], rules, writable=ok, cancel=cancel,
                        directions=(direction,), stride=stride)
        fronts.append([gen, gap, key, direction])

    if near(order[0], order[0]):
        add(order[0], -1, None)
    for low, high in zip(order, order[1:]):
        if high - low < 2 or not near(low, high):
            continue
        gap = _Gap(low, high, meet) if objects[low] and objects[high] else None
        add(low, 1, gap)
        add(high, -1, gap)
    if near(order[-1], order[-1]):
        add(order[-1], 1, None)

    def out(steps) -> Iterator[Step]:
        for step in steps:
            if current is None or step.iou > current.get(step.index, -math.inf):
                yield step

    while fronts:
        for front in list(fronts):
            gen, gap, key, direction = front
            event = next(gen, None)
            if event is None:
                fronts.remove(front)
                continue
            agreed = (fills is not None and isinstance(event, Step) and event.index in fills
                      and dice(event.mask, fills[event.index]) >= agree)
            if agreed:  # hand over to the old fill: this front ends here
                gen.close()
                event = Stop(direction, event.index, f"{AGREED} at slice {event.index}",
                             event.source, key)
            if isinstance(event, Stop):
                if not agreed:
                    event.reason = _stop_reason(event, objects, gap)
                if gap is None:
                    yield event
                    continue
                gap.stops.append(event)
                gap.done += 1
                if gap.done == 2:
                    yield from out(gap.resolve())
                    yield from gap.stops
                continue
            yield from out([event] if gap is None else gap.take(event))


def _stop_reason(stop: Stop, objects: Dict[int, list], gap: Optional[_Gap]) -> str:
    """Name the key slice a front stopped at, or the other front it met."""
    if stop.index in objects:
        return (f"key slice {stop.index}" if objects[stop.index]
                else f"empty key slice {stop.index}")
    if gap is not None and gap.emitted.get(stop.index) not in (None, stop.seed):
        return f"met the front from key slice {gap.emitted[stop.index]}"
    return stop.reason


def kept_fills(stops: Sequence[Stop], span: Tuple[int, int],
               writable: Callable[[int], bool]) -> List[int]:
    """The slices of ``span`` (first, last) whose old fill a run with ``fills`` left on
    purpose: from each front that stopped because it agreed with the old fill, that slice and
    the slices beyond it in its direction up to the first one not ``writable`` (a key slice)
    or the span's end. A caller that drops the stale fills of ``rewritten_span`` keeps these."""
    kept = set()
    for stop in stops:
        if not stop.reason.startswith(AGREED):
            continue
        i = stop.index
        while span[0] <= i <= span[1] and writable(i):
            kept.add(i)
            i += stop.direction
    return sorted(kept)


def run_keys(session, axis: str, keys: Mapping[int, Sequence[np.ndarray]],
             rules: StopRules = StopRules(), **kwargs) -> Result:
    """``propagate_keys`` collected (for the command line, tests and benchmarks)."""
    steps, stops = [], []
    for event in propagate_keys(session, axis, keys, rules, **kwargs):
        (steps if isinstance(event, Step) else stops).append(event)
    return Result(steps, stops)


def corrected_keys(session, axis: str, entries: Sequence[Tuple[int, Sequence[Sequence[float]]]],
                   rules: StopRules = StopRules(), **kwargs) -> Dict[int, List[np.ndarray]]:
    """Key masks from boxes given in order, as a person who corrects the propagation: each
    entry is a slice and its boxes (none: an empty key slice). A box on a slice that the key
    slices before it fill corrects that fill (``Session.predict(..., previous_mask=fill)``,
    ``engine.correction``), as a box drawn on a filled slice in the window; elsewhere a box
    gives its own mask. One propagation (``run_keys``) per such later key slice."""
    keys: Dict[int, List[np.ndarray]] = {}
    for k, boxes in entries:
        fill = None
        if boxes and any(keys.values()):
            steps = run_keys(session, axis, keys, rules, **kwargs).steps
            fill = next((step.mask for step in steps if step.index == int(k)), None)
        keys[int(k)] = [session.predict(axis, int(k), box, None, fill).mask for box in boxes]
    return keys


def stop_text(view: str, stop: Stop) -> str:
    """The stop as it is recorded on the slices its front filled (``SliceRecord.stop_reason``)."""
    return f"stopped at {view} {stop.index}: {stop.reason}"


__all__ = ["AGREE", "AGREED", "DEFAULT_MEET", "MEETS", "corrected_keys", "key_indices",
           "kept_fills", "propagate_keys", "rewritten_span", "run_keys", "stop_text"]
