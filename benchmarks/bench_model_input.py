#!/usr/bin/env python
"""Model input benchmark: ground-truth-box Dice per volume kind and input rule, side by side.

    python benchmarks/bench_model_input.py [--slices N] [--pad PX]

For every volume kind in ../shared/data that has reference labels, the same slices and the same
ground-truth boxes (the label's extent on the slice, widened by --pad pixels) are segmented by
LiteMedSAM under each input rule:

  upstream > 0   MedSAM's pre_CT_MR as published (MR: percentiles of the voxels > 0)
  automatic      medsam_gui's rule (engine.intensity: foreground percentiles; CT window in HU)
  display        the window the app opens the scan with (what the clinician sees)
  CT presets     lung / bone windows for the structures they are made for

Prints the CPU, a table of mean Dice (slices in brackets) and the ratio automatic / upstream,
then what the model input costs beside the encoder: resolving the rule once per volume and
mapping one slice (done at each encode), each ÷ one encoder call, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("MEDSAM_TEST_DATA", REPO.parent / "shared" / "data"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from medsam_gui.engine import EmbeddingCache, ModelInput, Session, load_backend  # noqa: E402
from medsam_gui.engine.evaluate import gt_box_dice, mean, pick_slices  # noqa: E402
from medsam_gui.engine.intensity import resolve, upstream_transform  # noqa: E402
from medsam_gui.io import load_volume  # noqa: E402
from medsam_gui.io.voxel_facts import guess_modality  # noqa: E402
from medsam_gui.volume import SourceInfo, Volume  # noqa: E402


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def on_grid(label_path: Path, volume) -> np.ndarray:
    """A label map reoriented onto the volume's voxel grid through the two affines."""
    img = nib.load(str(label_path))
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.io_orientation(volume.affine))
    arr = nib.orientations.apply_orientation(np.asarray(img.dataobj), ornt)
    assert arr.shape == volume.shape, (arr.shape, volume.shape)
    return arr


def cases():
    """(kind, volume, {structure: (truth3d, [extra presets])})."""
    brats = DATA / "brain_tumour_brats2015"
    for seq, name, labels in (("Flair", "whole tumour", (1, 2, 3, 4)),
                              ("T1c", "tumour core", (1, 3, 4))):
        for pat in ("brats_2013_pat0001_1", "brats_2013_pat0002_1"):
            vol = load_volume(brats / pat / f"{seq}_subtrMeanDivStd.nii.gz")
            gt = np.isin(np.asarray(nib.load(str(brats / pat / "OTMultiClass.nii.gz")).dataobj),
                         labels)
            yield f"BRATS {seq} z-scored (bg = min) {pat[11:18]}", vol, {name: (gt, [])}
            if seq == "Flair":
                data = vol.data.copy()
                data[data == data.min()] = 0.0
                yield (f"BRATS Flair z-scored, bg = 0 {pat[11:18]}",
                       Volume(data, vol.affine, "MR", vol.source), {name: (gt, [])})
    abd = DATA / "abdomen_totalsegmentator"
    organs = {"liver": 5, "spleen": 1, "kidney R": 2, "kidney L": 3}
    mr = load_volume(abd / "example_mr_sm.nii.gz")
    seg = np.asarray(nib.load(str(abd / "example_seg_mr.nii.gz")).dataobj)
    yield "abdomen MR raw", mr, {k: (seg == v, []) for k, v in organs.items()}
    ct = load_volume(abd / "example_ct_sm.nii.gz")
    seg = np.asarray(nib.load(str(abd / "example_seg.nii.gz")).dataobj)
    s = {k: (seg == v, []) for k, v in organs.items()}
    s["lung R lower"] = (seg == 14, ["lung"])
    yield "abdomen CT HU", ct, s
    dcm = load_volume(DATA / "dicom" / "ct_abdomen_siemens_jpeg2000")
    lab = on_grid(DATA / "dicom" / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz",
                  dcm)
    s = {"liver": (lab == 5, []), "spleen": (lab == 1, []), "stomach": (lab == 6, []),
         "vertebra T12": (lab == 32, ["bone"])}
    yield "CT DICOM HU (JPEG 2000)", dcm, s
    raw = (dcm.data.astype(np.int32) + 1024).astype(np.uint16)
    as_nifti = SourceInfo(path="ct_stored_without_rescale.nii.gz", kind="nifti")
    yield ("CT stored without rescale (uint16)",
           Volume(raw, dcm.affine, guess_modality(raw), as_nifti), s)


