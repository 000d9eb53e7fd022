"""medsam-segment: box prompts on a scan -> label map (NIfTI, DICOM SEG or RTSTRUCT), headless."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from medsam_gui import __version__
from medsam_gui.errors import MedsamError

DESCRIPTION = """\
Segment structures in a CT/MR volume from box prompts and write a label map (NIfTI) with the
source image's shape, voxel order and affine, or, for a DICOM series, a DICOM Segmentation or
an RT Structure Set that references it.

Coordinates are plain voxel indices of the source array (for a DICOM series: the array the
exported NIfTI holds), so no display convention is involved:
  --box AXIS SLICE X0 Y0 X1 Y1   AXIS is 0, 1 or 2; SLICE an index along it; X0..X1
                                 (inclusive) along the first remaining axis, Y0..Y1 along the
                                 second. "--box 2 K X0 Y0 X1 Y1" is data[X0:X1+1, Y0:Y1+1, K].
  --boxes FILE.json              a JSON list of such boxes:
                                 [{"axis": 2, "slice": 70, "box": [x0, y0, x1, y1],
                                   "label": 1}, ...]   ("label" optional, default --label)
Every number is a whole number; a box spans at least 2 voxels each way (X0 < X1, Y0 < Y1)
and lies inside its slice. Boxes are applied in order (--box first, then --boxes); a later
mask overwrites an earlier one where they overlap.

Exit code 0 on success, 2 on any error, 130 when interrupted. On any error nothing is left
behind: the outputs (a label map and its three label files; the --queue file) are written
under temporary names and renamed into place together at the end. The outputs are checked
before the model runs: their folder must exist and take files, and they may be neither the
scan nor inside the DICOM folder being read.

DICOM: a folder that holds several series needs --series UID (the error lists them); the
series used is named on stderr. Files of the series that cannot be read are named and refused
(the volume would have gaps) unless --allow-gaps is given.

3D: --propagate makes each box seed a propagation along its AXIS, both directions: every
next slice is prompted by the previous slice's mask, until the structure ends (the stop rules
of medsam_gui.engine.propagation: empty mask, low model score, a jump in area or position).
--extent FIRST LAST keeps it inside those slice indices along AXIS (as MedSAM's 3D box carries
its z-range); a JSON box may carry its own "extent": [first, last].

