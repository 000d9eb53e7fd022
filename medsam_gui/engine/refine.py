"""Corrective clicks: refine a box's mask so that each click moves it toward the truth.

LiteMedSAM was trained with boxes only; its decoder reads clicks passed beside the box as
noise (mean Dice fell with every click, ``benchmarks/bench_clicks.py``). The methods measured
side by side there (per kind of scan, Dice after 0..5 clicks) are all here, named by
``METHODS``; ``DEFAULT_METHOD`` is the one the window and the CLI use. Each method turns the
state after the previous click (mask and low-res logits) and one new click into a new state,
so ``Session.predict`` keeps the state per slice and pays one or two decoder calls per click.

- ``points``: the box and all clicks as SAM's sparse prompts (the old click path).
- ``mask_prompt``: as ``points`` plus the previous low-res logits as SAM's mask prompt.
- ``local`` (the default): a positive click re-prompts only the region around it: a box
  centred on the click, sized from the distance r between the click and the current mask's
  edge (a click in the middle of an error region is about that far from its border), is
  decoded alone; the part of its mask connected to the click, within 1.5 r of it, is added.
  A negative click removes a disk of 0.7 r around it (r: its distance to the mask's outside),
  without the model: a box around a leak holds the true structure too, and removing the
  model's mask there cut into it (abdominal CT, 3 clicks: 0.897 with the model's mask,
  0.936 with the disk, box alone 0.951; ``neg_disk=0`` restores the model's mask).
- ``local+mask``: ``local`` for positive clicks, ``mask_prompt`` for negative ones.

Every method keeps the clicks' own promise: a positive click's pixel ends inside the mask and
a negative click's outside, whatever the decoder says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

Click = Tuple[float, float, int]  # x, y (display pixels), 1 positive / 0 negative
Box = Tuple[float, float, float, float]

METHODS = ("points", "mask_prompt", "local", "local+mask")
DEFAULT_METHOD = "local"


@dataclass
class RefineState:
    """What one slice's last prediction leaves for the next click."""

    box: Optional[Box]
    clicks: List[Click] = field(default_factory=list)
    mask: Optional[np.ndarray] = None  # bool, slice shape
    logits: Optional[torch.Tensor] = None  # (1, 1, 256, 256) decoder frame
    iou: float = 0.0
    method: str = ""  # the method that made it ("" for the box alone)


def decode_logits(backend, embedding: torch.Tensor, shape: Tuple[int, int],
                  box: Optional[Sequence[float]], points: Optional[Sequence[Click]] = None,
                  mask_input: Optional[torch.Tensor] = None
                  ) -> Tuple[np.ndarray, float, torch.Tensor]:
    """As ``Backend.decode`` with a box (single-mask output) but also returns the low-res
    logits, for the next call's mask prompt. With no points and no mask this is the box path
    of ``Backend.decode`` step for step."""
    shape = (int(shape[0]), int(shape[1]))
    with backend._gate.decoding(), torch.inference_mode():
        low_res, iou = backend.low_res(embedding, shape, box, points, mask_input)
        mask = backend.postprocess(low_res, shape).cpu().numpy()
        return mask, float(iou.reshape(-1)[0]), low_res.clone()


def _pixel(click: Click, shape: Tuple[int, int]) -> Tuple[int, int]:
    h, w = shape
    return (min(max(int(round(click[1])), 0), h - 1), min(max(int(round(click[0])), 0), w - 1))


