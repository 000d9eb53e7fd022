"""GUI latencies on real data, printed (not asserted).

    xvfb-run -s "-screen 0 1400x900x24" python benchmarks/bench_gui.py     # or any display

1. box release -> overlay painted (synthetic mouse release on the real window, then a
   synchronous repaint), median and p95, divided by the core's raw ``Session.predict`` time on
   the same boxes measured in the same run (BRATS FLAIR tumour slice, embedding cached).
2. slice change -> image painted, for 240x240 (BRATS) and 512x512 (abdomen CT DICOM) slices.
3. longest event-loop stall while the background precompute encodes the slices around the
   current one (capped to --slices slices), measured by a 10 ms QTimer recording gaps, first
   with the GUI idle, then while the user scrolls every 50 ms.
"""

from __future__ import annotations

import argparse
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


def stats(ms):
    a = np.asarray(ms)
    return float(np.median(a)), float(np.percentile(a, 95))


def bench_window(tmp: Path, background: bool, size=(1280, 720)):
    """(QApplication, a shown MainWindow) styled as the app is, its workspace, settings and
    embedding cache (memory only) under ``tmp``; the model loads as in the app."""
    from PyQt5.QtCore import QSettings
    from PyQt5.QtWidgets import QApplication

    from medsam_gui.engine import EmbeddingCache
    from medsam_gui.ui.app import style_sheet
    from medsam_gui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(["bench"])
    app.setStyle("Fusion")
    app.setStyleSheet(style_sheet())
    w = MainWindow(background=background, workspace_dir=str(tmp / "ws"), cache=EmbeddingCache(),
                   settings=QSettings(str(tmp / "s.ini"), QSettings.IniFormat))
    w.confirm_close = False
    w.use_disk_cache = False
    w.resize(*size)
    w.show()
    return app, w


