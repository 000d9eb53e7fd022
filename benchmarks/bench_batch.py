"""Batch throughput: medsam-segment --batch with 1 worker, 2 worker processes and (when the
cluster extra is installed) a local 2-worker Dask cluster, side by side on the same manifest.

Cases: the visible BRATS scans (FLAIR and T1c of two patients) and the small abdominal CT and
MR, each listed ``--repeat`` times with its own output; boxes: the ground truth's box on
``--boxes`` slices per case. Wall time includes starting the workers and loading the model (once
per worker), as a user sees it; the ratio to 1 worker is what counts on a shared machine.

    python benchmarks/bench_batch.py [--repeat 2] [--boxes 3] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = Path(os.environ.get("MEDSAM_TEST_DATA", REPO.parent / "shared" / "data"))
BRATS = DATA / "brain_tumour_brats2015"
ABDOMEN = DATA / "abdomen_totalsegmentator"
SCANS = [(BRATS / f"brats_2013_pat000{p}_1" / f"{m}_subtrMeanDivStd.nii.gz",
          BRATS / f"brats_2013_pat000{p}_1" / "OTMultiClass.nii.gz")
         for p in (1, 2) for m in ("Flair", "T1c")] + [
    (ABDOMEN / "example_ct_sm.nii.gz", ABDOMEN / "example_seg.nii.gz"),
    (ABDOMEN / "example_mr_sm.nii.gz", ABDOMEN / "example_seg_mr.nii.gz")]


def boxes_for(truth_path: Path, n: int) -> list:
    import nibabel as nib

    truth = np.asarray(nib.load(str(truth_path)).dataobj) > 0
    z = np.flatnonzero(truth.sum(axis=(0, 1)) >= 20)
    out = []
    for k in sorted({int(z[i]) for i in np.linspace(0, len(z) - 1, n + 2)[1:-1].round()
                     .astype(int)}):
        rows, cols = np.flatnonzero(truth[:, :, k].any(1)), np.flatnonzero(truth[:, :, k].any(0))
        out.append({"axis": 2, "slice": k, "box": [int(rows[0]), int(cols[0]), int(rows[-1]),
                                                   int(cols[-1])], "label": 1})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=2, help="times each scan is listed")
    p.add_argument("--boxes", type=int, default=3, help="boxes (slices) per case")
    p.add_argument("--precision", default="auto")
    p.add_argument("--no-cluster", action="store_true")
    args = p.parse_args()
    from bench_model_input import cpu_model

    from medsam_gui.engine.batch import run_batch

    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        entries = []
        for s, (scan, truth) in enumerate(SCANS):
            boxes = boxes_for(truth, args.boxes)
            for r in range(args.repeat):
                entries.append({"image": str(scan), "boxes": boxes, "out": f"OUT/{s}_{r}.nii.gz"})
        runs = [("1 worker", {"workers": 1}), ("2 processes", {"workers": 2})]
        try:
            import distributed  # noqa: F401

            if not args.no_cluster:
                runs.append(("Dask local:2", {"cluster": "local:2"}))
        except ImportError:
            print("Dask distributed not installed: the cluster run is left out")
        print(f"{len(entries)} cases, {args.boxes} boxes each, precision {args.precision}")
        rows = []
        for name, how in runs:
            out = tmp / name.replace(" ", "_").replace(":", "")
            (out / "OUT").mkdir(parents=True)
            manifest = out / "manifest.json"
            manifest.write_text(json.dumps(entries))
            t0 = time.perf_counter()
            summary, _ = run_batch(str(manifest), ["--precision", args.precision],
                                   progress=False, **how)
            wall = time.perf_counter() - t0
            failed = len(summary.failed)
            per_case = np.median([o.seconds for o in summary.outcomes])
            rows.append((name + (f" ({failed} FAILED)" if failed else ""), wall, per_case))
            print(f"{name:>14}: {wall:7.1f} s wall, {len(entries) / wall * 60:6.1f} cases/min, "
                  f"median case {per_case:.1f} s (in its worker, the first with the model "
                  f"load){f'; {failed} failed: ' + summary.failed[0].error if failed else ''}",
                  flush=True)
        base = rows[0][1]
        print("\n| run | wall s | cases/min | speed-up vs 1 worker |\n|---|---|---|---|")
        for name, wall, _ in rows:
            print(f"| {name} | {wall:.1f} | {len(entries) / wall * 60:.1f} | {base / wall:.2f}x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
