"""Screenshot of the real window: the demo BRATS FLAIR with a tumour mask from LiteMedSAM.

    python benchmarks/screenshot.py OUT.png            # needs a display; headless:
    xvfb-run -s "-screen 0 1400x900x24" python benchmarks/screenshot.py OUT.png

Opens the bundled demo case, goes to the axial slice with the largest tumour area, drags a box
around the tumour with synthetic mouse events (box from the BRATS ground truth when the data
pack is beside the repo, else the same box hard-coded), waits for the model's mask and writes
a PNG of the whole window. Annotations go to a temporary workspace.

--propagate then runs Segment ▸ Propagate from that slice, writes OUT-running.png while it is
filling (progress bar, strip), and OUT.png of a propagated slice ``--show`` slices above the
seed once it has finished.

--layout three propagates too, then switches to the three linked views (axial, coronal,
sagittal) with the crosshair on the tumour's centre of mass and writes OUT.png; --outline shows
the labels as outlines (and also writes OUT-fill.png with them filled).

--layout quad propagates too, then shows the 2×2 layout (axial, sagittal / coronal, 3D) with the
tumour's surface in the 3D pane, and prints the 3D pane's start-up time and the memory it added
(run it under xvfb-run -a: the offscreen platform has no OpenGL and the pane says so).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRUTH = REPO.parent / "shared" / "data" / "brain_tumour_brats2015" / "brats_2013_pat0001_1" \
    / "OTMultiClass.nii.gz"
FALLBACK = (63, (58.0, 76.0, 103.0, 166.0))  # axial slice, box (x0, y0, x1, y1) from the truth


def tumour_box(volume):
    if not TRUTH.exists():
        return FALLBACK
    import nibabel as nib

    truth = np.asarray(nib.load(str(TRUTH)).dataobj) > 0
    geom = volume.geometry("axial")
    index = int(np.argmax([geom.take(truth, i).sum() for i in range(geom.n_slices)]))
    m = geom.take(truth, index)
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return index, (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def wait_until(app, condition, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.01)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--size", default="1360x860", help="window size WxH")
    ap.add_argument("--propagate", action="store_true", help="propagate the box through the tumour")
    ap.add_argument("--show", type=int, default=-12, help="with --propagate: slice offset shown")
    ap.add_argument("--layout", choices=("single", "three", "quad"), default="single",
                    help="three: propagate, then the three linked views through the tumour; "
                         "quad: the 2x2 layout with the 3D view")
    ap.add_argument("--outline", action="store_true", help="with --layout three: outlines")
    args = ap.parse_args(argv)

    from PyQt5.QtCore import QSettings, Qt
    from PyQt5.QtTest import QTest
    from PyQt5.QtWidgets import QApplication

    from medsam_gui.resources import demo_volume_path
    from medsam_gui.ui.app import style_sheet
    from medsam_gui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(["medsam-gui"])
    app.setStyle("Fusion")
    app.setStyleSheet(style_sheet())
    tmp = tempfile.mkdtemp(prefix="medsam-shot-")
    window = MainWindow(background=False, workspace_dir=tmp,
                        settings=QSettings(str(Path(tmp) / "s.ini"), QSettings.IniFormat))
    window.confirm_close = False
    w, h = (int(v) for v in args.size.split("x"))
    window.resize(w, h)
    window.show()
    window.open_path(str(demo_volume_path()))
    wait_until(app, lambda: window.session is not None)
    index, box = tumour_box(window.volume)
    window.set_index(index)
    window.labels.rename(1, "tumour (whole)")
    view = window.slice_view
    p0, p1 = view.image_to_viewport(box[0], box[1]), view.image_to_viewport(box[2], box[3])
    done = []
    window.mask_applied.connect(lambda: done.append(time.time()))
    QTest.mousePress(view.viewport(), Qt.LeftButton, Qt.NoModifier, p0)
    QTest.mouseMove(view.viewport(), (p0 + p1) / 2)
    QTest.mouseMove(view.viewport(), p1)
    t0 = time.time()
    QTest.mouseRelease(view.viewport(), Qt.LeftButton, Qt.NoModifier, p1)
    wait_until(app, lambda: bool(done))
    if args.layout in ("three", "quad"):
        args.propagate = True
    if args.propagate:
        window.propagate_action.trigger()
        wait_until(app, lambda: window._fill_run is not None and len(window._fill_run.filled) >= 8)
        window.grab().save(str(Path(args.out).with_suffix("")) + "-running.png")
        wait_until(app, lambda: not window.filling, timeout=1800)  # a busy shared machine
        print(window.statusBar().currentMessage())
        if args.layout in ("three", "quad"):
            return three_views(app, window, args)
        index += args.show
        window.set_index(index)
    centre = view.image_to_viewport((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    QTest.mouseMove(view.viewport(), centre)  # fills the status bar (voxel, value)
    for _ in range(60):  # the labels panel updates its sizes 300 ms after the last change
        app.processEvents()
        time.sleep(0.01)
    window.grab().save(args.out)
    labels = window.labelmap.slice(window.volume.geometry("axial"), index) == 1
    print(f"slice {index}, box {box}, mask {int(labels.sum())} px, "
          f"box->mask {1000 * (done[0] - t0):.0f} ms (first box encodes the slice), "
          f"model {window.backend.name} on {window.backend.device}; wrote {args.out}")
    window.shutdown()
    return 0


def rss_mb() -> float:
    """Resident memory of this process now (Linux), MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def three_views(app, window, args) -> int:
    """The three linked views (or the 2×2 with 3D) with the crosshair on the propagated
    tumour's centre of mass."""
    from PyQt5.QtTest import QTest

    labels = window.labelmap.array == 1
    centre = tuple(int(round(c)) for c in np.argwhere(labels).mean(axis=0))
    rss0, t0 = rss_mb(), time.perf_counter()
    window.set_layout(args.layout)
    startup = time.perf_counter() - t0
    window.view_state.set_cursor(centre)
    if args.layout == "quad":
        pane = window.view3d
        wait_until(app, lambda: 1 in pane.meshes, timeout=120)
        meshed = time.perf_counter() - t0
        for _ in range(100):
            app.processEvents()
            time.sleep(0.01)
        verts, faces = pane.meshes[1]
        print(f"3D pane: {'OpenGL' if pane.gl is not None else 'no OpenGL: ' + pane.problem}; "
              f"made in {startup:.2f} s, first surface {meshed:.2f} s after the switch "
              f"({len(faces):,} triangles); memory +{rss_mb() - rss0:.0f} MB "
              f"(RSS {rss_mb():.0f} MB)")
    for _ in range(30):
        app.processEvents()
        time.sleep(0.01)
    # no fit() here: the window must fit its views itself, and the picture shows whether it does
    if args.outline:
        window.grab().save(str(Path(args.out).with_suffix("")) + "-fill.png")
        window.toggle_outlines()
    canvas = window.view_layout.views["axial"]
    row, col = window.view_state.cursor_pixel("axial")
    QTest.mouseMove(canvas.viewport(), canvas.image_to_viewport(col + 0.5, row + 0.5))
    for _ in range(60):
        app.processEvents()
        time.sleep(0.01)
    window.grab().save(args.out)
    state = window.view_state
    print(f"cursor voxel {state.cursor}; slices: "
          + ", ".join(f"{v} {state.index(v)}" for v in ("axial", "coronal", "sagittal"))
          + f"; {int(labels.sum())} labelled voxels; overlay {state.overlay}; wrote {args.out}")
    window.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
