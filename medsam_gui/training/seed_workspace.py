"""Turn an existing label volume (e.g. expert ground truth) into reviewed workspace annotations.

Used by the tests and the benchmark (BRATS ground truth stands in for a clinician's corrected
masks) and useful for starting a fine-tune from labels made elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from medsam_gui.annotation import LabelMap, SliceRecord, Workspace
from medsam_gui.errors import MedsamError


def tumour_slices(labels: np.ndarray, volume, axis: str = "axial", n: int = 20,
                  min_pixels: int = 50) -> list:
    """``n`` slice indices spread evenly over the slices with at least ``min_pixels`` label."""
    geom = volume.geometry(axis)
    hits = [i for i in range(geom.n_slices) if int(geom.take(labels, i).sum()) >= min_pixels]
    if not hits:
        return []
    pick = np.linspace(0, len(hits) - 1, num=min(n, len(hits))).round().astype(int)
    return sorted({hits[k] for k in pick})


def workspace_from_labels(scan_path: str, labels_path: str, workspace_dir: str,
                          slices: Optional[Sequence[int]] = None, axis: str = "axial",
                          n_slices: int = 20, status: str = "accepted",
                          label_name: str = "lesion") -> Path:
    """Save label ``labels > 0`` of the given slices as label 1 with ``status`` records."""
    import nibabel as nib

    from medsam_gui.io import load_volume

    volume = load_volume(scan_path)
    try:
        gt = np.asarray(nib.load(str(labels_path)).dataobj) > 0
    except Exception as exc:
        raise MedsamError(f"cannot read the label volume ({exc})", labels_path) from None
    if gt.shape != volume.shape:
        raise MedsamError(f"label volume shape {gt.shape} differs from the scan {volume.shape}",
                          labels_path)
    if slices is None:
        slices = tumour_slices(gt, volume, axis, n_slices)
    lm = LabelMap(volume.shape)
    lm.table.rename(1, label_name)
    geom = volume.geometry(axis)
    for i in slices:
        lm.paint(geom, int(i), geom.take(gt, int(i)), 1,
                 record=SliceRecord(axis, int(i), 1, status=status, model="ground truth"))
    return Workspace(workspace_dir).save(volume, lm)
