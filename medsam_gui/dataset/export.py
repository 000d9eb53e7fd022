"""Hand a dataset to nnU-Net: the nnU-Net v2 raw layout, on each scan's exact grid.

``OUT/imagesTr/<case>_0000.nii.gz`` is the scan (voxels as loaded, the volume's affine in sform
and qform, so a DICOM case is converted on its exact grid), ``OUT/labelsTr/<case>.nii.gz`` the
case's saved label map written by ``medsam_gui.io.save_label_map`` (verified) on the same grid,
and ``OUT/dataset.json`` names the channel, the labels and the number of cases.

nnU-Net wants one label table for the dataset with consecutive values (0 background, 1, 2, …):
labels are matched across cases by name, numbered in the order first met, and each case's
values are renumbered to them. Only cases marked done are exported unless ``all_cases``.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from medsam_gui.dataset.cases import load_case_volume
from medsam_gui.dataset.manifest import Dataset, PathLike
from medsam_gui.dataset.status import case_status
from medsam_gui.errors import MedsamError
from medsam_gui.io.atomic import atomic_path, write_synced

FORMATS = ("nnunet",)
ENDING = ".nii.gz"


@dataclass
class ExportResult:
    folder: Path
    cases: List[str] = field(default_factory=list)
    labels: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def _image_nifti(volume) -> bytes:
    """The scan as NIfTI bytes on its own grid (codes from the source NIfTI, else 1/1)."""
    import nibabel as nib

    from medsam_gui.io.labels import _codes, _qform_representable

    data = np.asarray(volume.data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    img = nib.Nifti1Image(data, volume.affine)
    sform, qform, units = _codes(volume)
    img.set_sform(volume.affine, code=max(sform, 1))
    img.set_qform(volume.affine, code=max(qform, 1) if _qform_representable(volume.affine)
                  else 0)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_xyzt_units(xyz=units if units != "unknown" else "mm")
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def _write(path: Path, data: bytes) -> None:
    try:
        with atomic_path(path) as tmp:
            write_synced(tmp, data)
    except OSError as exc:
        raise MedsamError(f"cannot write ({exc.strerror or exc})", path) from None


def _channel_name(modalities: List[str]) -> str:
    """nnU-Net normalises "CT" with its CT scheme and anything else per image (z-score)."""
    common = Counter(modalities).most_common(1)
    m = common[0][0] if common else "OT"
    return "CT" if m == "CT" else ("MRI" if m in ("MR", "MRI") else m)


def export_nnunet(ds: Dataset, out: PathLike, all_cases: bool = False,
                  progress: Optional[Callable[[int, int, str], None]] = None) -> ExportResult:
    """Write the nnU-Net v2 raw layout of the dataset's done cases (all saved cases with
    ``all_cases``) into ``out`` (a new or empty folder)."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MedsamError("the export folder must be new or empty (nothing is overwritten)",
                          out)
    chosen = []
    for c in ds.active():
        st = case_status(ds, c)
        if st.status == "done" or (all_cases and st.status != "new"):
            chosen.append(c)
    if not chosen:
        raise MedsamError("no case to export: mark cases done first (or export all saved "
                          "cases with --all)", ds.folder)
    result = ExportResult(out)
    for sub in ("imagesTr", "labelsTr"):
        try:
            (out / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MedsamError(f"cannot create the folder ({exc.strerror or exc})",
                              out / sub) from None
    from medsam_gui.annotation.review import label_values
    from medsam_gui.io import save_label_map

    names: Dict[str, int] = {}
    modalities: List[str] = []
    for k, case in enumerate(chosen):
        if progress is not None:
            progress(k, len(chosen), case.id)
        volume = load_case_volume(case)
        labelmap = ds.workspace(case).load(volume)
        if labelmap is None:
            result.notes.append(f"{case.id}: no saved work for this scan (was it changed?); "
                                "left out")
            continue
        remapped = np.zeros(labelmap.shape, np.uint16)
        table_values = [lab.value for lab in labelmap.table.labels]
        for v in sorted(set(table_values) | set(label_values(labelmap.array))):
            lab = labelmap.table.get(v)
            name = (lab.name if lab is not None and lab.name else f"label {v}").strip()
            new = names.setdefault(name, len(names) + 1)
            remapped[labelmap.array == v] = new
        _write(out / "imagesTr" / f"{case.id}_0000{ENDING}", _image_nifti(volume))
        save_label_map(remapped, volume, out / "labelsTr" / f"{case.id}{ENDING}")
        modalities.append(volume.modality)
        result.cases.append(case.id)
    if progress is not None:
        progress(len(chosen), len(chosen), "")
    if not result.cases:
        raise MedsamError("no case could be exported: " + "; ".join(result.notes), ds.folder)
    result.labels = {"background": 0, **names}
    meta = {"channel_names": {"0": _channel_name(modalities)}, "labels": result.labels,
            "numTraining": len(result.cases), "file_ending": ENDING, "name": ds.name,
            "description": f"exported by medsam-gui from {ds.folder}"}
    _write(out / "dataset.json", json.dumps(meta, indent=1).encode("utf-8"))
    return result
