#!/usr/bin/env python
"""Corrective clicks: Dice after 0..5 clicks per kind of scan and per refinement method.

    python benchmarks/bench_clicks.py [--slices 4] [--methods points,mask_prompt,local]

The standard interactive protocol: the ground-truth box of the slice, then up to 5 corrective
clicks, each at the centre (distance-transform maximum) of the largest connected error region,
positive on a miss and negative on a leak, all clicks kept (``engine.refine``). Slices: evenly
spread over each structure's axial slices with at least 50 reference pixels. Structures: BRATS
FLAIR whole tumour and T1c tumour core (both cases), the abdominal CT and MR organs, the DICOM
CT's organs. Embeddings are kept on disk (``--cache-dir``), so a second run only decodes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from bench_model_input import DATA, cpu_model, on_grid  # noqa: E402
from medsam_gui.engine import EmbeddingCache, Session, load_backend  # noqa: E402
from medsam_gui.engine import refine  # noqa: E402
from medsam_gui.engine.evaluate import dice, mask_box, pick_slices  # noqa: E402
from medsam_gui.io import load_volume  # noqa: E402

BRATS = DATA / "brain_tumour_brats2015"
CLICKS = 5


def kinds():
    """(kind, structure name, volume, truth3d) for every labelled structure, axial."""
    for pat in ("brats_2013_pat0001_1", "brats_2013_pat0002_1"):
        gt = np.asarray(nib.load(str(BRATS / pat / "OTMultiClass.nii.gz")).dataobj)
        yield ("BRATS FLAIR", f"{pat[11:18]} whole tumour",
               load_volume(BRATS / pat / "Flair_subtrMeanDivStd.nii.gz"), gt > 0)
        yield ("BRATS T1c", f"{pat[11:18]} tumour core",
               load_volume(BRATS / pat / "T1c_subtrMeanDivStd.nii.gz"), np.isin(gt, (1, 3, 4)))
    abd = DATA / "abdomen_totalsegmentator"
    organs = {"liver": 5, "spleen": 1, "kidney R": 2, "kidney L": 3}
    ct = load_volume(abd / "example_ct_sm.nii.gz")
    seg = np.asarray(nib.load(str(abd / "example_seg.nii.gz")).dataobj)
    for k, v in organs.items():
        yield "abdominal CT", k, ct, seg == v
    mr = load_volume(abd / "example_mr_sm.nii.gz")
    seg = np.asarray(nib.load(str(abd / "example_seg_mr.nii.gz")).dataobj)
    for k, v in organs.items():
        yield "abdominal MR", k, mr, seg == v
    dcm = load_volume(DATA / "dicom" / "ct_abdomen_siemens_jpeg2000")
    lab = on_grid(DATA / "dicom" / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz",
                  dcm)
    for k, v in {"liver": 5, "spleen": 1, "stomach": 6}.items():
        yield "DICOM CT", k, dcm, lab == v


def run_protocol(backend, emb, truth, method: str, clicks: int = CLICKS, **kw):
    """Dice after 0..clicks corrective clicks of one method on one slice."""
    shape = truth.shape
    state = refine.start(backend, emb, shape, mask_box(truth))
    out = [dice(state.mask, truth)]
    for _ in range(clicks):
        c = refine.corrective_click(truth, state.mask)
        if c is None:
            out.append(out[-1])
            continue
        state = refine.step(backend, emb, shape, state, c, method, **kw)
        out.append(dice(state.mask, truth))
    return out


def parse_method(spec: str):
    """``local`` or ``local:scale=2,reach=1.5`` -> (method, kwargs)."""
    name, _, rest = spec.partition(":")
    kw = {k: float(v) for k, v in (p.split("=") for p in rest.split(",") if p)}
    return name, kw


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=4, help="slices per structure")
    ap.add_argument("--stride", type=int, default=1,
                    help="keep every STRIDE-th of those slices (a quicker run)")
    ap.add_argument("--only", default="",
                    help="structures whose kind + name contains one of these (comma-separated)")
    ap.add_argument("--methods", default=",".join(refine.METHODS))
    ap.add_argument("--cache-dir", default="/tmp/medsam_bench_clicks_cache")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(";" if ";" in args.methods else ",") if m]
    backend = load_backend("litemedsam")
    cache = EmbeddingCache(disk_dir=args.cache_dir)
    table = defaultdict(lambda: defaultdict(list))  # kind -> method -> [curves]
    t_dec = defaultdict(float)
    for kind, name, vol, truth3d in kinds():
        if args.only and not any(o in f"{kind} {name}" for o in args.only.split(",")):
            continue
        session = Session(vol, backend, cache)
        g = vol.geometry("axial")
        for k in pick_slices(g, truth3d, args.slices)[args.stride - 1::args.stride]:
            truth = g.take(truth3d, k).astype(bool)
            emb = session.embed("axial", k)
            for spec in methods:
                m, kw = parse_method(spec)
                t0 = time.perf_counter()
                table[kind][spec].append(run_protocol(backend, emb, truth, m, **kw))
                t_dec[spec] += time.perf_counter() - t0
        print(f"  {kind:13s} {name:22s} done", file=sys.stderr, flush=True)
    print(f"CPU: {cpu_model()}; {args.slices} axial slices per structure; GT box then "
          f"{CLICKS} corrective clicks\n")
    print("| kind | method | slices | " + " | ".join(f"{i} clicks" for i in range(CLICKS + 1))
          + " |")
    print("|---|---|---|" + "---|" * (CLICKS + 1))
    overall = defaultdict(list)
    for kind, by_method in table.items():
        for spec, curves in by_method.items():
            c = np.asarray(curves)
            overall[spec].append(c.mean(0))
            print(f"| {kind} | {spec} | {len(c)} | " + " | ".join(f"{v:.3f}" for v in c.mean(0))
                  + " |")
    print("\nmean over kinds (each kind weighs the same); gain after 1/3/5 clicks worst kind:")
    for spec, rows in overall.items():
        r = np.asarray(rows)
        gains = r[:, [1, 3, 5]] - r[:, [0]]
        print(f"  {spec:28s} " + " ".join(f"{v:.3f}" for v in r.mean(0))
              + f"   worst gain {gains.min(0).round(3).tolist()}   decode time "
              f"÷ points: {t_dec[spec] / max(t_dec[methods[0]], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