What the model sees: by default the automatic rule of the scan's modality (CT: soft-tissue
window in HU; MR and other: 0.5-99.5 percentiles of the foreground). --modality overrides the
modality (a NIfTI has none; it is guessed from the voxels). --window LEVEL WIDTH shows the
model a fixed window instead, in HU for CT (e.g. lung: --window -600 1500; bone: 400 1800),
in stored values otherwise.
"""


PRECISION_CHOICES = ("auto", "fp32", "channels_last", "ov_f32", "ov_bf16")
FORMATS = ("nifti", "nrrd", "metaimage", "slicer-seg", "seg", "rtstruct")


MAX_BOXES_BYTES = 16 * 2**20  # ~250 000 boxes; anything larger is not a prompt list
BOX_KEYS = ("axis", "slice", "box", "label", "extent")
BOX_FORMAT = '{"axis": 0|1|2, "slice": K, "box": [x0, y0, x1, y1], "label": 1, "extent": [a, b]}'


@dataclass
class BoxPrompt:
    axis: int
    slice: int
    box: Sequence[int]  # x0, y0, x1, y1 in source voxel indices
    label: int
    extent: Optional[Sequence[int]] = None  # first, last slice along axis (propagation)
    origin: str = "box"  # how the user gave it: "--box 2 70 ..." or "boxes[3]"
    path: Optional[str] = None  # the boxes file it came from

    def error(self, problem: str) -> MedsamError:
        """An error that names where this box was given."""
        return MedsamError(f"{self.origin}: {problem}", self.path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsam-segment", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("image", help="NIfTI file or DICOM folder / file of a series")
    p.add_argument("--box", nargs=6, type=int, action="append", default=[],
                   metavar=("AXIS", "SLICE", "X0", "Y0", "X1", "Y1"), help="a box prompt")
    p.add_argument("--label", type=int, default=1, help="label value for --box masks (1)")
    p.add_argument("--boxes", metavar="FILE.json", help="many boxes as JSON (see above)")
    p.add_argument("--model", default="litemedsam",
                   help="litemedsam (bundled, default) | medsam_vit_b | sam_vit_b|l|h")
    p.add_argument("--checkpoint", help="checkpoint file (needed except for litemedsam)")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="image encoder runtime and precision. auto: OpenVINO f32 on CPU when "
                        "installed (exact, fastest), else PyTorch channels_last; fp32: plain "
                        "PyTorch; ov_f32 / ov_bf16: OpenVINO. The choice is printed.")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--series", metavar="UID",
                   help="DICOM folder with several series: the one to segment, by the UID "
                        "the error lists (its SeriesInstanceUID, or UID#N for a part)")
    p.add_argument("--allow-gaps", action="store_true",
                   help="segment a DICOM series even though some of its files could not be read")
    p.add_argument("--modality", default="auto", type=_modality, metavar="CT|MR|auto",
                   help="modality rule for the model input (auto: DICOM's, or guessed)")
    p.add_argument("--window", nargs=2, type=float, metavar=("LEVEL", "WIDTH"),
                   help="show the model this window (HU for CT) instead of the automatic rule")
    p.add_argument("--propagate", action="store_true",
                   help="follow each box's structure through the volume along its AXIS")
    p.add_argument("--extent", nargs=2, type=int, metavar=("FIRST", "LAST"),
                   help="with --propagate: slices along AXIS it may fill (default: all)")
    p.add_argument("--queue", metavar="QUEUE.json",
                   help="with --propagate: write the review queue, a JSON list of the filled "
                        "slices most in need of a look first: {axis, slice, label, score, "
                        "reason}")
    p.add_argument("--out", required=True, metavar="LABELS.nii.gz",
                   help="output: .nii.gz, .nrrd or .mha (with .json/.itksnap.txt/.ctbl label "
                        "descriptions beside it), .seg.nrrd (3D Slicer), .seg.dcm or "
                        ".rtstruct.dcm")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="nifti, nrrd, metaimage, slicer-seg, seg (DICOM Segmentation) or "
                        "rtstruct (RT Structure Set); "
                        "default: from the --out name (a plain .dcm needs it)")
    p.add_argument("--seg-type", choices=("binary", "labelmap"), default=None,
                   help="DICOM SEG type: binary (default; every SEG reader) or labelmap (one "
                        "frame per slice, smaller; new in DICOM 2024)")
    p.add_argument("--seg-compression", choices=("none", "rle", "jpegls", "jpeg2000"),
                   default=None, help="lossless compression of a DICOM SEG (default none); a "
                   "binary SEG takes jpeg2000 only")
    return p


def _modality(text: str) -> str:
    from medsam_gui.engine.intensity import MODALITIES

    value = "auto" if text.lower() == "auto" else text.upper()
    if value not in MODALITIES:
        raise argparse.ArgumentTypeError(f"choose CT, MR or auto (got {text!r})")
    return value


def model_input_of(args: argparse.Namespace):
    """The ModelInput that --modality and --window ask for."""
    from medsam_gui.engine.intensity import ModelInput

    if args.window is None:
        return ModelInput(args.modality)
    try:
        return ModelInput(args.modality, tuple(args.window), "HU", "command line")
    except ValueError as exc:  # a width <= 0, NaN, ...
        raise MedsamError(f"--window: {exc}") from None


class _BadBox(ValueError):
    """One field of one JSON box is wrong (the message says which and how)."""


class _BadNumber(ValueError):
    """A number JSON cannot mean: NaN, Infinity, or one too large for a float (1e400)."""


def _no_constant(name: str) -> float:
    raise _BadNumber(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(text)
    return value


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(value: object, what: str) -> int:
    """A JSON whole number (70 or 70.0); booleans, fractions, strings and null are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadBox(f'"{what}" must be a whole number (got {_shown(value)})')
    if isinstance(value, float) and not value.is_integer():
        raise _BadBox(f'"{what}" must be a whole number (got {_shown(value)})')
    return int(value)


