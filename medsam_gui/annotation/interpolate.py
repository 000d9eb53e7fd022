"""Fill the slices between key slices of a label by morphological contour interpolation.

The method is ITK's MorphologicalContourInterpolator (Albu et al. 2008; the one 3D Slicer and
OHIF use), from the ``itk-morphologicalcontourinterpolation`` package. Key slices are the
slices of the label a person drew or reviewed (``review.DRAWN`` / ``REVIEWED`` with voxels);
the slices between two consecutive keys that are empty or only filled (``review.FILLABLE``)
receive the interpolated shape. Voxels of other labels are never taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from medsam_gui.annotation import review
from medsam_gui.annotation.labels import LabelMap
from medsam_gui.errors import MedsamError
from medsam_gui.volume import ViewGeometry


@dataclass
class Filled:
    index: int
    mask: np.ndarray  # bool, display orientation of the view
    between: Tuple[int, int]  # the key slices it was interpolated from


def key_slices(states: List[str]) -> List[int]:
    return [i for i, s in enumerate(states) if s in (review.DRAWN, review.REVIEWED)]


def _morphological_interpolation(volume: np.ndarray, axis: int) -> np.ndarray:
    """ITK's interpolator on a binary uint8 array, interpolating along numpy ``axis``."""
    try:
        import itk
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise MedsamError("interpolation needs the itk-morphologicalcontourinterpolation "
                          f"package ({exc})") from None
    image = itk.image_from_array(np.ascontiguousarray(volume, np.uint8))
    filt = itk.MorphologicalContourInterpolator.New(image)
    filt.SetAxis(2 - axis)  # ITK orders axes x, y, z: the reverse of numpy's
    filt.SetLabel(1)
    filt.Update()
    return np.asarray(itk.array_from_image(filt.GetOutput())) > 0


def interpolate(labelmap: LabelMap, geometry: ViewGeometry, value: int) -> List[Filled]:
    """Masks for the fillable slices between consecutive key slices of label ``value`` on
    ``geometry``'s view (nothing is written; the caller paints them as one undo step)."""
    states = review.slice_states(labelmap, geometry, value)
    keys = key_slices(states)
    if len(keys) < 2:
        raise MedsamError(f"interpolation needs at least two slices of this label that a person "
                          f"drew or reviewed on the {geometry.view} view (found {len(keys)})")
    gaps = [(a, b) for a, b in zip(keys, keys[1:])
            if b - a > 1 and any(states[i] in review.FILLABLE for i in range(a + 1, b))]
    if not gaps:
        return []
    axis = geometry.slice_axis
    hit = labelmap.array == int(value)
    lo, hi = keys[0], keys[-1]
    # crop to the keys' bounding box (plus a margin for shapes that grow between keys)
    sub = np.moveaxis(hit, axis, 0)[lo:hi + 1]
    key_rel = [k - lo for k in keys]
    only_keys = np.zeros_like(sub)
    only_keys[key_rel] = sub[key_rel]
    rows = np.flatnonzero(only_keys.any(axis=(0, 2)))
    cols = np.flatnonzero(only_keys.any(axis=(0, 1)))
    r0, r1 = max(rows[0] - 2, 0), min(rows[-1] + 3, sub.shape[1])
    c0, c1 = max(cols[0] - 2, 0), min(cols[-1] + 3, sub.shape[2])
    result = np.zeros_like(sub)
    result[:, r0:r1, c0:c1] = _morphological_interpolation(only_keys[:, r0:r1, c0:c1], 0)
    full = np.zeros(hit.shape, bool)
    np.moveaxis(full, axis, 0)[lo:hi + 1] = result  # back on the source grid
    out = []
    for a, b in gaps:
        for i in range(a + 1, b):
            if states[i] in review.FILLABLE:
                mask = geometry.take(full, i).copy()
                if mask.any():
                    out.append(Filled(i, mask, (a, b)))
    return out


__all__ = ["Filled", "interpolate", "key_slices"]
