"""Slice presence of a label (``review.present_slices``, the review-state pass the window runs
on the GUI thread at open and after each fill) against the whole-grid comparison it replaced,
side by side on a 512×512×800 label map, empty (a scan just opened) and with one structure.

    python benchmarks/bench_review_states.py [--slices 800]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from medsam_gui.annotation import LabelMap, review
from medsam_gui.engine.ov_decoder import cpu_name
from medsam_gui.volume import view_geometry


def whole_grid(lm: LabelMap, geom, value: int) -> np.ndarray:
    other = tuple(a for a in range(3) if a != geom.slice_axis)
    return np.asarray((lm.array == value).any(axis=other))


def best_of(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=800)
    args = p.parse_args()
    shape = (512, 512, args.slices)
    affine = np.diag([-0.8, -0.8, 1.0, 1.0])
    lm = LabelMap(shape)
    lm.array[...] = 0  # touch every page before timing
    print(f"CPU: {cpu_name()}; label map {shape} uint8, Fortran order")
    print("| label map | view | whole grid ms | slabs ms | slabs ÷ whole grid |")
    print("|---|---|---|---|---|")
    for name in ("empty", "one structure 100³"):
        if name != "empty":
            z = args.slices // 2
            lm.array[200:300, 200:300, z - 50:z + 50] = 1
        for view in ("axial", "coronal", "sagittal"):
            geom = view_geometry(affine, shape, view)
            assert np.array_equal(whole_grid(lm, geom, 1), review.present_slices(lm, geom, 1))
            old = best_of(lambda: whole_grid(lm, geom, 1))
            new = best_of(lambda: review.present_slices(lm, geom, 1))
            print(f"| {name} | {view} | {old * 1e3:.0f} | {new * 1e3:.0f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
