"""Big scans: what opening a CT and one box on it cost beyond reading the file, by scan size.

The visible JPEG 2000 abdominal CT (512×512×20 int16, ../shared/data/dicom) is tiled along z to
20, 200 and 800 slices and written as .nii.gz to a temporary folder (never the repository). For
each size, every measurement is a fresh process (time and its own peak RSS from ``wait4``):

- ``nibabel``   ``np.asanyarray(nib.load(f).dataobj)``: the reference read;
- ``open``      ``load_volume`` + content hash + model-input statistics (what the window does
                before the first image);
- ``one box``   ``medsam-segment --box`` on the liver of slice 10 of a 20-slice tile, written
                to a NIfTI label map (model load, encoder, decoder, export);
- ``propagate`` (``--propagate`` slices) ``medsam-segment --propagate`` from the same box;

and one process runs the steps of ``open`` + box + a propagation through ``--steps-propagate``
slices (200; only the empty-mask stop, each slice written into the label map as it comes, as
the window does) + export one by one, each step's time, its peak RSS above the RSS before it
(``/proc/self/clear_refs``) and the process's peak RSS during it. The tiled CT repeats 20
slices, so the propagation encodes each distinct slice once and reuses its embedding for the
copies (``--encode-all`` to encode all): every slice's embedding is still put in the cache and
held as in a real run, so the memory is that of a real run (plus at most 20 fp16 embeddings,
40 MiB, in the reuse table); its time is not (about a tenth of the encoder calls).

Ratios: time ÷ nibabel's read of the same file; memory ÷ the volume's bytes. The issue's done
criterion: one box on 800 slices costs at most 2× nibabel's read beyond the same box on 20
slices, and at most 2× the volume's bytes of extra peak memory.

``--percentiles`` measures the MR model-input percentiles from a subsample (``engine.intensity
.PERCENTILE_SAMPLE``) against exact ones: the bounds, the largest model-input difference in
uint8 levels, and GT-box Dice on BRATS tumour slices with either.

    python benchmarks/bench_scale.py [--slices 20 200 800] [--propagate 200] [--percentiles]

Measured (2026-12-03, AMD EPYC, 2 logical CPUs shared with other jobs, load average ~20: the
times are noisy, the memory is not), label map uint8, peak RSS during each step in the one
process, (peak - RSS with the model loaded, 796 MiB) ÷ the volume's bytes V:

    slices  V MiB | load   | encode+box | propagate 200 (embeddings held) | export
        20     10 | 1.29×V |    21.0×V  |  35.1×V (19 slices, 40 MiB)     | 35.6×V
       200    100 | 1.04×V |     3.01×V |  10.1×V (199 slices, 400 MiB)   | 10.2×V
       800    400 | 1.01×V |     1.50×V |  2.79×V (200 slices, 402 MiB)   | 2.83×V

The propagation's own peak above the RSS before it, on 800 slices, is 1.28×V (513 MiB): the
200 fp16 embeddings the memory tier keeps (2 MiB each, within its bound) and the encoder's
working memory; the steps are written into the map as they come, one mask held per step.
Done criterion (one box through the CLI, beyond 20 slices): 200 slices 1.86× the read and
1.00×V; 800 slices 1.55× the read and 1.00×V (before the uint8 label map: 1.80×V).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = REPO.parent / "shared" / "data"
CT_DICOM = DATA / "dicom" / "ct_abdomen_siemens_jpeg2000"
CT_LABELS = DATA / "dicom" / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"
LIVER = 5
TILE_SLICE = 10  # the box's slice within a 20-slice tile
MiB = 1 << 20

STEPS = r"""
import json, sys, time
import numpy as np
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
out = {}
def step(name, fn):
    before = status("VmRSS"); reset(); t = time.perf_counter(); r = fn()
    # time, peak above the RSS before the step, the process's peak RSS during the step
    out[name] = [time.perf_counter() - t, status("VmHWM") - before, status("VmHWM")]
    return r
