"""Segmentations made elsewhere, in: a NIfTI / NRRD / MetaImage / MGZ label map, a 3D Slicer
segmentation (``.seg.nrrd``), a DICOM SEG or an RT Structure Set, onto the open scan's grid.

A NIfTI label map may be on the scan's grid, on the same grid in another voxel order, or on
another grid of the same scan (see ``resample``). Its values must be whole numbers within
0..65535 (a probability map or a float image is refused, not rounded). Names and colours come
from a label description file beside it when there is one (``x.itksnap.txt``, ``x.ctbl`` or
medsam-gui's ``x.json`` for ``x.nii.gz``), from the SEG's segment descriptions, or from the
structure set's ROI names and colours.

Nothing here touches a label map: ``annotation.importing`` applies the result as one undoable
change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from ..errors import MedsamError
from ..volume import Volume
from .dicom_seg import dicom_object_kind, read_seg
from .label_descriptions import LabelDescription, description_paths, read_descriptions
from .limits import check_array_size
from .nifti import _check_truncation, _open, _read_voxels, _spatial_shape, is_nifti_path
from .itk_formats import is_itk_path, is_slicer_seg_path
from .mgh import is_mgh_path
from .resample import onto_volume_grid
from .segments import ImportedSegments

PathArg = Union[str, "os.PathLike[str]"]
MAX_LABEL = 65535
DESCRIPTION_SUFFIXES = (".txt", ".ctbl", ".csv")


def _label_values(data: np.ndarray, path: Path) -> np.ndarray:
    """Check the voxel values of a label map and return them as uint16."""
    if data.dtype == bool:
        return data.astype(np.uint16)
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.all():
            raise MedsamError(f"{int(data.size - np.count_nonzero(finite))} voxels are NaN or "
                              "infinite: this is not a label map", path)
        frac = data != np.round(data)
        if frac.any():
            sample = float(data[frac].flat[0])
            raise MedsamError(f"{int(np.count_nonzero(frac))} voxels hold fractional values "
                              f"(e.g. {sample:.3g}): a probability map or an image, not a label "
                              "map; threshold it into whole label values first", path)
    elif not np.issubdtype(data.dtype, np.integer):
        raise MedsamError(f"voxel type {data.dtype} cannot hold labels", path)
    lo, hi = (data.min(), data.max()) if data.size else (0, 0)
    if lo < 0:
        raise MedsamError(f"negative values (down to {lo:g}): labels are 0 (background) or "
                          "positive", path)
    if hi > MAX_LABEL:
        raise MedsamError(f"label values up to {hi:g}: more than the {MAX_LABEL} labels a label "
                          "table can hold", path)
    return data.astype(np.uint16)


def read_nifti_labels(path: Path, volume: Volume) -> ImportedSegments:
    img = _open(path)
    shape = tuple(int(s) for s in img.header.get_data_shape())
    try:
        shape3, n_volumes = _spatial_shape(path, shape)
    except MedsamError as exc:
        raise MedsamError(exc.problem.replace("medsam-gui opens 3D volumes",
                                              "a label map must be 3D"), path) from None
    if n_volumes > 1:
        raise MedsamError(f"a 4D image (shape {shape}): a label map must be 3D; save one "
                          "volume of it", path)
    check_array_size(shape3, img.header.get_data_dtype().itemsize, path)
    _check_truncation(path, img, shape)
    data = _label_values(_read_voxels(path, img, 1, 0).reshape(shape3), path)
    notes: List[str] = []
    try:
        sform, qform = int(img.header["sform_code"]), int(img.header["qform_code"])
    except (KeyError, ValueError):  # Analyze 7.5: no codes, nibabel's default orientation
        sform = qform = 2
    if sform == 0 and qform == 0:
        if shape3 != volume.shape:
            raise MedsamError(f"its grid cannot be matched to the open scan: it has no "
                              f"orientation (sform and qform codes 0) and its shape {shape3} "
                              f"differs from the scan's {volume.shape}", path)
        notes.append("the label map states no orientation; it has the scan's shape and was "
                     "taken as on the scan's grid")
        affine = volume.affine
    else:
        affine = img.affine
    placed = onto_volume_grid(data, affine, volume, path)
    notes.extend(placed.notes)
    names, colors = _descriptions_beside(path, notes)
    return ImportedSegments(placed.array, names, colors, notes)


def read_volume_labels(path: Path, volume: Volume) -> ImportedSegments:
    """A NRRD / MetaImage / MGZ label map (e.g. ITK-SNAP's .mha, FreeSurfer's aseg.mgz), read
    like a volume of its format, then checked and placed like a NIfTI label map."""
    from . import load_volume

    try:
        src = load_volume(path)
    except MedsamError as exc:
        raise MedsamError(exc.problem.replace("medsam-gui opens 3D volumes",
                                              "a label map must be 3D"), path) from None
    data = _label_values(src.data, path)
    placed = onto_volume_grid(data, src.affine, volume, path)
    notes = [w for w in src.source.warnings if "not finite" not in w] + placed.notes
    names, colors = _descriptions_beside(path, notes)
    return ImportedSegments(placed.array, names, colors, notes)


def _descriptions_beside(path: Path, notes: List[str]
                         ) -> Tuple[Dict[int, str], Dict[int, Tuple[int, int, int]]]:
    """Names and colours from a description file next to a NIfTI label map, if any."""
    itk, ctbl = description_paths(path)
    table_json = itk.with_name(itk.name[: -len(".itksnap.txt")] + ".json")
    for candidate in (table_json, itk, ctbl):
        if not candidate.is_file():
            continue
        try:
            descs = (_read_table_json(candidate) if candidate.suffix == ".json"
                     else read_descriptions(candidate))
        except MedsamError as exc:
            notes.append(f"label names not taken from {candidate.name}: {exc.problem}")
            continue
        notes.append(f"label names and colours from {candidate.name}")
        return {d.value: d.name for d in descs}, {d.value: d.color for d in descs}
    names = _dataset_json_names(path, notes)
    return names, {}


def _dataset_json_names(path: Path, notes: List[str]) -> Dict[int, str]:
    """Label names from the ``dataset.json`` of an nnU-Net / Medical Segmentation Decathlon
    dataset (beside the map, or one folder up: ``labelsTr/``): MSD writes ``{"1": "edema"}``,
    nnU-Net v2 ``{"edema": 1}``; background (0) is left out."""
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "dataset.json"
        if not candidate.is_file():
            continue
        try:
            labels = json.loads(candidate.read_text(encoding="utf-8"))["labels"]
            pairs = [(int(k), str(v)) if str(k).strip().isdigit() else (int(v), str(k))
                     for k, v in dict(labels).items()]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"label names not taken from {candidate}: {type(exc).__name__}")
            return {}
        notes.append(f"label names from {candidate}")
        return {value: name for value, name in pairs if value > 0}
    return {}


def _read_table_json(path: Path) -> List[LabelDescription]:
    """medsam-gui's exported label table (``{"labels": [{"value", "name", "color"}]}``)."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))["labels"]
        return [LabelDescription(int(d["value"]), str(d["name"]),
                                 tuple(int(c) for c in d["color"])[:3])  # type: ignore[arg-type]
                for d in items]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MedsamError(f"not a medsam-gui label table ({type(exc).__name__})", path) from None


