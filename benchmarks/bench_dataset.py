"""A simulated annotation session over a dataset, with and without between-case learning.

Two sessions, each its own dataset: the visible BRATS cases (FLAIR and T1c of two patients:
four cases, whole tumour) and the visible abdominal cases (the small CT and MR, liver), worked
through in order. The user's boxes are the ground truth's boxes and the user's corrections are
the ground truth. For each next case the benchmark measures the Dice of the first box on each of
its slices with the model the user has at that moment: the base model throughout ("without"),
or the model ``adapt`` adopted after each finished case ("with"). Then the case is marked done
and ``adapt`` runs (its time on this machine is printed).

It also measures the noise the adoption margin is made of: the held-back Dice of the same
training run with different seeds (the spread between runs), and the paired bootstrap spread of
the mean gain over the held-back slices.

The noise runs use the BRATS session (its second case held back).

Measured (AMD EPYC, 2 cores, load average 15 to 24 from other jobs; 12 slices, 6 epochs; the
BRATS session was stopped after its second case for time):

| session | case | first-box Dice base | with learning | adapt | adopted | held-back base -> new (n) |
|---|---|---|---|---|---|---|
| brats | pat0001 FLAIR | 0.7681 | 0.7681 | 270 s | no | +0.022 (4, slice blocks), bound -0.016 |
| brats | pat0002 FLAIR | 0.8289 | 0.8289 | 839 s | no | -0.013 (12) |
| abdomen | CT liver | 0.9034 | 0.9034 | 774 s | yes | 0.8782 -> 0.9390 (4, slice blocks) |
| abdomen | MR liver | 0.8898 | 0.8125 | 416 s | no | 0.9505 -> 0.9082 (12) |

The model adopted on one CT case (checked on blocks of its own slices) made the next case, an
MR, worse by 0.077: the one-case check is weak, as its warning says.

    python benchmarks/bench_dataset.py [--slices 12] [--epochs 6] [--seeds 3]
"""

from __future__ import annotations

import argparse
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
BRATS_CASES = [(BRATS / p / f"{m}_subtrMeanDivStd.nii.gz", BRATS / p / "OTMultiClass.nii.gz", None)
               for p, m in [("brats_2013_pat0001_1", "Flair"), ("brats_2013_pat0002_1", "Flair"),
                            ("brats_2013_pat0001_1", "T1c"), ("brats_2013_pat0002_1", "T1c")]]
LIVER = 5  # TotalSegmentator id (CT and MR)
ABDOMEN_CASES = [(ABDOMEN / "example_ct_sm.nii.gz", ABDOMEN / "example_seg.nii.gz", LIVER),
                 (ABDOMEN / "example_mr_sm.nii.gz", ABDOMEN / "example_seg_mr.nii.gz", LIVER)]


def one_structure(labels: Path, value, out: Path) -> Path:
    """``labels`` itself (any label > 0 is the structure) or a copy holding only ``value``."""
    import nibabel as nib

    if value is None:
        return labels
    img = nib.load(str(labels))
    data = (np.asarray(img.dataobj) == value).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(out))
    return out


def first_box_dice(backend, case, labels_path, n, cache) -> float:
    """Mean Dice of the ground-truth box's mask on ``n`` tumour slices of the case."""
    import nibabel as nib

    from medsam_gui.engine import Session
    from medsam_gui.io import load_volume
    from medsam_gui.training.losses import mask_dice
    from medsam_gui.training.seed_workspace import tumour_slices

    vol = load_volume(case.image)
    gt = np.asarray(nib.load(str(labels_path)).dataobj) > 0
    geom = vol.geometry("axial")
    session = Session(vol, backend, cache)
    out = []
    for i in tumour_slices(gt, vol, "axial", n):
        m = geom.take(gt, i)
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        box = (float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1]))
        out.append(mask_dice(session.predict("axial", i, box).mask, m))
    return float(np.mean(out))


