"""Put a label array from another grid onto a volume's grid, through the two affines.

Three cases, told apart by the map from volume voxels to the other grid's voxels:

- the same grid: taken as it is;
- the same voxel centres in another order (axes flipped or permuted, e.g. a label map written
  by a converter that reorients): reordered exactly, no interpolation;
- anything else: resampled by nearest neighbour (nibabel + scipy), with a warning.

The sanity check needs no ground truth: the labelled physical volume that lands inside the scan
is compared with the labelled volume of the file. Less than half of it inside means the file
belongs to another scan (or its orientation is wrong), and nothing is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import MedsamError
from ..volume import Volume

EXACT_TOL = 1e-3  # voxels
MIN_INSIDE = 0.5  # refuse below this fraction of the labelled volume inside the scan
WARN_INSIDE = 0.95


@dataclass
class Placed:
    array: np.ndarray  # on the volume grid
    how: str  # "same" | "reordered" | "resampled"
    inside: float  # fraction of the labelled physical volume inside the scan
    notes: List[str] = field(default_factory=list)


def _signed_permutation(m: np.ndarray) -> Optional[Tuple[List[int], List[int], List[int]]]:
    """(source axis, sign, offset) per volume axis if ``m`` maps voxel centres onto centres."""
    r = np.round(m[:3, :3])
    t = np.round(m[:3, 3])
    if not (np.allclose(m[:3, :3], r, atol=EXACT_TOL) and np.allclose(m[:3, 3], t,
                                                                      atol=EXACT_TOL)):
        return None
    if not (np.abs(r).sum(axis=0) == 1).all() or not (np.abs(r).sum(axis=1) == 1).all():
        return None
    axes, signs, offsets = [], [], []
    for a in range(3):  # column a: where volume axis a goes in the source
        src = int(np.flatnonzero(r[:, a])[0])
        axes.append(src)
        signs.append(int(r[src, a]))
        offsets.append(int(t[src]))
    return axes, signs, offsets


def _reorder(src: np.ndarray, shape: Tuple[int, int, int], axes: List[int], signs: List[int],
             offsets: List[int]) -> np.ndarray:
    moved = np.transpose(src, axes)  # axis a of ``moved`` runs along volume axis a
    out = np.zeros(shape, dtype=src.dtype)
    dst_idx, src_idx = [], []
    for a in range(3):
        v = np.arange(shape[a])
        s = signs[a] * v + offsets[a]
        ok = (s >= 0) & (s < moved.shape[a])
        dst_idx.append(v[ok])
        src_idx.append(s[ok])
    if all(len(i) for i in dst_idx):
        out[np.ix_(*dst_idx)] = moved[np.ix_(*src_idx)]
    return out


def _resample(src: np.ndarray, affine: np.ndarray, volume: Volume) -> np.ndarray:
    import nibabel as nib
    from nibabel.processing import resample_from_to

    img = nib.Nifti1Image(src, affine)
    out = resample_from_to(img, (volume.shape, volume.affine), order=0, mode="constant", cval=0)
    return np.asarray(out.dataobj).astype(src.dtype, copy=False)


def onto_volume_grid(array: np.ndarray, affine: np.ndarray, volume: Volume,
                     path: Optional[Path] = None) -> Placed:
    """``array`` (voxel -> RAS mm by ``affine``) placed on ``volume``'s grid (module doc)."""
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    if array.ndim != 3:
        raise MedsamError(f"a label map must be 3D, this one has shape {array.shape}", path)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedsamError("its affine is singular: the label map cannot be placed in space", path)
    m = np.linalg.inv(affine) @ volume.affine
    perm = _signed_permutation(m)
    if perm is not None and perm[0] == [0, 1, 2] and perm[1] == [1, 1, 1] \
            and perm[2] == [0, 0, 0] and array.shape == volume.shape:
        placed, how = array, "same"
    elif perm is not None:
        placed, how = _reorder(array, volume.shape, *perm), "reordered"
    else:
        placed, how = _resample(array, affine, volume), "resampled"
    n_src = int(np.count_nonzero(array))
    if n_src == 0:
        raise MedsamError("the label map holds no labels (every voxel is 0)", path)
    src_vox = abs(float(np.linalg.det(affine[:3, :3])))
    vol_vox = abs(float(np.linalg.det(volume.affine[:3, :3])))
    inside = float(np.count_nonzero(placed)) * vol_vox / (n_src * src_vox)
    notes: List[str] = []
    if how != "same" and inside < MIN_INSIDE:
        raise MedsamError(
            f"only {100 * min(inside, 1):.0f} % of its labelled volume falls inside the open "
            "scan: it does not belong to this scan, or its orientation is wrong; nothing was "
            "imported", path)
    if how == "reordered":
        notes.append("the label map holds this scan's grid in another voxel order; it was "
                     "reordered exactly (no resampling)")
    if how == "resampled":
        notes.append(f"the label map is on another grid ({'×'.join(map(str, array.shape))} "
                     f"voxels of {_zooms(affine)} mm): it was resampled by nearest neighbour "
                     "through the two affines; check its edges")
    if how != "same" and inside < WARN_INSIDE:
        notes.append(f"{100 * (1 - min(inside, 1)):.0f} % of its labelled volume lies outside "
                     "the open scan and was left out")
    return Placed(placed, how, inside, notes)


def _zooms(affine: np.ndarray) -> str:
    z = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return "×".join(f"{v:.3g}" for v in z)