def input_cost(backend) -> None:
    """Resolve once + map a slice, against the encoder, on the BRATS FLAIR and the 512² CT."""
    print("\n| volume | resolve (once) | map one slice | encoder (one slice) | "
          "resolve ÷ encoder | map ÷ encoder |")
    print("|---|---|---|---|---|---|")
    for path in (DATA / "brain_tumour_brats2015" / "brats_2013_pat0001_1" /
                 "Flair_subtrMeanDivStd.nii.gz", DATA / "dicom" / "ct_abdomen_siemens_jpeg2000"):
        vol = load_volume(path)
        k = vol.n_slices("axial") // 2
        t0 = time.perf_counter()
        transform = resolve(vol)
        t_resolve = time.perf_counter() - t0
        maps = []
        for _ in range(20):
            t0 = time.perf_counter()
            img = transform.apply(vol.slice("axial", k))
            maps.append(time.perf_counter() - t0)
        enc = []
        for _ in range(3):
            t0 = time.perf_counter()
            backend.encode([img])
            enc.append(time.perf_counter() - t0)
        t_map, t_enc = float(np.median(maps)), float(np.median(enc))
        print(f"| {path.name} {vol.shape} | {t_resolve * 1e3:.0f} ms | {t_map * 1e3:.2f} ms | "
              f"{t_enc * 1e3:.0f} ms | {t_resolve / t_enc:.2f} | {t_map / t_enc:.4f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slices", type=int, default=8, help="slices per structure (8)")
    p.add_argument("--pad", type=float, default=0.0, help="box padding in pixels (0)")
    p.add_argument("--cost-only", action="store_true", help="only the input-cost table")
    args = p.parse_args()
    import torch

    from medsam_gui.ui.render import default_window

    backend = load_backend(device="cpu")
    print(f"CPU: {cpu_model()} · torch {torch.__version__} · {torch.get_num_threads()} threads"
          f" · encoder {backend.precision}")
    input_cost(backend)
    if args.cost_only:
        return
    cache = EmbeddingCache(max_bytes=4 << 30)
    rows, t0 = [], time.perf_counter()
    for kind, vol, structures in cases():
        level, width = default_window(vol)  # as the app opens the scan
        rules = {"upstream > 0": upstream_transform(vol), "automatic": resolve(vol),
                 "display": resolve(vol, ModelInput.display(level, width))}
        for name, (truth, presets) in structures.items():
            geom = vol.geometry("axial")
            slices = pick_slices(geom, truth, args.slices)
            row = {"kind": kind, "structure": name, "n": len(slices),
                   "modality": vol.modality}
            for rule, transform in rules.items():
                session = Session(vol, backend, cache)
                session.use_transform(transform)
                row[rule] = mean(gt_box_dice(session, "axial", truth, slices, args.pad))
            for preset in presets:
                session = Session(vol, backend, cache, ModelInput.preset(preset, "CT"))
                row[preset] = mean(gt_box_dice(session, "axial", truth, slices, args.pad))
            rows.append(row)
            extra = "  ".join(f"{k} {row[k]:.3f}" for k in presets)
            print(f"{kind:40s} {name:14s} n={row['n']:2d}  upstream {row['upstream > 0']:.3f}  "
                  f"automatic {row['automatic']:.3f}  display {row['display']:.3f}  {extra}",
                  flush=True)
    print(f"\n{len(rows)} structures in {time.perf_counter() - t0:.0f} s\n")
    print("| volume kind | structure | slices | upstream > 0 | automatic | display window | "
          "CT preset | automatic ÷ upstream |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        preset = "  ".join(f"{k} {r[k]:.3f}" for k in ("lung", "bone") if k in r) or "—"
        print(f"| {r['kind']} ({r['modality']}) | {r['structure']} | {r['n']} | "
              f"{r['upstream > 0']:.3f} | {r['automatic']:.3f} | {r['display']:.3f} | {preset} | "
              f"{r['automatic'] / max(r['upstream > 0'], 1e-9):.2f} |")


if __name__ == "__main__":
    main()