def _numbers(value: object, n: int, what: str) -> List[int]:
    if not isinstance(value, list) or len(value) != n:
        raise _BadBox(f'"{what}" must be a list of {n} whole numbers (got {_shown(value)})')
    return [_whole(v, f"{what}[{i}]") for i, v in enumerate(value)]


def check_prompt(prompt: BoxPrompt) -> None:
    """What can be checked without the image: axis, label, corner order, extent."""
    if prompt.axis not in (0, 1, 2):
        raise prompt.error(f"the axis must be 0, 1 or 2 (got {prompt.axis})")
    if not 0 < prompt.label < 65536:
        raise prompt.error(f"the label must be within 1..65535 (got {prompt.label})")
    x0, y0, x1, y1 = prompt.box
    if not (x0 < x1 and y0 < y1):
        raise prompt.error(f"a box needs X0 < X1 and Y0 < Y1 (it spans at least 2 voxels each "
                           f"way; got X0={x0} Y0={y0} X1={x1} Y1={y1})")


def _box_of(item: object, default_label: int, n: int, path: str) -> BoxPrompt:
    where = f"boxes[{n}]"
    if not isinstance(item, dict):
        raise _BadBox(f"each box must be a JSON object like {BOX_FORMAT} (got {_shown(item)})")
    unknown = sorted(set(item) - set(BOX_KEYS))
    if unknown:
        raise _BadBox(f"unknown key(s) {', '.join(map(repr, unknown))}; a box has "
                      f"{', '.join(BOX_KEYS)}")
    missing = [k for k in ("axis", "slice", "box") if k not in item]
    if missing:
        raise _BadBox(f"missing {', '.join(repr(k) for k in missing)}")
    extent = item.get("extent")
    prompt = BoxPrompt(_whole(item["axis"], "axis"), _whole(item["slice"], "slice"),
                       _numbers(item["box"], 4, "box"),
                       _whole(item.get("label", default_label), "label"),
                       None if extent is None else _numbers(extent, 2, "extent"), where, path)
    check_prompt(prompt)
    return prompt


def read_boxes_json(path: str, default_label: int) -> List[BoxPrompt]:
    """The boxes of a --boxes file, every field checked; MedsamError naming the file if not."""
    file = Path(path).expanduser()
    try:
        info = file.stat()
        if stat.S_ISDIR(info.st_mode):
            raise MedsamError("this is a folder, not a boxes file", path)
        if not stat.S_ISREG(info.st_mode):
            raise MedsamError("the boxes file is not a regular file", path)
        if info.st_size > MAX_BOXES_BYTES:
            raise MedsamError(f"the boxes file is {info.st_size} bytes; a boxes file holds at "
                              f"most {MAX_BOXES_BYTES // 2**20} MB", path)
        raw = file.read_bytes()
    except OSError as exc:
        raise MedsamError(f"cannot read the boxes file ({exc.strerror or exc})", path) from None
    if not raw.strip():
        raise MedsamError("the boxes file is empty", path)
    try:
        items = json.loads(raw.decode("utf-8"), parse_constant=_no_constant,
                           parse_float=_finite)
    except UnicodeDecodeError:
        raise MedsamError("the boxes file is not UTF-8 text", path) from None
    except _BadNumber as exc:
        raise MedsamError(f"the boxes file holds {exc}, which is not a finite number", path) \
            from None
    except RecursionError:
        raise MedsamError("the boxes file is nested too deeply to be a list of boxes", path) \
            from None
    except ValueError as exc:
        raise MedsamError(f"the boxes file is not valid JSON ({exc})", path) from None
    if not isinstance(items, list):
        raise MedsamError(f"the boxes file must hold a JSON list of boxes like [{BOX_FORMAT}]",
                          path)
    if not items:
        raise MedsamError("the boxes file holds an empty list: no boxes", path)
    out = []
    for n, item in enumerate(items):
        try:
            out.append(_box_of(item, default_label, n, path))
        except (_BadBox, RecursionError) as exc:
            problem = str(exc) if isinstance(exc, _BadBox) else "nested too deeply"
            raise MedsamError(f"boxes[{n}] is malformed: {problem}", path) from None
    return out


