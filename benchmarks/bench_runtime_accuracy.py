#!/usr/bin/env python
"""Image-encoder runtimes side by side: latency ÷ plain PyTorch fp32 and ground-truth Dice.

    python benchmarks/bench_runtime_accuracy.py [--slices N] [--reps N] [--pytorch-dice]
    python benchmarks/bench_runtime_accuracy.py --decoder [--slices N]   # the decoder's
    (no allocator preloaded; int8 needs the nncf package: pip install medsam-gui[int8])

Runtimes: plain PyTorch fp32, OpenVINO f32, OpenVINO bf16 and OpenVINO int8 (NNCF post-training
quantisation, ``engine.ov_int8``, calibrated on slices of the bundled demo volume, BRATS
pat0001 FLAIR). Latency: one real slice, all runtimes interleaved in each round, median of the
rounds, each ÷ PyTorch fp32 in the same run. Dice: the same ground-truth boxes on the same
slices for every runtime, on every kind of labelled scan in ../shared/data except the
calibration case (BRATS is scored on pat0002 only): BRATS FLAIR, BRATS T1c, abdominal MR,
abdominal CT, DICOM CT. The mask decoder runs on PyTorch for all, so only the encoder differs.
Plain PyTorch fp32 is scored only with --pytorch-dice (OpenVINO f32 equals it to three
decimals, tests/test_openvino_encoder.py). Prints, per kind, int8 − f32 and bf16 − f32 and
whether each stays within 0.01 (the rule ``engine.runtime`` applies to ``auto``).

Measured (AMD EPYC, AVX2 without VNNI / AMX / AVX-512 / AVX-512 BF16, 2 threads; a shared
machine at load average ~22, so absolute times are inflated and only ratios count). int8:
12 calibration slices of the demo, preset mixed, model type transformer (SmoothQuant), fast
bias correction; quantising took 164 s there (statistics 30 s + 96 s, the rest compiling).

| runtime | encoder ÷ PyTorch fp32 | ÷ OpenVINO f32 |
|---|---|---|
| PyTorch fp32 | 1.00 | 3.20 |
| OpenVINO f32 | 0.31 | 1.00 |
| OpenVINO bf16 | 0.31 | 0.99 (no bf16 units: runs as f32, same masks) |
| OpenVINO int8 | 0.33 | 1.07 (slower: AVX2 has no int8 dot-product instructions) |

Ground-truth-box Dice per kind (--slices 6, slice-weighted mean over the structures; 2240 s):

| kind | slices | OpenVINO f32 | int8 | int8 − f32 | worst structure (int8 − f32) |
|---|---|---|---|---|---|
| BRATS FLAIR (pat0002) | 6 | 0.901 | 0.924 | +0.023 | whole tumour +0.023 |
| BRATS T1c (pat0002) | 6 | 0.793 | 0.653 | −0.141 | tumour core, worst slice −0.77 |
| abdominal MR | 24 | 0.830 | 0.754 | −0.076 | spleen −0.148, kidney R −0.104 |
| abdominal CT | 30 | 0.724 | 0.728 | +0.003 | spleen −0.009 |
| DICOM CT | 24 | 0.852 | 0.812 | −0.040 | vertebra T12 −0.150 |

bf16 − f32 was +0.000 on every row here (no bf16 units). So int8 calibrated on one MR brain
sequence keeps FLAIR and the abdominal CT but loses T1c, MR organs and the DICOM CT, and is not
faster on AVX2: ``auto`` does not pick it (``engine.runtime.INT8_WITHIN_TOLERANCE = False``).

Measured again on AMD EPYC with AVX-512 VNNI and AVX-512 BF16 (2 threads, 2026-12-04), int8
now with the convolutions in float and its float ops in bf16 (``ov_int8.SETTINGS``,
``ov_encoder.float_hint``; quantising took 27 s), --slices 16:

| runtime | encoder ÷ PyTorch fp32 |
|---|---|
| OpenVINO f32 | 0.55 |
| OpenVINO bf16 | 0.29 |
| OpenVINO int8 (convolutions bf16) | 0.27 (0.80 of bf16 measured alone, interleaved) |

| kind | slices | f32 | int8 | int8 − f32 | bf16 − f32 |
|---|---|---|---|---|---|
| BRATS FLAIR | 16 | 0.870 | 0.873 | +0.0026 | +0.0026 |
| BRATS T1c | 16 | 0.768 | 0.763 | −0.0042 | +0.0012 |
| abdominal MR | 48 | 0.793 | 0.803 | +0.0102 | −0.0066 |
| abdominal CT | 73 | 0.791 | 0.799 | +0.0080 | −0.0004 |
| DICOM CT | 64 | 0.826 | 0.825 | −0.0009 | −0.0016 |

Every layer int8 (the settings before, 6 slices): BRATS T1c −0.112, DICOM CT −0.054, MR
−0.032. Within the bar per kind now, but single structures move both ways (MR spleen +0.074,
liver −0.027, CT liver +0.034) and a 3D propagation lost 0.012: see
``engine.runtime.INT8_WITHIN_TOLERANCE`` (still False). The decoder (``--decoder``, 8 slices):
OpenVINO bf16 26 ms a box, f32 43 ms, PyTorch 80 ms; bf16 − f32 per kind +0.003, +0.003,
−0.000, −0.001, −0.000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402

from bench_model_input import cases, cpu_model  # noqa: E402
from medsam_gui.engine import EmbeddingCache, Session, load_backend  # noqa: E402
from medsam_gui.engine.evaluate import gt_box_dice, pick_slices  # noqa: E402
from medsam_gui.engine.ov_encoder import blocked_reason, cpu_has_fast_bf16  # noqa: E402
from medsam_gui.engine.ov_int8 import SETTINGS, nncf_missing  # noqa: E402
from medsam_gui.io import load_volume  # noqa: E402
from medsam_gui.resources import demo_volume_path  # noqa: E402

KINDS = (("BRATS Flair", "BRATS FLAIR"), ("BRATS T1c", "BRATS T1c"), ("abdomen MR", "abdominal MR"),
         ("abdomen CT", "abdominal CT"), ("CT DICOM", "DICOM CT"))


def kind_of(case: str) -> str:
    return next((short for prefix, short in KINDS if case.startswith(prefix)), "")


def scored_cases():
    """(kind, volume, structures) without the calibration case and the derived copies."""
    for case, vol, structures in cases():
        if "bg = 0" in case or "pat0001" in case or not kind_of(case):
            continue
        yield kind_of(case), vol, structures


def latency(backends: dict, reps: int) -> dict:
    """Median seconds of one encode per runtime, interleaved in each round (a BRATS slice)."""
    vol = load_volume(str(demo_volume_path()))
    img = Session(vol, backends["fp32"]).model_slice("axial", vol.n_slices("axial") // 2)
    times = {k: [] for k in backends}
    for b in backends.values():
        b.encode([img])  # warm-up
    for _ in range(reps):
        for k, b in backends.items():
            t0 = time.perf_counter()
            b.encode([img])
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def decoder_table(n_slices: int) -> None:
    """The prompt encoder + mask decoder on OpenVINO f32 against bf16 (and PyTorch), beside one
    image encoder (what ``auto`` resolves to here): ms per box on real embeddings, median of
    interleaved calls, and ground-truth-box Dice per kind (the encoder's test and bar)."""
    from medsam_gui.engine.evaluate import mask_box

    auto = load_backend(device="cpu")
    decoders = {}
    for name, precision in (("PyTorch", None), ("OpenVINO f32", "ov_f32"),
                            ("OpenVINO bf16", "ov_bf16")):
        # one encoder precision for all, so that all read the same cached embeddings
        b = load_backend(precision=auto.precision, device="cpu", decoder="pytorch")
        if precision is not None:
            b.use_openvino_decoder("openvino", precision)
            assert b.decoder_runtime == f"openvino {precision[3:]}", b.decoder_note
        decoders[name] = b
    print(f"CPU: {cpu_model()} · fast bf16: {cpu_has_fast_bf16()} · auto: encoder "
          f"{auto.runtime_label}, decoder {auto.decoder_runtime}")
    times = {k: [] for k in decoders}
    by_kind = {}
    for kind, vol, structures in scored_cases():
        for name, (truth, _presets) in structures.items():
            g = vol.geometry("axial")
            slices = pick_slices(g, truth, n_slices)
            if not slices:
                continue
            cache = EmbeddingCache()  # one embedding per slice for every decoder
            d = {k: np.array(gt_box_dice(Session(vol, b, cache), "axial", truth, slices))
                 for k, b in decoders.items() if k != "PyTorch"}
            by_kind.setdefault(kind, []).append((d["OpenVINO f32"], d["OpenVINO bf16"]))
            for i in slices[:3]:
                emb = Session(vol, auto, cache).embed("axial", i)
                box, hw = mask_box(g.take(truth, i)), g.take(truth, i).shape
                for k, b in decoders.items():
                    b.decode(emb, hw, box)
                    t0 = time.perf_counter()
                    b.decode(emb, hw, box)
                    times[k].append(time.perf_counter() - t0)
            diff = d["OpenVINO bf16"] - d["OpenVINO f32"]
            print(f"{kind} {name}: f32 {d['OpenVINO f32'].mean():.4f} bf16 "
                  f"{d['OpenVINO bf16'].mean():.4f} (worst slice {diff.min():+.3f})", flush=True)
    base = float(np.median(times["PyTorch"]))
    print("\n| decoder | ms per box | ÷ PyTorch |\n|---|---|---|")
    for k, ts in times.items():
        print(f"| {k} | {np.median(ts) * 1e3:.1f} | {np.median(ts) / base:.2f} |")
    print("\n| kind | slices | f32 | bf16 | bf16 − f32 |\n|---|---|---|---|---|")
    ok = True
    for kind, rows in by_kind.items():
        a, b = np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
        ok &= b.mean() - a.mean() >= -0.01
        print(f"| {kind} | {len(a)} | {a.mean():.3f} | {b.mean():.3f} | "
              f"{b.mean() - a.mean():+.4f} |")
    print(f"\nbf16 decoder within 0.01 of f32 on every kind: {ok}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slices", type=int, default=8, help="slices per structure")
    p.add_argument("--reps", type=int, default=5, help="latency rounds")
    p.add_argument("--pytorch-dice", action="store_true", help="also score plain PyTorch")
    p.add_argument("--decoder", action="store_true", help="the decoder's runtimes instead: "
                   "OpenVINO f32 against bf16, ms per box and ground-truth Dice per kind")
    args = p.parse_args()
    if args.decoder:
        decoder_table(args.slices)
        return
    reason = blocked_reason() or nncf_missing()
    if reason:
        sys.exit(f"cannot run the OpenVINO int8 comparison here: {reason}")
    backends = {}
    for prec in ("fp32", "ov_f32", "ov_bf16", "ov_int8"):
        t0 = time.perf_counter()
        backends[prec] = load_backend(precision=prec, device="cpu", decoder="pytorch")
        if prec == "ov_int8":
            enc = backends[prec]._ov
            q = (f"quantised in {enc.quantise_seconds:.0f} s" if enc.quantise_seconds
                 else "read from the cache")
            print(f"int8 load {time.perf_counter() - t0:.0f} s ({q}; {enc.path.name}; "
                  f"settings {SETTINGS}; speed remembered: {enc.speed})", flush=True)
    print(f"CPU: {cpu_model()} · fast bf16: {cpu_has_fast_bf16()} · "
          + " · ".join(f"{k} = {b.runtime_label}" for k, b in backends.items()))

    lat = latency(backends, args.reps)
    print("\n| runtime | encoder s / slice | ÷ PyTorch fp32 |\n|---|---|---|")
    for k, t in lat.items():
        print(f"| {backends[k].runtime_label} | {t:.3f} | {t / lat['fp32']:.2f} |")
    print(f"int8 ÷ f32 (OpenVINO): {lat['ov_int8'] / lat['ov_f32']:.2f}", flush=True)

    scored = ("fp32", "ov_f32", "ov_bf16", "ov_int8") if args.pytorch_dice else \
        ("ov_f32", "ov_bf16", "ov_int8")
    print("\n| kind | structure | slices | " + " | ".join(backends[k].runtime_label
                                                        for k in scored)
          + " | int8 − f32 (mean, worst slice) | bf16 − f32 |")
    print("|---" * (len(scored) + 5) + "|")
    by_kind, t0 = {}, time.perf_counter()
    for kind, vol, structures in scored_cases():
        for name, (truth, _presets) in structures.items():
            slices = pick_slices(vol.geometry("axial"), truth, args.slices)
            if not slices:
                continue
            s = {k: np.array(gt_box_dice(Session(vol, backends[k], EmbeddingCache()), "axial",
                                         truth, slices)) for k in scored}
            d8, d16 = s["ov_int8"] - s["ov_f32"], s["ov_bf16"] - s["ov_f32"]
            by_kind.setdefault(kind, []).append((d8.mean(), d16.mean(), len(slices),
                                                 s["ov_f32"].mean(), s["ov_int8"].mean()))
            print(f"| {kind} | {name} | {len(slices)} | "
                  + " | ".join(f"{s[k].mean():.3f}" for k in scored)
                  + f" | {d8.mean():+.4f}, {d8.min():+.3f} | {d16.mean():+.4f} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s\n\n| kind | slices | f32 | int8 | int8 − f32 | "
          "bf16 − f32 |\n|---|---|---|---|---|---|")
    ok8 = ok16 = True
    for kind, rows in by_kind.items():
        n = sum(r[2] for r in rows)
        w = [sum(r[i] * r[2] for r in rows) / n for i in (0, 1, 3, 4)]
        ok8 &= w[0] >= -0.01
        ok16 &= w[1] >= -0.01
        print(f"| {kind} | {n} | {w[2]:.3f} | {w[3]:.3f} | {w[0]:+.4f} | {w[1]:+.4f} |")
    print(f"\nint8 within 0.01 of f32 on every kind: {ok8} · bf16: {ok16} · "
          f"int8 faster than OpenVINO f32 here: {lat['ov_int8'] < lat['ov_f32']}")


if __name__ == "__main__":
    main()