def session(name: str, specs, args, tmp: Path, cache, cache_dir: str, base):
    """Work through ``specs`` as one dataset; rows per case after the first."""
    from medsam_gui.dataset import Dataset
    from medsam_gui.dataset.adapt import AdaptConfig, adapt
    from medsam_gui.dataset.sources import discover_all
    from medsam_gui.engine import load_backend
    from medsam_gui.errors import MedsamError
    from medsam_gui.training.seed_workspace import workspace_from_labels

    ds = Dataset.create(tmp / name)
    found, _, _ = discover_all([scan for scan, _, _ in specs])
    cases = ds.add_cases(found)
    labels = [one_structure(lab, v, tmp / f"{name}-{k}-labels.nii.gz")
              for k, (_, lab, v) in enumerate(specs)]
    rows = []
    for case, lab in zip(cases, labels):
        current = ds.current_model
        model = base if current is None else load_backend("litemedsam", checkpoint=current,
                                                          device="cpu")
        without = first_box_dice(base, case, lab, args.slices, cache)
        with_ = first_box_dice(model, case, lab, args.slices, cache) if current else without
        workspace_from_labels(case.image, str(lab), str(ds.case_dir(case)),
                              n_slices=args.slices)
        ds.set_state(case.id, "done")
        t0 = time.time()
        try:
            res = adapt(ds, AdaptConfig(epochs=args.epochs, cache_dir=cache_dir), say=print)
        except MedsamError as exc:  # too little data after the first case
            print(f"{case.id}: first-box Dice {without:.4f}; adapt refused: {exc.problem}")
            rows.append((name, case.id, without, with_, time.time() - t0, None))
            continue
        rows.append((name, case.id, without, with_, time.time() - t0, res))
        print(f"{name} {case.id}: first-box Dice without {without:.4f} with {with_:.4f}; "
              f"{res.message} ({time.time() - t0:.0f} s)", flush=True)
    return ds, cases, rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slices", type=int, default=12)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sessions", default="brats,abdomen")
    args = p.parse_args()
    from bench_model_input import cpu_model

    import torch

    from medsam_gui.dataset import Dataset
    from medsam_gui.dataset.adapt import AdaptConfig, adapt
    from medsam_gui.engine import EmbeddingCache, load_backend

    print(f"cpu: {cpu_model()}, torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        cache_dir = str(tmp / "cache")
        cache = EmbeddingCache(disk_dir=cache_dir)
        base = load_backend("litemedsam", device="cpu")
        rows, brats = [], None
        specs = {"brats": BRATS_CASES, "abdomen": ABDOMEN_CASES}
        for name in args.sessions.split(","):
            ds, cases, got = session(name, specs[name], args, tmp, cache, cache_dir, base)
            rows += got
            if name == "brats":
                brats = (ds, cases)
        print(f"\nload average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print("\n| session | case (in order) | first-box Dice, base | with learning | "
              "adapt step | adopted | held-back base -> new (n) |")
        print("|---|---|---|---|---|---|---|")
        for sname, cid, wo, wi, sec, res in rows:
            tail = ("refused (too little data) | - | -" if res is None else
                    f"{sec:.0f} s | {res.adopted} | {res.base_dice:.4f} -> "
                    f"{res.new_dice:.4f} ({res.slices})")
            print(f"| {sname} | {cid} | {wo:.4f} | {wi:.4f} | {tail} |")
        if brats is None or args.seeds < 2:
            return
        # the noise: same data and split, different seeds
        ds, cases = brats
        holdout = [cases[1].id]
        ds2 = Dataset.open(ds.folder)
        ds2.update(lambda d: d.meta["model"].__setitem__("current", None))
        news, base_d = [], None
        for seed in range(args.seeds):
            r = adapt(ds2, AdaptConfig(epochs=args.epochs, seed=seed, holdout=holdout,
                                       cache_dir=cache_dir, min_gain=9.0))
            news.append(r.new_dice)
            base_d = r.base_dice
            print(f"seed {seed}: held-back Dice {r.base_dice:.4f} -> {r.new_dice:.4f} "
                  f"(n={r.slices}); bootstrap 95% lower bound of the gain "
                  f"{r.decision.lower:+.4f}", flush=True)
        spread = max(news) - min(news)
        print(f"\nseed spread of held-back Dice over {args.seeds} runs: {spread:.4f} "
              f"(sd {np.std(news, ddof=1):.4f}); base {base_d:.4f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
