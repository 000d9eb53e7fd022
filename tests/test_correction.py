"""A box drawn on a filled slice corrects the fill (engine.correction, Session.predict with
``previous_mask``), and queue-guided box corrections move the 3D mask toward the truth.

Real model, real data: the abdominal MR and CT (20 and 30 axial slices, cheap to encode) and
BRATS pat0002's T1c tumour core. The simulated person is the issue's: a ground-truth box on
the review queue's first slice not yet touched where the structure is there, else an empty key
slice; each correction re-propagated as the window does (the gaps beside the new key slice,
old fills its fronts no longer reach removed).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from conftest import ABDOMEN, BRATS, queue_labelmap

pytestmark = pytest.mark.needs_data

ORGANS = {"spleen": 1, "kidney R": 2, "kidney L": 3, "liver": 5}


@pytest.fixture(scope="module")
def backend():
    """f32 on every CPU: the claims below were measured in f32. With the bf16 encoder that
    ``auto`` picks on CPUs with bf16 units, the MR liver's first correction lowered its 3D Dice
    by 0.003 (0.875 -> 0.872 -> 0.876; AMD EPYC, AVX-512 BF16)."""
    from medsam_gui.engine import load_backend

    return load_backend("litemedsam", precision="ov_f32")


def _session(backend, path):
    from medsam_gui.engine import EmbeddingCache, Session
    from medsam_gui.io import load_volume

    return Session(load_volume(path), backend, EmbeddingCache(max_bytes=1 << 30))


def box_person(session, truth, corrections=2, correct=True):
    """3D Dice after one ground-truth box on the largest slice and after each queue-guided
    box correction (``correct``: a box on a fill passes the fill, as the window does), and the
    (fill, box-only, corrected) masks with the truth of each corrected slice that had a fill."""
    from medsam_gui.annotation import review_queue
    from medsam_gui.engine.evaluate import dice, mask_box
    from medsam_gui.engine.key_slices import rewritten_span, run_keys

    geom = session.volume.geometry("axial")
    planes = [geom.take(truth, i) for i in range(geom.n_slices)]
    seed = int(np.argmax([p.sum() for p in planes]))
    keys = {seed: [session.predict("axial", seed, mask_box(planes[seed])).mask]}
    fills, curve, slices = {}, [], []

    def score():
        out = np.zeros(truth.shape, bool)
        for i, m in [(k, v[0]) for k, v in keys.items() if v] + [
                (i, f[0]) for i, f in fills.items()]:
            geom.take(out, i)[...] = m
        return dice(out, truth)

    fills.update((s.index, (s.mask, s.iou)) for s in run_keys(session, "axial", keys).steps)
    curve.append(score())
    for _ in range(corrections):
        lm = queue_labelmap(session.volume.shape, geom, keys, fills)
        k = next(it.slice for it in review_queue.label_queue(lm, geom, 1) if it.slice not in keys)
        fill = fills.pop(k, (None,))[0]
        if planes[k].any():
            box = mask_box(planes[k])
            own = session.predict("axial", k, box).mask
            mask = session.predict("axial", k, box, None, fill if correct else None).mask
            keys[k] = [mask]
            if fill is not None:
                slices.append((fill, own, mask, planes[k]))
        else:
            keys[k] = []
        result = run_keys(session, "axial", keys, around=k)
        lo, hi = rewritten_span(keys, k, geom.n_slices)
        for i in [i for i in fills if lo <= i <= hi]:
            del fills[i]
        fills.update((s.index, (s.mask, s.iou)) for s in result.steps)
        curve.append(score())
    return curve, slices


def test_box_corrections_never_lower_the_3d_dice(backend):
    """Abdominal MR organs and the CT left kidney, two queue-guided box corrections each: with
    the fill corrected, no step lowers a structure's 3D Dice (by more than 0.001) and the mean
    rises; the box alone lowered it (measured: CT kidney L 0.917 -> 0.862, MR liver 0.871 ->
    0.799), which keeps this test able to fail. The corrected slices themselves: never worse
    than the fill by more than 0.02 Dice."""
    from medsam_gui.engine.evaluate import dice

    curves, old_drops, corrected = {}, 0, []
    for kind, image, labels, organs in (("CT", "example_ct_sm", "example_seg", ["kidney L"]),
                                        ("MR", "example_mr_sm", "example_seg_mr", ORGANS)):
        session = _session(backend, ABDOMEN / f"{image}.nii.gz")
        seg = np.asarray(nib.load(str(ABDOMEN / f"{labels}.nii.gz")).dataobj)
        for name in organs:
            curves[f"{kind} {name}"], slices = box_person(session, seg == ORGANS[name])
            corrected += slices
            if name in ("liver", "kidney L") and not (kind, name) == ("MR", "kidney L"):
                old, _ = box_person(session, seg == ORGANS[name], correct=False)
                old_drops += sum(b < a - 1e-3 for a, b in zip(old, old[1:]))
    for name, curve in curves.items():
        assert all(b >= a - 1e-3 for a, b in zip(curve, curve[1:])), (name, curve)
    assert np.mean([c[-1] - c[0] for c in curves.values()]) > 0.01, curves
    assert old_drops >= 2  # the box alone did lower it here
    assert corrected
    for fill, own, mask, truth in corrected:
        assert dice(mask, truth) >= dice(fill, truth) - 0.02


def test_box_correction_on_brats_t1c_core(backend):
    """BRATS pat0002 T1c tumour core: a queue-guided box correction raises the 3D Dice
    (measured 0.469 -> 0.528; then 0.597 after a second one in bench_queue)."""
    pat = BRATS / "brats_2013_pat0002_1"
    session = _session(backend, pat / "T1c_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(pat / "OTMultiClass.nii.gz")).dataobj)
    curve, _ = box_person(session, np.isin(gt, (1, 3, 4)), corrections=1)
    assert all(b >= a - 1e-3 for a, b in zip(curve, curve[1:])), curve
    assert curve[-1] > curve[0] + 0.03, curve


def test_clicks_after_a_correction_refine_the_corrected_mask(backend):
    """A click after a box on a fill goes on from the corrected mask (the fill inside the box
    with the box's own mask added), not from the box's mask; a box with no fill is the box
    path exactly."""
    from medsam_gui.engine.correction import box_mask
    from medsam_gui.engine.evaluate import mask_box

    session = _session(backend, ABDOMEN / "example_mr_sm.nii.gz")
    seg = np.asarray(nib.load(str(ABDOMEN / "example_seg_mr.nii.gz")).dataobj)
    geom = session.volume.geometry("axial")
    truth = geom.take(seg == 5, 13)  # liver
    box = mask_box(truth)
    own = session.predict("axial", 13, box).mask
    fill = np.zeros_like(truth)  # a fill that holds a part the box's mask misses
    fill[truth & ~own] = True
    fill |= np.roll(truth, 3, axis=0)
    fixed = session.predict("axial", 13, box, None, fill).mask
    assert np.array_equal(fixed, own | (fill & box_mask(truth.shape, box)))
    assert not np.array_equal(fixed, own)
    y, x = np.argwhere(~fixed & ~box_mask(truth.shape, box))[0]  # a click outside: a no-op
    clicked = session.predict("axial", 13, box, [(float(x), float(y), 0)]).mask
    assert np.array_equal(clicked, fixed)  # from the correction, not from the box
    again = session.predict("axial", 13, box).mask  # the box alone again: its own mask
    assert np.array_equal(again, own)
    clicked = session.predict("axial", 13, box, [(float(x), float(y), 0)]).mask
    assert np.array_equal(clicked, own)
