"""Scoring masks against a reference: Dice, ground-truth boxes and slice choice (no Qt).

Used by the tests and benchmarks that measure model input and segmentation quality on real
scans with expert labels, so that every number in our notes is computed the same way.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

Box = Tuple[float, float, float, float]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def mask_box(mask2d: np.ndarray, pad: float = 0.0) -> Box:
    """(x0, y0, x1, y1) around a non-empty 2D mask, widened by ``pad`` pixels, clipped."""
    rows = np.flatnonzero(mask2d.any(axis=1))
    cols = np.flatnonzero(mask2d.any(axis=0))
    if rows.size == 0:
        raise ValueError("an empty mask has no box")
    h, w = mask2d.shape
    return (max(0.0, cols[0] - pad), max(0.0, rows[0] - pad),
            min(w - 1.0, cols[-1] + pad), min(h - 1.0, rows[-1] + pad))


def pick_slices(geometry, truth3d: np.ndarray, n: int, min_area: int = 50) -> List[int]:
    """Up to ``n`` slice indices of ``geometry``'s view, evenly spread over the slices where
    the reference has at least ``min_area`` pixels (the extreme tips are left out)."""
    counts = np.array([int(geometry.take(truth3d, i).sum()) for i in range(geometry.n_slices)])
    ok = np.flatnonzero(counts >= min_area)
    if ok.size <= n:
        return ok.tolist()
    picks = np.linspace(0, ok.size - 1, n + 2)[1:-1]
    return sorted({int(ok[int(round(p))]) for p in picks})


def gt_box_dice(session, axis: str, truth3d: np.ndarray, slices: Sequence[int],
                pad: float = 0.0, truth_geometry=None) -> List[float]:
    """Dice per slice of ``session.predict`` with the reference's own box on that slice."""
    geom = truth_geometry or session.volume.geometry(axis)
    out = []
    for k in slices:
        truth = geom.take(truth3d, k)
        pred = session.predict(axis, k, mask_box(truth, pad))
        out.append(dice(pred.mask, truth))
    return out


def mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None
