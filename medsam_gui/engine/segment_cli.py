"""medsam-segment: box prompts on a scan -> label map (NIfTI, DICOM SEG or RTSTRUCT), headless."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from medsam_gui import __version__
from medsam_gui.engine.boxes_file import (BOX_FORMAT, BOX_KEYS,  # noqa: F401  (re-exported)
                                          MAX_BOXES_BYTES, BoxPrompt, check_prompt,
                                          display_box, key_groups, read_boxes_json)
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
                                 {"axis": 2, "slice": 90, "label": 1, "empty": true} is an
                                 empty key slice: the structure is absent there.
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
--fast-propagate encodes about one slice per 4 mm along AXIS and fills the slices between by
shape interpolation where the model's masks at the two ends agree (elsewhere slice by slice):
on BRATS (1 mm) 0.57 of the encoder calls and no 3D Dice lost; on the 2 mm DICOM CT 0.6;
where slices are more than 2 mm apart it is the ordinary propagation, as skipping 3 mm slices
cost up to 0.03 (medsam_gui.engine.sparse_propagation, benchmarks/bench_sparse_propagation.py).
Key slices: the boxes (and empty entries) of one label on one AXIS are key slices of one
structure. It is propagated from every key slice that has a box; a key slice is never
overwritten and never crossed, so an empty key slice stops the fronts that reach it; between
two key slices both fronts run and each slice takes the mask the model scores higher
(medsam_gui.engine.key_slices). As in the window, a propagated mask never takes another
label's voxels. The boxes of a structure are taken in the order given, as a person's
corrections: a box on a slice that the earlier key slices' propagation fills corrects that
fill (the fill inside the box, with the box's mask added), as a box drawn on a filled slice
in the window does.

What the model sees: by default the automatic rule of the scan's modality (CT: soft-tissue
window in HU; MR and other: 0.5-99.5 percentiles of the foreground). --modality overrides the
modality (a NIfTI has none; it is guessed from the voxels). --window LEVEL WIDTH shows the
model a fixed window instead, in HU for CT (e.g. lung: --window -600 1500; bone: 400 1800),
in stored values otherwise.
"""


PRECISION_CHOICES = ("auto", "fp32", "channels_last", "ov_f32", "ov_bf16", "ov_int8")
FORMATS = ("nifti", "nrrd", "metaimage", "slicer-seg", "seg", "rtstruct")


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
                        "PyTorch; ov_f32 / ov_bf16: OpenVINO; ov_int8: OpenVINO int8 (needs "
                        "medsam-gui[int8]; quantised once, then cached). The choice is printed.")
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
    p.add_argument("--fast-propagate", action="store_true",
                   help="with --propagate: encode about one slice per 4 mm along AXIS and fill "
                        "the slices between by shape interpolation where the model's masks "
                        "agree (changes nothing where slices are more than 2 mm apart)")
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


def run(args: argparse.Namespace, backend=None) -> Path:
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
    if getattr(args, "fast_propagate", False) and not args.propagate:
        raise MedsamError("--fast-propagate speeds up a propagation: add --propagate")
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
    groups = key_groups(prompts, placed)  # an empty key slice with a box is refused here
    check_model(args)

    from tqdm import tqdm

    from medsam_gui.annotation.exporting import export_labels
    from medsam_gui.annotation.labels import (PALETTE, Label, LabelMap, LabelTable, SliceRecord,
                                              label_dtype)
    from medsam_gui.engine import key_slices, propagation, sparse_propagation
    from medsam_gui.engine.loading import load_backend
    from medsam_gui.engine.session import Session

    if backend is None:  # a --batch worker passes the model it loaded once
        backend = load_backend(args.model, args.checkpoint, args.device, args.precision)
    session = Session(volume, backend)
    transform = session.set_model_input(choice)  # ModelInputError (a MedsamError) if unusable
    print(f"model input: {transform.summary()}", file=sys.stderr)
    note = f" ({backend.runtime_note})" if backend.runtime_note else ""
    print(f"image encoder: {backend.runtime_label} on {backend.device}{note}", file=sys.stderr)
    # in the volume's (Fortran) order: the export needs no transposing copy
    labels = np.zeros(volume.shape, label_dtype(max(p.label for p in prompts)), order="F")
    records = {}

    def record(geom, k, label, **kw):
        rec = SliceRecord(geom.view, k, label, status="model", model=backend.name,
                          weights_sha256=backend.weights_sha256,
                          model_input=transform.provenance(), **kw)
        records[rec.key] = rec
    boxes = {}  # (label, axis) -> key slice -> its boxes
    for prompt, (geom, k, box) in tqdm(list(zip(prompts, placed)), desc="segmenting",
                                       unit="box", file=sys.stderr):
        if prompt.empty:  # a person's word that the structure is absent here
            records[(geom.view, k, prompt.label)] = SliceRecord(geom.view, k, prompt.label,
                                                                status="edited")
            continue
        pred = session.predict(geom.view, k, box)
        geom.take(labels, k)[pred.mask] = prompt.label
        groups[(prompt.label, prompt.axis)].keys[k].append(pred.mask)
        boxes.setdefault((prompt.label, prompt.axis), {}).setdefault(k, []).append(box)
        before = records.get((geom.view, k, prompt.label))  # two objects on one key slice
        record(geom, k, prompt.label, boxes=(before.boxes if before else []) + [list(box)])
    if args.propagate:
        for (label, axis), group in groups.items():
            geom, rules = group.geom, propagation.StopRules(extent=group.extent)
            mine = boxes.get((label, axis), {})
            if sum(1 for k in group.keys if mine.get(k)) > 1:  # later boxes correct fills
                group.keys = key_slices.corrected_keys(
                    session, geom.view, [(k, mine.get(k, [])) for k in group.keys], rules)
                for k, masks in group.keys.items():
                    for m in masks:  # a correction only adds to the box's own mask
                        geom.take(labels, k)[m] = label
            stride = (sparse_propagation.stride_for(volume, geom.view,
                                                    sparse_propagation.FAST_MM)
                      if getattr(args, "fast_propagate", False) else 1)
            result = key_slices.run_keys(session, geom.view, group.keys, rules, stride=stride)
            stops = {(s.seed, s.direction): key_slices.stop_text(geom.view, s)
                     for s in result.stops}
            for step in result.steps:
                sl = geom.take(labels, step.index)
                sl[step.mask & ((sl == 0) | (sl == label))] = label  # others' voxels stay
                record(geom, step.index, label,  # shape-interpolated: between two model slices
                       method="interpolated" if step.between else "propagated",
                       from_slices=list(step.between) or [step.seed],
                       iou=step.iou, stop_reason=stops.get((step.seed, step.direction), ""))
            filled = sorted(set(result.indices) | {k for k, m in group.keys.items() if m})
            ends = "; ".join(f"{'+' if s.direction > 0 else '-'} from {s.seed} stopped at "
                             f"{s.index}: {s.reason}" for s in result.stops)
            if filled:
                tqdm.write(f"label {label} on slices {filled[0]}..{filled[-1]} of axis {axis} "
                           f"from {len(group.keys)} key slice(s) ({ends})", file=sys.stderr)
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
    from medsam_gui.engine import batch  # --batch MANIFEST.json: many cases in one run

    if batch.is_batch(sys.argv[1:] if argv is None else argv):
        return batch.main(argv)
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