path, k, box, target = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
n_prop, reuse = int(sys.argv[5]), sys.argv[6] == "1"
from medsam_gui.io import load_volume
from medsam_gui.engine import intensity
from medsam_gui.engine.loading import load_backend
from medsam_gui.engine.session import Session
from medsam_gui.annotation.labels import LabelMap, LabelTable, Label, PALETTE
from medsam_gui.annotation.exporting import export_labels
backend = load_backend("litemedsam", None, "cpu", "auto")
out["start"] = status("VmRSS")  # python + torch + the model, before the scan
vol = step("load", lambda: load_volume(path))
step("hash", lambda: vol.content_hash)
tr = step("input stats", lambda: intensity.resolve(vol))
session = Session(vol, backend)
session.use_transform(tr)
geom = vol.geometry("axial")
x0, y0, x1, y1 = box
a, b = geom.display_pixel((x0, y0, k)), geom.display_pixel((x1, y1, k))
pbox = (min(a[2], b[2]), min(a[1], b[1]), max(a[2], b[2]), max(a[1], b[1]))
pred = step("encode+box", lambda: session.predict("axial", k, pbox))
lm = step("label map", lambda: LabelMap(vol.shape, LabelTable([Label(1, "liver", PALETTE[0])])))
geom.take(lm.array, k)[pred.mask] = 1
if n_prop:
    import hashlib, math, torch
    from medsam_gui.engine import propagation
    if reuse:  # the tiled CT repeats its 20 slices: each distinct model input is encoded once
        memo, encode = {}, backend.encode  # (fp16, like the cache: 20 × 2 MiB at most)
        def reuse_encode(images):
            key = hashlib.blake2b(images[0].tobytes(), digest_size=16).digest()
            if key not in memo:
                memo[key] = encode(images).to(torch.float16)
            return memo[key].to(torch.float32)
        backend.encode = reuse_encode
    n = vol.n_slices("axial")
    lo = max(0, min(k - n_prop // 2, n - 1 - n_prop)); hi = min(n - 1, lo + n_prop)
    # only the empty-mask stop, within n_prop slices: the tiled CT's liver runs through them
    rules = propagation.StopRules(0.0, math.inf, math.inf, 1, 3.0, (lo, hi))
    def prop():
        filled = 0
        for ev in propagation.propagate(session, "axial", k, [pred.mask], rules):
            if isinstance(ev, propagation.Step):  # written as it comes, as the window does
                sl = geom.take(lm.array, ev.index)
                sl[ev.mask & (sl == 0)] = 1
                filled += 1
        return filled
    out["propagated"] = step("propagate", prop)
    out["cache MiB"] = session.cache.nbytes / 2**20  # embeddings held in memory after it
step("export", lambda: export_labels(lm, vol, target, "nifti"))
out["label dtype"] = str(lm.array.dtype)
out["final peak"] = status("VmHWM")
print(json.dumps(out))
"""


# the child's own peak RSS (VmHWM, written at exit): ``ru_maxrss`` of a child counts the
# forked copy of this process before its exec
PRELUDE = """import atexit, os
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            open(os.environ["BENCH_PEAK_FILE"], "w").write(line.split()[1])
atexit.register(_peak)
"""


def run(code: str, args: List[str], env: Dict[str, str]) -> Tuple[float, float, str, str]:
    """(seconds, peak RSS MiB, stdout, stderr) of ``python -c code args`` in a fresh process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile() as peak:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PRELUDE + code, *args], stdout=out,
                              stderr=err, env=dict(env, BENCH_PEAK_FILE=peak.name))
        dt = time.perf_counter() - t
        out.seek(0), err.seek(0)
        so, se = out.read().decode(), err.read().decode()
        kib = Path(peak.name).read_text().strip()
    if proc.returncode != 0:
        raise RuntimeError(f"{code[:60]!r} failed ({proc.returncode}): {se[-2000:]}")
    return dt, int(kib) / 1024, so, se


