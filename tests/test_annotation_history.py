"""Undo/redo restore exact arrays and provenance over 100+ steps with a small memory cost."""

from __future__ import annotations

import numpy as np

from medsam_gui.annotation import History, LabelMap, SliceRecord
from medsam_gui.volume import view_geometry

AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (240, 240, 155)  # the BRATS grid


def snapshot(lm):
    return lm.array.copy(), {k: v.to_json() for k, v in lm.records.items()}


def test_150_steps_undo_redo_exact():
    rng = np.random.default_rng(0)
    views = {v: view_geometry(AFFINE, SHAPE, v) for v in ("axial", "coronal", "sagittal")}
    lm = LabelMap(SHAPE)
    lm.table.add("two")
    hist = History(max_steps=200)
    states = [snapshot(lm)]
    for step in range(150):
        view = ("axial", "coronal", "sagittal")[step % 3]
        geom = views[view]
        index = int(rng.integers(60, 90))
        h, w = geom.slice_shape
        r, c, rad = int(rng.integers(20, h - 20)), int(rng.integers(20, w - 20)), int(rng.integers(3, 15))
        rr, cc = np.ogrid[:h, :w]
        mask = (rr - r) ** 2 + (cc - c) ** 2 <= rad**2
        value = int(rng.integers(1, 3))
        mode = ("replace", "add", "erase")[step % 3]
        if step % 7 == 0:
            rec = SliceRecord(view, index, value, status="model", boxes=[[c - rad, r - rad, c + rad, r + rad]])
            ch = lm.paint(geom, index, mask, value, mode, record=rec)
        elif step % 11 == 0:
            ch = lm.mark_accepted(view, index, value)
        else:
            ch = lm.paint(geom, index, mask, value, mode)
        if hist.push(ch):
            states.append(snapshot(lm))
    n = hist.n_undo
    assert n >= 100
    # small: every diff covers a bounding box and is compressed
    assert hist.nbytes < 2_000_000, hist.nbytes
    for k in range(n, 0, -1):
        assert hist.undo(lm) is not None
        arr, recs = states[k - 1]
        assert np.array_equal(lm.array, arr)
        assert {k2: v.to_json() for k2, v in lm.records.items()} == recs
    assert not hist.can_undo and hist.undo(lm) is None
    for k in range(1, n + 1):
        hist.redo(lm)
        arr, recs = states[k]
        assert np.array_equal(lm.array, arr)
        assert {k2: v.to_json() for k2, v in lm.records.items()} == recs
    assert not hist.can_redo


def test_push_drops_redo_and_bounds_steps():
    geom = view_geometry(AFFINE, (20, 20, 5), "axial")
    lm = LabelMap((20, 20, 5))
    hist = History(max_steps=3)
    for i in range(5):
        m = np.zeros(geom.slice_shape, bool)
        m[i, i] = True
        hist.push(lm.paint(geom, 0, m, 1, "add"))
    assert hist.n_undo == 3
    hist.undo(lm)
    assert hist.can_redo
    m = np.zeros(geom.slice_shape, bool)
    m[10, 10] = True
    hist.push(lm.paint(geom, 1, m, 1))
    assert not hist.can_redo
    assert not hist.push(lm.paint(geom, 1, m, 1))  # no pixel or record change: not a step
