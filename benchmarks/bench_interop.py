"""Time the clinical exports and imports on the real DICOM CT (31 reference organs, 512²×20),
side by side with the NIfTI export, each including its read-back check; then the SEG variants
(BINARY / LABELMAP, uncompressed / lossless compressed): size, write (with its voxel-for-voxel
read-back check) and import time, each ÷ the default BINARY uncompressed SEG; the last column
names the Export ▸ DICOM SEG choice (and medsam-segment --seg-type/--seg-compression) that
writes each variant.

    python benchmarks/bench_interop.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model_input import cpu_model  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from medsam_gui.annotation.labels import LabelMap
    from medsam_gui.io import load_volume
    from medsam_gui.annotation.exporting import export_labels
    from medsam_gui.io.label_import import read_segmentation
    from test_dicom_export import CT, CT_LABELS

    volume = load_volume(CT)
    imported = read_segmentation(CT_LABELS, volume)
    lm = LabelMap(volume.shape, array=imported.array)
    n = len(set(imported.array.ravel().tolist()) - {0})
    print(f"CPU: {cpu_model()}; CT {volume.shape}, {n} labels; best of {args.repeat}")
    out = Path(tempfile.mkdtemp())
    export_labels(lm, volume, out / "warm.seg.dcm")  # imports and first-call costs
    export_labels(lm, volume, out / "warm.rtstruct.dcm")
    rows = [
        ("export NIfTI (+ 3 label files)", lambda: export_labels(lm, volume, out / "a.nii.gz")),
        ("export DICOM SEG", lambda: export_labels(lm, volume, out / "a.seg.dcm")),
        ("export RT Structure Set", lambda: export_labels(lm, volume, out / "a.rtstruct.dcm")),
        ("import NIfTI (reordered grid)", lambda: read_segmentation(CT_LABELS, volume)),
        ("import DICOM SEG", lambda: read_segmentation(out / "warm.seg.dcm", volume)),
        ("import RT Structure Set", lambda: read_segmentation(out / "warm.rtstruct.dcm",
                                                              volume)),
    ]
    base = None
    for name, fn in rows:
        t = best(fn, args.repeat)
        base = base or t
        print(f"{name:34s} {t:7.3f} s   {t / base:5.1f}x NIfTI export")
    for name in ("a.nii.gz", "a.seg.dcm", "a.rtstruct.dcm"):
        print(f"{name:16s} {(out / name).stat().st_size / 1e6:6.2f} MB")
    seg_variants(lm, volume, out, args.repeat)


def seg_variants(lm, volume, out: Path, repeat: int) -> None:
    from medsam_gui.annotation.exporting import segments_of
    from medsam_gui.io.dicom_seg import read_seg, seg_compression, write_seg

    segs = segments_of(lm)
    print(f"\n{'SEG variant':28s} {'MB':>7s} {'write s':>8s} {'read s':>7s} "
          f"{'size ÷':>7s} {'write ÷':>8s} {'read ÷':>7s}  window choice")
    base = None
    for labelmap, compression in ((False, None), (False, "jpeg2000"), (True, None),
                                  (True, "rle"), (True, "jpegls"), (True, "jpeg2000")):
        name = f"{'LABELMAP' if labelmap else 'BINARY'} {compression or 'uncompressed'}"
        path = out / f"{name.replace(' ', '_')}.seg.dcm"
        write = best(lambda: write_seg(lm.array, segs, volume, path, labelmap=labelmap,
                                       compression=compression), repeat)
        read = best(lambda: read_seg(path, volume), repeat)
        size = path.stat().st_size / 1e6
        base = base or (size, write, read)
        choice = next((f"{'label map' if labelmap else 'binary'}"
                       f"{', compressed' if compressed else ''}" for compressed in (False, True)
                       if seg_compression(labelmap, compressed) == compression), "CLI only")
        print(f"{name:28s} {size:7.2f} {write:8.2f} {read:7.2f} {size / base[0]:7.3f} "
              f"{write / base[1]:8.2f} {read / base[2]:7.2f}  {choice}")


if __name__ == "__main__":
    main()