def build(folder: Path, sizes: List[int]) -> Tuple[Dict[int, Path], np.ndarray, int]:
    """The tiled CTs, the liver box (x0, y0, x1, y1 voxel indices on axis 2) and the reference
    liver mask of the tile slice."""
    import nibabel as nib

    from bench_model_input import on_grid
    from medsam_gui.io import load_volume

    vol = load_volume(CT_DICOM)
    liver = on_grid(CT_LABELS, vol) == LIVER
    ii, jj = np.nonzero(liver[:, :, TILE_SLICE])
    box = np.array([ii.min(), jj.min(), ii.max(), jj.max()])
    paths = {}
    for n in sizes:
        data = np.tile(vol.data, (1, 1, -(-n // vol.shape[2])))[:, :, :n]
        img = nib.Nifti1Image(np.asfortranarray(data.astype(np.int16)), vol.affine)
        img.header.set_data_dtype(np.int16)
        paths[n] = folder / f"ct_{n}.nii.gz"
        nib.save(img, str(paths[n]))
    return paths, box, liver[:, :, TILE_SLICE]


def box_slice(n: int) -> int:
    return 20 * (n // 40) + TILE_SLICE


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / s) if s else 1.0


def scale(args: argparse.Namespace) -> None:
    import nibabel as nib

    env = dict(os.environ, PYTHONPATH=str(REPO))
    segment = "import sys; from medsam_gui.cli import segment_main; sys.exit(segment_main())"
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        folder = Path(tmp)
        paths, box, ref = build(folder, args.slices)
        rows = []
        for n in args.slices:
            p, k = paths[n], box_slice(n)
            vbytes = 512 * 512 * n * 2
            nib_t, nib_m, _, _ = run("import sys, numpy, nibabel; numpy.asanyarray("
                                     "nibabel.load(sys.argv[1]).dataobj)", [str(p)], env)
            base_t, base_m, _, _ = run("import numpy, nibabel", [], env)
            open_t, open_m, _, _ = run("import sys; from medsam_gui.io import load_volume; "
                                       "from medsam_gui.engine import intensity; "
                                       "v = load_volume(sys.argv[1]); v.content_hash; "
                                       "intensity.resolve(v)", [str(p)], env)
            out = folder / f"box_{n}.nii.gz"
            box_t, box_m, _, _ = run(segment, ["--box", "2", str(k), *map(str, box), "--out",
                                               str(out), str(p)], env)
            got = np.asanyarray(nib.load(str(out)).dataobj)[:, :, k] > 0
            _, _, so, _ = run(STEPS, [str(p), str(k), json.dumps(box.tolist()),
                                      str(folder / f"steps_{n}.nii.gz"), str(args.steps_propagate),
                                      "0" if args.encode_all else "1"], env)
            steps = json.loads(so.strip().splitlines()[-1])
            rows.append(dict(n=n, vbytes=vbytes, nib=(nib_t, nib_m), base=(base_t, base_m),
                             open=(open_t, open_m), box=(box_t, box_m),
                             dice=dice(got, ref), steps=steps))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # kept if a later size fails
        prop = None
        if args.propagate:
            n = args.propagate
            if n not in paths:
                paths.update(build(folder, [n])[0])
            out = folder / f"prop_{n}.nii.gz"
            t, m, _, se = run(segment, ["--box", "2", str(box_slice(n)), *map(str, box),
                                        "--propagate", "--out", str(out), str(paths[n])], env)
            filled = int(np.count_nonzero(np.asanyarray(nib.load(str(out)).dataobj).any((0, 1))))
            prop = (n, t, m, filled, [ln for ln in se.splitlines() if "stopped" in ln][-1:])
    report(rows, prop)


def report(rows: List[dict], prop) -> None:
    from bench_model_input import cpu_model

    print(f"\nCPU: {cpu_model()} ({os.cpu_count()} logical CPUs); each cell a fresh process")
    print("time ÷ nibabel's read of the same file; memory: peak RSS, extra = above the same "
          "step on 20 slices, ÷ the volume's bytes\n")
    print(f"{'slices':>6} {'volume':>8} | {'step':<12} {'s':>7} {'÷read':>6} {'peak MiB':>9}")
    for r in rows:
        nib_t = r["nib"][0]
        vol = f"{r['vbytes'] / MiB:.0f} MiB"
        for name in ("nib", "open", "box"):
            t, m = r[name]
            label = {"nib": "nibabel read", "open": "our open", "box": "one box (CLI)"}[name]
            print(f"{r['n']:>6} {vol:>8} | {label:<12} {t:7.2f} {t / nib_t:6.2f} {m:9.0f}")
        print(f"{'':>6} {'':>8} | (python + numpy + nibabel alone: {r['base'][1]:.0f} MiB; "
              f"box Dice vs reference liver {r['dice']:.3f}; "
              f"label map {r['steps']['label dtype']})")
    print("\nsteps in one process (s ÷ read; peak above the RSS before the step, ÷ volume bytes)")
    names = [k for k, v in rows[0]["steps"].items() if isinstance(v, list)]
    print(f"{'slices':>6} | " + " | ".join(f"{k:^21}" for k in names))
    for r in rows:
        cells = [f"{v[0]:5.2f}s {v[0] / r['nib'][0]:4.2f}× {v[1] / (r['vbytes'] / MiB):5.2f}×V"
                 for v in (r["steps"][k] for k in names)]
        print(f"{r['n']:>6} | " + " | ".join(f"{c:^21}" for c in cells))
    print("\npeak RSS of the process during each step, MiB, and (peak - RSS with the model "
          "loaded, before the scan) ÷ the volume's bytes (V)")
    print(f"{'slices':>6} {'V MiB':>6} {'model':>6} | " + " | ".join(f"{k:^15}" for k in names)
          + " | propagated, embeddings held")
    for r in rows:
        v, start = r["vbytes"] / MiB, r["steps"]["start"]
        cells = [f"{r['steps'][k][2]:6.0f} {(r['steps'][k][2] - start) / v:5.2f}×V"
                 for k in names]
        extra = (f"{r['steps'].get('propagated', 0)} slices, {r['steps'].get('cache MiB', 0):.0f}"
                 " MiB" if "propagated" in r["steps"] else "")
        print(f"{r['n']:>6} {v:6.0f} {start:6.0f} | " + " | ".join(f"{c:^15}" for c in cells)
              + " | " + extra)
    small = rows[0]
    print(f"\ndone criterion, against {small['n']} slices:")
    for r in rows[1:]:
        dt = (r["box"][0] - small["box"][0]) / r["nib"][0]
        dm = (r["box"][1] - small["box"][1]) * MiB / r["vbytes"]
        print(f"  {r['n']} slices: one box costs {dt:.2f}× the read beyond {small['n']} slices "
              f"(≤ 2: {'yes' if dt <= 2 else 'NO'}); extra peak memory {dm:.2f}× the volume's "
              f"bytes (≤ 2: {'yes' if dm <= 2 else 'NO'})")
    if prop:
        n, t, m, filled, stop = prop
        print(f"\npropagation on {n} slices: {t:.1f} s, peak {m:.0f} MiB, {filled} slices "
              f"filled {stop}")


def percentiles() -> None:
    """Subsampled against exact MR percentiles: bounds, model-input levels, GT-box Dice."""
    import nibabel as nib

    from bench_model_input import cpu_model
    from medsam_gui.engine import intensity
    from medsam_gui.engine.loading import load_backend
    from medsam_gui.engine.intensity import ModelInput
    from medsam_gui.engine.session import Session
    from medsam_gui.io import load_volume

    backend = load_backend("litemedsam", None, "cpu", "auto")
    default = intensity.PERCENTILE_SAMPLE
    budgets = [("exact", 10**12), ("4M", 4_000_000),
               ("100k", 100_000)]
    print(f"CPU: {cpu_model()}\n{'case':<34} {'sample':>8} {'stride':>6} {'lo':>9} {'hi':>9} "
          f"{'max Δ levels':>12} {'Dice GT':>8} {'Dice vs exact':>13}")
    cases = [(DATA / "brain_tumour_brats2015" / p / f, DATA / "brain_tumour_brats2015" / p
              / "OTMultiClass.nii.gz") for p in ("brats_2013_pat0001_1", "brats_2013_pat0002_1")
             for f in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")]
    cases.append((DATA / "abdomen_totalsegmentator" / "example_mr_sm.nii.gz",
                  DATA / "abdomen_totalsegmentator" / "example_seg_mr.nii.gz"))
    for image, labels in cases:
        vol = load_volume(image)
        gt_all = np.asanyarray(nib.load(str(labels)).dataobj)
        gt = gt_all > 0 if "brats" in str(image) else gt_all == 5  # tumour / liver
        geom = vol.geometry("axial")
        ks = [k for k in range(vol.n_slices("axial")) if geom.take(gt, k).sum() >= 100]
        ks = ks[:: max(1, len(ks) // 6)][:6]
        session = Session(vol, backend)
        exact_masks = None
        for name, budget in budgets:
            intensity.PERCENTILE_SAMPLE = budget
            tr = intensity.resolve(vol, ModelInput(modality="MR"))
            if name == "exact":
                ref_t = tr
            levels = int(np.abs(ref_t.apply(vol.data).astype(int)
                                - tr.apply(vol.data).astype(int)).max())
            session.use_transform(tr)
            masks, d_gt = [], []
            for k in ks:
                g = geom.take(gt, k)
                rr, cc = np.nonzero(g)
                pred = session.predict("axial", k, (cc.min(), rr.min(), cc.max(), rr.max()))
                masks.append(pred.mask)
                d_gt.append(dice(pred.mask, g))
            exact_masks = exact_masks or masks
            d_ex = np.mean([dice(a, b) for a, b in zip(masks, exact_masks)])
            step = intensity.sample_stride(vol.shape, budget)
            print(f"{image.parent.name[-6:] + '/' + image.name[:24]:<34} {name:>8} {step:>6} "
                  f"{tr.lo:9.4g} {tr.hi:9.4g} {levels:>12} {np.mean(d_gt):8.4f} {d_ex:13.4f}")
        intensity.PERCENTILE_SAMPLE = default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[20, 200, 800])
    parser.add_argument("--propagate", type=int, default=0, metavar="SLICES",
                        help="also propagate one box through a scan of this many slices")
    parser.add_argument("--steps-propagate", type=int, default=200, metavar="SLICES",
                        help="the one-process steps propagate the box through this many slices "
                             "(only the empty-mask stop; 0: no propagation step)")
    parser.add_argument("--encode-all", action="store_true",
                        help="the propagation step encodes every slice (by default each of the "
                             "20 distinct slices of the tiled CT is encoded once and its "
                             "embedding reused for its copies: the same embeddings, cached and "
                             "held the same way, in a tenth of the encoder time)")
    parser.add_argument("--percentiles", action="store_true",
                        help="only the subsampled-percentile measurement")
    args = parser.parse_args()
    if args.percentiles:
        percentiles()
    else:
        scale(args)


if __name__ == "__main__":
    main()
