"""Sparse propagation: follow a structure while encoding only every ``stride``-th slice.

``propagate_sparse`` is ``propagation.propagate`` with jumps: from the last filled slice ``a``
a front prompts slice ``b = a ± stride`` with the box of ``a``'s masks (so only ``b`` is
encoded) and, when every object's new mask passes the stop rules as a successor of its mask
at ``a`` and the two masks agree (Dice ≥ ``agree``), fills the skipped slices between them
without the model (``fill``). Otherwise, or when a slice in between may not be filled (the
extent, a person's slice, the volume edge, cancel), the front takes one ordinary step to
``a ± 1`` (exactly ``propagate``'s step); the embedding of ``b`` stays cached for later. So
every stop is found by ordinary steps, at the slice where ``propagate`` would stop, unless a
jump passes the rules over a change that single steps would have braked at.

``fill`` (how a skipped slice is filled):

- ``"interp"``: shape interpolation of each object, the zero level of the signed distance
  maps of its masks at ``a`` and ``b`` mixed by position (no model call);
- ``"neighbour"``: the decoder on the embedding of ``a`` (the nearer end) with the box
  interpolated between the two ends' prompt boxes (one decoder call, no encoder call);
- ``"mean"``: the same on the mean of the embeddings of ``a`` and ``b``.

Measured (``benchmarks/bench_sparse_propagation.py``: one ground-truth box on the largest
slice, default stop rules, each variant beside today's propagation on the same embeddings;
time ÷ (slices × the plain PyTorch fp32 encoder), OpenVINO f32 encoder and decoder, 2 cores):

- thin slices (BRATS, 1 mm; FLAIR whole tumour and T1c tumour core of two cases): with
  ``agree`` 0.8 and stride 4 no structure lost 3D Dice (+0.002 to +0.047), with 0.57 (FLAIR)
  and 0.58 (T1c) of the encoder calls per filled slice: 0.18 against 0.33 today. With
  ``agree`` 0.7 (0.15) structures lost up to 0.009 and the jumps carried fronts past the
  slice where single steps stop (75 slices filled against 65); with no agreement test stride
  3 lost 0.038; stride 8 lost 0.037. Half jumps after a refused one (``halve``) were a little
  cheaper than single steps (0.177 against 0.186 on FLAIR). Longer jumps did not encode fewer
  slices (2026-12-04, both BRATS cases): with ``agree`` 0.8, stride 6 encoded 0.55 (FLAIR) and
  0.54 (T1c) of the slices and stride 8 0.56 and 0.64, against 0.56 and 0.58 for stride 4,
  since most encoder calls go to the structure's ends, where jumps are refused and single
  steps find the stop; stride 8 lost 0.016 on FLAIR. Trying the half jump at once after a
  refused one, without the single step between, saved 3 % of the encoder calls (0.53 against
  0.56 on FLAIR) and lost up to 0.003 where stride 4 lost nothing: not kept. The decoder on
  the neighbour's or the mean embedding (``"neighbour"``, ``"mean"``) scored no better than
  interpolation and costs a decoder call per slice. Making a jump refused for disagreement
  after all when the model's mask on its encoded middle slice matched the two ends'
  interpolation (Dice ≥ 0.8 / 0.85 / 0.9; 2026-12-04, both BRATS cases) saved at most a tenth
  of the time (0.124 against 0.137) and carried fronts past the stops (pat0001 FLAIR: 75–80
  slices filled against 68, −0.006 to −0.019; T1c core −0.011): not kept.
- thick slices: on the DICOM CT (2 mm; liver, spleen, stomach) stride 2 lost nothing (0.19
  against 0.32); on the abdominal CT and MR (3 mm; four organs each) stride 2 lost up to
  0.015 (CT kidney) and 0.030 (MR liver), stride 3 up to 0.072. Hence ``stride_for``: jumps of
  at most ``FAST_MM`` (4 mm) leave slices more than 2 mm apart to the ordinary propagation.
- the tumour core of BRATS case 2 (0.469 today) scored 0.516 with stride 4: a sparse run may
  stop elsewhere than today's, so it is an option (``medsam-segment --fast-propagate``), not
  the default.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from medsam_gui.engine.evaluate import Box, dice
from medsam_gui.engine.propagation import (Event, Step, Stop, StopRules, blocked_before,
                                           broken_rule, front_start, prompt_box, step_objects)

FILLS = ("interp", "neighbour", "mean")
AGREE = 0.8  # Dice of a jump's two ends below which the slices between are not interpolated
FAST_MM = 4.0  # the longest jump of ``medsam-segment --fast-propagate``, in mm


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Negative inside, positive outside (pixels), never zero."""
    return ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)


def interpolate_masks(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """The shape a fraction ``t`` of the way from mask ``a`` to mask ``b`` (signed-distance
    interpolation, computed on the two masks' joint bounding box with a one-pixel border)."""
    both = a | b
    out = np.zeros(a.shape, bool)
    if not both.any():
        return out
    rows, cols = np.flatnonzero(both.any(1)), np.flatnonzero(both.any(0))
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, a.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, a.shape[1])
    ca, cb = a[r0:r1, c0:c1], b[r0:r1, c0:c1]
    if not ca.any() or not cb.any():
        out[r0:r1, c0:c1] = (ca if t < 0.5 else cb)
        return out
    mixed = (1.0 - t) * _signed_distance(ca) + t * _signed_distance(cb)
    out[r0:r1, c0:c1] = mixed < 0
    return out


def stride_for(volume, axis: str, max_mm: float) -> int:
    """The longest jump, in slices, that spans at most ``max_mm`` along ``axis`` (at least 1:
    a volume with thick slices is propagated slice by slice)."""
    spacing = volume.spacing[volume.geometry(axis).slice_axis]
    return max(1, int(max_mm / spacing + 1e-3)) if spacing > 0 else 1