def _keep_promise(mask: np.ndarray, clicks: Sequence[Click], radius: float = 1.5) -> np.ndarray:
    """Each click's own pixel (and a small disk) on its side of the mask."""
    h, w = mask.shape
    out = mask.copy()
    r = int(math.ceil(radius))
    for c in clicks:
        y, x = _pixel(c, (h, w))
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, h), max(x - r, 0), min(x + r + 1, w)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disk = (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2
        out[y0:y1, x0:x1][disk] = bool(c[2])
    return out


def _local(backend, embedding, shape, state: RefineState, click: Click,
           scale: float = 2.0, reach: float = 1.5, neg_disk: float = 0.7) -> np.ndarray:
    """The ``local`` step: add or remove the model's mask of a box around the click."""
    mask = state.mask if state.mask is not None else np.zeros(shape, bool)
    h, w = shape
    y, x = _pixel(click, shape)
    positive = bool(click[2])
    if positive and mask[y, x] or not positive and not mask[y, x]:
        return mask  # already on the right side: nothing to correct here
    # distance from the click to the mask's edge: about the error region's radius
    other = ~mask if not positive else mask
    if other.any():
        r = float(ndimage.distance_transform_edt(~other)[y, x])
    else:
        r = 0.05 * max(h, w)
    floor = 3.0 * max(h, w) / 256.0  # a few pixels of the decoder frame
    r = max(r, floor)
    half = scale * r
    box = (max(x - half, 0.0), max(y - half, 0.0), min(x + half, w - 1.0), min(y + half, h - 1.0))
    yy, xx = np.ogrid[:h, :w]
    if not positive and neg_disk > 0:  # remove a disk, no model
        return mask & ~((yy - y) ** 2 + (xx - x) ** 2 <= (neg_disk * r) ** 2)
    local, _iou, _ = decode_logits(backend, embedding, shape, box)
    near = (yy - y) ** 2 + (xx - x) ** 2 <= (reach * r) ** 2
    region = local & near
    lab, _n = ndimage.label(region)
    if lab[y, x]:
        region = lab == lab[y, x]
    else:  # the local box found nothing under the click: a disk of the estimated radius
        region = (yy - y) ** 2 + (xx - x) ** 2 <= (0.5 * r) ** 2
    return mask | region if positive else mask & ~region


def corrective_click(truth: np.ndarray, mask: np.ndarray) -> Optional[Click]:
    """The standard simulated user: a click at the centre (distance-transform maximum) of the
    largest connected error region, positive on a miss and negative on a leak; None if the
    mask is right."""
    truth, mask = np.asarray(truth, bool), np.asarray(mask, bool)
    error = truth ^ mask
    lab, n = ndimage.label(error)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    region = lab == 1 + int(np.argmax(sizes))
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y), int(truth[y, x])


def start(backend, embedding, shape, box: Optional[Box]) -> RefineState:
    """The box-only state (the official box path)."""
    if box is None:
        return RefineState(None, [], np.zeros(tuple(int(v) for v in shape), bool), None, 0.0)
    mask, iou, logits = decode_logits(backend, embedding, shape, box)
    return RefineState(box, [], mask, logits, iou)


def step(backend, embedding, shape, state: RefineState, click: Click,
         method: str = DEFAULT_METHOD, **local_kw) -> RefineState:
    """The state after one more click (``local_kw``: ``scale``, ``reach`` of ``local``)."""
    if method not in METHODS:
        raise ValueError(f"unknown refinement {method!r}; expected one of {', '.join(METHODS)}")
    shape = (int(shape[0]), int(shape[1]))
    click = (float(click[0]), float(click[1]), int(click[2]))
    clicks = state.clicks + [click]
    positive = bool(click[2])
    logits, iou = state.logits, state.iou
    if method == "points" or state.box is None:
        mask, iou, logits = decode_logits(backend, embedding, shape, state.box, clicks)
    elif method == "mask_prompt" or (method == "local+mask" and not positive):
        mask, iou, logits = decode_logits(backend, embedding, shape, state.box, clicks,
                                          state.logits)
    else:
        mask = _local(backend, embedding, shape, state, click, **local_kw)
    mask = _keep_promise(mask, clicks)
    return RefineState(state.box, clicks, mask, logits, iou, method)


def refine(backend, embedding, shape, box: Optional[Box], clicks: Sequence[Click],
           method: str = DEFAULT_METHOD) -> RefineState:
    """Box, then each click in order (no cached state)."""
    state = start(backend, embedding, shape, box)
    for c in clicks:
        state = step(backend, embedding, shape, state, c, method)
    return state


__all__ = ["DEFAULT_METHOD", "METHODS", "RefineState", "corrective_click", "decode_logits", "refine", "start", "step"]