def read_segmentation(path: PathArg, volume: Volume) -> ImportedSegments:
    """A label map, Slicer segmentation, DICOM SEG or RT Structure Set as labels on
    ``volume``'s grid."""
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise MedsamError("no such file", p)
    if p.is_dir():
        raise MedsamError("this is a folder; choose a NIfTI label map or a DICOM SEG file", p)
    if is_slicer_seg_path(p):
        from .slicer_seg import read_slicer_seg

        return read_slicer_seg(p, volume)
    if is_nifti_path(p):
        return read_nifti_labels(p, volume)
    if is_itk_path(p) or is_mgh_path(p):
        return read_volume_labels(p, volume)
    if p.suffix.lower() in DESCRIPTION_SUFFIXES:
        raise MedsamError("this is a label description file, not a segmentation; import it "
                          "with File ▸ Import label descriptions…", p)
    kind = dicom_object_kind(p)
    if kind in ("SEG", "RTSTRUCT"):
        what = "DICOM SEG" if kind == "SEG" else "RT Structure Set"
        if volume.source.kind != "dicom":
            raise MedsamError(f"a {what} refers to DICOM images, but the open scan was opened "
                              "from NIfTI; open its DICOM series to import it", p)
        if kind == "SEG":
            return read_seg(p, volume)
        from .rtstruct_read import read_rtstruct

        return read_rtstruct(p, volume)
    found = f" (it is a DICOM {kind} object)" if kind else ""
    raise MedsamError("neither a NIfTI label map (.nii, .nii.gz), a NRRD / MetaImage / MGZ "
                      "label map (.nrrd, .mha, .mgz), a 3D Slicer segmentation (.seg.nrrd), a "
                      f"DICOM Segmentation nor an RT Structure Set{found}", p)


def read_label_descriptions(path: PathArg) -> List[LabelDescription]:
    """Names and colours from an ITK-SNAP / Slicer file or a medsam-gui label table (.json)."""
    p = Path(os.fspath(path)).expanduser()
    if p.suffix.lower() == ".json":
        return _read_table_json(p)
    return read_descriptions(p)
