"""Redraw cost of the three linked views against the single view, printed (not asserted).

    python benchmarks/bench_views.py              # offscreen by default; any display works
    xvfb-run -s "-screen 0 1600x1000x24" python benchmarks/bench_views.py

On the real window (no model), for two scans with a label map on them:

- BRATS pat0001 FLAIR (240x240x155) with its expert labels;
- a 512x512x300 CT: the real 512x512x20 abdominal CT (DICOM series in the data pack) with its
  TotalSegmentator organ labels, its 20 slices repeated 15 times along z (no such large CT
  is in the data pack; the voxels and labels are real, only the stack is repeated), written as
  a temporary NIfTI and opened like any scan.

Measured, each followed by a synchronous repaint of every visible view:

- single, 8804b27 path: the single view's slice change as the window did it before the linked
  views (grey image and overlay rendered anew, the old overlay renderer), on the same canvas;
- single: the single view, slice change (new grey image + overlay of that slice);
- single, mask change: a brush stroke on the slice shown;
- three, cursor move: the crosshair jumps to another voxel (all three slices change);
- three, mask change: a brush stroke on the axial slice through the crosshair (the axial
  overlay and the two cross-plane overlays it crosses are redrawn; the grey images are not).

Blocks of single and three are interleaved in one run; medians are printed with the ratio
three / single.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FLAIR = DATA / "brain_tumour_brats2015" / "brats_2013_pat0001_1" / "Flair_subtrMeanDivStd.nii.gz"
TRUTH = FLAIR.with_name("OTMultiClass.nii.gz")
CT = DATA / "dicom" / "ct_abdomen_siemens_jpeg2000"
CT_LABELS = DATA / "dicom" / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model_input import cpu_model  # noqa: E402


def big_ct(tmp: Path, repeats: int):
    """The 512x512x20 CT and its labels stacked ``repeats`` times along z, as NIfTI files."""
    import nibabel as nib

    from medsam_gui.io import load_volume

    vol = load_volume(CT)
    labels = np.asarray(nib.load(str(CT_LABELS)).dataobj).astype(np.uint8)
    assert labels.shape == vol.shape, (labels.shape, vol.shape)
    axis = vol.geometry("axial").slice_axis
    data = np.concatenate([vol.data] * repeats, axis=axis)
    lab = np.concatenate([labels] * repeats, axis=axis)
    path = tmp / "ct_512x512x300.nii"
    nib.save(nib.Nifti1Image(data, vol.affine), str(path))
    return path, lab


def overlay_8804b27(label2d, lut):
    """The overlay renderer as it was at 8804b27 (before the linked views), for the baseline."""
    import qimage2ndarray

    if not label2d.any():
        return None
    if int(label2d.max()) >= len(lut):
        lut = np.vstack([lut, np.tile([[160, 160, 160, lut[:, 3].max() or 128]],
                                      (int(label2d.max()) + 1 - len(lut), 1))]).astype(np.uint8)
    rgba = lut[label2d]
    if not rgba[..., 3].any():
        return None
    return qimage2ndarray.array2qimage(rgba, normalize=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="redraws per block")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved blocks per layout")
    ap.add_argument("--repeats", type=int, default=15, help="CT stack repeats (20 slices each)")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import nibabel as nib
    from PyQt5.QtCore import QSettings
    from PyQt5.QtWidgets import QApplication

    from medsam_gui.ui import render
    from medsam_gui.ui.app import style_sheet
    from medsam_gui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(["bench"])
    app.setStyle("Fusion")
    app.setStyleSheet(style_sheet())
    tmp = Path(tempfile.mkdtemp(prefix="medsam-bench-views-"))
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); Qt platform "
          f"{app.platformName()}; {args.rounds} interleaved blocks of {args.n} per case")

    def settle(n=3):
        for _ in range(n):
            app.processEvents()

    cases = [("BRATS FLAIR 240x240x155", FLAIR,
              np.asarray(nib.load(str(TRUTH)).dataobj).astype(np.uint8))]
    ct_path, ct_labels = big_ct(tmp, args.repeats)
    cases.append((f"CT 512x512x{20 * args.repeats}", ct_path, ct_labels))

    for name, path, labels in cases:
        w = MainWindow(background=False, workspace_dir=str(tmp / "ws"), load_model=False,
                       settings=QSettings(str(tmp / "s.ini"), QSettings.IniFormat))
        w.confirm_close = False
        w.resize(1560, 960)
        w.show()
        done = []
        w.volume_loaded.connect(lambda: done.append(1))
        w.open_path(str(path))
        while not done:
            settle()
            time.sleep(0.01)
        for v in range(1, int(labels.max()) + 1):
            w.labelmap.table.add(f"label {v}")
        w.labels.set_table(w.labelmap.table)
        w.labelmap.array[...] = labels
        w._rebuild_lut()
        w._refresh_overlay()
        vol = w.volume
        centre = tuple(int(c) for c in np.argwhere(labels > 0).mean(axis=0))
        rng = np.random.default_rng(0)

        def repaint():
            for view in w.view_layout.visible():
                w.view_layout.views[view].viewport().repaint()

        def timed(fn):
            t0 = time.perf_counter()
            fn()
            repaint()
            return 1000.0 * (time.perf_counter() - t0)

        axial = vol.geometry("axial")
        brush = np.zeros(axial.slice_shape, bool)

        def stroke(index, row, col):
            """A 12x12 brush dab over (row, col) of axial slice ``index``, placed at random so
            each dab differs from the last one drawn (it is undone after timing); it always
            covers (row, col), so in three views it crosses both cross planes."""
            dr, dc = (int(v) for v in rng.integers(-5, 6, 2))
            brush[...] = False
            brush[max(row + dr - 6, 0):row + dr + 6, max(col + dc - 6, 0):col + dc + 6] = True
            w.annotator.stroke("axial", index, 1, brush, False)
            w._refresh_overlay()

        results = {k: [] for k in ("old single", "single slice", "single mask", "three cursor",
                                   "three mask")}

        def old_slice_change(k):
            canvas, sp = w.view_layout.views["axial"], vol.spacing
            canvas.set_image(render.gray_image(vol.slice("axial", k), w.window_lw),
                             (sp[axial.col_axis], sp[axial.row_axis]))
            canvas.set_overlay(overlay_8804b27(w.labelmap.slice(axial, k), w._lut))

        def time_strokes(key):
            """Brush dabs through the crosshair at the volume centre, each undone after."""
            w.view_state.set_cursor(centre)
            settle()
            for _ in range(args.n):
                row, col = w.view_state.cursor_pixel("axial")
                results[key].append(timed(lambda: stroke(w.index, row, col)))
                w.annotator.undo()

        for _round in range(args.rounds):
            w.set_layout("single")
            w.set_view("axial")
            settle()
            for _ in range(args.n):
                k = int(rng.integers(0, axial.n_slices))
                results["old single"].append(timed(lambda: old_slice_change(k)))
            w.set_index(0)
            w.painters["axial"].reset()  # it drew behind the painter's back
            for _ in range(args.n):
                k = int(rng.integers(0, axial.n_slices))
                results["single slice"].append(timed(lambda: w.set_index(k)))
            single_size = w.slice_view.viewport().size()
            time_strokes("single mask")
            w.set_layout("three")
            settle()
            for _ in range(args.n):
                voxel = tuple(int(rng.integers(0, s)) for s in vol.shape)
                results["three cursor"].append(timed(lambda: w.view_state.set_cursor(voxel)))
            time_strokes("three mask")
        med = {k: float(np.median(v)) for k, v in results.items()}
        p95 = {k: float(np.percentile(v, 95)) for k, v in results.items()}
        size = w.view_layout.views["axial"].viewport().size()
        print(f"\n{name}: single view {single_size.width()}x{single_size.height()} px, "
              f"three views {size.width()}x{size.height()} px each")
        for k in results:
            print(f"  {k:13s} median {med[k]:6.1f} ms  p95 {p95[k]:6.1f} ms")
        print(f"  three views after a cursor move / single view after a slice change: "
              f"{med['three cursor'] / med['single slice']:.2f}x  "
              f"(/ the 8804b27 single view: {med['three cursor'] / med['old single']:.2f}x)")
        print(f"  three views after a mask change / single view after a mask change:  "
              f"{med['three mask'] / med['single mask']:.2f}x")
        w.shutdown()
        w.deleteLater()
        settle()
    return 0


if __name__ == "__main__":
    sys.exit(main())
