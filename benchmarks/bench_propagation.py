#!/usr/bin/env python
"""3D propagation benchmark: speed beside the raw encoder, and the stop rules' measurements.

    python benchmarks/bench_propagation.py               # speed + 3D Dice on BRATS
    python benchmarks/bench_propagation.py --rules       # the table the default rules come from
    python benchmarks/bench_propagation.py --runtimes    # issue 23: per runtime ÷ plain fp32

Speed (BRATS pat0001 FLAIR, one ground-truth box on the largest tumour slice, default rules):
  - propagation throughput, slices/s, with a cold and a warm cache, each ÷ the raw encoder's
    throughput measured in the same run;
  - the time from the first box to the whole tumour, and its 3D Dice.
3D Dice per BRATS case: one box + propagation against a ground-truth box on every tumour slice.

--rules records, for every structure with a reference label in ../shared/data (BRATS FLAIR
whole tumour on three axes, T1c tumour core, abdominal CT and MR organs, the DICOM CT's organs),
the propagation from one ground-truth box on its largest slice with no brake but the empty
mask, then replays each stop rule on the recorded fronts (a rule only cuts a front short, so
the replay is exact) and prints 3D Dice and the error of the slice range per rule setting.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from bench_model_input import DATA, cpu_model, on_grid  # noqa: E402
from medsam_gui.engine import EmbeddingCache, Session, load_backend  # noqa: E402
from medsam_gui.engine import propagation  # noqa: E402
from medsam_gui.engine.evaluate import dice, mask_box  # noqa: E402
from medsam_gui.io import load_volume  # noqa: E402

BRATS = DATA / "brain_tumour_brats2015"


def structures():
    """(name, volume, truth3d, axes) of every labelled structure in the data pack."""
    for pat in ("brats_2013_pat0001_1", "brats_2013_pat0002_1"):
        gt = np.asarray(nib.load(str(BRATS / pat / "OTMultiClass.nii.gz")).dataobj)
        yield (f"{pat[11:18]} FLAIR whole tumour", load_volume(BRATS / pat / "Flair_subtrMeanDivStd.nii.gz"),
               gt > 0, ("axial", "coronal", "sagittal"))
        yield (f"{pat[11:18]} T1c tumour core", load_volume(BRATS / pat / "T1c_subtrMeanDivStd.nii.gz"),
               np.isin(gt, (1, 3, 4)), ("axial",))
    abd = DATA / "abdomen_totalsegmentator"
    organs = {"liver": 5, "spleen": 1, "kidney R": 2, "kidney L": 3}
    ct = load_volume(abd / "example_ct_sm.nii.gz")
    seg = np.asarray(nib.load(str(abd / "example_seg.nii.gz")).dataobj)
    for k, v in organs.items():
        yield f"abdominal CT {k}", ct, seg == v, ("axial", "coronal")
    mr = load_volume(abd / "example_mr_sm.nii.gz")
    seg = np.asarray(nib.load(str(abd / "example_seg_mr.nii.gz")).dataobj)
    for k, v in organs.items():
        yield f"abdominal MR {k}", mr, seg == v, ("axial",)
    dcm = load_volume(DATA / "dicom" / "ct_abdomen_siemens_jpeg2000")
    lab = on_grid(DATA / "dicom" / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz",
                  dcm)
    for k, v in {"liver": 5, "spleen": 1, "stomach": 6}.items():
        yield f"DICOM CT {k}", dcm, lab == v, ("axial",)


# ---------------------------------------------------------------------------------- rules
def record_fronts(backend, cache):
    """One unbraked propagation per structure and axis, with per-slice features."""
    loose = propagation.StopRules(0.0, math.inf, math.inf, 1)  # only the empty mask stops
    traces = []
    for name, vol, truth, axes in structures():
        session = Session(vol, backend, cache)
        for axis in axes:
            g = vol.geometry(axis)
            areas = [int(g.take(truth, i).sum()) for i in range(g.n_slices)]
            seed = int(np.argmax(areas))
            start = session.predict(axis, seed, mask_box(g.take(truth, seed))).mask
            area, cy, cx = propagation.mask_features(start)
            trace = {"name": name, "axis": axis, "seed": seed, "gt": areas,
                     "seed_area": area, "seed_inter": int((start & g.take(truth, seed)).sum()),
                     "seed_centre": (cy, cx), "fronts": {1: [], -1: []}}
            t0 = time.perf_counter()
            for step in propagation.propagate(session, axis, seed, [start], loose):
                if isinstance(step, propagation.Step):
                    a, y, x = propagation.mask_features(step.mask)
                    trace["fronts"][step.direction].append(
                        (step.iou, a, y, x, int((step.mask & g.take(truth, step.index)).sum()),
                         step.index))
            traces.append(trace)
            nz = np.flatnonzero(areas)
            print(f"  {name:32s} {axis:8s} seed {seed:3d}  true {nz[0]}–{nz[-1]}  unbraked "
                  f"{seed - len(trace['fronts'][-1])}–{seed + len(trace['fronts'][1])}  "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    return traces


def replay(trace, min_iou=0.0, max_growth=math.inf, max_shift=math.inf, min_area=1):
    """3D Dice, |first - true first| + |last - true last| and slices outside the truth."""
    gt = np.asarray(trace["gt"])
    inter, area, kept = trace["seed_inter"], trace["seed_area"], [trace["seed"]]
    for d in (1, -1):
        pa, (py, px) = trace["seed_area"], trace["seed_centre"]
        for iou, a, y, x, hit, index in trace["fronts"][d]:
            if a < min_area or iou < min_iou or a > max_growth * pa:
                break
            if math.hypot(y - py, x - px) / (2 * math.sqrt(pa / math.pi)) > max_shift:
                break
            inter, area = inter + hit, area + a
            kept.append(index)
            pa, py, px = a, y, x
    nz = np.flatnonzero(gt)
    return (2 * inter / (area + gt.sum()), abs(min(kept) - nz[0]) + abs(max(kept) - nz[-1]),
            sum(1 for k in kept if gt[k] == 0))


def rules_table(traces) -> None:
    def row(label, **kw):
        r = np.array([replay(t, **kw) for t in traces])
        print(f"| {label} | {r[:, 0].mean():.3f} | {r[:, 0].min():.3f} | {r[:, 1].mean():.1f} | "
              f"{int(r[:, 1].max())} | {r[:, 2].mean():.1f} |")
        return r

    print(f"\n{len(traces)} fronts pairs. Each rule alone, then the defaults:\n")
    print("| rule | mean 3D Dice | worst 3D Dice | mean range error (slices) | worst range error |"
          " mean slices outside the truth |")
    print("|---|---|---|---|---|---|")
    row("empty mask only")
    for v in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85):
        row(f"min_iou {v}", min_iou=v)
    for v in (3, 2, 1.6, 1.4, 1.25):
        row(f"max_growth {v}", max_growth=v)
    for v in (1, 0.5, 0.35, 0.25, 0.15):
        row(f"max_shift {v}", max_shift=v)
    for v in (10, 25, 50, 100):
        row(f"min_area {v}", min_area=v)
    d = propagation.StopRules()
    defaults = dict(min_iou=d.min_iou, max_growth=d.max_growth, max_shift=d.max_shift,
                    min_area=d.min_area)
    r = row(f"**defaults** {defaults}", **defaults)
    grid = []
    for mi, mg, ms, ma in itertools.product((0, 0.5, 0.6, 0.7, 0.75, 0.8),
                                            (math.inf, 3, 2, 1.6, 1.4),
                                            (math.inf, 1, 0.5, 0.35, 0.25), (1, 10, 25, 50)):
        x = np.array([replay(t, mi, mg, ms, ma) for t in traces])
        grid.append((x[:, 0].mean(), x[:, 0].min(), x[:, 1].mean(), (mi, mg, ms, ma)))
    print("\nbest 10 of the grid by mean 3D Dice (min_iou, max_growth, max_shift, min_area):")
    for g in sorted(grid, reverse=True)[:10]:
        print(f"  mean {g[0]:.3f} worst {g[1]:.3f} range error {g[2]:.1f}  {g[3]}")
    print("\nper structure, empty mask only → defaults:")
    base = np.array([replay(t) for t in traces])
    for t, b, x in zip(traces, base, r):
        nz = np.flatnonzero(t["gt"])
        print(f"  {t['name']:32s} {t['axis']:8s} Dice {b[0]:.3f} → {x[0]:.3f}   range error "
              f"{int(b[1]):3d} → {int(x[1]):3d}   (true {nz[0]}–{nz[-1]})")


# ---------------------------------------------------------------------------------- speed
def speed(backend) -> None:
    vol = load_volume(BRATS / "brats_2013_pat0001_1" / "Flair_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(BRATS / "brats_2013_pat0001_1" / "OTMultiClass.nii.gz")).dataobj) > 0
    g = vol.geometry("axial")
    seed = int(np.argmax([g.take(gt, i).sum() for i in range(g.n_slices)]))
    box = mask_box(g.take(gt, seed))
    img = Session(vol, backend).model_slice("axial", seed)
    backend.encode([img])  # warm-up
    t0 = time.perf_counter()
    for _ in range(5):
        backend.encode([img])
    raw = 5 / (time.perf_counter() - t0)

    def one(cache):
        session = Session(vol, backend, cache)
        t0 = time.perf_counter()
        start = session.predict("axial", seed, box).mask
        result = propagation.run(session, "axial", seed, [start])
        total = time.perf_counter() - t0
        out = np.zeros(vol.shape, bool)
        g.take(out, seed)[...] = start
        for s in result.steps:
            g.take(out, s.index)[...] = s.mask
        return len(result.steps), total, dice(out, gt), result

    cache = EmbeddingCache(max_bytes=2 << 30)
    cold = one(cache)
    warm = one(cache)
    print(f"\nraw encoder: {raw:.2f} slices/s\n")
    print("| BRATS pat0001 FLAIR, one box | slices | first box → whole tumour (s) | "
          "slices/s | ÷ raw encoder | 3D Dice |")
    print("|---|---|---|---|---|---|")
    for name, (n, t, d, _r) in (("cold cache", cold), ("warm cache", warm)):
        print(f"| {name} | {n} | {t:.1f} | {n / t:.2f} | {n / t / raw:.2f} | {d:.3f} |")
    stops = "; ".join(f"{s.direction:+d} at {s.index}: {s.reason}" for s in cold[3].stops)
    print(f"\nstops: {stops}")


def dice_per_case(backend) -> None:
    print("\n| BRATS FLAIR | one box + propagation | a ground-truth box on every tumour slice |")
    print("|---|---|---|")
    for pat in ("brats_2013_pat0001_1", "brats_2013_pat0002_1"):
        vol = load_volume(BRATS / pat / "Flair_subtrMeanDivStd.nii.gz")
        gt = np.asarray(nib.load(str(BRATS / pat / "OTMultiClass.nii.gz")).dataobj) > 0
        g = vol.geometry("axial")
        session = Session(vol, backend, EmbeddingCache(max_bytes=2 << 30))
        areas = [g.take(gt, i).sum() for i in range(g.n_slices)]
        seed = int(np.argmax(areas))
        start = session.predict("axial", seed, mask_box(g.take(gt, seed))).mask
        result = propagation.run(session, "axial", seed, [start])
        one = np.zeros(vol.shape, bool)
        g.take(one, seed)[...] = start
        for s in result.steps:
            g.take(one, s.index)[...] = s.mask
        every = np.zeros(vol.shape, bool)
        for i in np.flatnonzero(areas):
            g.take(every, i)[...] = session.predict("axial", i, mask_box(g.take(gt, i))).mask
        print(f"| {pat[11:18]} | {dice(one, gt):.3f} | {dice(every, gt):.3f} |")


# ---------------------------------------------------------------------------------- queue
def propagated_labelmap(session, axis, truth, value=1):
    """One ground-truth box on the largest slice, default rules, written as the window does:
    the seed reviewed, every propagated slice a record with its IoU and stop reason."""
    from medsam_gui.annotation.labels import LabelMap, SliceRecord

    vol = session.volume
    g = vol.geometry(axis)
    areas = [int(g.take(truth, i).sum()) for i in range(g.n_slices)]
    seed = int(np.argmax(areas))
    box = mask_box(g.take(truth, seed))
    start = session.predict(axis, seed, box).mask
    lm = LabelMap(vol.shape)
    g.take(lm.array, seed)[start] = value
    lm.records[(axis, seed, value)] = SliceRecord(axis, seed, value, status="accepted",
                                                  boxes=[list(box)])
    result = propagation.run(session, axis, seed, [start])
    boxes = {}
    for st in result.steps:
        g.take(lm.array, st.index)[st.mask] = value
        lm.records[(axis, st.index, value)] = SliceRecord(
            axis, st.index, value, iou=st.iou, method="propagated", from_slices=[st.source])
        boxes[st.index] = st.boxes
    for stop in result.stops:
        for st in result.steps:
            if st.direction == stop.direction:
                lm.records[(axis, st.index, value)].stop_reason = (
                    f"stopped at {axis} {stop.index}: {stop.reason}")
    return lm, seed, boxes


def jitter_signal(session, axis, index, boxes, mask, shift=3.0):
    """1 − mean Dice between the slice's mask and the masks of its prompt box moved by
    ``shift`` pixels of the 256 frame in 4 directions (the decoder only: embedding cached)."""
    h, w = mask.shape
    px = shift * max(h, w) / 256.0
    out = []
    for dx, dy in ((px, 0), (-px, 0), (0, px), (0, -px)):
        m = np.zeros_like(mask)
        for b in boxes:
            m |= session.predict(axis, index, (b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy)).mask
        out.append(dice(m, mask))
    return 1.0 - float(np.mean(out))


def queue_table(backend, cache, brats: bool = True, jitter: bool = True,
                only: str = "") -> None:
    """Which review-queue signals rank the propagated slices by their Dice (Spearman)."""
    from scipy.stats import spearmanr

    from medsam_gui.annotation import review_queue

    names = list(review_queue.SIGNALS) + ["jitter", "distance", "combined"]
    rows, firsts = [], []
    for name, vol, truth, axes in structures():
        if not brats and name.startswith("pat") or only and not any(
                o.strip() in name for o in only.split(",")):
            continue
        session = Session(vol, backend, cache)
        axis = "axial"
        g = vol.geometry(axis)
        lm, seed, boxes = propagated_labelmap(session, axis, truth)
        sig = review_queue.slice_signals(lm, g, 1)
        queue = [it for it in review_queue.label_queue(lm, g, 1) if not it.beyond_end]
        idx = sorted(sig)
        if len(idx) < 5:
            continue
        d = np.array([dice(g.take(lm.array, i) == 1, g.take(truth, i)) for i in idx])
        cols = {s: [sig[i][s] for i in idx] for s in review_queue.SIGNALS}
        cols["jitter"] = [jitter_signal(session, axis, i, boxes[i], g.take(lm.array, i) == 1)
                          if jitter else 0.0 for i in idx]
        cols["distance"] = [abs(i - seed) for i in idx]
        score = {it.slice: it.score for it in queue}
        cols["combined"] = [score[i] for i in idx]
        row = {}
        for s in names:
            v = np.asarray(cols[s], float)
            row[s] = math.nan if np.ptp(v) == 0 else float(spearmanr(v, -d)[0])
        rows.append((name, row, cols, d))
        first = dict(zip(idx, d))[queue[0].slice]
        # wrong pixels (missed + leaked) of each slice: what a correction there can fix
        wrong = np.array([int(np.count_nonzero((g.take(lm.array, i) == 1) ^ g.take(truth, i)))
                          for i in idx])
        first_wrong = dict(zip(idx, wrong))[queue[0].slice]
        firsts.append((first < np.median(d), first_wrong > np.median(wrong)))
        print(f"  {name:32s} {len(idx):3d} filled  " + " ".join(
            f"{s} {row[s]:+.2f}" for s in names) + f"   queue[0] Dice {first:.3f} vs median "
            f"{np.median(d):.3f}, wrong px {first_wrong} vs median {np.median(wrong):.0f}",
            flush=True)
    print("\nSpearman of each signal with (−slice Dice), within each structure "
          "(+1: ranks the worst slices first):\n")
    print("| signal | mean | median | structures with ρ > 0 |")
    print("|---|---|---|---|")
    for s in names:
        v = np.array([r[s] for _n, r, _c, _d in rows])
        ok = v[~np.isnan(v)]
        print(f"| {s} | {ok.mean():+.3f} | {np.median(ok):+.3f} | {(ok > 0).sum()}/{len(ok)} |")
    print(f"\nqueue's first slice below the structure's median slice Dice: "
          f"{sum(f[0] for f in firsts)}/{len(firsts)}; with more wrong pixels than the median "
          f"slice: {sum(f[1] for f in firsts)}/{len(firsts)}")
    # weight search on the pooled per-structure ranks
    best = []
    for wi, wa, ws, we, wj in itertools.product((0, 0.5, 1), (0, 0.5, 1), (0, 0.5, 1),
                                                (0, 0.5), (0, 0.5, 1)):
        rho = []
        for _n, _r, c, d in rows:
            comb = (wi * np.asarray(c["iou"]) + wa * np.asarray(c["area"])
                    + ws * np.asarray(c["shape"]) + we * np.asarray(c["end"])
                    + wj * np.asarray(c["jitter"]))
            rho.append(0.0 if np.ptp(comb) == 0 else spearmanr(comb, -d)[0])
        best.append((float(np.mean(rho)), (wi, wa, ws, we, wj)))
    print("best weights (iou, area, shape, end, jitter) by mean ρ:")
    for r, w in sorted(best, reverse=True)[:6]:
        print(f"  {r:+.3f} {w}")


def plain_encoder_seconds(vol, seed: int, reps: int = 3) -> float:
    """Median seconds of the plain PyTorch fp32 image encoder on one slice of ``vol``."""
    plain = load_backend(precision="fp32", decoder="pytorch", device="cpu")
    img = Session(vol, plain).model_slice("axial", seed)
    plain.encode([img])
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        plain.encode([img])
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def runtimes_table(pat: str = "brats_2013_pat0001_1", around: int = 0) -> None:
    """One GT box on the largest tumour slice + propagation (cold embedding cache), per
    runtime, each ÷ (slices × the plain PyTorch fp32 encoder time measured in the same run),
    with its 3D Dice; then the same through the medsam-segment CLI (process start included,
    runtime conversion cache warm), each CLI row ÷ the plain encoder measured just before and
    just after it (a shared machine's speed drifts by a quarter within one run). ``around``
    > 0: only slices seed ± around (a reduced run)."""
    import os
    import subprocess

    vol = load_volume(BRATS / pat / "Flair_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(BRATS / pat / "OTMultiClass.nii.gz")).dataobj) > 0
    g = vol.geometry("axial")
    seed = int(np.argmax([g.take(gt, i).sum() for i in range(g.n_slices)]))
    box = mask_box(g.take(gt, seed))
    rules = propagation.StopRules(extent=(seed - around, seed + around) if around else None)
    enc = plain_encoder_seconds(vol, seed)
    print(f"\nplain PyTorch fp32 encoder: {enc:.3f} s/slice (this run)\n")
    print("| runtime (encoder / decoder) | slices | s | ÷ (slices × plain fp32 encoder) | "
          "encoder s/slice | decoder ms/box | 3D Dice |")
    print("|---|---|---|---|---|---|---|")
    configs = (("plain PyTorch fp32", dict(precision="fp32", decoder="pytorch")),
               ("OpenVINO f32 encoder, PyTorch decoder", dict(precision="ov_f32", decoder="pytorch")),
               ("auto", dict()))
    for name, kw in configs:
        b = load_backend(device="cpu", **kw)
        session = Session(vol, b, EmbeddingCache(max_bytes=2 << 30))
        t_enc = [0.0]
        encode = b.encode

        def timed(slices, _e=encode):
            t = time.perf_counter()
            out = _e(slices)
            t_enc[0] += time.perf_counter() - t
            return out
        b.encode = timed
        n_dec = [0]
        decode = b.decode

        def counted(*a, _d=decode, **k):
            n_dec[0] += 1
            return _d(*a, **k)
        b.decode = counted
        t0 = time.perf_counter()
        start = session.predict("axial", seed, box).mask
        result = propagation.run(session, "axial", seed, [start], rules)
        total = time.perf_counter() - t0
        out = np.zeros(vol.shape, bool)
        g.take(out, seed)[...] = start
        for st in result.steps:
            g.take(out, st.index)[...] = st.mask
        n = len(result.steps) + 1
        dec_ms = (total - t_enc[0]) / max(n_dec[0], 1) * 1e3
        print(f"| {name} ({b.runtime_label} / {b.decoder_runtime}) | {n} | {total:.1f} | "
              f"{total / (n * enc):.3f} | {t_enc[0] / n:.3f} | {dec_ms:.0f} | "
              f"{dice(out, gt):.3f} |", flush=True)
    script = Path(sys.executable).with_name("medsam-segment")
    if not script.is_file():
        return
    src = BRATS / pat / "Flair_subtrMeanDivStd.nii.gz"
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "t.nii.gz"
        # "--box AXIS SLICE X0 Y0 X1 Y1" indexes the source array: display rows/cols map back
        arr_box = cli_box(vol, seed, box)
        for name, extra, env_extra in (("plain PyTorch fp32", ["--precision", "fp32"],
                                        {"MEDSAM_NO_OPENVINO": "1"}), ("auto", [], {}),
                                       ("auto --fast-propagate", ["--fast-propagate"], {}),
                                       ("int8 --fast-propagate", ["--fast-propagate",
                                                                  "--precision", "ov_int8"], {})):
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            env.update(env_extra)
            before = plain_encoder_seconds(vol, seed)  # this row's baseline: before and after
            t = time.perf_counter()
            ext = ["--extent", str(seed - around), str(seed + around)] if around else []
            r = subprocess.run([str(script), str(src), "--box", *map(str, arr_box),
                                "--propagate", "--out", str(out_path)] + ext + extra, env=env,
                               capture_output=True, text=True)
            el = time.perf_counter() - t
            if r.returncode:
                print(f"CLI {name}: failed {r.stderr[-300:]}")
                continue
            row_enc = 0.5 * (before + plain_encoder_seconds(vol, seed))
            lab = np.asarray(nib.load(str(out_path)).dataobj) > 0
            n = int(np.count_nonzero(lab.reshape(-1, lab.shape[2]).any(0)))
            print(f"| CLI medsam-segment --propagate, {name} | {n} | {el:.1f} | "
                  f"{el / (n * row_enc):.3f} (plain {row_enc:.2f} s/slice around it) | | | "
                  f"{dice(lab, gt):.3f} |", flush=True)


def cli_box(vol, seed: int, box):
    """The CLI's "--box 2 K X0 Y0 X1 Y1" (source array indices) of a display box on axial
    slice ``seed`` (found through a one-voxel probe of the geometry)."""
    g = vol.geometry("axial")
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    probe = np.zeros(vol.shape, np.uint8)
    view = g.take(probe, seed)
    view[y0, x0] = 1
    view[y1, x1] = 2
    a = np.argwhere(probe == 1)[0]
    b = np.argwhere(probe == 2)[0]
    axis = next(i for i in (2, 1, 0) if a[i] == b[i])
    lo, hi = np.delete(np.minimum(a, b), axis), np.delete(np.maximum(a, b), axis)
    return [axis, int(a[axis]), int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rules", action="store_true", help="measure the stop rules (slow)")
    p.add_argument("--queue", action="store_true",
                   help="measure the review-queue signals against slice Dice")
    p.add_argument("--no-brats", action="store_true", help="--queue on the abdominal scans only")
    p.add_argument("--no-jitter", action="store_true",
                   help="--queue without the box-jitter signal (4 decoder calls per slice)")
    p.add_argument("--only", default="", help="--queue on structures whose name contains one "
                   "of these comma-separated words")
    p.add_argument("--cache-dir", help="keep embeddings on disk here between runs")
    p.add_argument("--runtimes", action="store_true", help="propagation per runtime ÷ plain "
                   "fp32 encoder, and through the CLI (issue 23)")
    p.add_argument("--pat", default="brats_2013_pat0001_1",
                   help="--runtimes: the BRATS case (its FLAIR whole tumour)")
    p.add_argument("--around", type=int, default=0,
                   help="--runtimes: only the seed ± this many slices (reduced run)")
    args = p.parse_args()
    import torch

    if args.runtimes:
        print(f"CPU: {cpu_model()} · torch {torch.__version__} · {torch.get_num_threads()} threads")
        runtimes_table(pat=args.pat, around=args.around)
        return

    backend = load_backend(device="cpu")
    print(f"CPU: {cpu_model()} · torch {torch.__version__} · {torch.get_num_threads()} threads"
          f" · encoder {backend.precision}")
    if args.queue:
        with tempfile.TemporaryDirectory() as tmp:
            cache = EmbeddingCache(max_bytes=2 << 30, disk_dir=args.cache_dir or tmp,
                                   disk_max_bytes=40 << 30)
            queue_table(backend, cache, brats=not args.no_brats, jitter=not args.no_jitter,
                        only=args.only)
        return
    if args.rules:
        with tempfile.TemporaryDirectory() as tmp:
            cache = EmbeddingCache(max_bytes=2 << 30, disk_dir=args.cache_dir or tmp,
                                   disk_max_bytes=40 << 30)
            rules_table(record_fronts(backend, cache))
        return
    speed(backend)
    dice_per_case(backend)


if __name__ == "__main__":
    main()