def wait_for(app, cond, timeout: float = 300.0) -> None:
    """Run the event loop until ``cond()`` (TimeoutError after ``timeout`` seconds)."""
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            raise TimeoutError
        app.processEvents()
        time.sleep(0.002)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=30)
    ap.add_argument("--slices", type=int, default=40, help="slices encoded in the stall test")
    args = ap.parse_args(argv)

    import nibabel as nib
    from PyQt5.QtCore import Qt, QTimer
    from PyQt5.QtTest import QTest

    tmp = tempfile.mkdtemp(prefix="medsam-bench-")
    app, w = bench_window(Path(tmp), background=False, size=(1360, 860))

    def wait_until(cond, timeout=300.0):
        return wait_for(app, cond, timeout)

    def settle(n=5):
        for _ in range(n):
            app.processEvents()

    w.open_path(str(FLAIR))
    wait_until(lambda: w.session is not None)
    session, view = w.session, w.slice_view
    import os

    import torch

    print(f"platform {app.platformName()}, model {w.backend.name} on {w.backend.device} "
          f"({w.backend.precision}), torch threads {torch.get_num_threads()}, "
          f"load average before {os.getloadavg()[0]:.1f}")

    # ---- 1. box release -> overlay painted -------------------------------------------------
    truth = np.asarray(nib.load(str(TRUTH)).dataobj) > 0
    geom = w.volume.geometry("axial")
    index = int(np.argmax([geom.take(truth, i).sum() for i in range(geom.n_slices)]))
    m = geom.take(truth, index)
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    base = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], float)
    w.set_index(index)
    session.embed("axial", index)  # cached before timing: the instant path
    rng = np.random.default_rng(0)
    app_ms, raw_ms = [], []
    painted = []
    w.mask_applied.connect(lambda: painted.append(1))
    for k in range(args.boxes + 3):
        # corners move >= 3 px each time, so a press never lands on the previous box's corner
        # handle (that would redraw the box instead of drawing a new one)
        sign = 1 if k % 2 else -1
        box = base + sign * np.array([4, 4, 0, 0]) + rng.integers(-2, 3, 4) * [0, 0, 1, 1]
        p0, p1 = view.image_to_viewport(box[0], box[1]), view.image_to_viewport(box[2], box[3])
        QTest.mousePress(view.viewport(), Qt.LeftButton, Qt.NoModifier, p0)
        QTest.mouseMove(view.viewport(), p1)
        settle()
        t0 = time.perf_counter()
        QTest.mouseRelease(view.viewport(), Qt.LeftButton, Qt.NoModifier, p1)
        view.viewport().repaint()
        t1 = time.perf_counter()
        b = view.to_image(p0), view.to_image(p1)
        t2 = time.perf_counter()
        session.predict("axial", index, (b[0].x(), b[0].y(), b[1].x(), b[1].y()))
        t3 = time.perf_counter()
        if k >= 3:  # warm-up
            app_ms.append(1000 * (t1 - t0))
            raw_ms.append(1000 * (t3 - t2))
        settle()
    assert len(painted) == args.boxes + 3, "a box did not reach the model"
    (am, ap95), (rm, rp95) = stats(app_ms), stats(raw_ms)
    print(f"box release -> overlay painted: median {am:.1f} ms, p95 {ap95:.1f} ms; raw "
          f"Session.predict median {rm:.1f} ms, p95 {rp95:.1f} ms; ratio (median) "
          f"{am / rm:.2f}x, (p95) {ap95 / rp95:.2f}x  [{args.boxes} boxes]")

    # ---- 2. slice change -> image painted -------------------------------------------------------
    def slice_change(label):
        n = w.volume.n_slices("axial")
        times = []
        for k in range(60):
            i = n // 2 + (k % 10) - 5
            t0 = time.perf_counter()
            w.set_index(i)
            view.viewport().repaint()
            times.append(1000 * (time.perf_counter() - t0))
        med, p95 = stats(times[5:])
        shape = w.volume.geometry("axial").slice_shape
        print(f"slice change -> painted, {label} {shape[0]}x{shape[1]}: median {med:.1f} ms, "
              f"p95 {p95:.1f} ms")

    slice_change("BRATS FLAIR")

    # ---- 3. event-loop stall during background precompute ----------------------------------
    def stall_run(scroll: bool) -> None:
        gaps, last = [], [time.perf_counter()]

        def tick():
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        timer = QTimer()
        timer.timeout.connect(tick)
        center = w.index
        pre = w.precomputer
        pre.enabled, pre.radius = True, args.slices // 2
        n = pre.radius * 2 + 1
        scroll_timer = QTimer()
        flip = [0]

        def scroll_once():
            flip[0] ^= 1
            w.set_index(center + flip[0])

        scroll_timer.timeout.connect(scroll_once)
        t0 = time.perf_counter()
        timer.start(10)
        if scroll:
            scroll_timer.start(50)
        pre.follow(session, "axial", center, immediate=True)
        wait_until(lambda: len(session.cached_indices("axial")) >= min(
            n, w.volume.n_slices("axial")) and not pre.running, timeout=1800)
        timer.stop()
        scroll_timer.stop()
        pre.enabled = False
        elapsed = time.perf_counter() - t0
        g = np.asarray(gaps) * 1000
        print(f"precompute {'while scrolling every 50 ms' if scroll else 'GUI idle'}: "
              f"{elapsed:.1f} s for up to {n} slices ({elapsed / n:.2f} s/slice); event loop "
              f"gap max {g.max():.1f} ms, p99 {np.percentile(g, 99):.1f} ms, "
              f"median {np.median(g):.1f} ms (timer interval 10 ms)")

    w.set_index(w.volume.n_slices("axial") // 2)
    session.cache.clear()
    stall_run(scroll=False)
    session.cache.clear()
    stall_run(scroll=True)

    # ---- 2b. 512x512 CT ----------------------------------------------------------------------------
    w.open_path(str(CT))
    wait_until(lambda: w.volume is not None and w.volume.shape[0] == 512)
    settle()
    slice_change("abdomen CT DICOM")
    w.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
