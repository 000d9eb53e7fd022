#!/usr/bin/env python
"""Image-encoder runtimes against ground truth: which precision may ``auto`` pick?

    python benchmarks/bench_runtime_accuracy.py [--slices N]    (no allocator preloaded)

For every kind of scan in ../shared/data with reference labels (the cases of
bench_model_input: BRATS FLAIR and T1c, abdominal MR and CT, the DICOM CT and its unrescaled
copy), the same ground-truth boxes on the same slices are segmented with the image encoder on
plain PyTorch fp32, OpenVINO f32 and OpenVINO bf16. Prints mean Dice per structure, the paired
difference to fp32 and, per kind, whether bf16 stays within 0.01 of fp32 (the rule
``engine.runtime`` applies: auto picks bf16 only where it does on every kind, and only on CPUs
with AMX / AVX-512 BF16).
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slices", type=int, default=8)
    args = p.parse_args()
    reason = blocked_reason()
    if reason:
        sys.exit(f"OpenVINO cannot run here: {reason}")
    backends = {prec: load_backend(precision=prec, device="cpu")
                for prec in ("fp32", "ov_f32", "ov_bf16")}
    print(f"CPU: {cpu_model()} · fast bf16: {cpu_has_fast_bf16()} · "
          + " · ".join(f"{k} = {b.runtime_label}" for k, b in backends.items()))
    print("\n| kind | structure | slices | fp32 | OpenVINO f32 | OpenVINO bf16 | bf16 − fp32 "
          "(mean, worst slice) |")
    print("|---|---|---|---|---|---|---|")
    by_kind, t0 = {}, time.perf_counter()
    for kind, vol, structures in cases():
        if "bg = 0" in kind:
            continue  # the same scan as its z-scored original
        for name, (truth, _presets) in structures.items():
            slices = pick_slices(vol.geometry("axial"), truth, args.slices)
            if not slices:
                continue
            scores = {prec: np.array(gt_box_dice(Session(vol, b, EmbeddingCache()), "axial",
                                                 truth, slices))
                      for prec, b in backends.items()}
            diff = scores["ov_bf16"] - scores["fp32"]
            by_kind.setdefault(kind, []).append((diff.mean(), len(slices)))
            print(f"| {kind} | {name} | {len(slices)} | {scores['fp32'].mean():.3f} | "
                  f"{scores['ov_f32'].mean():.3f} | {scores['ov_bf16'].mean():.3f} | "
                  f"{diff.mean():+.4f}, {diff.min():+.3f} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s\n\nper kind (slice-weighted mean of bf16 − fp32):")
    ok = True
    for kind, rows in by_kind.items():
        d = sum(m * n for m, n in rows) / sum(n for _, n in rows)
        ok &= d >= -0.01
        print(f"  {kind:45s} {d:+.4f}  {'within 0.01' if d >= -0.01 else 'NOT within 0.01'}")
    print(f"\nbf16 within 0.01 of fp32 on every kind: {ok}")


if __name__ == "__main__":
    main()
