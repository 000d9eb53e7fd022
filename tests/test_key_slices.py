"""Key slices (engine.key_slices): a structure propagated from every key slice, never over one,
never across an empty one; the command line (--boxes with two boxes and an empty entry) and
the window (Propagate from a fix, Clear slice on an empty slice) do the same.

The engine's rules are checked with a predictor that answers each slice with its reference
mask (the abdominal MR's spleen), so what is checked is where fronts go, not the model. The
command line runs end to end with the real model on that spleen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest

from conftest import ABDOMEN, queue_labelmap

pytestmark = pytest.mark.needs_data

MR = ABDOMEN / "example_mr_sm.nii.gz"
SPLEEN = 1  # on slices 8..19 of the MR's 20 axial slices


@pytest.fixture(scope="module")
def mr():
    from medsam_gui.io import load_volume

    vol = load_volume(MR)
    seg = np.asarray(nib.load(str(ABDOMEN / "example_seg_mr.nii.gz")).dataobj)
    return vol, seg == SPLEEN


@dataclass
class _Pred:
    mask: np.ndarray
    iou: float


def _area(box):
    return (box[2] - box[0]) * (box[3] - box[1])


class Reference:
    """A stand-in session: each slice's reference mask, with an IoU estimate that grows with
    the prompt box's area on odd slices and falls with it on even ones (so the ``score``
    rule's choice is known)."""

    def __init__(self, volume, truth):
        self.volume, self.geom, self.truth = volume, volume.geometry("axial"), truth
        self.calls = []

    def predict(self, axis, index, box):
        self.calls.append(index)
        sign = 1 if index % 2 else -1
        return _Pred(self.geom.take(self.truth, index).copy(), 0.7 + sign * _area(box) / 1e5)


def _events(session, keys, **kw):
    from medsam_gui.engine.key_slices import propagate_keys
    from medsam_gui.engine.propagation import Step

    events = list(propagate_keys(session, "axial", keys, **kw))
    return ([e for e in events if isinstance(e, Step)],
            [e for e in events if not isinstance(e, Step)])


def test_fronts_meet_and_never_touch_or_cross_a_key_slice(mr):
    vol, truth = mr
    geom = vol.geometry("axial")
    present = [i for i in range(geom.n_slices) if geom.take(truth, i).any()]
    assert present == list(range(8, 20))
    ref = Reference(vol, truth)
    key = {i: [geom.take(truth, i)] for i in (10, 15)}
    steps, stops = _events(ref, {**key, 18: []}, meet="nearest")  # 18: "no spleen here"
    filled = sorted(s.index for s in steps)
    assert filled == [9, 11, 12, 13, 14, 16, 17]  # each once; 10, 15 and 18 never
    assert not {10, 15, 18} & set(ref.calls) and 19 not in ref.calls  # nor crossed
    owner = {s.index: s.seed for s in steps}
    assert [owner[i] for i in (11, 12, 13, 14)] == [10, 10, 15, 15]  # the nearer key slice
    reasons = {(s.seed, s.direction): s.reason for s in stops}
    assert reasons[(15, 1)] == "empty key slice 18"
    assert reasons[(10, -1)] == "mask of 22 px (< 25)"  # the spleen's last 22 px on slice 8
    assert {reasons[(10, 1)], reasons[(15, -1)]} <= {"met the front from key slice 10",
                                                     "met the front from key slice 15",
                                                     "key slice 15", "key slice 10"}
    assert sorted(ref.calls) == sorted(filled + [8])  # nearest: no slice decoded twice

    # the score rule: both fronts cross the gap, the surer mask wins: on odd slices the one
    # prompted by the larger box (the larger neighbour's), on even ones the smaller
    from medsam_gui.engine.evaluate import mask_box

    ref = Reference(vol, truth)
    steps, _ = _events(ref, key, meet="score")
    assert sorted(ref.calls) == [8, 9] + sorted(2 * list(range(11, 15))) + [16, 17, 18, 19]
    pad = 3.0 * max(geom.slice_shape) / 256
    box = {i: _area(mask_box(geom.take(truth, i), pad)) for i in range(10, 16)}
    want = {i: 10 if (box[i - 1] > box[i + 1]) == bool(i % 2) else 15 for i in range(11, 15)
            if box[i - 1] != box[i + 1]}
    assert len(want) >= 2 and len(set(want.values())) == 2, box  # both fronts win somewhere
    assert {s.index: s.seed for s in steps if s.index in want} == want

    # around a fixed slice: only the gaps beside it are propagated
    ref = Reference(vol, truth)
    keys = {i: [geom.take(truth, i)] for i in (9, 12, 16)}
    steps, _ = _events(ref, keys, around=12, meet="nearest")
    assert sorted(s.index for s in steps) == [10, 11, 13, 14, 15]
    steps, _ = _events(ref, keys, around=16)  # the default, score
    assert sorted(s.index for s in steps) == [13, 14, 15, 17, 18, 19]
    with pytest.raises(ValueError):
        _events(ref, keys, around=11)


