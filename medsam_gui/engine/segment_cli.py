"""medsam-segment: box prompts on a scan -> label map (NIfTI, DICOM SEG or RTSTRUCT), headless."""

from __future__ import annotations

import argparse
import json
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
Boxes are applied in order (--box first, then --boxes); a later mask overwrites an earlier
one where they overlap. Exit code 0 on success, 2 on any error (nothing is written then).

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
FORMATS = ("nifti", "seg", "rtstruct")


@dataclass
class BoxPrompt:
    axis: int
    slice: int
    box: Sequence[int]  # x0, y0, x1, y1 in source voxel indices
    label: int
    extent: Optional[Sequence[int]] = None  # first, last slice along axis (propagation)


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
    p.add_argument("--modality", default="auto", type=_modality, metavar="CT|MR|auto",
                   help="modality rule for the model input (auto: DICOM's, or guessed)")
    p.add_argument("--window", nargs=2, type=float, metavar=("LEVEL", "WIDTH"),
                   help="show the model this window (HU for CT) instead of the automatic rule")
    p.add_argument("--propagate", action="store_true",
                   help="follow each box's structure through the volume along its AXIS")
    p.add_argument("--extent", nargs=2, type=int, metavar=("FIRST", "LAST"),
                   help="with --propagate: slices along AXIS it may fill (default: all)")
    p.add_argument("--out", required=True, metavar="LABELS.nii.gz",
                   help="output: .nii.gz (with .json/.itksnap.txt/.ctbl label descriptions "
                        "beside it), .seg.dcm or .rtstruct.dcm")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="nifti, seg (DICOM Segmentation) or rtstruct (RT Structure Set); "
                        "default: from the --out name (a plain .dcm needs it)")
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


def read_boxes_json(path: str, default_label: int) -> List[BoxPrompt]:
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MedsamError(f"cannot read the boxes file ({exc.strerror or exc})", path) from None
    except ValueError as exc:
        raise MedsamError(f"the boxes file is not valid JSON ({exc})", path) from None
    if not isinstance(items, list):
        raise MedsamError("the boxes file must hold a JSON list of boxes", path)
    out = []
    for n, item in enumerate(items):
        try:
            box = [int(v) for v in item["box"]]
            if len(box) != 4:
                raise ValueError("box needs 4 numbers")
            extent = item.get("extent")
            if extent is not None:
                extent = [int(v) for v in extent]
                if len(extent) != 2:
                    raise ValueError("extent needs 2 numbers")
            out.append(BoxPrompt(int(item["axis"]), int(item["slice"]), box,
                                 int(item.get("label", default_label)), extent))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MedsamError(f"box #{n} is malformed ({exc}); expected "
                              '{"axis", "slice", "box": [x0, y0, x1, y1], "label"}', path) from None
    return out


def display_box(volume, prompt: BoxPrompt, image: str):
    """(view geometry, display slice index, display box x0 y0 x1 y1) for a voxel-index box."""
    from medsam_gui.volume import view_for_axis

    shape = volume.shape
    if prompt.axis not in (0, 1, 2):
        raise MedsamError(f"box axis must be 0, 1 or 2 (got {prompt.axis})", image)
    rest = [a for a in range(3) if a != prompt.axis]
    x0, y0, x1, y1 = prompt.box
    checks = [(prompt.slice, prompt.axis, "slice"), (x0, rest[0], "X0"), (x1, rest[0], "X1"),
              (y0, rest[1], "Y0"), (y1, rest[1], "Y1")]
    for value, ax, what in checks:
        if not 0 <= value < shape[ax]:
            raise MedsamError(f"box {what}={value} is outside 0..{shape[ax] - 1} along voxel "
                              f"axis {ax} (image shape {shape})", image)
    if x1 < x0 or y1 < y0:
        raise MedsamError(f"box corners must satisfy X0<=X1 and Y0<=Y1 (got {prompt.box})", image)
    if prompt.extent is not None:
        first, last = sorted(prompt.extent)
        if first < 0 or last >= shape[prompt.axis]:
            raise MedsamError(f"extent {first}..{last} is outside 0..{shape[prompt.axis] - 1} "
                              f"along voxel axis {prompt.axis}", image)
        if not first <= prompt.slice <= last:
            raise MedsamError(f"the box's slice {prompt.slice} is outside its extent "
                              f"{first}..{last}", image)
    geom = view_for_axis(volume.affine, shape, prompt.axis)
    corners = []
    for x, y in ((x0, y0), (x1, y1)):
        vox = [0, 0, 0]
        vox[prompt.axis], vox[rest[0]], vox[rest[1]] = prompt.slice, x, y
        corners.append(geom.display_pixel(tuple(vox)))
    rows = [c[1] for c in corners]
    cols = [c[2] for c in corners]
    return geom, corners[0][0], (min(cols), min(rows), max(cols), max(rows))


def run(args: argparse.Namespace) -> Path:
    from tqdm import tqdm

    from medsam_gui.engine import propagation
    from medsam_gui.engine.backends import load_backend
    from medsam_gui.engine.session import Session
    from medsam_gui.annotation.labels import PALETTE, Label, LabelMap, LabelTable, SliceRecord
    from medsam_gui.io import load_volume
    from medsam_gui.annotation.exporting import export_labels
    from medsam_gui.io.formats import format_for

    fmt = format_for(args.out, args.format)  # a wrong name fails before any work
    prompts = [BoxPrompt(b[0], b[1], b[2:], args.label, args.extent) for b in args.box]
    if args.boxes:
        prompts += read_boxes_json(args.boxes, args.label)
    if args.extent is not None and not args.propagate:
        raise MedsamError("--extent limits a propagation: add --propagate")
    if not prompts:
        raise MedsamError("no boxes given: use --box AXIS SLICE X0 Y0 X1 Y1 or --boxes FILE.json")
    for p in prompts:
        if not 0 < p.label < 65536:
            raise MedsamError(f"label must be within 1..65535 (got {p.label})")
    choice = model_input_of(args)
    volume = load_volume(args.image)
    if fmt != "nifti":
        from medsam_gui.io.dicom_source import require_dicom

        require_dicom(volume)
    placed = [display_box(volume, p, args.image) for p in prompts]  # validate all first
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
                record(geom, step.index, prompt.label, method="propagated", from_slices=[k])
            filled = result.indices + [k]
            stops = "; ".join(f"{'+' if s.direction > 0 else '-'} stopped at {s.index}: "
                              f"{s.reason}" for s in result.stops)
            tqdm.write(f"box {n + 1}: label {prompt.label} on slices {min(filled)}..{max(filled)}"
                       f" of axis {prompt.axis} ({stops})", file=sys.stderr)
    table = LabelTable([Label(v, f"label {v}", PALETTE[(v - 1) % len(PALETTE)])
                        for v in sorted({p.label for p in prompts})])
    labelmap = LabelMap(volume.shape, table, labels)
    labelmap.records = records
    exported = export_labels(labelmap, volume, args.out, fmt)
    for note in exported.notes:
        print(f"note: {note}", file=sys.stderr)
    return exported.path


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        out = run(args)
    except MedsamError as exc:
        print(f"medsam-segment: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:
        print(f"medsam-segment: error: {args.image}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
