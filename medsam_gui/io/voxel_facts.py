"""What a volume's voxels say before anyone looks: NaN/infinite voxels (counted, placed, and
refused only when none is finite) and a guess of CT or MR for formats with no modality field.
Shared by every reader (NIfTI, NRRD/MetaImage, MGH, DICOM)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MedsamError


def non_finite_note(data: np.ndarray, path: Path, context: str = "") -> Optional[str]:
    """What the open message says about NaN/infinite voxels (count, kinds, where), or None.

    Such voxels are kept as they are (the voxels are never changed): the display shows NaN
    and -inf black, like the background, and +inf white; the model input maps them the same
    way (``engine.intensity``), and statistics leave them out. Only a volume with no finite
    voxel at all is refused: there is nothing to show.
    """
    if not np.issubdtype(data.dtype, np.floating):
        return None
    finite = np.isfinite(data)
    bad = int(data.size - np.count_nonzero(finite))
    if not bad:
        return None
    if bad == data.size:
        raise MedsamError(f"{bad} of {data.size} voxels are not finite (NaN or infinity): "
                          f"there is nothing to show{context}", path)
    n_nan = int(np.count_nonzero(np.isnan(data)))
    n_pos = int(np.count_nonzero(data == np.inf))
    kinds = ", ".join(f"{n} {what}" for n, what in
                      ((n_nan, "NaN"), (n_pos, "+inf"), (bad - n_nan - n_pos, "-inf")) if n)
    where = []
    for axis, letter in enumerate("ijk"):
        hit = np.flatnonzero(~finite.all(axis=tuple(a for a in range(3) if a != axis)))
        where.append(f"{letter} {hit[0]}..{hit[-1]}")
    return (f"{bad} of {data.size} voxels ({100.0 * bad / data.size:.1f}%) are not finite "
            f"({kinds}), within voxels {', '.join(where)}{context}: NaN and -inf are shown "
            "black like the background and given to the model as its darkest value, +inf "
            "as its brightest")


def guess_modality(data: np.ndarray) -> str:
    """Guess "CT" or "MR" for a NIfTI volume, which has no modality field.

    CT is stored in Hounsfield units: integer values, air at about -1000 and nearly everything
    between air and dense bone/contrast. So: integer-valued data (checked on a sample), minimum
    <= -500, and at least 60% of voxels within -1100..3100 (60%, not more, because scanners pad
    outside the field of view with -2048 or -3024). A CT stored without its rescale (raw
    unsigned values, HU + 1024) is recognised by its two peaks: air (HU + 1024 below 224) and
    soft tissue (874..1324) hold >= 85% of the voxels together with bone, soft tissue >= 25%,
    and the band between lung and fat (574..874) < 5% (on the CT in ../shared/data: 95%/32%/1%
    and 94%/61%/3%; on raw MR: soft tissue <= 3%). Anything else (non-negative MR, z-scored or
    8-bit templates, phase images spread over -4096..4096) is "MR". Model ▸ Modality overrides.
    """
    if data.size == 0:
        return "MR"
    flat = np.ravel(data, order="K")
    sample = flat[:: max(1, flat.size // 200_000)]
    lowest = None
    if np.issubdtype(sample.dtype, np.floating):
        sample = sample[np.isfinite(sample)]  # NaN/inf voxels say nothing about the modality
        if sample.size == 0 or not np.array_equal(sample, np.round(sample)):
            return "MR"
        lowest = float(np.min(data, where=np.isfinite(data), initial=np.inf))
    if (float(data.min()) if lowest is None else lowest) > -500:
        return "CT" if _looks_like_unrescaled_ct(sample) else "MR"
    inside = np.count_nonzero((sample >= -1100) & (sample <= 3100))
    return "CT" if inside >= 0.6 * sample.size else "MR"


def _looks_like_unrescaled_ct(sample: np.ndarray) -> bool:
    s = sample.astype(np.float64)
    n = float(s.size)
    air = np.count_nonzero((s >= -200) & (s < 224)) / n
    gap = np.count_nonzero((s >= 574) & (s < 874)) / n
    soft = np.count_nonzero((s >= 874) & (s < 1324)) / n
    bone = np.count_nonzero((s >= 1324) & (s < 4096)) / n
    return soft >= 0.25 and gap < 0.05 and air + soft + bone >= 0.85
