"""A case's scan and saved work: open it, import a segmentation made elsewhere as reviewed."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from medsam_gui.dataset.manifest import Case, Dataset
from medsam_gui.errors import MedsamError


def load_case_volume(case: Case):
    from medsam_gui.io import load_volume

    return load_volume(case.image, series_uid=case.series_uid)


def import_labels(ds: Dataset, case: Case, labels_path: str, volume=None,
                  names: Optional[Dict[int, str]] = None) -> Tuple[Path, int, List[str]]:
    """Save the segmentation ``labels_path`` as the case's work, every labelled slice of the
    acquisition view marked reviewed ("accepted", method "imported"): a segmentation the user
    brings from another tool or an earlier study is their reviewed work. Refused when the case
    has saved work already (nothing a person drew is replaced).

    Returns (workspace folder, slices marked reviewed, notes).
    """
    from medsam_gui.annotation import LabelMap
    from medsam_gui.annotation.importing import import_segmentation
    from medsam_gui.io.label_import import read_segmentation
    from medsam_gui.volume import view_for_axis

    volume = volume if volume is not None else load_case_volume(case)
    ws = ds.workspace(case)
    if ws.has(volume):
        raise MedsamError(f"case {case.id} has saved work already; its labels were not "
                          "replaced", labels_path)
    imported = read_segmentation(labels_path, volume)
    for value, name in (names or {}).items():
        if not imported.names.get(value):
            imported.names[value] = name
    lm = LabelMap(volume.shape)
    geometry = view_for_axis(volume.affine, volume.shape, 2)
    import_segmentation(lm, imported, geometry, Path(labels_path), "replace")
    for rec in list(lm.records.values()):
        lm.record(rec.copy(status="accepted"))
    folder = ws.save(volume, lm)
    return folder, len({(r.axis, r.index) for r in lm.records.values()}), imported.notes
