"""Sparse propagation (fewer slices encoded, skipped slices shape-interpolated): on a BRATS
tumour (1 mm slices) 3D Dice against the expert label within 0.01 of today's propagation with
far fewer encoder calls, real model; on thick slices (abdominal and DICOM CT) the fast option
is the ordinary propagation; the command line's --fast-propagate. The measurements behind the
choices: benchmarks/bench_sparse_propagation.py."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.engine import EmbeddingCache, Session, load_backend
from medsam_gui.engine import propagation
from medsam_gui.engine.evaluate import dice, mask_box
from medsam_gui.engine.segment_cli import main
from medsam_gui.engine.sparse_propagation import FAST_MM, interpolate_masks, stride_for
from medsam_gui.io import load_volume

from conftest import ABDOMEN, DICOM, PAT1


def disc(r: float, centre=(40, 40), shape=(80, 80)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def test_shape_interpolation_goes_between_the_two_shapes():
    mid = interpolate_masks(disc(10), disc(20), 0.5)
    assert abs(mid.sum() / (math.pi * 15 ** 2) - 1) < 0.05  # a disc of radius 15
    assert dice(mid, disc(15)) > 0.97
    moved = interpolate_masks(disc(10, (30, 30)), disc(10, (30, 38)), 0.25)
    assert dice(moved, disc(10, (30, 32))) > 0.95  # a quarter of the way
    assert dice(moved, disc(10, (30, 36))) < 0.85
    assert interpolate_masks(disc(10), disc(20), 0.0).sum() == disc(10).sum()


class Counting(Session):
    """Remembers the slices it embedded: the encoder calls of a cold run."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.embedded = set()

    def embed(self, axis, index, transform=None):
        self.embedded.add(int(index))
        return super().embed(axis, index, transform)


@pytest.fixture(scope="module")
def backend():
    return load_backend("litemedsam")


def both_ways(backend, vol, truth, around, stride):
    """(Dice, encoder calls) of today's propagation and of ``stride`` from one ground-truth box
    on the largest slice, within seed ± ``around`` (one cache: the same embeddings)."""
    g = vol.geometry("axial")
    seed = int(np.argmax([g.take(truth, i).sum() for i in range(g.n_slices)]))
    cache = EmbeddingCache(max_bytes=1 << 30)
    start = Session(vol, backend, cache).predict("axial", seed, mask_box(g.take(truth, seed))).mask
    rules = propagation.StopRules(extent=(seed - around, seed + around))
    lo, hi = rules.limits(g.n_slices)
    out = []
    for s in (1, stride):
        session = Counting(vol, backend, cache)
        result = propagation.run(session, "axial", seed, [start], rules, stride=s)
        pred = np.zeros(vol.shape, bool)
        g.take(pred, seed)[...] = start
        for st in result.steps:
            g.take(pred, st.index)[...] = st.mask
        slab = np.zeros(vol.shape, bool)
        for i in range(lo, hi + 1):
            g.take(slab, i)[...] = True
        out.append((dice(pred, truth & slab), len(session.embedded | {seed}), result))
    return out


@pytest.mark.needs_data
def test_brats_tumour_with_fewer_encoder_calls(backend):
    vol = load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    truth = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    stride = stride_for(vol, "axial", FAST_MM)  # 4: 1 mm slices
    (d1, n1, _r1), (d4, n4, r4) = both_ways(backend, vol, truth, 12, stride)
    assert d1 > 0.8  # today's, on the 25 slices
    assert d4 >= d1 - 0.01, (d1, d4)
    assert n4 <= 0.7 * n1, (n1, n4)
    filled = [s for s in r4.steps if s.between]
    assert filled and all(s.between[0] < s.index < s.between[1]
                          or s.between[1] < s.index < s.between[0] for s in filled)


@pytest.mark.needs_data
def test_stride_follows_the_slice_spacing():
    """--fast-propagate jumps at most FAST_MM (4 mm): on slices 3 mm apart (abdominal CT and
    MR), where skipping slices cost up to 0.03 of 3D Dice, it is the ordinary propagation."""
    brats = load_volume(PAT1 / "T1c_subtrMeanDivStd.nii.gz")
    ct = load_volume(ABDOMEN / "example_ct_sm.nii.gz")
    dcm = load_volume(DICOM / "ct_abdomen_siemens_jpeg2000")
    assert [stride_for(v, "axial", FAST_MM) for v in (brats, ct, dcm)] == [4, 1, 2]
    assert stride_for(ct, "coronal", FAST_MM) == 1  # 3 mm along every axis
    assert stride_for(brats, "sagittal", 3.0) == 3


@pytest.mark.needs_data
def test_cli_fast_propagate_fills_every_slice(tmp_path, capsys):
    flair = PAT1 / "Flair_subtrMeanDivStd.nii.gz"
    gt = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    k = 70
    xs, ys = np.nonzero(gt[:, :, k])
    out = tmp_path / "tumour.nii.gz"
    box = ["--box", "2", str(k), str(xs.min()), str(ys.min()), str(xs.max()), str(ys.max())]
    assert main([str(flair), *box, "--fast-propagate", "--out", str(out)]) == 2
    assert "add --propagate" in capsys.readouterr().err
    assert main([str(flair), *box, "--propagate", "--fast-propagate", "--extent", str(k - 3),
                 str(k + 4), "--out", str(out)]) == 0
    arr = np.asarray(nib.load(str(out)).dataobj) == 1
    assert np.flatnonzero(arr.any(axis=(0, 1))).tolist() == list(range(k - 3, k + 5))
    sub, truth = arr[:, :, k - 3:k + 5], gt[:, :, k - 3:k + 5]
    assert 2 * (sub & truth).sum() / (sub.sum() + truth.sum()) >= 0.75
