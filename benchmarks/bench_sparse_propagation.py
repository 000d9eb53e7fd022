#!/usr/bin/env python
"""Sparse propagation (issue 23): encode fewer slices, keep 3D Dice.

    python benchmarks/bench_sparse_propagation.py                # every kind of scan
    python benchmarks/bench_sparse_propagation.py --only "pat0001,CT liver"   # reduced

For every labelled structure of ../shared/data on its axial axis (BRATS FLAIR whole tumour and
T1c tumour core, abdominal CT and MR organs, the DICOM CT's organs; the list of
``bench_propagation.structures``): one ground-truth box on the largest slice, then propagation
with the default stop rules, today's (``propagation.propagate``, every slice encoded) beside
each variant of ``sparse_propagation.propagate_sparse`` (stride, agreement threshold, how a
skipped slice is filled). Per row: 3D Dice against the reference label, its change from
today's, encoder calls ÷ slices filled, and the time ÷ (slices × the plain PyTorch fp32
encoder time of one slice, measured in the same run).

All variants of one volume share one embedding cache (the embeddings, hence the masks, are
the ones a cold run computes; each slice is encoded once in the whole run, or never with a
warm --cache-dir). A variant's time is what a cold run costs: its encoder calls (distinct
slices it embedded, seed included) × this run's median encoder call, plus its decoder calls ×
the median decoder call, plus the rest of its wall time as measured (interpolation, stop
rules), turned into "÷ plain fp32 encoder" by the ratio of this backend's encoder to the plain
PyTorch fp32 encoder measured in alternating pairs (the machine may be shared: absolute times
swing with its load, ratios of calls made side by side much less).
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

import numpy as np  # noqa: E402

from bench_model_input import cpu_model  # noqa: E402
from bench_propagation import structures  # noqa: E402
from medsam_gui.engine import EmbeddingCache, Session, load_backend  # noqa: E402
from medsam_gui.engine import propagation  # noqa: E402
from medsam_gui.engine.evaluate import dice, mask_box  # noqa: E402
from medsam_gui.engine.sparse_propagation import propagate_sparse, stride_for  # noqa: E402

VARIANTS = {  # name -> propagate_sparse keyword arguments (None: today's propagation);
    # "mm": the stride is the most slices that span at most that many mm (``stride_for``);
    # "halve" False: after a refused jump the front steps one slice at a time to its end
    "today": None,
    "s2 interp": dict(stride=2, fill="interp", agree=0.0),
    "s2 interp agree .8": dict(stride=2, fill="interp", agree=0.8),
    "s2 interp agree .9": dict(stride=2, fill="interp", agree=0.9),
    "s3 interp": dict(stride=3, fill="interp", agree=0.0),
    "s3 interp agree .7": dict(stride=3, fill="interp", agree=0.7),
    "s3 interp agree .8": dict(stride=3, fill="interp", agree=0.8),
    "s4 interp agree .8 no halving": dict(stride=4, fill="interp", agree=0.8, halve=False),
    "s4 interp agree .8": dict(stride=4, fill="interp", agree=0.8),
    "s4 interp agree .7": dict(stride=4, fill="interp", agree=0.7),
    "s8 interp agree .7": dict(stride=8, fill="interp", agree=0.7),
    "s6 interp agree .8": dict(stride=6, fill="interp", agree=0.8),
    "s8 interp agree .8": dict(stride=8, fill="interp", agree=0.8),
    "s8 interp agree .85": dict(stride=8, fill="interp", agree=0.85),
    "s2 neighbour emb": dict(stride=2, fill="neighbour", agree=0.0),
    "s2 mean emb": dict(stride=2, fill="mean", agree=0.0),
    "s2 mean emb agree .8": dict(stride=2, fill="mean", agree=0.8),
    "≤2 mm interp agree .8": dict(mm=2.0, fill="interp", agree=0.8),
    "≤3 mm interp agree .8": dict(mm=3.0, fill="interp", agree=0.8),
    "≤4 mm interp agree .7": dict(mm=4.0, fill="interp", agree=0.7),
    "≤4 mm interp agree .8": dict(mm=4.0, fill="interp", agree=0.8),
    "≤6 mm interp agree .8": dict(mm=6.0, fill="interp", agree=0.8),
    "≤8 mm interp agree .8": dict(mm=8.0, fill="interp", agree=0.8),
}
DEFAULT_SET = ("today,s2 interp agree .8,s3 interp agree .7,s3 interp agree .8,"
               "s4 interp agree .8 no halving,s4 interp agree .8,s4 interp agree .7,"
               "s8 interp agree .7,≤3 mm interp agree .8,≤4 mm interp agree .7,"
               "≤4 mm interp agree .8")


def encoder_pair(backend, vol, seed: int, pairs: int = 4):
    """(plain PyTorch fp32 encoder seconds, this backend's encoder ÷ plain), each the median of
    ``pairs`` calls made alternately on one slice, so that both see the same load."""
    plain_backend = load_backend(precision="fp32", decoder="pytorch", device="cpu")
    img = Session(vol, backend).model_slice("axial", seed)
    plain_backend.encode([img])
    backend.encode([img])
    ts, rs = [], []
    for _ in range(pairs):
        t = time.perf_counter()
        plain_backend.encode([img])
        p = time.perf_counter() - t
        t = time.perf_counter()
        backend.encode([img])
        ts.append(p)
        rs.append((time.perf_counter() - t) / p)
    return float(np.median(ts)), float(np.median(rs))


class CountingSession(Session):
    """A session that remembers which slices it embedded (a cold run's encoder calls)."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.embedded = set()

    def embed(self, axis, index, transform=None):
        self.embedded.add((axis, int(index)))
        return super().embed(axis, index, transform)


def kind_of(name: str) -> str:
    for k in ("FLAIR", "T1c", "abdominal CT", "abdominal MR", "DICOM CT"):
        if k in name:
            return k
    return name


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", default="", help="structures whose name contains one of these "
                   "comma-separated words (a reduced run)")
    p.add_argument("--variants", default=DEFAULT_SET,
                   help=f"comma-separated variant names, or 'all' (default {DEFAULT_SET!r})")
    p.add_argument("--cache-dir", help="keep embeddings on disk here between runs (encoder "
                   "calls are counted all the same)")
    args = p.parse_args()
    import torch

    chosen = args.variants.split(",")
    variants = {k: v for k, v in VARIANTS.items()
                if k == "today" or args.variants == "all" or k in chosen}
    backend = load_backend(device="cpu")
    enc_times = []
    encode = backend.encode

    def timed(slices, _e=encode, **kw):
        t = time.perf_counter()
        out = _e(slices, **kw)
        enc_times.append(time.perf_counter() - t)
        return out
    backend.encode = timed
    dec_times = []
    decode = backend.decode

    def timed_decode(*a, _d=decode, **kw):
        t = time.perf_counter()
        out = _d(*a, **kw)
        dec_times.append(time.perf_counter() - t)
        return out
    backend.decode = timed_decode
    rows = []  # (name, variant, dice, today's dice, encoded, filled, decoded,
    #           seconds without encoder and decoder calls)
    plain, ratio = None, None
    for name, vol, truth, _axes in structures():
        if args.only and not any(o.strip() in name for o in args.only.split(",")):
            continue
        axis = "axial"
        g = vol.geometry(axis)
        areas = [int(g.take(truth, i).sum()) for i in range(g.n_slices)]
        seed = int(np.argmax(areas))
        if plain is None:
            plain, ratio = encoder_pair(backend, vol, seed)
            del enc_times[:]  # the pairs' calls: kept out of the medians below
        cache = EmbeddingCache(max_bytes=3 << 30, disk_dir=args.cache_dir,
                               disk_max_bytes=40 << 30)
        start = Session(vol, backend, cache).predict(axis, seed, mask_box(g.take(truth, seed))).mask
        base = None
        for vname, kw in variants.items():
            session = CountingSession(vol, backend, cache)
            session.embedded.add((axis, seed))
            n_enc0, t_enc0 = len(enc_times), sum(enc_times)
            n_dec0, t_dec0 = len(dec_times), sum(dec_times)
            t0 = time.perf_counter()
            stats = {}
            if kw is None:
                result = propagation.run(session, axis, seed, [start])
                steps = result.steps
            else:
                kw = dict(kw)
                mm = kw.pop("mm", None)
                if mm is not None:
                    kw["stride"] = stride_for(vol, axis, mm)
                stats = {}
                steps = [e for e in propagate_sparse(session, axis, seed, [start],
                                                     stats=stats, **kw)
                         if isinstance(e, propagation.Step)]
            wall = (time.perf_counter() - t0 - (sum(enc_times) - t_enc0)
                    - (sum(dec_times) - t_dec0))
            n_dec = len(dec_times) - n_dec0
            out = np.zeros(vol.shape, bool)
            g.take(out, seed)[...] = start
            for st in steps:
                g.take(out, st.index)[...] = st.mask
            d = dice(out, truth)
            base = d if kw is None else base
            rows.append((name, vname, d, base, len(session.embedded), len(steps) + 1, n_dec,
                         wall))
            print(f"  {name:28s} {vname:22s} Dice {d:.3f} ({d - base:+.3f})  encoded "
                  f"{len(session.embedded):3d} / {len(steps) + 1:3d} slices, {n_dec:3d} decoder "
                  f"calls, {wall:.1f} s besides  [{len(enc_times) - n_enc0} new encodes] "
                  + " ".join(f"{k} {v}" for k, v in stats.items()), flush=True)
        del cache
    # Every cost is first counted in this run's own seconds (encoder and decoder calls at
    # their medians, the rest as measured), then turned into "÷ plain fp32 encoder" through
    # this run's median encoder call and the paired ratio: on a loaded machine the plain
    # encoder's absolute time swings, the ratio of two calls made alternately much less.
    run_enc = float(np.median(enc_times)) if enc_times else ratio * plain
    t_dec = float(np.median(dec_times))
    print(f"\nCPU: {cpu_model()} · torch {torch.__version__} · {torch.get_num_threads()} threads"
          f" · encoder {backend.runtime_label} / decoder {backend.decoder_runtime}")
    print(f"this backend's encoder ÷ plain PyTorch fp32 encoder: {ratio:.2f} (median of 4 "
          f"alternating pairs; plain {plain:.2f} s/slice); in the run: encoder {run_enc:.2f} "
          f"s/slice (median of {len(enc_times)}), decoder {t_dec * 1e3:.0f} ms/call (median of "
          f"{len(dec_times)}) = {t_dec / run_enc * ratio:.3f} of plain\n")

    def cost(r):  # in units of the plain encoder's time for one slice
        return (r[4] * run_enc + r[6] * t_dec + r[7]) / run_enc * ratio

    print("| structure | variant | 3D Dice | Δ vs today | encoded ÷ filled | decoder calls | "
          "time ÷ (slices × plain fp32 encoder) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[2] - r[3]:+.3f} | {r[4]}/{r[5]} = "
              f"{r[4] / r[5]:.2f} | {r[6]} | {cost(r) / r[5]:.3f} |")
    print("\nper kind (mean 3D Dice over its structures; ratios over all its slices):\n")
    print("| kind | variant | mean 3D Dice | Δ vs today (mean) | worst Δ | encoded ÷ filled | "
          "time ÷ (slices × plain fp32 encoder) |")
    print("|---|---|---|---|---|---|---|")
    groups = defaultdict(list)
    for r in rows:
        groups[(kind_of(r[0]), r[1])].append(r)
    worst = defaultdict(lambda: 1.0)
    for (kind, vname), rs in groups.items():
        dm = np.mean([r[2] for r in rs])
        delta = np.mean([r[2] - r[3] for r in rs])
        low = min(r[2] - r[3] for r in rs)
        worst[vname] = min(worst[vname], delta)
        enc, fil = sum(r[4] for r in rs), sum(r[5] for r in rs)
        print(f"| {kind} | {vname} | {dm:.3f} | {delta:+.3f} | {low:+.3f} | {enc / fil:.2f} | "
              f"{sum(cost(r) for r in rs) / fil:.3f} |")
    print("\nworst per-kind mean Δ Dice of each variant (the criterion: ≥ −0.010):")
    for vname in variants:
        rs = [r for r in rows if r[1] == vname]
        fil = sum(r[5] for r in rs)
        print(f"  {vname:20s} {worst[vname]:+.3f}   time ÷ (slices × plain) over all "
              f"{sum(cost(r) for r in rs) / fil:.3f}")


if __name__ == "__main__":
    main()
