"""medsam-dataset: a set of scans as one job, headless.

    medsam-dataset create DATASET SOURCE... [--exclude PATTERN...] [--import-labels]
    medsam-dataset add DATASET IMAGE [--series UID] [--labels LABELS.nii.gz [--done]]
    medsam-dataset status DATASET [--json] [--all]
    medsam-dataset mark DATASET CASE... --done | --to-review | --clear [--by NAME]
    medsam-dataset exclude DATASET CASE... [--undo]
    medsam-dataset export DATASET --format nnunet OUT [--all]
    medsam-dataset adapt DATASET [--epochs N] [--holdout CASE...] [--seed S]
    medsam-dataset rollback DATASET

SOURCE: a folder of NIfTI files and/or DICOM studies (searched recursively, one case per
series), an nnU-Net v2 / MSD dataset folder (imagesTr/ + dataset.json), a CSV of paths, or
one scan. ``adapt`` prints a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from medsam_gui import __version__
from medsam_gui.errors import MedsamError

PROG = "medsam-dataset"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("create", help="make a dataset folder from one or more sources")
    c.add_argument("dataset")
    c.add_argument("sources", nargs="+")
    c.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN",
                   help="leave out cases whose file name, id or path below SOURCE matches (shell "
                        "pattern; an absolute pattern matches the absolute path)")
    c.add_argument("--name", default=None)
    c.add_argument("--import-labels", action="store_true",
                   help="import the segmentations a source provides (nnU-Net labelsTr, a CSV "
                        "labels column) as reviewed work, cases marked 'to review'")

    a = sub.add_parser("add", help="add one scan (optionally with its segmentation)")
    a.add_argument("dataset")
    a.add_argument("image")
    a.add_argument("--series", default=None, help="DICOM SeriesInstanceUID (several series)")
    a.add_argument("--labels", default=None, help="an existing segmentation (NIfTI, DICOM "
                   "SEG or RT Structure Set), imported as reviewed")
    a.add_argument("--done", action="store_true", help="with --labels: mark the case done")
    a.add_argument("--id", default=None, help="case id (default: from the file name)")

    s = sub.add_parser("status", help="the worklist: each case's status")
    s.add_argument("dataset")
    s.add_argument("--json", action="store_true", help="one JSON document")
    s.add_argument("--all", action="store_true", help="show excluded cases too")

    m = sub.add_parser("mark", help="set cases done / to review / back to their work's state")
    m.add_argument("dataset")
    m.add_argument("cases", nargs="+")
    g = m.add_mutually_exclusive_group(required=True)
    g.add_argument("--done", action="store_const", const="done", dest="state")
    g.add_argument("--to-review", action="store_const", const="to review", dest="state")
    g.add_argument("--clear", action="store_const", const="", dest="state")
    m.add_argument("--by", default=None, help="who (default: the login name)")

    x = sub.add_parser("exclude", help="leave cases out of the worklist (or take them back)")
    x.add_argument("dataset")
    x.add_argument("cases", nargs="+")
    x.add_argument("--undo", action="store_true")

    e = sub.add_parser("export", help="write the done cases for training")
    e.add_argument("dataset")
    e.add_argument("out")
    e.add_argument("--format", choices=("nnunet",), default="nnunet")
    e.add_argument("--all", action="store_true", help="every case with saved work")

    d = sub.add_parser("adapt", help="fine-tune on done cases; adopt only if it is better on "
                                     "held-back cases")
    d.add_argument("dataset")
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--holdout", nargs="+", default=None, metavar="CASE",
                   help="cases held back for the check (default: drawn by seed)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default=None)
    d.add_argument("--cache-dir", default=None,
                   help="embedding disk cache (default: the user cache folder; 'none')")

    sub.add_parser("rollback", help="go back to the model adopted before the current one"
                   ).add_argument("dataset")
    return p


def _create(args) -> int:
    from medsam_gui.dataset.manifest import Dataset
    from medsam_gui.dataset.sources import discover_all

    cases, names, notes = discover_all(args.sources, args.exclude)
    ds = Dataset.create(args.dataset, args.name)
    if names:
        ds.update(lambda d: d.meta.__setitem__("label_names",
                                                {str(k): v for k, v in names.items()}))
    added = ds.add_cases(cases)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.import_labels:
        _import_source_labels(ds, added)
    n_ex = sum(1 for c in added if c.excluded)
    print(f"{ds.folder}: {len(added) - n_ex} cases" + (f" ({n_ex} excluded)" if n_ex else ""))
    return 0


def _label_names(ds) -> dict:
    return {int(k): v for k, v in (ds.meta.get("label_names") or {}).items()}


def _import_source_labels(ds, cases) -> None:
    from medsam_gui.dataset.cases import import_labels

    for c in cases:
        if not c.labels_path or c.excluded:
            continue
        try:
            _, n, _notes = import_labels(ds, c, c.labels_path, names=_label_names(ds))
        except MedsamError as exc:
            print(f"note: {c.id}: labels not imported: {exc}", file=sys.stderr)
            continue
        ds.set_state(c.id, "to review")
        print(f"{c.id}: imported {n} reviewed slices from {c.labels_path}")


def _add(args) -> int:
    from medsam_gui.dataset.cases import import_labels
    from medsam_gui.dataset.manifest import Dataset, safe_id
    from medsam_gui.dataset.sources import discover

    if args.done and not args.labels:
        raise MedsamError("--done needs --labels (a case without labels is not done)")
    ds = Dataset.open(args.dataset)
    found = discover(args.image)
    cases = [c for c in found.cases if args.series is None or c.series_uid == args.series]
    if not cases:
        raise MedsamError(f"no series {args.series} here", args.image)
    if len(cases) > 1 and (args.labels or args.id):
        raise MedsamError(f"{len(cases)} series here; choose one with --series UID ("
                          + ", ".join(f"{c.series_uid} {c.description}" for c in cases[:5])
                          + ")", args.image)
    if args.id:
        cases[0].id = safe_id(args.id)
    for c in cases:
        c.source = "add"
    existing = [ds.find(c.image, c.series_uid) for c in cases]
    added = ds.add_cases(cases)
    target = added[0] if added else existing[0]
    for c in existing:
        if c is not None and c.excluded:  # adding it again is the user's word: take it back
            ds.set_excluded(c.id, False)
            print(f"{c.id} was excluded: taken back")
    if args.labels:
        folder, n, notes = import_labels(ds, target, args.labels, names=_label_names(ds))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        ds.set_state(target.id, "done" if args.done else "to review")
        print(f"{target.id}: imported {n} reviewed slices into {folder}"
              + ("; marked done" if args.done else "; marked to review"))
    for c in added:
        print(f"added {c.id}: {c.image}" + (f" (series {c.series_uid})" if c.series_uid else ""))
    if not added and not args.labels:
        print(f"{target.id} is in the dataset already")
    return 0


def _status(args) -> int:
    from medsam_gui.dataset.manifest import Dataset
    from medsam_gui.dataset.status import dataset_status, table_text

    ds = Dataset.open(args.dataset)
    rows = dataset_status(ds, include_excluded=args.all)
    if args.json:
        print(json.dumps({"dataset": str(ds.folder), "name": ds.name,
                          "model": ds.current_model, "model_modalities": ds.model_modalities(),
                          "cases": [r.to_json() for r in rows]},
                         indent=1))
    else:
        print(table_text(rows))
    return 0


def _mark(args) -> int:
    from medsam_gui.dataset.manifest import Dataset

    ds = Dataset.open(args.dataset)
    for cid in args.cases:
        ds.case(cid)  # all named cases exist before any is changed
    if args.state == "done":
        from medsam_gui.dataset.status import read_work_summary

        for cid in args.cases:
            if read_work_summary(ds, ds.case(cid)) is None:
                print(f"note: {cid} has no saved work: it is marked done as a case with "
                      "nothing to label, and an export leaves it out until it has a label "
                      "map (open it in medsam-gui, or add its labels with 'add --labels')",
                      file=sys.stderr)
    for cid in args.cases:
        ds.set_state(cid, args.state, args.by)
    print(f"{len(args.cases)} case(s): {args.state or 'state cleared'}")
    return 0


def _exclude(args) -> int:
    from medsam_gui.dataset.manifest import Dataset

    ds = Dataset.open(args.dataset)
    for cid in args.cases:
        ds.case(cid)
    for cid in args.cases:
        ds.set_excluded(cid, not args.undo)
    print(f"{len(args.cases)} case(s) {'taken back' if args.undo else 'excluded'}")
    return 0


def _export(args) -> int:
    from medsam_gui.dataset.export import export_nnunet
    from medsam_gui.dataset.manifest import Dataset

    ds = Dataset.open(args.dataset)
    res = export_nnunet(ds, args.out, all_cases=args.all,
                        progress=lambda k, n, cid: print(f"[{k}/{n}] {cid}", file=sys.stderr)
                        if cid else None)
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{res.folder}: {len(res.cases)} cases, labels "
          + ", ".join(f"{v} {k}" for k, v in res.labels.items()))
    return 0


def _adapt(args) -> int:
    from medsam_gui.dataset.adapt import AdaptConfig, adapt
    from medsam_gui.dataset.manifest import Dataset

    ds = Dataset.open(args.dataset)
    config = AdaptConfig(seed=args.seed, holdout=args.holdout, device=args.device,
                         cache_dir=args.cache_dir)
    if args.epochs is not None:
        config.epochs = args.epochs
    res = adapt(ds, config, say=lambda m: print(m, file=sys.stderr))
    print(res.message, file=sys.stderr)
    print(json.dumps(res.line()))
    return 0


def _rollback(args) -> int:
    from medsam_gui.dataset.adapt import rollback
    from medsam_gui.dataset.manifest import Dataset

    ds = Dataset.open(args.dataset)
    print(rollback(ds))
    return 0


COMMANDS = {"create": _create, "add": _add, "status": _status, "mark": _mark,
            "exclude": _exclude, "export": _export, "adapt": _adapt, "rollback": _rollback}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MedsamError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
