"""A label map out, in every format: NIfTI (+ label descriptions), DICOM SEG, RT Structure Set.

This is where the label map's meaning becomes the file's: only labels with voxels become
segments, numbered 1..n in label-value order; each keeps its name and colour, and its coded type
is the one chosen for this export, else the one chosen last time (``Label.property_type``), else
the guess from its name. How a segment was made comes from the slice provenance: a person's box
or points answered by a model, propagation, interpolation or an imported segmentation make it
SEMIAUTOMATIC (a person worked with an algorithm); brush strokes only, or voxels without any
record, make it MANUAL.

A NIfTI export also writes the label table beside it three ways: medsam-gui's JSON, an ITK-SNAP
label description file and a 3D Slicer colour table. Each writer verifies its own file. The four
files are one export: they are written into a temporary folder beside the target
(``<name>.tmp-<pid>``) and renamed into place together at the end; on any failure nothing new is
left behind and files that were there before are restored.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import MedsamError
from ..io.atomic import (atomic_write_bytes, check_target, clean_stale_temps, fsync_dir,
                         temp_path_for)
from ..io.formats import LABEL_MAP_FORMATS, format_for, table_json_path
from ..io.label_descriptions import description_paths, write_descriptions
from ..io.labels import save_label_map
from ..io.seg_terms import guess_property_type, property_type
from ..io.segments import MANUAL, SEMIAUTOMATIC, Export, Segment
from ..volume import Volume
from .labels import PALETTE, LabelMap
from .review import label_values

PathArg = Union[str, "os.PathLike[str]"]


def _origin(labelmap: LabelMap, value: int) -> Tuple[str, Tuple[str, ...]]:
    records = [rec for rec in labelmap.records.values() if rec.label == value]
    models = sorted({rec.model for rec in records if rec.model})
    filled = any(rec.method for rec in records)
    return (SEMIAUTOMATIC if models or filled else MANUAL), tuple(models)


def segments_of(labelmap: LabelMap, types: Optional[Mapping[int, str]] = None) -> List[Segment]:
    """Segments for every label with voxels; ``types`` overrides the property type per value."""
    types = dict(types or {})
    out: List[Segment] = []
    for number, value in enumerate(label_values(labelmap.array), 1):
        label = labelmap.table.get(value)
        name = label.name if label is not None else f"label {value}"
        color = tuple(label.color) if label is not None else PALETTE[(value - 1) % len(PALETTE)]
        key = (types.get(value) or (label.property_type if label is not None else "")
               or guess_property_type(name))
        algorithm_type, models = _origin(labelmap, value)
        out.append(Segment(number, value, name, color, property_type(key),  # type: ignore[arg-type]
                           algorithm_type, models))
    return out


def write_table_json(labelmap: LabelMap, volume: Volume, path: PathArg) -> "os.PathLike[str]":
    data = {"labels": labelmap.table.to_json(), "source": volume.source.path}
    try:
        return atomic_write_bytes(path, json.dumps(data, indent=1).encode("utf-8"))
    except OSError as exc:
        raise MedsamError(f"cannot write the label table ({exc.strerror})", path) from None


def export_targets(path: PathArg, fmt: Optional[str] = None) -> List[Path]:
    """Every file an export to ``path`` writes: the label map first, then its sidecars."""
    out = Path(os.fspath(path)).expanduser()
    if format_for(out, fmt) not in LABEL_MAP_FORMATS:  # NIfTI, NRRD, MetaImage: + tables
        return [out]
    return [out, table_json_path(out), *description_paths(out)]


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def check_export(path: PathArg, fmt: Optional[str] = None, inputs: Iterable[PathArg] = (),
                 read_folders: Iterable[PathArg] = ()) -> List[Path]:
    """Refuse, before any work, an export that would fail or overwrite what is being read
    (``check_outputs`` on every file it writes). Returns the targets."""
    targets = export_targets(path, fmt)
    check_outputs(targets, inputs, read_folders)
    return targets


def check_outputs(targets: Sequence[Path], inputs: Iterable[PathArg] = (),
                  read_folders: Iterable[PathArg] = ()) -> None:
    """Every target must be a file name in an existing, writable folder (a folder is created
    and removed there to prove it), must not be one of ``inputs`` (the scan, a prompts file,
    ...) by name, symlink or hard link, and must not lie inside ``read_folders`` (a DICOM
    series' folder: a file written there would join the series the next time it is read).
    Targets after the first are described as written beside it."""
    real_inputs = [(Path(os.fspath(p)).expanduser(), os.path.realpath(os.path.expanduser(p)))
                   for p in inputs]
    folders = [os.path.realpath(os.path.expanduser(f)) for f in read_folders]
    for target in targets:
        role = "" if target == targets[0] else f" (written beside {targets[0].name})"
        real = os.path.realpath(target)
        for given, real_input in real_inputs:
            same = real == real_input
            with contextlib.suppress(OSError):
                same = same or os.path.samefile(target, given)
            if same:
                raise MedsamError(f"this output{role} is the input file {given}; the output "
                                  "must be another file", target)
        for folder in folders:
            if _inside(real, folder) or _inside(os.path.abspath(target), folder):
                raise MedsamError(f"this output{role} lies inside the DICOM folder being read "
                                  f"({folder}); write the output somewhere else", target)
        check_target(target, "a file name for the output")
    probed = set()
    for target in targets:  # once per folder, named by its first target
        if target.parent not in probed:
            probed.add(target.parent)
            _probe_folder(target)


def _probe_folder(target: Path) -> None:
    """Prove that ``target``'s folder takes new entries (permissions, read-only mounts)."""
    probe = temp_path_for(target)
    try:
        probe.mkdir()
        probe.rmdir()
    except FileExistsError:
        pass  # our own leftover: the folder is writable; export removes it
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise MedsamError(f"this name is too long for its folder's file system (it needs "
                              f"room for a temporary name, {probe.name})", target) from None
        raise MedsamError(f"cannot write in the folder {target.parent} "
                          f"({exc.strerror or exc})", target) from None


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` (same file system), removed whatever happens."""
    stage = temp_path_for(out)
    clean_stale_temps(out.parent, prefix=f"{out.name}.tmp-")
    try:
        if stage.is_dir() and not stage.is_symlink():
            shutil.rmtree(stage)  # this process's own leftover
        stage.mkdir()
    except OSError as exc:
        raise MedsamError(f"cannot write in the folder {out.parent} ({exc.strerror or exc})",
                          out) from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _commit(stage: Path, targets: Sequence[Path]) -> None:
    """Rename the staged files onto ``targets``; on a failure undo the renames done so far."""
    done: List[Tuple[Path, Optional[Path]]] = []
    try:
        for target in targets:
            backup: Optional[Path] = None
            if os.path.lexists(target):
                backup = stage / (target.name + ".before")
                try:
                    os.link(target, backup, follow_symlinks=False)
                except OSError:
                    shutil.copy2(target, backup, follow_symlinks=False)
            os.replace(stage / target.name, target)
            done.append((target, backup))
    except OSError:
        for target, backup in reversed(done):
            with contextlib.suppress(OSError):
                if backup is None:
                    target.unlink()
                else:
                    os.replace(backup, target)
        raise
    fsync_dir(targets[0].parent)


def _final_path(error: MedsamError, stage: Path, out: Path) -> Optional[Path]:
    """The path a writer's error names, with the staging folder replaced by the target's."""
    if error.path is None:
        return None
    p = Path(error.path)
    return out.parent / p.name if p.parent == stage else p


def export_nifti(labelmap: LabelMap, volume: Volume, path: PathArg) -> Export:
    """The label map (NIfTI, NRRD or MetaImage, by its name) and its three label
    descriptions, all four or none."""
    targets = export_targets(path)
    out = targets[0]
    for target in targets:
        check_target(target, "a file name ending in .nii.gz")
    with _staging(out) as stage:
        staged = stage / out.name
        try:
            save_label_map(labelmap.array, volume, staged)
            write_table_json(labelmap, volume, table_json_path(staged))
            try:
                write_descriptions(labelmap.table.labels, staged)
            except OSError as exc:
                raise MedsamError(f"cannot write the label descriptions ({exc.strerror})",
                                  out) from None
        except MedsamError as exc:
            raise MedsamError(exc.problem, _final_path(exc, stage, out)) from None
        try:
            _commit(stage, targets)
        except OSError as exc:
            raise MedsamError(f"cannot put the label map and its label files in place "
                              f"({exc.strerror or exc}); nothing was changed", out) from None
    return Export(out, [], [f"label table also written as "
                            f"{', '.join(t.name for t in targets[1:])}"])


def export_labels(labelmap: LabelMap, volume: Volume, path: PathArg, fmt: Optional[str] = None,
                  types: Optional[Mapping[int, str]] = None,
                  seg_options: Optional[Mapping[str, object]] = None) -> Export:
    """Write ``labelmap`` (on ``volume``'s grid) as ``fmt`` (default: from the file name);
    ``seg_options`` (labelmap, compression) go to ``io.dicom_seg.write_seg``."""
    fmt = format_for(path, fmt)
    if fmt in LABEL_MAP_FORMATS:  # save_label_map writes the format the name ends in
        return export_nifti(labelmap, volume, path)
    segments = segments_of(labelmap, types)
    if not segments:
        raise MedsamError("the label map is empty: there is nothing to export",
                          volume.source.path or None)
    if fmt == "slicer-seg":
        from ..io.slicer_seg import write_slicer_seg

        result = write_slicer_seg(labelmap.array, segments, volume, path)
    elif fmt == "seg":
        from ..io.dicom_seg import write_seg

        result = write_seg(labelmap.array, segments, volume, path, **(seg_options or {}))
    else:
        from ..io.rtstruct import write_rtstruct

        result = write_rtstruct(labelmap.array, segments, volume, path)
    exported = {s.value for s in segments}
    empty = [lab.name for lab in labelmap.table.labels if lab.value not in exported]
    if empty:
        result.notes.append(f"labels without voxels were left out: {', '.join(empty)}")
    return result
