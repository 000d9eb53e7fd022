"""medsam-segment --batch MANIFEST.json: many cases in one run.

The manifest is a JSON list of cases::

    [{"image": "scans/a.nii.gz", "boxes": "boxes/a.json", "out": "labels/a.nii.gz"},
     {"image": "dicom/b/", "series": "1.2.3", "out": "labels/b.seg.dcm",
      "boxes": [{"axis": 2, "slice": 70, "box": [10, 20, 60, 80], "label": 1}]}]

``boxes`` is a boxes file or the list itself, as ``--boxes`` takes it; relative paths are
relative to the manifest's folder. Every other option of medsam-segment (``--model``,
``--checkpoint``, ``--precision``, ``--propagate``, ``--modality``, ``--format``, …) applies to
every case. Each case is exactly one ``medsam-segment IMAGE --boxes BOXES --out OUT`` run
(``segment_cli.run``), with the model loaded once per worker process.

- One bad case never stops the rest: its error is kept and the next case runs. The summary
  lists the failed cases; the exit code is 0 when every case is written, 1 when some failed,
  2 when the manifest itself is unusable.
- Resumable: a case whose output exists is skipped (outputs are written under temporary names
  and renamed into place at the end, so an existing output is a whole one); ``--overwrite``
  runs them again.
- ``--workers N``: N processes on this machine, each with its own model and 1/N of the CPU
  threads (``batch_pool``); a worker that dies costs only its case, which runs once more in a
  fresh worker before it is reported as failed. ``--cluster ADDRESS``: the cases go to a Dask
  distributed scheduler (``tcp://host:8786``), or ``local:N`` starts a local cluster of N worker
  processes (``batch_dask``; needs the ``cluster`` extra). Dask was chosen over Ray by
  measurement (README, "Batch runs").

This module holds what every way of running shares: the manifest, one case, resume and the
summary; with one worker the cases run in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from medsam_gui.errors import MedsamError

CASE_KEYS = ("image", "boxes", "out", "series")
NOT_IN_BATCH = ("--box", "--boxes", "--out", "--series", "--queue", "--extent")
MAX_MANIFEST_BYTES = 64 * 2**20


@dataclass
class Case:
    n: int  # position in the manifest
    image: str = ""
    out: str = ""
    boxes: object = None  # a boxes file (str) or the list of boxes
    series: Optional[str] = None
    problem: str = ""  # the entry is malformed: the case fails with this

    @property
    def name(self) -> str:
        return f"case {self.n} ({self.image or '?'})"


@dataclass
class Outcome:
    n: int
    out: str
    status: str  # "done", "skipped" or "failed"
    error: str = ""
    seconds: float = 0.0
    log: str = ""  # what medsam-segment said on stderr for this case
    attempts: int = 1  # 2: its first worker process died and it ran again in a fresh one


@dataclass
class Summary:
    outcomes: List[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1
    where: str = "this machine"

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> List[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def text(self, cases: Sequence[Case]) -> str:
        by_n = {c.n: c for c in cases}
        head = (f"{self.count('done')} written, {self.count('skipped')} skipped (already "
                f"written), {self.count('failed')} failed, of {len(self.outcomes)} cases in "
                f"{self.seconds:.1f} s ({self.workers} worker{'s' if self.workers != 1 else ''}"
                f" on {self.where})")
        lines = [head]
        for o in self.failed:
            lines.append(f"  failed: {by_n[o.n].name}: {o.error}")
        return "\n".join(lines)


# ---- the manifest -----------------------------------------------------------------------------
def _case_of(item: object, n: int, base: Path) -> Case:
    case = Case(n)
    if not isinstance(item, dict):
        case.problem = ('each case must be a JSON object like {"image": …, "boxes": …, '
                        '"out": …}')
        return case
    unknown = sorted(set(item) - set(CASE_KEYS))
    missing = [k for k in ("image", "boxes", "out") if k not in item]
    bad = [k for k in ("image", "out", "series") if k in item
           and not (isinstance(item[k], str) and item[k].strip())]
    if isinstance(item.get("image"), str):
        case.image = str(base / Path(item["image"]).expanduser())
    if isinstance(item.get("out"), str) and item["out"].strip():
        case.out = str(base / Path(item["out"]).expanduser())
    if unknown:
        case.problem = (f"unknown key(s) {', '.join(map(repr, unknown))}; a case has "
                        f"{', '.join(CASE_KEYS)}")
    elif missing:
        case.problem = f"missing {', '.join(repr(k) for k in missing)}"
    elif bad:
        case.problem = f"{', '.join(repr(k) for k in bad)} must be a non-empty text"
    elif not isinstance(item["boxes"], (str, list)):
        case.problem = '"boxes" must be a boxes file or a list of boxes'
    else:
        boxes = item["boxes"]
        case.boxes = str(base / Path(boxes).expanduser()) if isinstance(boxes, str) else boxes
        case.series = item.get("series")
    return case


def read_manifest(path: str) -> List[Case]:
    """The cases of a batch manifest. A malformed case fails alone (``Case.problem``); a file
    that is not a list of cases, or two cases writing one output, is a MedsamError."""
    file = Path(path).expanduser()
    try:
        if file.is_dir():
            raise MedsamError("this is a folder, not a batch manifest", path)
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise MedsamError("the batch manifest is larger than "
                              f"{MAX_MANIFEST_BYTES // 2**20} MB", path)
        raw = file.read_bytes()
    except OSError as exc:
        raise MedsamError(f"cannot read the batch manifest ({exc.strerror or exc})", path) \
            from None
    try:
        items = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MedsamError("the batch manifest is not UTF-8 text", path) from None
    except (ValueError, RecursionError) as exc:
        raise MedsamError(f"the batch manifest is not valid JSON ({exc})", path) from None
    if not isinstance(items, list):
        raise MedsamError('the batch manifest must hold a JSON list of cases like [{"image": '
                          '…, "boxes": …, "out": …}]', path)
    if not items:
        raise MedsamError("the batch manifest holds no cases", path)
    base = file.resolve().parent
    cases = [_case_of(item, n, base) for n, item in enumerate(items)]
    seen: Dict[str, int] = {}
    for c in cases:
        if not c.out:
            continue
        key = os.path.realpath(c.out)
        if key in seen:
            raise MedsamError(f"cases {seen[key]} and {c.n} both write {c.out}", path)
        seen[key] = c.n
    return cases


# ---- one case ----------------------------------------------------------------------------------
_BACKENDS: Dict[Tuple, object] = {}  # per process: the model, loaded once


def model_key(case_args: Sequence[str]) -> Tuple:
    args = _parse_case_args(case_args)
    return (args.model, args.checkpoint, args.device, args.precision)


def _parse_case_args(case_args: Sequence[str], image: str = "IMAGE",
                     out: str = "OUT.nii.gz", extra: Sequence[str] = ()) -> argparse.Namespace:
    from medsam_gui.engine.segment_cli import build_parser

    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args([image, "--out", out, *extra, *case_args])
    except SystemExit:
        text = err.getvalue().strip().splitlines()
        raise MedsamError(text[-1] if text else "bad options") from None


def worker_backend(case_args: Sequence[str], threads: Optional[int] = None):
    """The model for these options, loaded on the first call in this process."""
    key = model_key(case_args)
    if key not in _BACKENDS:
        if threads:
            import torch

            torch.set_num_threads(max(1, int(threads)))
        from medsam_gui.engine.loading import load_backend

        _BACKENDS.clear()  # one model per worker
        _BACKENDS[key] = load_backend(*key)
    return _BACKENDS[key]


def run_case(case: Case, case_args: Sequence[str], threads: Optional[int] = None) -> Outcome:
    """One ``medsam-segment`` run; every error is caught and returned in the outcome."""
    from medsam_gui.engine.segment_cli import run

    t0 = time.perf_counter()
    log = io.StringIO()
    tmp = None
    try:
        if case.problem:
            raise MedsamError(f"malformed entry: {case.problem}")
        boxes = case.boxes
        if isinstance(boxes, list):
            fd, tmp = tempfile.mkstemp(prefix=f"medsam-batch-case{case.n}-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(boxes, fh)
            boxes = tmp
        extra = ["--boxes", str(boxes)] + (["--series", case.series] if case.series else [])
        args = _parse_case_args(case_args, case.image, case.out, extra)
        backend = worker_backend(case_args, threads)
        with contextlib.redirect_stderr(log):
            run(args, backend=backend)
    except BaseException as exc:  # one bad case never stops the rest
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = describe_error(exc)
        if tmp:
            text = text.replace(tmp, "the manifest's boxes")
        return Outcome(case.n, case.out, "failed", text, time.perf_counter() - t0,
                       log.getvalue())
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return Outcome(case.n, case.out, "done", "", time.perf_counter() - t0, log.getvalue())


def describe_error(exc: BaseException) -> str:
    """An exception as one line for the summary."""
    if isinstance(exc, MedsamError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    if isinstance(exc, MemoryError):
        return "not enough memory"
    return f"{type(exc).__name__}: {exc}"


# ---- many cases ----------------------------------------------------------------------------------
Done = Callable[[Outcome], None]


def _in_process(todo: Sequence[Case], case_args: Sequence[str], done: Done) -> None:
    """One worker: the cases one after the other in this process."""
    for case in todo:
        done(run_case(case, case_args))


def run_batch(manifest: str, case_args: Sequence[str] = (), workers: int = 1,
              cluster: Optional[str] = None, overwrite: bool = False,
              progress: bool = True) -> Tuple[Summary, List[Case]]:
    """Run every case of ``manifest`` (see the module doc)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    cases = read_manifest(manifest)
    bad = [a for a in case_args if a.split("=")[0] in NOT_IN_BATCH]
    if bad:
        raise MedsamError(f"{bad[0]} is given per case in a batch manifest (image, boxes, out, "
                          "series), not on the command line")
    _parse_case_args(case_args)  # the shared options are checked before any case runs
    if workers < 1:
        raise MedsamError(f"--workers must be at least 1 (got {workers})")
    summary = Summary(workers=workers)
    todo = []
    for c in cases:
        if not overwrite and not c.problem and c.out and os.path.exists(c.out):
            summary.outcomes.append(Outcome(c.n, c.out, "skipped"))
        else:
            todo.append(c)
    bar = tqdm(total=len(cases), initial=len(summary.outcomes), desc="cases", unit="case",
               file=sys.stderr, disable=not progress)

    def done(o: Outcome) -> None:
        summary.outcomes.append(o)
        if o.status == "failed":
            bar.write(f"failed: case {o.n}: {o.error}", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(failed=len(summary.failed), refresh=False)

    def note(text: str) -> None:
        bar.write(text, file=sys.stderr)

    try:
        if not todo:
            pass
        elif cluster:
            from medsam_gui.engine.batch_dask import run_dask

            summary.workers, summary.where = run_dask(todo, case_args, cluster, done)
        elif workers == 1:
            summary.workers = 1
            _in_process(todo, case_args, done)
        else:
            from medsam_gui.engine.batch_pool import run_pool

            summary.workers = min(workers, len(todo))
            run_pool(todo, case_args, summary.workers, done, note)
    finally:
        bar.close()
    summary.outcomes.sort(key=lambda o: o.n)
    summary.seconds = time.perf_counter() - t0
    return summary, cases


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medsam-segment", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other medsam-segment option (see medsam-segment --help) applies to every "
               "case.")
    p.add_argument("--batch", required=True, metavar="MANIFEST.json",
                   help="a JSON list of {\"image\", \"boxes\", \"out\"[, \"series\"]}")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes on this machine, each with its own model (1)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run on Dask distributed: a scheduler address (tcp://host:8786) or "
                        "local:N for N local worker processes")
    p.add_argument("--overwrite", action="store_true",
                   help="run cases whose output exists too (default: skip them)")
    p.add_argument("--report", metavar="REPORT.json",
                   help="write each case's outcome (status, error, seconds) as JSON")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, case_args = parser.parse_known_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        summary, cases = run_batch(args.batch, case_args, args.workers, args.cluster,
                                   args.overwrite)
        if args.report:
            from medsam_gui.io.atomic import atomic_write_bytes

            data = json.dumps([asdict(o) for o in summary.outcomes], indent=1)
            try:
                atomic_write_bytes(Path(args.report).expanduser(), data.encode("utf-8"))
            except OSError as exc:
                raise MedsamError(f"cannot write the report ({exc.strerror or exc})",
                                  args.report) from None
    except MedsamError as exc:
        print(f"medsam-segment: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medsam-segment: interrupted; the cases written so far are kept (run again to "
              "resume)", file=sys.stderr)
        return 130
    print(summary.text(cases), file=sys.stderr)
    return 1 if summary.failed else 0


def is_batch(argv: Iterable[str]) -> bool:
    return any(a == "--batch" or a.startswith("--batch=") for a in argv)
