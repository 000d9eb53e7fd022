"""A simulated annotation session over a dataset, with and without between-case learning.

The visible BRATS cases (FLAIR and T1c of two patients: four cases) are worked through in order.
The user's boxes are the ground truth's boxes and the user's corrections are the ground truth
(whole tumour). For each next case the benchmark measures the Dice of the first box on each of
its slices with the model the user has at that moment: the base model throughout ("without"),
or the model ``adapt`` adopted after each finished case ("with"). Then the case is marked done
and ``adapt`` runs (its time on this machine is printed).

It also measures the noise the adoption margin is made of: the held-back Dice of the same
training run with different seeds (the spread between runs), and the paired bootstrap spread of
the mean gain over the held-back slices.

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
CASES = [("brats_2013_pat0001_1", "Flair"), ("brats_2013_pat0002_1", "Flair"),
         ("brats_2013_pat0001_1", "T1c"), ("brats_2013_pat0002_1", "T1c")]


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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slices", type=int, default=12)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    from bench_model_input import cpu_model

    import torch

    from medsam_gui.dataset import Dataset
    from medsam_gui.dataset.adapt import AdaptConfig, adapt
    from medsam_gui.dataset.sources import discover_all
    from medsam_gui.engine import EmbeddingCache, load_backend
    from medsam_gui.errors import MedsamError
    from medsam_gui.training.seed_workspace import workspace_from_labels

    print(f"cpu: {cpu_model()}, torch threads {torch.get_num_threads()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        cache_dir = str(tmp / "cache")
        cache = EmbeddingCache(disk_dir=cache_dir)
        ds = Dataset.create(tmp / "ds")
        found, _, _ = discover_all([BRATS / p / f"{m}_subtrMeanDivStd.nii.gz" for p, m in CASES])
        cases = ds.add_cases(found)
        labels = [BRATS / p / "OTMultiClass.nii.gz" for p, _ in CASES]
        base = load_backend("litemedsam", device="cpu")
        rows = []
        for k, (case, lab) in enumerate(zip(cases, labels)):
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
                continue
            rows.append((case.id, without, with_, time.time() - t0, res))
            print(f"{case.id}: first-box Dice without {without:.4f} with {with_:.4f}; "
                  f"{res.message} ({time.time() - t0:.0f} s)", flush=True)
        print("\n| case (in order) | first-box Dice, base | with learning | adapt step | "
              "adopted | held-back base -> new (n) |")
        print("|---|---|---|---|---|---|")
        for cid, wo, wi, sec, res in rows:
            print(f"| {cid} | {wo:.4f} | {wi:.4f} | {sec:.0f} s | {res.adopted} | "
                  f"{res.base_dice:.4f} -> {res.new_dice:.4f} ({res.slices}) |")
        # the noise: same data and split, different seeds
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
