"""Big scans (issue 25): the content hash in memory order, work and embeddings saved under
the legacy hash, and the memory bounds of the embedding cache and the undo history."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import ABDOMEN, PAT1
from medsam_gui.annotation.labels import PALETTE, Label, LabelMap, LabelTable
from medsam_gui.annotation.store import Workspace
from medsam_gui.engine.cache import EmbeddingCache, make_key
from medsam_gui.engine.session import Session
from medsam_gui.io import load_volume
from medsam_gui.volume import Volume

pytestmark = pytest.mark.needs_data
CT = ABDOMEN / "example_ct_sm.nii.gz"
FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"


def _old_formula(data: np.ndarray, affine: np.ndarray) -> str:
    """The content hash as versions before scheme 2 computed it (a whole C-ordered copy)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((data.shape, str(data.dtype))).encode())
    h.update(np.ascontiguousarray(data).tobytes())
    h.update(np.round(affine, 6).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("path", [CT, FLAIR], ids=["ct-int16", "flair-float32"])
def test_hash_equal_for_c_and_f_copies_and_file_copies(path, tmp_path):
    vol = load_volume(path)
    assert vol.data.flags.f_contiguous  # the loaders' order: hashed in place
    f_copy = Volume(np.asfortranarray(vol.data.copy()), vol.affine)
    c_copy = Volume(np.ascontiguousarray(vol.data), vol.affine)
    assert c_copy.data.flags.c_contiguous and not c_copy.data.flags.f_contiguous
    strided = Volume(np.ascontiguousarray(vol.data[::-1])[::-1], vol.affine)  # negative strides
    swapped = Volume(vol.data.astype(vol.data.dtype.newbyteorder(">")), vol.affine)
    hashes = {vol.content_hash, f_copy.content_hash, c_copy.content_hash, strided.content_hash,
              swapped.content_hash}
    assert len(hashes) == 1
    copy = tmp_path / ("renamed_" + path.name)
    shutil.copyfile(path, copy)
    assert load_volume(copy).content_hash == vol.content_hash
    # one voxel, or the affine, changes the hash
    changed = vol.data.copy(order="F")
    changed[3, 4, 5] += 1
    assert Volume(changed, vol.affine).content_hash != vol.content_hash
    moved = vol.affine.copy()
    moved[0, 3] += 0.5
    assert Volume(vol.data, moved).content_hash != vol.content_hash
    # the legacy hash is the old formula exactly, whatever the memory order
    old = _old_formula(vol.data, vol.affine)
    assert old != vol.content_hash
    assert vol.legacy_content_hash == c_copy.legacy_content_hash == old


def _saved_by_old_version(monkeypatch, folder, volume: Volume, labelmap: LabelMap) -> None:
    """Save as versions before scheme 2 did: named and recorded by the legacy hash, no
    scheme field in annotation.json."""
    old = Volume(volume.data, volume.affine, volume.modality, volume.source)
    old._content_hash = _old_formula(volume.data, volume.affine)
    original = Workspace._meta

    def old_meta(vol, lm):
        meta = original(vol, lm)
        del meta["source"]["content_hash_scheme"]
        return meta

    with monkeypatch.context() as m:
        m.setattr(Workspace, "_meta", staticmethod(old_meta))
        Workspace(folder).save(old, labelmap)


def test_workspace_saved_under_old_hash_is_found_and_kept(monkeypatch, tmp_path):
    vol = load_volume(CT)
    table = LabelTable([Label(1, "liver", PALETTE[0])])
    lm = LabelMap(vol.shape, table)
    lm.array[40:60, 30:50, 10:15] = 1
    ws_dir = tmp_path / "ws"
    _saved_by_old_version(monkeypatch, ws_dir, vol, lm)
    other = load_volume(FLAIR)  # another scan's work in the same workspace
    Workspace(ws_dir).save(other, LabelMap(other.shape, table))
    (old_folder,) = ws_dir.glob(f"*-{_old_formula(vol.data, vol.affine)[:12]}")
    saved_json = json.loads((old_folder / "annotation.json").read_text())
    assert "content_hash_scheme" not in saved_json["source"]

    fresh = load_volume(CT)  # the new version opens the same scan
    ws = Workspace(ws_dir, owner="window-1")
    ws.backup_interval_s = 0  # keep every generation (saves seconds apart are thinned out)
    restored = ws.open(fresh)
    assert ws.volume_dir(fresh) == old_folder
    assert restored.labelmap is not None and not restored.read_only and not restored.notes
    assert np.array_equal(restored.labelmap.array, lm.array)
    assert fresh.legacy_hash_known
    # its next save goes to the same folder, under the current hash; the old save is kept
    restored.labelmap.array[40:45, 30:35, 16] = 1
    assert ws.save(fresh, restored.labelmap) == old_folder
    ws.close()
    meta = json.loads((old_folder / "annotation.json").read_text())["source"]
    assert meta["content_hash"] == fresh.content_hash and meta["content_hash_scheme"] == 2
    kept = ws.generations(fresh)
    assert len(kept) == 2
    first = json.loads((kept[-1].folder / "annotation.json").read_text())["source"]
    assert first["content_hash"] == fresh.legacy_content_hash
    # later opens find it by the current hash alone: the legacy hash is not computed again
    again = load_volume(CT)
    loaded = Workspace(ws_dir).load(again)
    assert loaded is not None and loaded.array[40:45, 30:35, 16].all()
    assert not again.legacy_hash_known
    # a scan with no work here, of another shape, never computes the legacy hash
    mr = load_volume(ABDOMEN / "example_mr_sm.nii.gz")
    assert Workspace(ws_dir).load(mr) is None and not mr.legacy_hash_known


class _NoEncoder:
    """A backend that must not be asked to encode (the cache has the embedding)."""

    cache_tag = "test-backend"
    device = torch.device("cpu")

    def encode(self, images):
        raise AssertionError("encoded although the disk cache held the slice")


def test_embedding_saved_under_old_hash_is_found(tmp_path):
    vol = load_volume(CT)
    session = Session(vol, _NoEncoder(), EmbeddingCache(disk_dir=str(tmp_path / "emb")))
    norm = session.input_transform().cache_key
    emb = torch.randn(1, 256, 64, 64)
    old_key = make_key("test-backend", _old_formula(vol.data, vol.affine), norm, "axial", 7)
    EmbeddingCache(disk_dir=str(tmp_path / "emb")).put(old_key, emb)  # an older version's
    got = session.embed("axial", 7)
    assert torch.equal(got, emb.half().float())
    assert session.key("axial", 7) in session.cache  # taken over under the current hash
    with pytest.raises(AssertionError, match="encoded"):
        session.embed("axial", 8)


def test_percentiles_from_a_subsample_stay_close():
    """MR model-input percentiles from a lattice subsample: on BRATS FLAIR (8.9 M voxels, exact
    by default) a 4 M budget takes every other voxel along each axis and moves a model-input
    voxel by at most 1 of 255 levels; a 100,000-voxel lattice by at most 2. The lattice is the
    same for a C-ordered copy (the model input does not depend on memory order)."""
    from medsam_gui.engine import intensity
    from medsam_gui.engine.intensity import ModelInput

    vol = load_volume(FLAIR)
    mr = ModelInput(modality="MR")
    assert intensity.sample_stride(vol.shape) == 1
    exact = intensity.resolve(vol, mr)
    middle = vol.data[:, :, 60:100]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(intensity, "PERCENTILE_SAMPLE", 4_000_000)
        assert intensity.sample_stride(vol.shape) == 2
        default = intensity.resolve(vol, mr)
        c_copy = Volume(np.ascontiguousarray(vol.data), vol.affine, "MR")
        assert (intensity.resolve(c_copy, mr).lo, intensity.resolve(c_copy, mr).hi) == (
            default.lo, default.hi)
        m.setattr(intensity, "PERCENTILE_SAMPLE", 100_000)
        coarse = intensity.resolve(vol, mr)
    assert exact.hi - exact.lo > 8
    assert (default.lo, default.hi) == pytest.approx((exact.lo, exact.hi), abs=0.05)
    for transform, most in ((default, 1), (coarse, 2)):
        levels = np.abs(exact.apply(middle).astype(int) - transform.apply(middle).astype(int))
        assert 0 < levels.max() <= most


def test_memory_tier_bound_holds_with_disk_behind(monkeypatch, tmp_path):
    from medsam_gui.engine import cache as cache_mod

    entry = torch.randn(1, 256, 64, 64)  # one LiteMedSAM embedding: 2 MiB in fp16
    cache = EmbeddingCache(max_bytes=5 << 20, disk_dir=str(tmp_path))
    keys = [make_key("tag", "vol", "{}", "axial", i) for i in range(12)]
    for i, key in enumerate(keys):
        cache.put(key, entry + i)
        assert cache.nbytes <= cache.max_bytes and len(cache) <= 2
    for i, key in enumerate(keys):  # every one is back, from memory or disk
        assert torch.equal(cache.get(key), (entry + i).half())
        assert cache.nbytes <= cache.max_bytes
    assert cache.disk_hits >= 10
    # the default bound: 1/8 of the machine's memory within 256 MiB..2 GiB, or the setting
    monkeypatch.delenv(cache_mod.MEMORY_ENV, raising=False)
    monkeypatch.setattr(cache_mod, "physical_memory", lambda: 16 << 30)
    assert EmbeddingCache().max_bytes == 2 << 30
    monkeypatch.setattr(cache_mod, "physical_memory", lambda: 4 << 30)
    assert EmbeddingCache().max_bytes == 512 << 20
    monkeypatch.setenv(cache_mod.MEMORY_ENV, "300")
    assert EmbeddingCache().max_bytes == 300 << 20


def test_undo_history_bound_drops_oldest_with_a_note():
    """Twenty strokes from the BRATS ground truth, one axial slice each, into a history of a
    few strokes' bytes: the bound holds after every push, the oldest steps go with a note, and
    undoing all that is left gives back the state after the dropped steps, exactly."""
    import nibabel as nib

    from medsam_gui.annotation.history import History

    gt = np.asanyarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    vol = load_volume(FLAIR)
    geom = vol.geometry("axial")
    slices = [k for k in range(gt.shape[2]) if gt[:, :, k].any()][:20]
    lm = LabelMap(vol.shape, LabelTable([Label(1, "tumour", PALETTE[0])]))
    changes, states = [], [lm.array.copy()]
    for k in slices:
        changes.append(lm.paint(geom, k, geom.take(gt, k), 1, "replace"))
        states.append(lm.array.copy())
    bound = sum(c.nbytes for c in changes[-5:])
    hist = History(max_steps=200, max_bytes=bound)
    for n, change in enumerate(changes, 1):
        hist.push(change)
        assert hist.nbytes <= bound
    kept = hist.n_undo
    assert 4 <= kept < len(changes) and hist.dropped == len(changes) - kept
    assert f"oldest {hist.dropped} undo steps were dropped" in hist.note
    assert "MiB" in hist.note or "KiB" in hist.note
    while hist.undo(lm) is not None:
        pass
    assert np.array_equal(lm.array, states[len(changes) - kept])
    # a single step bigger than the bound is still kept: the last edit can always be undone
    small = History(max_bytes=1)
    small.push(changes[0])
    small.push(changes[1])
    assert small.n_undo == 1 and small.dropped == 1 and "1 undo step was" in small.note


def test_scan_larger_than_free_memory_is_refused_before_allocation(monkeypatch):
    from medsam_gui.errors import MedsamError
    from medsam_gui.io import limits, nifti

    def no_allocation(*args, **kwargs):
        raise AssertionError("the voxels were read although they cannot fit")

    monkeypatch.setattr(limits, "available_memory", lambda: 300_000)  # 0.3 MB free
    monkeypatch.setattr(nifti, "_read_voxels", no_allocation)
    with pytest.raises(MedsamError, match=r"needs 722\.0 KiB .* more than this machine has "
                                          r"free now \(293\.0 KiB"):
        load_volume(CT)  # 122×101×30 int16
    monkeypatch.undo()
    assert load_volume(CT).shape == (122, 101, 30)


@pytest.mark.parametrize("gz", [True, False], ids=["nii.gz", "nii"])
def test_read_reports_progress_and_stops_on_cancel(tmp_path, monkeypatch, gz):
    """A read under ``limits.read_progress`` reports its bytes in order up to the whole image,
    and a cancel stops it part way with ``LoadCancelled`` (nothing returned)."""
    import nibabel as nib

    from medsam_gui.io import limits, verified_read

    src = load_volume(CT)
    data = np.tile(src.data, (1, 1, 8))  # 122×101×240 int16: several read chunks
    path = tmp_path / ("big.nii.gz" if gz else "big.nii")
    nib.save(nib.Nifti1Image(np.asfortranarray(data), src.affine), str(path))
    if not gz:
        monkeypatch.setattr(verified_read, "PLAIN_CHUNK", 1 << 20)  # ~6 chunks
    seen = []
    with limits.read_progress(lambda d, t: seen.append((d, t))):
        vol = load_volume(path)
    assert np.array_equal(vol.data, data)
    assert seen[-1][0] == seen[-1][1] >= data.nbytes and len(seen) >= 3
    assert [d for d, _t in seen] == sorted(d for d, _t in seen)
    calls = []

    def cancel_after_two():
        calls.append(1)
        return len(calls) > 2

    with limits.read_progress(None, cancel_after_two), pytest.raises(limits.LoadCancelled):
        load_volume(path)
    assert len(calls) == 3  # stopped at the first tick after the cancel, not at the end
    assert load_volume(path).shape == data.shape  # nothing left installed after the block


def test_label_map_in_the_smallest_dtype_promotes_at_256_and_round_trips(tmp_path):
    """uint8 in memory, the workspace and the export while labels are <= 255; painting label
    256 promotes the map to uint16 (undo and redo work across it), and the export and a
    reopened workspace keep every value."""
    import nibabel as nib

    from medsam_gui.annotation.exporting import export_labels
    from medsam_gui.annotation.history import History

    vol = load_volume(CT)
    ws = Workspace(tmp_path / "ws")
    ws.open(vol)
    lm = LabelMap(vol.shape, LabelTable([Label(1, "liver", PALETTE[0])]))
    assert lm.array.dtype == np.uint8 and lm.array.flags.f_contiguous
    geom = vol.geometry("axial")
    mask = np.zeros(geom.slice_shape, bool)
    mask[20:40, 20:50] = True
    history = History()
    history.push(lm.paint(geom, 10, mask, 1))
    ws.save(vol, lm)
    again = Workspace(tmp_path / "ws").load(vol)
    assert again.array.dtype == np.uint8 and np.array_equal(again.array, lm.array)
    out = export_labels(lm, vol, tmp_path / "small.nii.gz").path
    assert nib.load(str(out)).get_data_dtype() == np.uint8

    lm.table.labels.append(Label(256, "label 256", PALETTE[1]))
    mask256 = np.zeros(geom.slice_shape, bool)
    mask256[30:60, 40:70] = True  # overlaps label 1
    history.push(lm.paint(geom, 10, mask256, 256))
    assert lm.array.dtype == np.uint16 and lm.array.flags.f_contiguous
    got = geom.take(lm.array, 10)
    assert (got[mask256] == 256).all() and (got[mask & ~mask256] == 1).all()
    after = lm.array.copy()
    history.undo(lm)
    assert not (lm.array == 256).any() and (geom.take(lm.array, 10)[mask] == 1).all()
    history.redo(lm)
    assert np.array_equal(lm.array, after)

    ws.save(vol, lm)
    again = Workspace(tmp_path / "ws").load(vol)
    assert again.array.dtype == np.uint16 and np.array_equal(again.array, after)
    out = export_labels(lm, vol, tmp_path / "big.nii.gz").path
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint16
    assert np.array_equal(np.asanyarray(img.dataobj), after)


def test_display_auto_window_reads_a_fortran_volume_without_copying_it():
    """The window's Auto display window sampled the volume through ``ravel()``, which copies
    a Fortran-ordered array whole: 3.7 s of the 800-slice CT's 6.8 s to its first image, all
    on the GUI thread. It now reads a subsample in place; the window is the same as from a
    C-ordered copy of the same voxels (within the subsample's spread)."""
    import tracemalloc

    from medsam_gui.ui.render import auto_window

    ct = load_volume(ABDOMEN / "example_ct_sm.nii.gz").data
    data = np.asfortranarray(np.tile(ct, (4, 4, 4)))  # 488x404x120: 47 MB, 24 M voxels
    assert data.flags.f_contiguous and not data.flags.c_contiguous
    tracemalloc.start()
    center, width = auto_window(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.6 * data.nbytes, (peak, data.nbytes)  # a copy alone is 1.0
    c_center, c_width = auto_window(np.ascontiguousarray(data))
    assert abs(center - c_center) < 0.02 * c_width and abs(width - c_width) < 0.02 * c_width