def display_box(volume, prompt: BoxPrompt, image: str):
    """(view geometry, display slice index, display box x0 y0 x1 y1) for a voxel-index box."""
    from medsam_gui.volume import view_for_axis

    shape = volume.shape
    check_prompt(prompt)
    rest = [a for a in range(3) if a != prompt.axis]
    x0, y0, x1, y1 = prompt.box
    checks = [(prompt.slice, prompt.axis, "slice"), (x0, rest[0], "X0"), (x1, rest[0], "X1"),
              (y0, rest[1], "Y0"), (y1, rest[1], "Y1")]
    for value, ax, what in checks:
        if not 0 <= value < shape[ax]:
            raise prompt.error(f"{what}={value} is outside 0..{shape[ax] - 1} along voxel axis "
                               f"{ax} of {image} (image shape {shape})")
    if prompt.extent is not None:
        first, last = sorted(prompt.extent)
        if first < 0 or last >= shape[prompt.axis]:
            raise prompt.error(f"extent {first}..{last} is outside 0..{shape[prompt.axis] - 1} "
                               f"along voxel axis {prompt.axis} of {image}")
        if not first <= prompt.slice <= last:
            raise prompt.error(f"the box's slice {prompt.slice} is outside its extent "
                               f"{first}..{last}")
    geom = view_for_axis(volume.affine, shape, prompt.axis)
    corners = []
    for x, y in ((x0, y0), (x1, y1)):
        vox = [0, 0, 0]
        vox[prompt.axis], vox[rest[0]], vox[rest[1]] = prompt.slice, x, y
        corners.append(geom.display_pixel(tuple(vox)))
    rows = [c[1] for c in corners]
    cols = [c[2] for c in corners]
    return geom, corners[0][0], (min(cols), min(rows), max(cols), max(rows))


def inline_prompts(args: argparse.Namespace) -> List[BoxPrompt]:
    out = []
    for b in args.box:
        prompt = BoxPrompt(b[0], b[1], b[2:], args.label, args.extent,
                           "--box " + " ".join(map(str, b)))
        check_prompt(prompt)
        out.append(prompt)
    return out


def dicom_folder_of(image: str) -> Optional[Path]:
    """The folder a DICOM input is read from (every file under it); None for a NIfTI file."""
    from medsam_gui.io import is_volume_file_name

    p = Path(image).expanduser()
    if p.is_dir():
        return p
    if p.is_file() and not is_volume_file_name(p):
        return p.parent  # one file opens its whole series from its folder
    return None


def check_outputs(args: argparse.Namespace, fmt: str) -> None:
    """Before any work: the outputs can be written and overwrite nothing being read."""
    from medsam_gui.annotation.exporting import check_export
    from medsam_gui.annotation.exporting import check_outputs as check_files

    inputs = [args.image] + [f for f in (args.boxes, args.checkpoint) if f]
    folder = dicom_folder_of(args.image)
    folders = [folder] if folder is not None else []
    targets = check_export(args.out, fmt, inputs, folders)
    queue = getattr(args, "queue", None)
    if queue:
        path = Path(queue).expanduser()
        for target in targets:
            if os.path.realpath(path) == os.path.realpath(target):
                raise MedsamError(f"--queue would overwrite {target}, an output of this run",
                                  queue)
        check_files([path], inputs, folders)


def check_model(args: argparse.Namespace) -> None:
    """An unknown model, a missing checkpoint or an unusable --device fail before the weights
    are read (load_backend checks them again, with the weights)."""
    from medsam_gui.engine.backends import KINDS
    from medsam_gui.engine.runtime import pick_device
    from medsam_gui.engine.weights import check_file

    if args.model not in KINDS:
        raise MedsamError(f"unknown --model {args.model!r}; one of {', '.join(KINDS)}")
    if args.checkpoint is not None:
        check_file(args.checkpoint)
    if args.device:
        try:
            pick_device(args.device)
        except (RuntimeError, ValueError) as exc:  # torch's own words for an unknown device
            raise MedsamError(f"--device {args.device}: {exc}") from None


