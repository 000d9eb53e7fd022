"""Find the cases of a dataset in what the user points at.

A SOURCE is one of

- an nnU-Net v2 or Medical Segmentation Decathlon dataset: a folder with ``dataset.json`` and
  ``imagesTr/`` (and ``imagesTs/``); one case per training (and test) case, channel 0 of
  nnU-Net's ``<case>_0000`` files, the segmentation in ``labelsTr/`` when there is one, label
  names from ``dataset.json``;
- a CSV file of paths: a header naming an ``image`` column (and optionally ``labels``,
  ``series_uid``, ``id``), or no header and the image path in the first column; relative paths
  are relative to the CSV file;
- a folder: every NIfTI file under it and every DICOM series under it (found recursively, one
  case per series; the case's image is the folder that holds the series' files);
- a NIfTI file, a DICOM file or a DICOM folder of one series: one case each.

``exclude`` (shell patterns) drops cases whose image path or case id matches one.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from medsam_gui.dataset.manifest import Case, PathLike, safe_id
from medsam_gui.errors import MedsamError

NIFTI_ENDINGS = (".nii.gz", ".nii")
# other volume files, opened like a NIfTI (a pair by its .hdr); their data files are not cases
FILE_ENDINGS = NIFTI_ENDINGS + (".nrrd", ".nhdr", ".mha", ".mhd", ".mgz", ".mgh", ".hdr")
DATA_ENDINGS = (".img", ".img.gz", ".raw", ".raw.gz", ".zraw", ".seg.nrrd")


@dataclass
class Found:
    """What one SOURCE held: its cases, the label names it gave, and what was left out."""

    cases: List[Case] = field(default_factory=list)
    label_names: Dict[int, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def _is_nifti(p: Path) -> bool:
    """A volume file (NIfTI, NRRD, MetaImage, MGZ, a pair's header), not a segmentation."""
    name = p.name.lower()
    return name.endswith(FILE_ENDINGS) and not name.endswith(".seg.nrrd")


def _stem(p: Path) -> str:
    low = p.name.lower()
    for ext in NIFTI_ENDINGS:
        if low.endswith(ext):
            return p.name[: -len(ext)]
    return p.stem


def _nifti_case(p: Path, source: str, labels: Optional[Path] = None,
                cid: Optional[str] = None) -> Case:
    return Case(id=safe_id(cid or _stem(p)), image=str(p.resolve()), kind="nifti",
                source=source, labels_path=str(labels.resolve()) if labels else None)


def _dicom_cases(folder: Path, source: str, notes: List[str]) -> List[Case]:
    """One case per DICOM series under ``folder``."""
    from medsam_gui.io import list_series

    try:
        series = list_series(folder)
    except MedsamError as exc:
        notes.append(str(exc))
        return []
    cases = []
    for info in series:
        files = [Path(f) for f in info.files]
        home = Path(os.path.commonpath([str(f.parent) for f in files])) if files else folder
        name = info.description or "series"
        cid = safe_id(f"{home.name}_{name}") if home != folder or len(series) > 1 else \
            safe_id(home.name)
        cases.append(Case(id=cid, image=str(home.resolve()), kind="dicom",
                          series_uid=info.uid, source=source,
                          description=f"{info.modality} {name}, {info.n_slices} slices"))
    return cases


def _nnunet(folder: Path, source: str) -> Found:
    """nnU-Net v2 (``channel_names``, labels name -> value) or MSD (``modality``, labels
    value -> name, ``training`` list)."""
    path = folder / "dataset.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedsamError(f"cannot read dataset.json ({type(exc).__name__}: {exc})",
                          path) from None
    found = Found()
    labels = meta.get("labels") or {}
    try:
        if labels and all(isinstance(v, int) for v in labels.values()):  # nnU-Net v2
            found.label_names = {int(v): str(k) for k, v in labels.items() if int(v) != 0}
        else:  # MSD: {"0": "background", "1": "edema", ...}
            found.label_names = {int(k): str(v) for k, v in labels.items() if int(k) != 0}
    except (TypeError, ValueError):
        found.notes.append(f"{path}: label names not understood (region labels?); ignored")
    ending = str(meta.get("file_ending") or ".nii.gz")
    channels = meta.get("channel_names") or meta.get("modality") or {}
    if len(channels) > 1:
        found.notes.append(f"{folder}: {len(channels)} channels; each case opens channel 0 "
                           f"({channels.get('0', '?')})")
    if "channel_names" in meta or "training" not in meta:  # nnU-Net v2 naming
        for sub, lab in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
            for img in sorted((folder / sub).glob(f"*_0000{ending}")):
                cid = img.name[: -len(f"_0000{ending}")]
                seg = folder / lab / f"{cid}{ending}"
                found.cases.append(_nifti_case(img, source, seg if seg.is_file() else None,
                                               cid))
    else:  # MSD lists its cases
        for item in meta.get("training", []):
            img, seg = folder / item["image"], folder / item.get("label", "")
            if img.is_file():
                found.cases.append(_nifti_case(img, source, seg if seg.is_file() else None))
        for item in meta.get("test", []):
            img = folder / (item if isinstance(item, str) else item.get("image", ""))
            if img.is_file():
                found.cases.append(_nifti_case(img, source))
    if not found.cases:
        raise MedsamError("dataset.json is here but no images were found in imagesTr/", folder)
    return found