def test_a_front_that_agrees_with_the_old_fill_hands_over_to_it(mr):
    """``fills``: a front stops on the first slice where its mask agrees with the old fill,
    leaving that fill and those beyond it (``kept_fills``); where it disagrees it writes."""
    from medsam_gui.engine.key_slices import AGREED, kept_fills

    vol, truth = mr
    geom = vol.geometry("axial")
    keys = {12: [geom.take(truth, 12)]}
    fills = {i: geom.take(truth, i) for i in (9, 10, 11, 13, 14, 15)}
    fills[13] = np.roll(fills[13], 40, axis=1)  # a wrong old fill just above the key slice
    steps, stops = _events(Reference(vol, truth), keys, fills=fills)
    assert [s.index for s in steps] == [13]  # rewritten; 11 and 14 agree with the old fill
    reasons = {s.direction: (s.index, s.reason) for s in stops}
    assert reasons == {1: (14, f"{AGREED} at slice 14"), -1: (11, f"{AGREED} at slice 11")}
    assert kept_fills(stops, (0, 19), lambda i: i != 12) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                             11] + list(range(14, 20))
    assert kept_fills(stops, (10, 16), lambda i: i != 12) == [10, 11, 14, 15, 16]


def test_cli_two_key_slices_and_an_empty_one(mr, tmp_path):
    from medsam_gui.engine.evaluate import dice
    from medsam_gui.engine.segment_cli import main

    vol, truth = mr
    boxes = []
    for k in (10, 15):
        xs, ys = np.nonzero(truth[:, :, k])
        boxes.append({"axis": 2, "slice": k, "label": 3,
                      "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]})
    empty = {"axis": 2, "slice": 7, "label": 3, "empty": True}  # where the spleen has ended
    (tmp_path / "keys.json").write_text(json.dumps(boxes))
    (tmp_path / "all.json").write_text(json.dumps(boxes + [empty]))
    only, out, qpath = (tmp_path / n for n in ("boxes_only.nii.gz", "labels.nii.gz", "queue.json"))
    assert main([str(MR), "--boxes", str(tmp_path / "keys.json"), "--out", str(only)]) == 0
    assert main([str(MR), "--boxes", str(tmp_path / "all.json"), "--propagate", "--queue",
                 str(qpath), "--out", str(out)]) == 0
    keys = np.asarray(nib.load(str(only)).dataobj)
    labels = np.asarray(nib.load(str(out)).dataobj)
    for k in (10, 15):  # the key slices hold the boxes' masks, untouched by propagation
        assert dice(labels[:, :, k] == 3, truth[:, :, k]) > 0.8
    assert np.array_equal(labels[:, :, 10], keys[:, :, 10])
    # the box on 15, a slice the first key slice's propagation fills, corrects that fill: the
    # box's own mask with the fill inside the box added (engine.correction)
    assert not ((keys[:, :, 15] == 3) & (labels[:, :, 15] != 3)).any()
    present = np.flatnonzero((labels == 3).any(axis=(0, 1))).tolist()
    assert min(present) == 8  # the lower front stopped at the empty key slice 7
    assert {9, 11, 12, 13, 14, 16, 17} <= set(present)
    # measured 0.781; with the empty key slice at 18 instead of 7, the lower front ran on to
    # slice 0 (Dice 0.706 on slices 0..17)
    assert dice(labels == 3, truth) > 0.75
    queue = json.loads(qpath.read_text())
    queued = {q["slice"] for q in queue}
    assert queued and not queued & {7, 10, 15}  # key slices are not queued
    # an empty entry that also has a box, or a malformed one: exit 2, nothing written
    (tmp_path / "bad.json").write_text(json.dumps(boxes + [dict(empty, slice=15)]))
    assert main([str(MR), "--boxes", str(tmp_path / "bad.json"), "--out",
                 str(tmp_path / "bad.nii.gz")]) == 2
    (tmp_path / "bad2.json").write_text(json.dumps([dict(empty, box=[1, 1, 5, 5])]))
    assert main([str(MR), "--boxes", str(tmp_path / "bad2.json"), "--out",
                 str(tmp_path / "bad.nii.gz")]) == 2
    assert not (tmp_path / "bad.nii.gz").exists()


# ---- the window ------------------------------------------------------------------------------
@pytest.fixture
def window(qtbot, tmp_path):
    from PyQt5.QtCore import QSettings

    from medsam_gui.ui.main_window import MainWindow

    w = MainWindow(background=False, workspace_dir=str(tmp_path / "ws"), load_model=False,
                   settings=QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    w.confirm_close = False
    w.use_disk_cache = False
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    qtbot.waitExposed(w)
    yield w
    from PyQt5 import sip

    if not sip.isdeleted(w):
        w.shutdown()


def _open(qtbot, w, session=False):
    with qtbot.waitSignal(w.volume_loaded, timeout=60000):
        w.open_path(str(MR))
    if session:
        qtbot.waitUntil(lambda: w.session is not None, timeout=60000)


def _answer(text):
    """Click the button ``text`` of the next modal dialog; returns the texts of those seen."""
    from PyQt5.QtCore import QTimer
    from PyQt5.QtWidgets import QApplication

    seen = []

    def click():
        box = QApplication.activeModalWidget()
        if box is None:
            QTimer.singleShot(20, click)
            return
        seen.append(box.text())
        next(b for b in box.buttons() if b.text() == text).click()

    QTimer.singleShot(0, click)
    return seen


def test_window_accepts_a_range_in_one_step_and_asks_before_exporting(qtbot, window, mr,
                                                                      tmp_path, monkeypatch):
    from PyQt5.QtCore import QPoint, Qt

    from medsam_gui.annotation import review
    from medsam_gui.annotation.exporting import segments_of
    from medsam_gui.engine.evaluate import mask_box
    from medsam_gui.engine.propagation import Step
    from medsam_gui.ui import window_io
    from medsam_gui.ui.filling import FillRun

    vol, truth = mr
    w = window
    _open(qtbot, w)
    geom = w.volume.geometry("axial")
    run = FillRun(w.annotator, "axial", 1, "LiteMedSAM")  # a propagation of the spleen
    for i in range(9, 20):
        m = geom.take(truth, i).copy()
        run.add_step(Step(i, 1, i - 1, m, [mask_box(m)], [0.9 - 0.02 * i], [m], seed=8))
    run.finish("propagate")
    w.changed()
    states = lambda: review.slice_states(w.labelmap, geom, 1)  # noqa: E731
    assert states()[9:20] == ["filled"] * 11
    undo_steps = w.annotator.history.n_undo

    # Shift-drag over slices 11..14 of the strip accepts them, one undo step
    strip = w.strip
    cell = (strip.width() - 2 * strip.inset) / strip.n
    x = lambda i: int(strip.inset + (i + 0.5) * cell)  # noqa: E731
    qtbot.mousePress(strip, Qt.LeftButton, Qt.ShiftModifier, QPoint(x(11), 6))
    qtbot.mouseMove(strip, QPoint(x(14), 6))
    qtbot.mouseRelease(strip, Qt.LeftButton, Qt.ShiftModifier, QPoint(x(14), 6))
    assert states()[9:20] == ["filled"] * 2 + ["reviewed"] * 4 + ["filled"] * 5
    assert w.annotator.history.n_undo == undo_steps + 1
    w.undo()
    assert states()[9:20] == ["filled"] * 11
    w.redo()

    # export with unreviewed slices asks; Review now goes to the queue's first slice
    out = tmp_path / "spleen.nii.gz"
    monkeypatch.setattr(window_io.QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(out), "")))
    first = w.review_queue_items()[0].slice
    w.set_index(0)
    seen = _answer("Review now")
    assert w.export_labels() is None and not out.exists()
    assert "7 slices" in seen[0] and w.index == first
    seen = _answer("Export anyway")
    assert w.export_labels() == out and out.exists()
    assert [s.algorithm_type for s in segments_of(w.labelmap)] == ["SEMIAUTOMATIC"]
    # all reviewed ("Accept slices…" takes "k-m"): no question, still semi-automatic
    from medsam_gui.ui.propagation_actions import parse_range

    assert parse_range("9–19") == (9, 19) and parse_range("9 to 19") is None
    w.accept_range(*parse_range("0-19"))
    assert review.FILLED not in states()
    assert w.unreviewed_slices() == {}
    out.unlink()
    assert w.export_labels() == out
    assert [s.algorithm_type for s in segments_of(w.labelmap)] == ["SEMIAUTOMATIC"]


def test_window_clear_slice_makes_an_empty_key_slice(qtbot, window, mr):
    from medsam_gui.annotation import review
    from medsam_gui.engine import load_backend
    from medsam_gui.engine.evaluate import mask_box

    vol, truth = mr
    w = window
    w.backend = load_backend("litemedsam")
    _open(qtbot, w, session=True)
    geom = w.volume.geometry("axial")
    w.set_index(16)
    assert not (w.labelmap.slice(geom, 16) == 1).any()
    w.clear_slice()  # the spleen is absent here, says the person (it is not: a test)
    assert review.slice_states(w.labelmap, geom, 1)[16] == "reviewed"
    box = mask_box(geom.take(truth, 12))
    pred = w.session.predict("axial", 12, box)
    key = ("axial", 12, 1)
    w.annotator.apply_prediction(key, 0, box, [], pred.mask, pred.iou, "LiteMedSAM", "")
    w.set_index(12)
    w.propagate()
    qtbot.waitUntil(lambda: not w.filling, timeout=180000)
    present = review.present_slices(w.labelmap, geom, 1)
    assert present[13:16].all() and not present[16:].any()  # stopped at the empty key slice
    assert "slice 16 is marked empty" in w.statusBar().currentMessage()


# ---- queue-guided corrections (real model) ---------------------------------------------------
def test_queue_guided_corrections_do_not_lower_the_3d_dice():
    """Each MR organ: its largest slice fixed by a person (the reference mask: a box, then the
    window's brush), propagated; then two corrections on the queue's first slice not yet
    touched (its reference mask, or an empty key slice), each re-propagated as the window does
    (``around`` the fixed slice, old fills its fronts no longer reach removed). The 3D Dice
    never falls and rises on the mean. (With the model's mask of the box as the first key
    slice instead, the left kidney fell once: 0.675 -> 0.665; a box alone does not always
    converge, see benchmarks/bench_queue.py.)"""
    from medsam_gui.annotation import review_queue
    from medsam_gui.engine import EmbeddingCache, Session, load_backend
    from medsam_gui.engine.evaluate import dice
    from medsam_gui.engine.key_slices import rewritten_span, run_keys
    from medsam_gui.io import load_volume

    vol = load_volume(MR)
    seg = np.asarray(nib.load(str(ABDOMEN / "example_seg_mr.nii.gz")).dataobj)
    # f32 on every CPU, as measured (the bf16 encoder auto picks on CPUs with bf16 units moves
    # these curves by a few thousandths, and one step fell there)
    session = Session(vol, load_backend("litemedsam", precision="ov_f32"),
                      EmbeddingCache(max_bytes=1 << 30))
    geom = vol.geometry("axial")
    curves = {}
    for value in (1, 2, 3, 5):  # spleen, kidneys, liver
        truth = seg == value
        planes = [geom.take(truth, i) for i in range(geom.n_slices)]
        seed = int(np.argmax([p.sum() for p in planes]))
        keys = {seed: [planes[seed].copy()]}
        fills, curve = {}, []

        def fill(result):
            for s in result.steps:
                fills[s.index] = (s.mask, s.iou)

        def score():
            out = np.zeros(truth.shape, bool)
            for i, m in [(k, v[0]) for k, v in keys.items() if v] + [
                    (i, f[0]) for i, f in fills.items()]:
                geom.take(out, i)[...] = m
            return dice(out, truth)

        fill(run_keys(session, "axial", keys))
        curve.append(score())
        for _ in range(2):
            lm = queue_labelmap(vol.shape, geom, keys, fills)
            k = next(it.slice for it in review_queue.label_queue(lm, geom, 1)
                     if it.slice not in keys)
            keys[k] = [planes[k].copy()] if planes[k].any() else []
            fills.pop(k, None)
            result = run_keys(session, "axial", keys, around=k)
            lo, hi = rewritten_span(keys, k, geom.n_slices)  # stale fills go, as in the window
            for i in [i for i in fills if lo <= i <= hi]:
                del fills[i]
            fill(result)
            curve.append(score())
        curves[value] = curve
    for value, curve in curves.items():
        assert all(b >= a - 1e-6 for a, b in zip(curve, curve[1:])), curves
    # measured: +0.018, +0.029, +0.037, +0.081 after two (benchmarks/bench_queue.py)
    assert np.mean([c[-1] - c[0] for c in curves.values()]) > 0.025, curves


def test_window_box_on_a_filled_slice_corrects_the_fill(qtbot, window, mr):
    """A box drawn on a propagated slice corrects that fill (the fill inside the box, with the
    box's own mask added: ``Session.predict(..., previous_mask=)``), the slice becomes a key
    slice, and Propagate from it does not lower the 3D Dice (measured 0.587 -> 0.672)."""
    from medsam_gui.annotation import review
    from medsam_gui.engine import load_backend
    from medsam_gui.engine.correction import box_mask
    from medsam_gui.engine.evaluate import dice, mask_box

    vol, truth = mr
    w = window
    w.backend = load_backend("litemedsam")
    _open(qtbot, w, session=True)
    geom = w.volume.geometry("axial")
    box = mask_box(geom.take(truth, 12))
    w.set_index(12)
    w._on_box(box, False)  # the window's box handler (encodes the slice in a worker)
    qtbot.waitUntil(lambda: (w.labelmap.slice(geom, 12) == 1).any(), timeout=60000)
    w.propagate()
    qtbot.waitUntil(lambda: not w.filling, timeout=180000)
    before = dice(w.labelmap.array == 1, truth)
    assert review.slice_states(w.labelmap, geom, 1)[15] == "filled"
    fill = w.labelmap.slice(geom, 15) == 1
    box = mask_box(geom.take(truth, 15))
    own = w.session.predict("axial", 15, box).mask
    w.set_index(15)
    w._on_box(box, False)  # cached by the propagation: answered at once
    fixed = w.labelmap.slice(geom, 15) == 1
    assert np.array_equal(fixed, own | (fill & box_mask(fill.shape, box)))
    assert review.slice_states(w.labelmap, geom, 1)[15] == "drawn"
    w.propagate()
    qtbot.waitUntil(lambda: not w.filling, timeout=180000)
    assert np.array_equal(w.labelmap.slice(geom, 15) == 1, fixed)  # a key slice stays
    assert dice(w.labelmap.array == 1, truth) >= before - 1e-3, before