def choose_series(args: argparse.Namespace) -> Optional[str]:
    """--series, else None when the input names one series; refuses to guess among several."""
    from medsam_gui.io import list_series

    folder = dicom_folder_of(args.image)
    if args.series:
        if folder is None:
            raise MedsamError("--series chooses a series of a DICOM folder; this is a NIfTI file",
                              args.image)
        return args.series
    p = Path(args.image).expanduser()
    if p.is_file() and p.name.upper() == "DICOMDIR":
        p = p.parent
    if not p.is_dir():
        return None  # a NIfTI file, or one DICOM file: its own series
    series = list_series(p)
    if len(series) > 1:
        listing = "\n".join(f"  {s.uid}  {s.description!r}  {s.modality} {s.cols}x{s.rows}, "
                             f"{s.n_slices} slices" for s in series)
        raise MedsamError(f"this folder holds {len(series)} series; choose one with --series UID:"
                          f"\n{listing}", p)
    return None


def report_source(volume, args: argparse.Namespace) -> None:
    """Say what was loaded and what its reader noticed; refuse a series with unread files."""
    src = volume.source
    if src.kind == "dicom":
        key = src.extra.get("series_key") or src.series_uid
        print(f"series: {key} ({src.description}; {len(src.extra.get('files', []))} files, "
              f"voxels {volume.shape}) in {src.extra.get('folder', src.path)}", file=sys.stderr)
    for warning in src.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    dropped = list(getattr(src, "dropped_files", None) or [])
    if not dropped:
        return
    listing = "; ".join(f"{f} ({why})" for f, why in dropped[:10])
    if len(dropped) > 10:
        listing += f"; and {len(dropped) - 10} more"
    if not args.allow_gaps:
        raise MedsamError(f"{len(dropped)} file(s) of this series could not be read, so the "
                          f"volume would have gaps: {listing}. Repair or remove them, or pass "
                          "--allow-gaps to segment what could be read", args.image)
    print(f"warning: --allow-gaps: segmenting without {len(dropped)} unreadable file(s): "
          f"{listing}", file=sys.stderr)


def seg_options_of(args: argparse.Namespace, fmt: str) -> Optional[dict]:
    """--seg-type / --seg-compression as ``write_seg`` options, refused unless writable."""
    kind, compression = getattr(args, "seg_type", None), getattr(args, "seg_compression", None)
    if fmt != "seg":
        if kind or compression:
            raise MedsamError("--seg-type and --seg-compression are for a DICOM SEG "
                              f"(--format seg or a .seg.dcm name), not {fmt}", args.out)
        return None
    from medsam_gui.io.dicom_seg import check_seg_options

    options = {"labelmap": kind == "labelmap",
               "compression": None if compression in (None, "none") else compression}
    check_seg_options(**options)
    return options


