"""Session: precompute order, cancel, thread safety (stub backend), and a real-model thread run."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from medsam_gui.engine.cache import EmbeddingCache
from medsam_gui.engine.session import Session, outward_order
from medsam_gui.volume import Volume

from conftest import PAT1


class StubBackend:
    """Records which slices get encoded; embeddings encode the slice mean so they differ."""

    kind = "stub"
    device = torch.device("cpu")
    embedding_shape = (4, 2, 2)

    def __init__(self, tag: str = "stub:0:fp32", delay: float = 0.0) -> None:
        self.cache_tag = tag
        self.delay = delay
        self.encoded = []
        self.lock = threading.Lock()

    def encode(self, slices):
        with self.lock:
            self.encoded.append(float(slices[0].mean()))
        time.sleep(self.delay)
        return torch.full((len(slices), 4, 2, 2), float(slices[0].mean()))

    def decode(self, embedding, slice_shape, box, points=None, mask_input=None):
        mask = np.zeros(slice_shape, bool)
        x0, y0, x1, y1 = (int(v) for v in box)
        mask[y0:y1 + 1, x0:x1 + 1] = True
        return mask, float(embedding.mean())


def ramp_volume(n: int = 9) -> Volume:
    """Axial slice k has mean value k (RAS affine: axial slices run along voxel axis 2)."""
    data = np.broadcast_to(np.arange(n, dtype=np.float32)[None, None, :] + 1, (6, 5, n)).copy()
    return Volume(data, np.eye(4), "CT")


def test_outward_order():
    assert outward_order(3, 7) == [3, 4, 2, 5, 1, 6, 0]
    assert outward_order(0, 3) == [0, 1, 2]
    assert outward_order(6, 7) == [6, 5, 4, 3, 2, 1, 0]


def test_precompute_center_first_then_outward():
    vol = ramp_volume(7)
    backend = StubBackend()
    session = Session(vol, backend, EmbeddingCache())
    seen = []
    done = session.precompute("axial", 3, progress=lambda d, t: seen.append((d, t)))
    assert done == 7
    # which slice was encoded: each model slice has its own mean, ordered like the slices
    means = [session.model_slice("axial", i).mean() for i in range(7)]
    order = [int(np.argmin([abs(m - e) for m in means])) for e in backend.encoded]
    assert order == [3, 4, 2, 5, 1, 6, 0]
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)
    assert session.cached_indices("axial") == set(range(7))
    assert session.precompute("axial", 3) == 0  # nothing left to do


def test_precompute_cancel_between_slices_and_indices():
    vol = ramp_volume(9)
    backend = StubBackend()
    session = Session(vol, backend, EmbeddingCache())
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 3

    assert session.precompute("axial", 4, cancel=cancel) == 3
    assert session.cached_indices("axial") == {4, 5, 3}
    assert session.precompute("axial", 4, indices=[0, 1, 8]) == 3
    assert session.cached_indices("axial") == {0, 1, 3, 4, 5, 8}


def test_predict_from_other_thread_during_precompute_stub():
    vol = ramp_volume(9)
    backend = StubBackend(delay=0.05)
    session = Session(vol, backend, EmbeddingCache())
    session.embed("axial", 0)
    worker = threading.Thread(target=session.precompute, args=("axial", 5))
    worker.start()
    results = []
    while worker.is_alive():
        results.append(session.predict("axial", 0, (1, 1, 3, 2)))
        time.sleep(0.01)
    worker.join()
    assert results and all(r.mask.sum() == 6 for r in results)
    assert len(backend.encoded) == 9  # no slice encoded twice


def test_session_keys_name_weights_volume_and_normalisation():
    vol = ramp_volume(5)
    cache = EmbeddingCache()
    a = Session(vol, StubBackend("stub:AAA:fp32"), cache)
    b = Session(vol, StubBackend("stub:BBB:fp32"), cache)
    assert a.key("axial", 1) != b.key("axial", 1)
    other = Volume(vol.data + 1, vol.affine, "CT")
    assert Session(other, a.backend, cache).key("axial", 1) != a.key("axial", 1)
    mr = Volume(vol.data, vol.affine, "MR")
    assert Session(mr, a.backend, cache).key("axial", 1) != a.key("axial", 1)
    assert a.key("axial", 1) != a.key("coronal", 1) != a.key("axial", 2)
    a.embed("axial", 1)
    assert a.is_cached("axial", 1) and not b.is_cached("axial", 1)


@pytest.fixture(scope="module")
def real():
    """(volume, backend): BRATS pat0001 FLAIR and LiteMedSAM, loaded once for this module."""
    from medsam_gui.engine import load_backend
    from medsam_gui.io import load_volume

    return load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz"), load_backend(device="cpu")


@pytest.mark.needs_data
def test_real_predict_during_precompute_matches_idle(real):
    vol, backend = real
    session = Session(vol, backend)
    box = (58, 76, 102, 165)
    idle = session.predict("axial", 63, box)
    worker = threading.Thread(target=session.precompute, args=("axial", 70),
                              kwargs={"indices": [70, 71]})
    worker.start()
    busy = []
    while worker.is_alive() and len(busy) < 20:
        busy.append(session.predict("axial", 63, box))
    worker.join()
    assert busy and all(np.array_equal(p.mask, idle.mask) for p in busy)
    assert {70, 71, 63} <= session.cached_indices("axial")


@pytest.mark.needs_data
def test_propagate_follows_the_tumour(real):
    import nibabel as nib

    vol, backend = real
    gt = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    session = Session(vol, backend)
    geom = vol.geometry("axial")
    start = geom.take(gt, 70)
    preds = list(session.propagate("axial", 70, start, direction=-1, max_slices=2))
    assert [p.index for p in preds] == [69, 68]
    for p in preds:
        truth = geom.take(gt, p.index)
        assert 2 * (p.mask & truth).sum() / (p.mask.sum() + truth.sum()) >= 0.7
    assert list(session.propagate("axial", 70, np.zeros_like(start))) == []
    assert list(session.propagate("axial", 70, start, stop=lambda: True)) == []