def _csv(path: Path, source: str) -> Found:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r and any(x.strip() for x in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedsamError(f"cannot read the CSV file ({exc})", path) from None
    if not rows:
        raise MedsamError("the CSV file lists no images", path)
    header = [h.strip().lower() for h in rows[0]]
    if "image" in header:
        col = {name: header.index(name) for name in ("image", "labels", "series_uid", "id")
               if name in header}
        rows = rows[1:]
    else:
        col = {"image": 0}
    found = Found()
    base = path.parent
    for n, row in enumerate(rows, 2 if "image" in header else 1):
        def get(name: str) -> str:
            k = col.get(name)
            return row[k].strip() if k is not None and k < len(row) else ""

        img = Path(get("image")).expanduser()
        img = img if img.is_absolute() else base / img
        if not img.exists():
            found.notes.append(f"{path}, line {n}: no such file or folder {img}; left out")
            continue
        labels = get("labels")
        lab = (Path(labels) if Path(labels).is_absolute() else base / labels) if labels else None
        uid = get("series_uid") or None
        if _is_nifti(img):
            found.cases.append(_nifti_case(img, source, lab, get("id") or None))
        else:
            cases = _dicom_cases(img, source, found.notes)
            if uid:
                cases = [c for c in cases if c.series_uid == uid]
            for c in cases:
                c.id = safe_id(get("id")) if get("id") and len(cases) == 1 else c.id
                c.labels_path = str(lab.resolve()) if lab and len(cases) == 1 else None
            found.cases.extend(cases)
    return found


def _folder(folder: Path, source: str) -> Found:
    found = Found()
    niftis = sorted(p for p in folder.rglob("*") if p.is_file() and _is_nifti(p)
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for p in niftis:
        rel = p.relative_to(folder)
        cid = "_".join(list(rel.parts[:-1]) + [_stem(p)])
        found.cases.append(_nifti_case(p, source, cid=cid))
    others = [p for p in folder.rglob("*") if p.is_file() and not _is_nifti(p)
              and not p.name.lower().endswith(DATA_ENDINGS)
              and not p.name.startswith(".") and p.suffix.lower() not in (".json", ".csv",
                                                                          ".txt", ".md")]
    if others:
        found.cases.extend(_dicom_cases(folder, source, found.notes if not niftis else []))
    if not found.cases:
        raise MedsamError("no NIfTI files and no DICOM series found under this folder", folder)
    return found


def discover(source: PathLike) -> Found:
    """The cases in one SOURCE (see the module doc)."""
    p = Path(os.fspath(source)).expanduser()
    if not p.exists():
        raise MedsamError("no such file or folder", p)
    tag = str(p.resolve())
    if p.is_dir() and (p / "dataset.json").is_file() and (p / "imagesTr").is_dir():
        return _nnunet(p, tag)
    if p.is_file() and p.suffix.lower() == ".csv":
        return _csv(p, tag)
    if p.is_file() and _is_nifti(p):
        return Found([_nifti_case(p, tag)])
    if p.is_dir():
        return _folder(p, tag)
    found = Found()
    found.cases = _dicom_cases(p, tag, found.notes)
    if not found.cases:
        raise MedsamError("neither a NIfTI file, a CSV file, a DICOM file nor a folder of "
                          "them" + (f" ({found.notes[0]})" if found.notes else ""), p)
    return found


def excluded(case: Case, patterns: Sequence[str]) -> bool:
    """Whether ``case`` matches one of the ``--exclude`` patterns: on its id, its file or
    folder name, or its path below the source folder. The absolute path is matched only by
    absolute patterns: ``*seg*`` must not drop every case of ``/data/segmentation_study/``."""
    names = [case.id, os.path.basename(case.image)]
    if case.source:
        with contextlib.suppress(ValueError):
            rel = os.path.relpath(case.image, case.source)
            if not rel.startswith(".."):
                names.append(rel)
    return any(fnmatch.fnmatch(n, pat) for pat in patterns for n in names) or any(
        fnmatch.fnmatch(case.image, pat) for pat in patterns if os.path.isabs(pat))


def discover_all(sources: Sequence[PathLike], exclude: Sequence[str] = ()
                 ) -> Tuple[List[Case], Dict[int, str], List[str]]:
    """(cases, label names, notes) over several SOURCEs; cases matching ``exclude`` are kept
    but marked excluded (the user can take them back)."""
    cases: List[Case] = []
    names: Dict[int, str] = {}
    notes: List[str] = []
    for src in sources:
        found = discover(src)
        for c in found.cases:
            c.excluded = excluded(c, exclude)
        cases += found.cases
        for v, n in found.label_names.items():
            names.setdefault(v, n)
        notes += found.notes
    return cases, names, notes