def run(args: argparse.Namespace) -> Path:
    from medsam_gui.io import load_volume
    from medsam_gui.io.formats import format_for

    fmt = format_for(args.out, args.format)  # a wrong name fails before any work
    seg_options = seg_options_of(args, fmt)
    if not args.image.strip():
        raise MedsamError("no image given: name a NIfTI file, a DICOM folder or a DICOM file")
    if not 0 < args.label < 65536:
        raise MedsamError(f"--label must be within 1..65535 (got {args.label})")
    prompts = inline_prompts(args)
    if args.boxes:
        prompts += read_boxes_json(args.boxes, args.label)
    if getattr(args, "queue", None) and not args.propagate:
        raise MedsamError("--queue ranks the slices a propagation filled: add --propagate")
    if args.extent is not None and not args.propagate:
        raise MedsamError("--extent limits a propagation: add --propagate")
    if not prompts:
        raise MedsamError("no boxes given: use --box AXIS SLICE X0 Y0 X1 Y1 or --boxes FILE.json")
    choice = model_input_of(args)
    volume = load_volume(args.image, series_uid=choose_series(args))
    check_outputs(args, fmt)  # after the load, so a bad input is named as such first
    report_source(volume, args)
    if fmt in ("seg", "rtstruct"):
        from medsam_gui.io.dicom_source import require_dicom

        require_dicom(volume)
        modality = str(volume.source.extra.get("dicom_modality", ""))
        if fmt == "rtstruct" and modality not in ("CT", "MR"):
            raise MedsamError(f"RT Structure Sets are written for CT and MR series; this one is "
                              f"{modality or 'of unknown modality'}: use --format seg",
                              args.image)
    placed = [display_box(volume, p, args.image) for p in prompts]  # validate all first
    check_model(args)

    from tqdm import tqdm

    from medsam_gui.annotation.exporting import export_labels
    from medsam_gui.annotation.labels import PALETTE, Label, LabelMap, LabelTable, SliceRecord
    from medsam_gui.engine import propagation
    from medsam_gui.engine.backends import load_backend
    from medsam_gui.engine.session import Session

    backend = load_backend(args.model, args.checkpoint, args.device, args.precision)
    session = Session(volume, backend)
    transform = session.set_model_input(choice)  # ModelInputError (a MedsamError) if unusable
    print(f"model input: {transform.summary()}", file=sys.stderr)
    note = f" ({backend.runtime_note})" if backend.runtime_note else ""
    print(f"image encoder: {backend.runtime_label} on {backend.device}{note}", file=sys.stderr)
    labels = np.zeros(volume.shape, np.uint16)
    records = {}

    def record(geom, k, label, **kw):
        rec = SliceRecord(geom.view, k, label, status="model", model=backend.name,
                          weights_sha256=backend.weights_sha256,
                          model_input=transform.provenance(), **kw)
        records[rec.key] = rec
    for n, (prompt, (geom, k, box)) in enumerate(tqdm(list(zip(prompts, placed)),
                                                      desc="segmenting", unit="box",
                                                      file=sys.stderr)):
        pred = session.predict(geom.view, k, box)
        geom.take(labels, k)[pred.mask] = prompt.label
        record(geom, k, prompt.label, boxes=[list(box)])
        if args.propagate:
            result = propagation.run(session, geom.view, k, [pred.mask],
                                     propagation.StopRules(extent=prompt.extent))
            for step in result.steps:
                geom.take(labels, step.index)[step.mask] = prompt.label
                record(geom, step.index, prompt.label, method="propagated", from_slices=[k],
                       iou=step.iou, stop_reason=next(
                           (f"stopped at {geom.view} {s.index}: {s.reason}" for s in result.stops
                            if s.direction == step.direction), ""))
            filled = result.indices + [k]
            stops = "; ".join(f"{'+' if s.direction > 0 else '-'} stopped at {s.index}: "
                              f"{s.reason}" for s in result.stops)
            tqdm.write(f"box {n + 1}: label {prompt.label} on slices {min(filled)}..{max(filled)}"
                       f" of axis {prompt.axis} ({stops})", file=sys.stderr)
    table = LabelTable([Label(v, f"label {v}", PALETTE[(v - 1) % len(PALETTE)])
                        for v in sorted({p.label for p in prompts})])
    labelmap = LabelMap(volume.shape, table, labels)
    labelmap.records = records
    if getattr(args, "queue", None):  # written, then put in place only if the export is
        from medsam_gui.annotation.review_queue import write_queue
        from medsam_gui.io.atomic import atomic_path

        with atomic_path(Path(args.queue).expanduser()) as queue:
            write_queue(queue, labelmap, {g.view: g for g, _k, _b in placed})
            exported = export_labels(labelmap, volume, args.out, fmt, seg_options=seg_options)
    else:
        exported = export_labels(labelmap, volume, args.out, fmt, seg_options=seg_options)
    for note in exported.notes:
        print(f"note: {note}", file=sys.stderr)
    return exported.path


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: keep the default
        previous = signal.signal(signal.SIGTERM, _interrupt)  # clean up temporary files too
    try:
        out = run(args)
    except MedsamError as exc:
        print(f"medsam-segment: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = exc.filename or args.image
        print(f"medsam-segment: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"medsam-segment: error: {args.image}: not enough memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medsam-segment: interrupted; nothing was written", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
