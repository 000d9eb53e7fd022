"""Big scans in the window: time to the first image and to the first mask, the longest freeze
of the event loop while the scan opens, and scrolling, on 20- and 800-slice versions of the
same CT, side by side in one run (printed, not asserted).

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/bench_window_scale.py

The CT is the visible JPEG 2000 abdominal CT tiled along z (``bench_scale.build``), written to
a temporary folder. For each size, in one process and one window (model loaded once):

- ``nibabel``      the reference read of the same file, in this process, just before the open;
- ``first image``  ``open_path`` -> ``volume_loaded`` (the read, the content hash and the
                   workspace run in a worker; the image is painted on that signal);
- ``freeze``       the longest gap of a 10 ms QTimer during the open (the GUI thread's
                   longest stall: what a user would feel as a frozen window);
- ``first mask``   a box dragged on the liver slice (not yet encoded) -> ``mask_applied``;
- ``scroll``       one slice step + repaint, median of 40.

A first pass on the smallest size is not counted: it warms up the first box and waits until
the runtime's conversions in the background (OpenVINO) are done.

Ratios: first image ÷ nibabel's read of the same file; the 800-slice column ÷ the 20-slice one.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, nargs="+", default=[20, 800])
    args = ap.parse_args(argv)

    import nibabel as nib
    from PyQt5.QtCore import Qt, QTimer
    from PyQt5.QtTest import QTest

    from bench_gui import bench_window, wait_for
    from bench_scale import box_slice, build

    tmp = Path(tempfile.mkdtemp(prefix="medsam-bench-window-"))
    paths, vox_box, _ = build(tmp, sorted(set(args.slices)))
    os.environ["MEDSAM_GUI_DATA_DIR"] = str(tmp / "data")
    app, w = bench_window(tmp, background=True)

    def wait_until(cond, timeout=1800.0):
        return wait_for(app, cond, timeout)

    wait_until(lambda: w.backend is not None)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; platform {app.platformName()}; "
          f"model {w.backend.name} ({w.backend.precision}); load average "
          f"{os.getloadavg()[0]:.1f}")
    rows = {}
    sizes = sorted(set(args.slices))
    for n in [sizes[0]] + sizes:  # the first pass warms up (first box, runtime conversions)
        warm_up = not rows
        if w.session is not None:
            w.session.cache.clear()  # the box slice is encoded anew on every pass
        if w.volume is not None:
            w.close_scan()
        shutil.rmtree(tmp / "ws", ignore_errors=True)  # nothing restored: a fresh box each pass
        path = paths[n]
        t0 = time.perf_counter()
        np.asanyarray(nib.load(str(path)).dataobj)
        t_read = time.perf_counter() - t0

        gaps, last = [], [time.perf_counter()]

        def tick():
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        timer = QTimer()
        timer.timeout.connect(tick)
        loaded = []
        on_loaded = w.volume_loaded.connect(lambda: loaded.append(time.perf_counter()))
        timer.start(10)
        last[0] = t0 = time.perf_counter()
        w.open_path(str(path))
        wait_until(lambda: loaded)
        w.slice_view.viewport().repaint()
        t_image = time.perf_counter() - t0
        end = time.perf_counter() + 0.05  # let the timer tick once more: a stall that ends
        while time.perf_counter() < end:  # with volume_loaded is measured by the next tick
            app.processEvents()
            time.sleep(0.002)
        timer.stop()
        w.volume_loaded.disconnect(on_loaded)
        wait_until(lambda: w.session is not None)

        # the box on the liver slice of a tile near the middle, in display coordinates
        k = box_slice(n)
        geom = w.volume.geometry("axial")
        probe = np.zeros(w.volume.shape[:2] + (1,), bool)
        probe[vox_box[0]:vox_box[2] + 1, vox_box[1]:vox_box[3] + 1, 0] = True
        shown = geom.take(np.broadcast_to(probe, w.volume.shape[:2] + (1,)), 0)
        rr, cc = np.flatnonzero(shown.any(1)), np.flatnonzero(shown.any(0))
        w.set_index(k)
        view = w.slice_view
        p0 = view.image_to_viewport(cc[0], rr[0])
        p1 = view.image_to_viewport(cc[-1] + 1, rr[-1] + 1)
        masks = []
        on_mask = w.mask_applied.connect(lambda: masks.append(time.perf_counter()))
        QTest.mousePress(view.viewport(), Qt.LeftButton, Qt.NoModifier, p0)
        QTest.mouseMove(view.viewport(), p1)
        t0 = time.perf_counter()
        QTest.mouseRelease(view.viewport(), Qt.LeftButton, Qt.NoModifier, p1)
        wait_until(lambda: masks)
        t_mask = masks[0] - t0
        w.mask_applied.disconnect(on_mask)

        steps = []
        for s in range(40):
            t0 = time.perf_counter()
            w.set_index(k + (1 if s % 2 == 0 else 0))
            view.viewport().repaint()
            steps.append(time.perf_counter() - t0)
        if warm_up:
            rows["warm"] = {}
            wait_until(lambda: "preparing" not in w.model_label.text(), timeout=900)
            print(f"warm-up on {n} slices: first mask {t_mask:.2f} s; model now "
                  f"{w.model_label.text()!r}", flush=True)
            continue
        rows[n] = dict(read=t_read, image=t_image, freeze=max(gaps) if gaps else 0.0,
                       mask=t_mask, scroll=float(np.median(steps)),
                       label=int((w.labelmap.array == 1).sum()))
        print(f"{n} slices: done (load average {os.getloadavg()[0]:.1f})", flush=True)
    w.shutdown()
    rows.pop("warm", None)
    print()
    print("| step | " + " | ".join(f"{n} slices" for n in sizes) +
          (f" | {sizes[-1]} ÷ {sizes[0]}" if len(sizes) > 1 else "") + " |")
    print("|---" * (len(sizes) + 1 + (len(sizes) > 1)) + "|")

    def line(name, key, fmt="{:.2f} s"):
        vals = [rows[n][key] for n in sizes]
        ratio = f" | {vals[-1] / vals[0]:.2f}×" if len(sizes) > 1 and vals[0] else ""
        print(f"| {name} | " + " | ".join(fmt.format(v) for v in vals) + ratio + " |")

    line("nibabel read", "read")
    line("first image (open)", "image")
    print("| first image ÷ read | " + " | ".join(
        f"{rows[n]['image'] / rows[n]['read']:.2f}×" for n in sizes) +
        (" |  |" if len(sizes) > 1 else " |"))
    line("longest GUI freeze during open", "freeze", "{:.3f} s")
    line("first mask (box on an unencoded slice)", "mask")
    line("scroll one slice (median)", "scroll", "{:.4f} s")
    for n in sizes:
        if not rows[n]["label"]:
            print(f"warning: no mask on the {n}-slice scan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
