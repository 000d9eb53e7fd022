"""A box drawn on a filled slice: a correction of that fill, not a new start (no Qt).

On a slice that already holds an unreviewed fill (propagated, interpolated), a box a person
draws says where the structure is; the model's mask for that box alone is often worse than the
fill it would replace (about one time in three on the review queue's slices,
``benchmarks/bench_queue.py``). ``correct_fill`` combines the fill and the box (``METHODS``):

- ``box``: the model's mask for the box alone (the official box path; what a box does on an
  empty slice).
- ``clip``: the fill inside the box. A box around the structure says nothing is outside it, so
  this never adds an error to the fill; it does not add what the fill misses.
- ``span``: ``clip`` when the fill reaches every edge of the box (it covers the box's extent),
  else the box's mask (the fill misses part of what the box holds).
- ``union``: the fill inside the box, with the box's mask added.
- ``fit``: ``clip`` when the fill reaches every edge of the box, else ``union``.
- ``prompt``: the box with the fill's low-res logits as SAM's mask prompt (the logits of the
  fill's own prompt box, decoded again).
- ``score``: the box's mask or the fill inside the box, whichever the model scores higher (the
  fill's recorded IoU).

Measured side by side in one run (``benchmarks/bench_queue.py --users box,box:union,...``: the
issue's simulated person, a ground-truth box on the review queue's first untouched slice, each
correction propagated again from all key slices; CT and MR 4 organs each, BRATS FLAIR whole
tumour and T1c core; mean 3D Dice over the four kinds after one box / +1 / +2 / +3, and the
corrections of 30 that lowered a structure's 3D Dice by more than 0.001):

    box     .680 .721 .742 .738  lowered 11      prompt  .680 .725 .705 .711  lowered 9
    span    .680 .726 .748 .746  lowered 7       score   .680 .731 .748 .749  lowered 2
    fit     .680 .732 .751 .755  lowered 2       union   .680 .732 .752 .756  lowered 1

``union`` is the default: it raised (or kept, to 3 decimals) every kind's mean at every step
(FLAIR .840 .840 .840 .842, T1c .469 .528 .597 .597, CT .880 .884 .885 .890, MR .531 .678
.686 .692); its one drop is the CT left kidney's third correction (0.918 -> 0.909). The mask
prompt (``prompt``) made the CT right kidney 0.917 -> 0.598 and the T1c core fall. ``clip``
cannot grow a fill that missed the structure (the MR spleen, whose first box gives 3D Dice
0.042, stayed there); it was not run on the rest.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from medsam_gui.engine.evaluate import mask_box

Box = Tuple[float, float, float, float]
METHODS = ("box", "clip", "span", "union", "fit", "prompt", "score")
DEFAULT_METHOD = "union"  # measured: see the module docstring
EDGE_TOLERANCE = 2.0  # pixels: a fill this close to a box edge reaches it


def box_mask(shape: Tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """The pixels inside ``box`` (x0, y0, x1, y1, inclusive, rounded outward)."""
    h, w = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    out = np.zeros((h, w), bool)
    out[max(int(np.floor(min(y0, y1))), 0):min(int(np.ceil(max(y0, y1))) + 1, h),
        max(int(np.floor(min(x0, x1))), 0):min(int(np.ceil(max(x0, x1))) + 1, w)] = True
    return out


def reaches_edges(mask: np.ndarray, box: Sequence[float],
                  tolerance: float = EDGE_TOLERANCE) -> bool:
    """True when ``mask`` (already inside ``box``) comes within ``tolerance`` pixels of each of
    the box's four edges."""
    if not mask.any():
        return False
    x0, y0, x1, y1 = mask_box(mask)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    return (x0 - min(bx0, bx1) <= tolerance and y0 - min(by0, by1) <= tolerance
            and max(bx0, bx1) - x1 <= tolerance and max(by0, by1) - y1 <= tolerance)


def combine(fill: np.ndarray, box: Sequence[float], own: np.ndarray, own_iou: float,
            fill_iou: Optional[float] = None, method: str = DEFAULT_METHOD
            ) -> Tuple[np.ndarray, float]:
    """The corrected mask and its score from the ``fill`` on the slice and the model's mask
    ``own`` (score ``own_iou``) for ``box`` (every method of ``METHODS`` but ``prompt``)."""
    if method not in METHODS or method == "prompt":
        raise ValueError(f"unknown correction {method!r}; expected one of {', '.join(METHODS)}")
    own = np.asarray(own, bool)
    inside = np.asarray(fill, bool) & box_mask(own.shape, box)
    if method == "box" or not inside.any():
        return own, float(own_iou)
    kept = float(fill_iou) if fill_iou is not None else float(own_iou)
    if method == "clip":
        return inside, kept
    if method == "span":
        return (inside, kept) if reaches_edges(inside, box) else (own, float(own_iou))
    if method == "union" or method == "fit" and not reaches_edges(inside, box):
        return inside | own, float(own_iou)
    if method == "fit":
        return inside, kept
    return (inside, kept) if kept > own_iou else (own, float(own_iou))  # score


def correct_fill(session, axis: str, index: int, box: Sequence[float], fill: np.ndarray,
                 fill_iou: Optional[float] = None, fill_box: Optional[Sequence[float]] = None,
                 method: str = DEFAULT_METHOD) -> Tuple[np.ndarray, float]:
    """The mask (bool, slice shape) and its score for ``box`` drawn on slice ``index`` that
    holds the unreviewed ``fill`` (``fill_iou``: its model IoU; ``fill_box``: the prompt box
    that made it, default the fill's own box), by ``session.predict`` (a benchmark's session;
    the window's goes through ``Session.predict(..., previous_mask=fill)``)."""
    if method == "prompt":
        return _prompted(session, axis, index, box, np.asarray(fill, bool), fill_box)
    pred = session.predict(axis, index, box)
    return combine(fill, box, pred.mask, float(pred.iou), fill_iou, method)


def _prompted(session, axis, index, box, fill, fill_box) -> Tuple[np.ndarray, float]:
    from medsam_gui.engine.refine import decode_logits

    emb = session.embed(axis, index)
    shape = session.volume.geometry(axis).slice_shape
    box = tuple(float(v) for v in box)
    if not fill.any():
        mask, iou, _ = decode_logits(session.backend, emb, shape, box)
        return mask, iou
    prior = tuple(float(v) for v in (fill_box if fill_box is not None else mask_box(fill)))
    _m, _i, logits = decode_logits(session.backend, emb, shape, prior)
    mask, iou, _ = decode_logits(session.backend, emb, shape, box, None, logits)
    return mask, iou


__all__ = ["DEFAULT_METHOD", "METHODS", "box_mask", "combine", "correct_fill", "reaches_edges"]
