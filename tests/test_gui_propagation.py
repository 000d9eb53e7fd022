"""The Segment menu in the real window: Propagate, Cancel, review keys, Interpolate, label sizes
(pytest-qt, offscreen, BRATS pat0001 FLAIR with its expert labels, the real model)."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt5.QtCore import Qt

from medsam_gui.annotation import SliceRecord
from test_gui_window import (FLAIR, backend, bbox, cache, dice, drag, make_window,  # noqa: F401
                             open_and_wait, tumour)

pytestmark = pytest.mark.needs_data


def truth_volume():
    import nibabel as nib

    from test_gui_window import TRUTH

    return np.asarray(nib.load(str(TRUTH)).dataobj) > 0


def wait_fill(qtbot, w):
    qtbot.waitUntil(lambda: not w.filling, timeout=180000)


def test_propagate_fills_the_tumour_and_undoes_in_one_step(qtbot, make_window, tumour):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    index, truth2d = tumour
    gt = truth_volume()
    geom = w.volume.geometry("axial")
    w.set_index(index - 3)
    w.set_extent_end(0)
    w.set_index(index + 3)
    w.set_extent_end(1)
    w.set_index(index)
    with qtbot.waitSignal(w.mask_applied, timeout=60000):
        drag(qtbot, w, bbox(truth2d))
    undo_before = w.history.n_undo
    w.propagate_action.trigger()
    assert w.filling and w.fill_progress.isVisible()
    # edits wait while it runs
    w.clear_slice()
    assert w.labelmap.slice(geom, index).any()
    wait_fill(qtbot, w)
    assert not w.fill_progress.isVisible()
    filled = [i for i in range(geom.n_slices) if (w.labelmap.slice(geom, i) == 1).any()]
    assert filled == list(range(index - 3, index + 4))
    for i in filled:
        assert dice(w.labelmap.slice(geom, i) == 1, geom.take(gt, i)) >= 0.7, i
    rec = w.labelmap.records[("axial", index + 2, 1)]
    assert (rec.method, rec.from_slices) == ("propagated", [index + 1])
    assert "extent" in w.statusBar().currentMessage()
    assert w.history.n_undo == undo_before + 1

    # the strip shows the review state; ] walks the review queue (most needed first) and says
    # why; accepting marks one and goes to the most needed of the rest
    assert w.strip.review[index] == "drawn" and w.strip.review[index + 1] == "filled"
    queue = [it.slice for it in w.review_queue_items()]
    assert sorted(queue) == [i for i in filled if i != index]
    qtbot.keyClick(w.slice_view, Qt.Key_BracketRight)
    first = w.index
    assert first == queue[0] and "To review 1/6" in w.statusBar().currentMessage()
    w.accept_and_next()
    assert w.index == queue[1]
    assert w.labelmap.records[("axial", first, 1)].status == "accepted"
    qtbot.waitUntil(lambda: w.strip.review[first] == "reviewed", timeout=5000)

    # the labels panel shows the volume in mL and the slice extent
    extent = f"axial {index - 3}–{index + 3}"
    qtbot.waitUntil(lambda: extent in w.labels.list.item(0).text(), timeout=5000)
    ml = float(w.labels.list.item(0).text().split("mL")[0].split()[-1])
    assert ml == pytest.approx((w.labelmap.array == 1).sum() / 1000.0, rel=0.01)  # 1 mm voxels

    w.undo()  # the accept
    w.undo()  # the whole propagation
    assert [i for i in range(geom.n_slices) if w.labelmap.slice(geom, i).any()] == [index]


def test_cancel_keeps_what_was_done(qtbot, make_window, tumour):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    index, truth2d = tumour
    geom = w.volume.geometry("axial")
    w.set_index(index)
    with qtbot.waitSignal(w.mask_applied, timeout=60000):
        drag(qtbot, w, bbox(truth2d))
    after_box = w.labelmap.array.copy()
    w.propagate_action.trigger()
    qtbot.waitUntil(lambda: w._fill_run is not None and len(w._fill_run.filled) >= 2,
                    timeout=120000)
    w.fill_cancel.click()
    wait_fill(qtbot, w)
    present = [i for i in range(geom.n_slices) if w.labelmap.slice(geom, i).any()]
    assert len(present) >= 3 and present == list(range(present[0], present[-1] + 1))
    assert "cancelled" in w.statusBar().currentMessage()
    w.undo()
    assert np.array_equal(w.labelmap.array, after_box)


def test_interpolate_between_two_accepted_slices(qtbot, make_window, tumour):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR, session=False)
    index, _ = tumour
    gt = truth_volume()
    geom = w.volume.geometry("axial")
    for k in (index - 5, index + 5):
        w.labelmap.paint(geom, k, geom.take(gt, k), 1,
                         record=SliceRecord("axial", k, 1, status="accepted"))
    w.set_index(index)
    w.interpolate_action.trigger()
    wait_fill(qtbot, w)
    filled = [i for i in range(geom.n_slices) if w.labelmap.slice(geom, i).any()]
    assert filled == list(range(index - 5, index + 6))
    scores = [dice(w.labelmap.slice(geom, i) == 1, geom.take(gt, i))
              for i in range(index - 4, index + 5)]
    assert np.mean(scores) >= 0.85  # measured 0.94 for a gap of 10 slices
    assert w.labelmap.records[("axial", index, 1)].method == "interpolated"
    w.undo()
    assert [i for i in range(geom.n_slices) if w.labelmap.slice(geom, i).any()] == \
        [index - 5, index + 5]


def test_propagate_without_a_mask_says_what_to_do(qtbot, make_window):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR)
    w.propagate_action.trigger()
    assert not w.filling
    assert "Draw a box" in w.statusBar().currentMessage()


def test_interpolate_with_one_key_slice_says_why(qtbot, make_window, tumour):
    w = make_window()
    open_and_wait(qtbot, w, FLAIR, session=False)
    index, truth2d = tumour
    geom = w.volume.geometry("axial")
    w.labelmap.paint(geom, index, truth2d, 1, record=SliceRecord("axial", index, 1,
                                                                 status="accepted"))
    w.interpolate_action.trigger()
    wait_fill(qtbot, w)
    assert "at least two slices" in w.statusBar().currentMessage()
    assert w.history.n_undo == 0