def _mix_box(a: Box, b: Box, t: float) -> Box:
    return tuple((1.0 - t) * u + t * v for u, v in zip(a, b))  # type: ignore[return-value]


def propagate_sparse(session, axis: str, seed: int, seed_masks: Sequence[np.ndarray],
                     rules: StopRules = StopRules(),
                     writable: Optional[Callable[[int], bool]] = None,
                     cancel: Optional[Callable[[], bool]] = None,
                     directions: Sequence[int] = (1, -1), stride: int = 2,
                     agree: float = AGREE, fill: str = "interp", halve: bool = True,
                     stats: Optional[Dict[str, int]] = None) -> Iterator[Event]:
    """``propagation.propagate`` that encodes about one slice in ``stride`` (see the module
    docstring). Yields the same events; a skipped slice's ``Step`` has the jump's start as its
    ``source`` and its two ends as ``between`` (with ``fill="interp"`` its ``ious`` are the
    lower of the two ends' estimates). After a refused jump to ``b`` the front goes on to
    ``b`` (already encoded) by jumps of half the length (``halve``) or one slice at a time,
    then jumps again. ``stats``, when given, counts the jumps made and refused (by a stop
    rule, by disagreement)."""
    if fill not in FILLS:
        raise ValueError(f"fill {fill!r} not one of {FILLS}")
    stride = max(int(stride), 1)
    n, (h, w), pad, extent, objects = front_start(session, axis, seed, seed_masks, rules)
    if not objects:
        for d in directions:
            yield Stop(d, seed + d, "the seed slice has no mask", seed, seed)
        return
    fronts = {d: {"at": seed, "objects": list(objects), "ious": [1.0] * len(objects),
                  "reasons": [], "target": None, "max_jump": stride} for d in directions}

    def blocked(i: int) -> Optional[str]:
        return blocked_before(i, n, extent, writable, cancel)

    def count(what: str) -> None:
        if stats is not None:
            stats[what] = stats.get(what, 0) + 1

    def jump(front, d: int, k: int) -> Optional[List[Step]]:
        """Steps a+d .. a+k·d, or None when the jump is refused."""
        a = front["at"]
        b = a + k * d
        boxes = [prompt_box(prev, pad) for prev in front["objects"]]
        preds = [session.predict(axis, b, box) for box in boxes]
        for prev, pred in zip(front["objects"], preds):
            if broken_rule(rules, prev, pred.mask, float(pred.iou)) is not None:
                count("refused: stop rule")
                return None
            if dice(prev, pred.mask) < agree:
                count("refused: masks disagree")
                return None
        count("jumps")
        steps = []
        for j in range(1, k):
            t = j / k
            step = Step(a + j * d, d, a, np.zeros((h, w), bool), [], [], seed=seed,
                        between=(a, b))
            for prev, p_iou, box, pred in zip(front["objects"], front["ious"], boxes, preds):
                if fill == "interp":
                    m = interpolate_masks(prev, pred.mask, t)
                    iou = min(p_iou, float(pred.iou))
                    mid = _mix_box(prompt_box(prev, pad), prompt_box(pred.mask, pad), t)
                else:
                    mid = _mix_box(box, prompt_box(pred.mask, pad), t)
                    emb = session.embed(axis, a if t <= 0.5 else b)
                    if fill == "mean":
                        emb = 0.5 * (session.embed(axis, a) + session.embed(axis, b))
                    m, iou = session.backend.decode(emb, (h, w), mid)
                    m, iou = np.asarray(m, bool), float(iou)
                step.mask |= m
                step.boxes.append(mid)
                step.ious.append(iou)
                step.object_masks.append(m)
            steps.append(step)
        end = Step(b, d, a, np.zeros((h, w), bool), [], [], seed=seed)
        for box, pred in zip(boxes, preds):
            end.mask |= pred.mask
            end.boxes.append(box)
            end.ious.append(float(pred.iou))
            end.object_masks.append(pred.mask)
        front["objects"] = [p.mask for p in preds]
        front["ious"] = [float(p.iou) for p in preds]
        front["at"] = b
        return steps + [end]

    while fronts:
        for d in list(fronts):
            front = fronts[d]
            at, target = front["at"], front["target"]
            if target is not None and (target - at) * d <= 0:  # a refused jump's end reached
                front["target"], front["max_jump"], target = None, stride, None
            limit = front["max_jump"] if target is None else min(front["max_jump"],
                                                                 (target - at) * d)
            reach = 0
            for j in range(1, limit + 1):
                if blocked(at + j * d) is not None:
                    break
                reach = j
            if reach >= 2:
                steps = jump(front, d, reach)
                if steps is not None:
                    yield from steps
                    continue
                front["target"] = at + reach * d  # encoded: the front will pass through it
                front["max_jump"] = reach // 2 if halve else 1
            i = front["at"] + d
            reason = blocked(i)
            if reason is not None:
                del fronts[d]
                yield Stop(d, i, reason, front["at"], seed)
                continue
            step = Step(i, d, front["at"], np.zeros((h, w), bool), [], [], seed=seed)
            alive = step_objects(session, axis, step, front["objects"], rules, pad,
                                 front["reasons"])
            ious = list(step.ious)
            if not alive:
                del fronts[d]
                yield Stop(d, i, "; ".join(dict.fromkeys(front["reasons"])), front["at"], seed)
                continue
            front["objects"], front["ious"], front["at"] = alive, ious, i
            yield step


__all__ = ["AGREE", "FAST_MM", "FILLS", "interpolate_masks", "propagate_sparse", "stride_for"]
