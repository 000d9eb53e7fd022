"""EmbeddingCache: byte-bounded LRU, fp16 storage fidelity, disk tier, corrupt entries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsam_gui.engine.cache import EmbeddingCache, make_key

from conftest import PAT1

MB = 1 << 20


def emb(value: float) -> torch.Tensor:
    return torch.full((1, 128, 32, 32), value)  # 256 KiB as float16


def key(i: int, tag: str = "lite:abc:fp32"):
    return make_key(tag, "volhash", {"method": "mr"}, "axial", i)


def test_lru_byte_bound():
    cache = EmbeddingCache(max_bytes=MB)  # room for 4 entries of 256 KiB
    for i in range(4):
        cache.put(key(i), emb(i))
    assert len(cache) == 4 and cache.nbytes == MB
    assert cache.get(key(0)) is not None  # refresh 0: 1 is now the oldest
    cache.put(key(4), emb(4))
    assert cache.nbytes <= MB and len(cache) == 4
    assert cache.get(key(1)) is None and cache.get(key(0)) is not None
    stored = cache.get(key(4))
    assert stored.dtype == torch.float16 and float(stored[0, 0, 0, 0]) == 4.0
    big = torch.zeros(1, 256, 64, 64)  # 2 MiB fp16: larger than the whole budget
    cache.put(key(9), big)
    assert cache.get(key(9)) is None and cache.nbytes <= MB


def test_key_parts():
    base = make_key("lite:aaa:fp32", "vol1", {"method": "ct-window", "level": 40}, "axial", 3)
    assert base != make_key("lite:bbb:fp32", "vol1", {"method": "ct-window", "level": 40}, "axial", 3)
    assert base != make_key("lite:aaa:bf16", "vol1", {"method": "ct-window", "level": 40}, "axial", 3)
    assert base != make_key("lite:aaa:fp32", "vol2", {"method": "ct-window", "level": 40}, "axial", 3)
    assert base != make_key("lite:aaa:fp32", "vol1", {"method": "ct-window", "level": 50}, "axial", 3)
    assert base != make_key("lite:aaa:fp32", "vol1", {"method": "ct-window", "level": 40}, "coronal", 3)
    assert base == make_key("lite:aaa:fp32", "vol1", {"level": 40, "method": "ct-window"}, "axial", 3)


def test_disk_round_trip_and_cap(tmp_path):
    cache = EmbeddingCache(max_bytes=MB, disk_dir=str(tmp_path), disk_max_bytes=3 * MB)
    original = torch.randn(1, 256, 32, 32)
    cache.put(key(1), original)
    fresh = EmbeddingCache(max_bytes=MB, disk_dir=str(tmp_path))
    assert key(1) in fresh
    got = fresh.get(key(1))
    assert torch.equal(got, original.half()) and fresh.disk_hits == 1
    for i in range(2, 30):
        cache.put(key(i), emb(i))
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.npy"))
    assert 0 < total <= 3 * MB
    assert not list(tmp_path.rglob("*.tmp-*"))  # atomic writes leave no temp files


@pytest.mark.parametrize("garbage", [b"", b"not an npy file at all", None])
def test_corrupt_disk_entry_is_ignored(tmp_path, garbage):
    cache = EmbeddingCache(disk_dir=str(tmp_path))
    cache.put(key(1), emb(1.0))
    path = next(tmp_path.rglob("*.npy"))
    if garbage is None:  # truncated: a valid header with half the data
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(garbage)
    fresh = EmbeddingCache(disk_dir=str(tmp_path))
    assert fresh.get(key(1)) is None
    assert not path.exists()


@pytest.mark.needs_data
def test_fp16_storage_keeps_masks_and_session_recomputes_corrupt(tmp_path):
    """Masks from fp16-stored embeddings equal fp32-stored ones (Dice >= 0.99); a corrupt disk
    entry is recomputed transparently."""
    import nibabel as nib

    from medsam_gui.engine import Session, load_backend
    from medsam_gui.io import load_volume

    backend = load_backend(device="cpu")
    vol = load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    fp16 = Session(vol, backend, EmbeddingCache(disk_dir=str(tmp_path)))
    view, index = "axial", 75
    truth = vol.geometry(view).take(gt, index)
    ys, xs = np.nonzero(truth)
    full = backend.encode([fp16.model_slice(view, index)])
    fp32 = EmbeddingCache(dtype=torch.float32)
    fp32.put(fp16.key(view, index), full)
    fp32_session = Session(vol, backend, fp32)
    boxes = [(xs.min(), ys.min(), xs.max(), ys.max()),
             (xs.min() + 5, ys.min() + 5, xs.max() - 5, ys.max() - 5),
             (xs.min() - 8, ys.min() - 8, xs.max() + 8, ys.max() + 8)]
    for box in boxes:
        a = fp16.predict(view, index, box).mask
        b = fp32_session.predict(view, index, box).mask
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.99
    # corrupt the disk entry; a new session (empty memory tier) recomputes it
    path = next(tmp_path.rglob("*.npy"))
    path.write_bytes(b"garbage")
    again = Session(vol, backend, EmbeddingCache(disk_dir=str(tmp_path)))
    mask = again.predict(view, index, boxes[0]).mask
    assert np.array_equal(mask, fp16.predict(view, index, boxes[0]).mask)
    assert np.load(path).shape == (1, 256, 64, 64)  # rewritten
