"""The review queue (annotation.review_queue): filled slices ranked by need, with the reason.

On reference labels (no model): a slice whose area jumps, one the model was unsure of and the
slice beyond a braked end rank first, with the reason in words. End to end with the model:
``medsam-segment --propagate --queue`` on the abdominal MR's four organs writes the queue, most
needed first, and its first slice of each organ is worse than that organ's median slice.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import ABDOMEN

pytestmark = pytest.mark.needs_data

MR = ABDOMEN / "example_mr_sm.nii.gz"
ORGANS = {"spleen": 1, "kidney R": 2, "kidney L": 3, "liver": 5}


@pytest.fixture(scope="module")
def mr():
    from medsam_gui.io import load_volume

    vol = load_volume(MR)
    seg = np.asarray(nib.load(str(ABDOMEN / "example_seg_mr.nii.gz")).dataobj)
    return vol, seg


def test_signals_and_reasons_on_reference_masks(mr):
    from medsam_gui.annotation import review_queue
    from medsam_gui.annotation.labels import LabelMap, SliceRecord

    vol, seg = mr
    g = vol.geometry("axial")
    truth = seg == 5  # liver
    present = [i for i in range(g.n_slices) if g.take(truth, i).any()]
    seed = present[len(present) // 2]
    lm = LabelMap(vol.shape)
    lm.array[truth] = 1
    last = present[-1]
    for i in present:
        rec = SliceRecord("axial", i, 1, status="accepted") if i == seed else SliceRecord(
            "axial", i, 1, iou=0.93, method="propagated", from_slices=[i - 1])
        lm.records[("axial", i, 1)] = rec
    if last + 1 < g.n_slices:  # the upper front was braked: the liver may go on
        lm.records[("axial", last, 1)].stop_reason = (
            f"stopped at axial {last + 1}: moved 0.412 of its diameter (limit 0.35)")
    jump, unsure = seed - 3, seed + 3
    sl = g.take(lm.array, jump)
    sl[ndimage.binary_dilation(sl == 1, iterations=8)] = 1
    lm.records[("axial", unsure, 1)].iou = 0.41

    queue = review_queue.label_queue(lm, g, 1)
    assert {it.slice for it in queue if not it.beyond_end} == set(present) - {seed}
    top = {it.slice: it.reason for it in queue[:3]}
    assert jump in top and "area jumped" in top[jump]
    assert unsure in top and top[unsure] == "model unsure: IoU 0.41"
    if last + 1 < g.n_slices:
        beyond = [it for it in queue if it.beyond_end]
        assert [it.slice for it in beyond] == [last + 1]
        assert beyond[0].reason == f"beyond the end: stopped at {last + 1} by position jump"
    scores = [it.score for it in queue]
    assert scores == sorted(scores, reverse=True)
    # ] and [ walk the queue in order; from a slice outside it, ] starts at the top
    assert review_queue.next_in_queue(queue, seed, 1) is queue[0]
    assert review_queue.next_in_queue(queue, queue[0].slice, 1) is queue[1]
    assert review_queue.next_in_queue(queue, queue[1].slice, -1) is queue[0]
    assert review_queue.next_in_queue(queue, queue[-1].slice, 1) is None
    # accepting a slice takes it out of the queue
    lm.records[("axial", jump, 1)].status = "accepted"
    assert jump not in [it.slice for it in review_queue.label_queue(lm, g, 1)]


def test_cli_queue_end_to_end(mr, tmp_path):
    from medsam_gui.engine.evaluate import dice
    from medsam_gui.engine.segment_cli import main

    vol, seg = mr
    boxes = []
    for value in ORGANS.values():
        areas = (seg == value).sum(axis=(0, 1))
        k = int(np.argmax(areas))
        xs, ys = np.nonzero(seg[:, :, k] == value)
        boxes.append({"axis": 2, "slice": k, "label": value,
                      "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]})
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out, qpath = tmp_path / "labels.nii.gz", tmp_path / "queue.json"
    assert main([str(MR), "--boxes", str(tmp_path / "boxes.json"), "--propagate",
                 "--queue", str(qpath), "--out", str(out)]) == 0
    queue = json.loads(qpath.read_text())
    labels = np.asarray(nib.load(str(out)).dataobj)
    assert queue and all(set(q) >= {"axis", "slice", "label", "score", "reason"} for q in queue)
    assert [q["score"] for q in queue] == sorted((q["score"] for q in queue), reverse=True)
    assert {q["axis"] for q in queue} == {2} and {q["label"] for q in queue} <= set(ORGANS.values())
    worse, dices = 0, {}
    for value in ORGANS.values():
        seed = next(b["slice"] for b in boxes if b["label"] == value)
        mine = [q for q in queue if q["label"] == value and "beyond" not in q["reason"]]
        filled = {k for k in range(labels.shape[2]) if (labels[:, :, k] == value).any()} - {seed}
        assert {q["slice"] for q in mine} == filled  # every filled slice, once
        d = {k: dice(labels[:, :, k] == value, seg[:, :, k] == value) for k in filled}
        worse += d[mine[0]["slice"]] < np.median(list(d.values()))
        dices.update({(value, k): v for k, v in d.items()})
    # bench_propagation --queue (abdominal MR): the first slice is below the median on 2 of the
    # 3 organs with 5+ filled slices (kidney R: a slice beyond the kidney, Dice 0)
    first = next(q for q in queue if "beyond" not in q["reason"])
    assert dices[(first["label"], first["slice"])] < np.median(list(dices.values()))
    assert worse >= 2, worse
    # --queue without --propagate is a usage error (exit 2, nothing written)
    assert main([str(MR), "--box", "2", "10", "20", "20", "60", "60", "--queue",
                 str(tmp_path / "q2.json"), "--out", str(tmp_path / "l2.nii.gz")]) == 2
    assert not (tmp_path / "q2.json").exists()


def test_strip_shows_the_need_as_brightness(qtbot):
    from medsam_gui.ui.cache_strip import CacheStrip

    strip = CacheStrip()
    qtbot.addWidget(strip)
    strip.set_state(5, [], 0, [], ["filled"] * 4 + ["reviewed"])
    strip.set_scores({1: 1.0, 2: 0.0, 4: 1.0})
    plain = strip.color_of(3, "filled")
    assert strip.color_of(1, "filled").rgb() == plain.rgb()  # most needed: full yellow
    assert strip.color_of(2, "filled").lightness() < plain.lightness() / 2  # looks fine: dim
    assert strip.color_of(4, "reviewed").blue() == 255  # other states keep their colour
