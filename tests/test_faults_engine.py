"""Engine, training and import faults (issue 18): a damaged embedding cache entry, NaN weights,
pickled checkpoints, unusable devices, training that would train nothing or cannot write, a
damaged workspace, and RT Structure Set contours that are not finite or not on their image.

Every fixture is made in tmp_path from the real data; CLIs run as real processes where the
exit code and the absence of a traceback are the point."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from medsam_gui.engine.cache import TRAILER_SIZE, EmbeddingCache, decode_entry
from medsam_gui.engine.runtime import pick_device
from medsam_gui.errors import MedsamError

from conftest import DICOM, PAT1

pytestmark = pytest.mark.needs_data
FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"
GT = PAT1 / "OTMultiClass.nii.gz"
BIN = Path(sys.executable).parent


def run_cli(name: str, *args: str) -> subprocess.CompletedProcess:
    """A console entry point (medsam-segment, medsam-train) as a real process."""
    exe = BIN / name
    cmd = [str(exe)] if exe.exists() else [
        sys.executable, "-c", f"import sys; from medsam_gui.cli import "
        f"{name.split('-')[1]}_main as m; sys.exit(m())"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          timeout=900)


def assert_clean_refusal(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)


def no_temp_files(folder: Path) -> bool:
    return not list(folder.rglob("*.tmp-*"))


@pytest.fixture(scope="module")
def backend():
    from medsam_gui.engine import load_backend

    return load_backend("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def flair_box():
    """(volume, view, slice, ground-truth box) on a real BRATS slice."""
    from medsam_gui.io import load_volume

    vol = load_volume(FLAIR)
    gt = np.asarray(nib.load(str(GT)).dataobj) > 0
    truth = vol.geometry("axial").take(gt, 75)
    ys, xs = np.nonzero(truth)
    return vol, "axial", 75, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def box_args(k: int = 70):
    gt = np.asarray(nib.load(str(GT)).dataobj) > 0
    xs, ys = np.nonzero(gt[:, :, k])
    return ["--box", "2", str(k), str(xs.min()), str(ys.min()), str(xs.max()), str(ys.max())]


# ------------------------------------------------------------------ 1. embedding disk cache

def test_damaged_disk_cache_entry_is_recomputed_not_trusted(tmp_path, backend, flair_box, caplog):
    from medsam_gui.engine import Session

    vol, view, index, box = flair_box
    cache_dir = tmp_path / "cache"
    first = Session(vol, backend, EmbeddingCache(disk_dir=str(cache_dir)))
    want = first.predict(view, index, box).mask
    [path] = list(cache_dir.rglob("*.npy"))
    good = path.read_bytes()
    # the hazard: a zeroed embedding still gives a mask, a different one
    zero, _ = backend.decode(torch.zeros(1, *backend.embedding_shape), want.shape, box)
    print(f"mask {int(want.sum())} px; on a zeroed embedding {int(zero.sum())} px")
    assert int(zero.sum()) != int(want.sum())

    # a healthy entry is trusted
    cache = EmbeddingCache(disk_dir=str(cache_dir))
    assert np.array_equal(Session(vol, backend, cache).predict(view, index, box).mask, want)
    assert (cache.disk_hits, cache.disk_rejected) == (1, 0)

    array_bytes = 2 * int(np.prod(backend.embedding_shape))
    header = len(good) - TRAILER_SIZE - array_bytes
    damaged = {
        "zeros, same length": bytes(len(good)),
        # still a valid .npy of the right shape: np.load alone would trust it
        "array bytes zeroed": good[:header] + bytes(array_bytes) + good[-TRAILER_SIZE:],
        "truncated": good[: len(good) // 2],
        "no checksum (older version)": good[:-TRAILER_SIZE],
    }
    assert np.load(path).shape == (1, *backend.embedding_shape)  # readable by numpy as is
    for what, data in damaged.items():
        path.write_bytes(data)
        if what == "array bytes zeroed":
            assert not np.load(path).any()  # numpy reads it as a zero embedding
        caplog.clear()
        cache = EmbeddingCache(disk_dir=str(cache_dir))
        with caplog.at_level(logging.WARNING, logger="medsam_gui.engine.cache"):
            mask = Session(vol, backend, cache).predict(view, index, box).mask
        assert np.array_equal(mask, want), what  # Dice 1.0
        assert (cache.disk_hits, cache.disk_rejected) == (0, 1) and cache.misses >= 1, what
        assert any(str(path) in r.getMessage() and "recomputed" in r.getMessage()
                   for r in caplog.records), what
        fresh = decode_entry(path.read_bytes())  # rewritten, with a valid checksum
        assert fresh.shape == (1, *backend.embedding_shape), what
    assert no_temp_files(cache_dir)


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    cache = EmbeddingCache(disk_dir=str(tmp_path))
    key = ("tag", "vol", "{}", "axial", 1)
    cache.put(key, torch.ones(1, 8, 4, 4))
    [entry] = list(tmp_path.rglob("*.npy"))
    old = entry.with_name(entry.name + ".tmp-99999-1")
    new = entry.with_name(entry.name + ".tmp-99999-2")
    old.write_bytes(b"half")
    new.write_bytes(b"half")
    os.utime(old, (1_000_000, 1_000_000))  # long dead
    cache.put(("tag", "vol", "{}", "axial", 2), torch.ones(1, 8, 4, 4))
    assert not old.exists() and new.exists()  # a recent one may be a write in progress


# --------------------------------------------------------------------- 2./3. checkpoints

@pytest.fixture(scope="module")
def bundled_raw():
    from medsam_gui.engine.loading import bundled_checkpoint

    path, _ = bundled_checkpoint()
    return torch.load(path, map_location="cpu", weights_only=True)


def _state_of(raw):
    return raw.get("model", raw) if isinstance(raw, dict) else raw


BAD_TENSOR = "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight"


@pytest.fixture(scope="module", params=["nan", "inf"])
def poisoned_checkpoint(request, bundled_raw, tmp_path_factory):
    """A copy of the bundled LiteMedSAM checkpoint with one NaN (or Inf) in one tensor."""
    raw = {k: v for k, v in bundled_raw.items()} if isinstance(bundled_raw, dict) else bundled_raw
    state = dict(_state_of(raw))
    t = state[BAD_TENSOR].clone()
    t.view(-1)[7] = float(request.param)
    state[BAD_TENSOR] = t
    if "model" in raw:
        raw["model"] = state
    else:
        raw = state
    path = tmp_path_factory.mktemp("ckpt") / f"lite_{request.param}.pth"
    torch.save(raw, path)
    return path


def test_nan_weights_are_refused_on_load_naming_file_and_tensor(poisoned_checkpoint, flair_box,
                                                                backend, monkeypatch):
    from medsam_gui.engine import Session, load_backend
    from medsam_gui.engine import weights

    vol, view, index, box = flair_box
    with pytest.raises(MedsamError) as err:
        load_backend("litemedsam", checkpoint=str(poisoned_checkpoint), device="cpu")
    msg = str(err.value)
    assert f"weights contain NaN/Inf in {BAD_TENSOR}" in msg and str(poisoned_checkpoint) in msg
    if "nan" not in poisoned_checkpoint.name:
        return
    # without the check the same file loads and answers with a wrong mask: an empty one
    # (on PyTorch: a runtime load would remember the unchecked file's digests, and a later
    # start would trust them without reading the weights)
    monkeypatch.setattr(weights, "check_finite", lambda state, path: None)
    unchecked = load_backend("litemedsam", checkpoint=str(poisoned_checkpoint), device="cpu",
                             precision="channels_last", decoder="pytorch")
    got = Session(vol, unchecked).predict(view, index, box).mask
    want = Session(vol, backend).predict(view, index, box).mask
    print(f"{poisoned_checkpoint.name}: {int(got.sum())} px against {int(want.sum())} px")
    assert want.sum() > 1000 and not got.any()


def test_segment_cli_refuses_nan_checkpoint(poisoned_checkpoint, tmp_path):
    out = tmp_path / "labels.nii.gz"
    proc = run_cli("medsam-segment", FLAIR, *box_args(), "--checkpoint", poisoned_checkpoint,
                   "--device", "cpu", "--out", out)
    assert_clean_refusal(proc, str(poisoned_checkpoint), BAD_TENSOR, "NaN/Inf")
    assert not out.exists() and no_temp_files(tmp_path)


@pytest.fixture(scope="module")
def pickled_checkpoint(bundled_raw, tmp_path_factory):
    """Weights plus the training arguments pickled beside them, as many training scripts do."""
    path = tmp_path_factory.mktemp("pickled") / "with_args.pth"
    torch.save({"model": dict(_state_of(bundled_raw)),
                "args": argparse.Namespace(lr=1e-4, epochs=10)}, path)
    return path


def test_pickled_checkpoint_refusal_does_not_advise_unsafe_loading(pickled_checkpoint, tmp_path):
    from medsam_gui.engine import load_backend

    with pytest.raises(MedsamError) as err:
        load_backend("litemedsam", checkpoint=str(pickled_checkpoint), device="cpu")
    msg = str(err.value)
    assert str(pickled_checkpoint) in msg
    assert "pickled" in msg and "argparse.Namespace" in msg and "safety" in msg
    assert "weights_only" not in msg and "Re-running" not in msg
    out = tmp_path / "labels.nii.gz"
    proc = run_cli("medsam-segment", FLAIR, *box_args(), "--checkpoint", pickled_checkpoint,
                   "--device", "cpu", "--out", out)
    assert_clean_refusal(proc, str(pickled_checkpoint), "pickled")
    assert "weights_only" not in proc.stderr and not out.exists()


# ----------------------------------------------------------------------------- 4. devices

def test_unusable_devices_are_clear_errors():
    with pytest.raises(MedsamError, match="unknown device 'foo'"):
        pick_device("foo")
    with pytest.raises(MedsamError, match="not supported"):
        pick_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(MedsamError, match="'cuda' was asked for"):
            pick_device("cuda")
    else:
        with pytest.raises(MedsamError, match="CUDA GPU"):
            pick_device(f"cuda:{torch.cuda.device_count()}")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(MedsamError, match="MPS is not available"):
            pick_device("mps")
    assert pick_device("cpu").type == "cpu" and pick_device(None) is not None


def _unusable_devices():
    out = ["foo"]
    if not torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        out.append("mps")
    return out


def test_segment_cli_bad_device_exit_2(tmp_path):
    out = tmp_path / "labels.nii.gz"
    for device in _unusable_devices():
        proc = run_cli("medsam-segment", FLAIR, *box_args(), "--device", device, "--out", out)
        assert_clean_refusal(proc, repr(device))
        assert not out.exists()
    assert no_temp_files(tmp_path)


# ---------------------------------------------------------------------------- 5. training

@pytest.fixture(scope="module")
def workspaces():
    from test_training_fixtures import brats_workspaces

    return brats_workspaces()


def test_train_cli_bad_device_and_epochs_exit_2_before_reading_data(workspaces, tmp_path):
    w1, w2 = workspaces
    out = tmp_path / "models" / "tuned.pth"
    proc = run_cli("medsam-train", w1, "--val", w2, "--device", "foo", "--out", out)
    assert_clean_refusal(proc, "unknown device 'foo'")
    assert "training:" not in proc.stdout
    for epochs in ("-3", "0"):
        proc = run_cli("medsam-train", w1, "--val", w2, "--epochs", epochs, "--out", out)
        assert_clean_refusal(proc, f"epochs must be at least 1 (got {epochs})")
        assert "training:" not in proc.stdout
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("flag,value,words", [
    ("--max-steps-per-epoch", "0", "max steps per epoch must be at least 1"),
    ("--batch-size", "0", "batch size must be at least 1"),
    ("--lr", "-1", "learning rate must be a positive number"),
    ("--device", "cuda" if not torch.cuda.is_available() else "cuda:99", "was asked for"),
])
def test_train_cli_refuses_settings_that_train_nothing(workspaces, tmp_path, capsys, flag, value,
                                                       words):
    from medsam_gui.training.train_cli import main

    w1, w2 = workspaces
    out = tmp_path / "tuned.pth"
    assert main([w1, "--val", w2, flag, value, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert words in captured.err and "training:" not in captured.out
    assert list(tmp_path.iterdir()) == []


def _immutable(folder: Path) -> bool:
    """Make ``folder`` refuse new files, even for root (chattr +i); False if impossible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def test_train_cli_checks_out_before_training(workspaces, tmp_path, capsys):
    from medsam_gui.training.train_cli import main

    w1, w2 = workspaces
    (tmp_path / "folder.pth").mkdir()
    (tmp_path / "a_file").write_text("x")
    cases = [(tmp_path / "folder.pth", "this is a folder"),
             (tmp_path / "a_file" / "tuned.pth", "is a file, not a folder"),
             (tmp_path / "a_file" / "deeper" / "tuned.pth", "is a file, not a folder"),
             (tmp_path / "tuned.ckpt", "must end in .pth")]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for out, words in cases:
        assert main([w1, "--val", w2, "--epochs", "1", "--out", str(out)]) == 2, out
        captured = capsys.readouterr()
        assert words in captured.err and str(out) in captured.err, captured.err
        assert "training:" not in captured.out
    locked = tmp_path / "locked"
    locked.mkdir()
    if _immutable(locked):
        try:
            out = locked / "tuned.pth"
            assert main([w1, "--val", w2, "--epochs", "1", "--out", str(out)]) == 2
            captured = capsys.readouterr()
            assert "cannot write in" in captured.err and str(locked) in captured.err
            assert "training:" not in captured.out
            assert list(locked.iterdir()) == []
        finally:
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(locked)], check=False)
            else:
                locked.chmod(0o755)
    locked.rmdir()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing left behind


def test_zero_training_steps_never_save_a_model(workspaces, tmp_path, monkeypatch):
    """Even past the settings check, a run that took no optimizer step writes nothing (and
    removes the folders it would have made)."""
    from test_training_fixtures import base_backend, shared_cache

    from medsam_gui.training import TrainConfig, finetune, train

    w1, w2 = workspaces
    monkeypatch.setattr(finetune, "check_config", lambda config: None)
    out = tmp_path / "new" / "sub" / "tuned.pth"
    with pytest.raises(MedsamError, match="no training step ran") as err:
        train(TrainConfig([w1], val_workspaces=[w2], epochs=0, out=str(out)), base_backend(),
              cache=shared_cache())
    assert str(out) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def _damage(meta: dict, how: str) -> str:
    if how == "source missing":
        meta.pop("source")
    elif how == "source null":
        meta["source"] = None
    elif how == "slices a string":
        meta["slices"] = "axial 60"
    elif how == "affine a string":
        meta["source"]["affine"] = "identity"
    elif how == "deeply nested":
        meta["slices"] = "@NEST@"
        return json.dumps(meta).replace('"@NEST@"', "[" * 200_000 + "]" * 200_000)
    return json.dumps(meta)


@pytest.mark.parametrize("how", ["source missing", "source null", "slices a string",
                                 "affine a string", "deeply nested"])
def test_train_on_a_damaged_workspace_exit_2_naming_the_file(workspaces, tmp_path, capsys, how):
    """Every saved generation damaged (the current annotation.json and its backups): exit 2,
    the file named, nothing written."""
    from medsam_gui.training.train_cli import main

    w1, w2 = workspaces
    ws = tmp_path / "ws"
    shutil.copytree(w1, ws)
    [jpath] = list(ws.glob("*/annotation.json"))
    for p in ws.rglob("annotation.json"):  # the current file and every backup in history/
        p.write_text(_damage(json.loads(p.read_text()), how))
    saved = jpath.read_bytes()
    out = tmp_path / "tuned.pth"
    if how == "source null":  # once as a real process: exit code and no traceback
        proc = run_cli("medsam-train", ws, "--val", w2, "--epochs", "1", "--out", out)
        assert_clean_refusal(proc, str(jpath))
    else:
        assert main([str(ws), "--val", w2, "--epochs", "1", "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert str(jpath) in captured.err and "Traceback" not in captured.err, captured.err
        assert "training:" not in captured.out
    assert not out.exists() and jpath.read_bytes() == saved


def test_damaged_current_save_trains_on_its_backup_and_says_so(workspaces, tmp_path, caplog):
    from medsam_gui.training import collect_samples

    w1, _ = workspaces
    ws = tmp_path / "ws"
    shutil.copytree(w1, ws)
    [jpath] = list(ws.glob("*/annotation.json"))
    if not list(ws.rglob("history/*/annotation.json")):
        pytest.skip("this workspace format keeps no backups")
    want = collect_samples([w1])
    jpath.write_text(_damage(json.loads(jpath.read_text()), "source null"))
    with caplog.at_level(logging.WARNING, logger="medsam_gui.training.dataset"):
        got = collect_samples([str(ws)])
    assert [(s.axis, s.index, s.label) for s in got] == [(s.axis, s.index, s.label) for s in want]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(got, want))
    assert any("backup" in r.getMessage() and str(jpath) in r.getMessage()
               for r in caplog.records), caplog.text


# ----------------------------------------------------------------------- 6. RT Structure Set

CT = DICOM / "ct_abdomen_siemens_jpeg2000"
CT_LABELS = DICOM / "reference" / "ct_abdomen_siemens_jpeg2000_totalseg_labels.nii.gz"


@pytest.fixture(scope="module")
def ct_rtstruct(tmp_path_factory):
    """(volume, label map, exported RT Structure Set) of the reference liver and spleen."""
    from medsam_gui.annotation.exporting import export_labels
    from medsam_gui.annotation.labels import Label, LabelMap, LabelTable, SliceRecord
    from medsam_gui.io import load_volume
    from medsam_gui.volume import view_for_axis

    vol = load_volume(CT)
    truth = np.asarray(nib.load(str(CT_LABELS)).dataobj)[:, ::-1, :]  # see test_dicom_export
    geom = view_for_axis(vol.affine, vol.shape, 2)
    lm = LabelMap(vol.shape, LabelTable([Label(1, "liver", (221, 130, 101)),
                                         Label(2, "spleen", (157, 108, 162))]))
    for value, organ in ((1, 5), (2, 1)):
        for k in range(geom.n_slices):
            mask = geom.take(truth == organ, k)
            if mask.any():
                lm.paint(geom, k, mask, value, mode="add",
                         record=SliceRecord(geom.view, k, value, status="edited"))
    path = tmp_path_factory.mktemp("rt") / "organs.rtstruct.dcm"
    export_labels(lm, vol, path)
    return vol, lm, path


def test_rtstruct_nan_and_off_plane_contours_are_reported_not_drawn(ct_rtstruct, tmp_path):
    from medsam_gui.io.label_import import read_segmentation

    vol, lm, path = ct_rtstruct
    clean = read_segmentation(path, vol)
    assert np.array_equal(clean.array, lm.array)
    assert not any("left out" in n for n in clean.notes)

    ds = pydicom.dcmread(str(path))
    liver = ds.ROIContourSequence[0].ContourSequence
    by_uid = {}
    for k, f in enumerate(vol.source.extra["files"]):
        h = pydicom.dcmread(f, stop_before_pixels=True)
        by_uid[str(h.file_meta.MediaStorageSOPInstanceUID)] = (k, h)

    def image_of(item):
        return str(item.ContourImageSequence[0].ReferencedSOPInstanceUID)

    # one contour per liver slice is the simple case: pick two slices with a single contour
    per_image = {}
    for n, item in enumerate(liver):
        per_image.setdefault(image_of(item), []).append(n)
    singles = [ns[0] for ns in per_image.values() if len(ns) == 1]
    nan_n, shift_n, near_n = singles[0], singles[len(singles) // 2], singles[-1]
    normal = np.cross(*np.asarray(by_uid[image_of(liver[0])][1].ImageOrientationPatient,
                                  float).reshape(2, 3))

    def moved(item, mm):
        xyz = np.asarray(item.ContourData, float).reshape(-1, 3) + mm * normal
        return [round(float(v), 4) for v in xyz.ravel()]

    data = [float(v) for v in liver[nan_n].ContourData]
    data[4] = float("nan")
    liver[nan_n].ContourData = data
    liver[shift_n].ContourData = moved(liver[shift_n], 20.0)
    liver[near_n].ContourData = moved(liver[near_n], 0.4)  # within half the 2 mm spacing
    edited = tmp_path / "edited.rtstruct.dcm"
    ds.save_as(str(edited))

    got = read_segmentation(edited, vol)
    notes = "\n".join(got.notes)
    print(notes)
    assert "2 contour(s) were left out" in notes
    nan_line = next(n for n in got.notes if f"contour #{nan_n + 1} " in n)
    assert "'liver'" in nan_line and image_of(liver[nan_n]) in nan_line and "NaN" in nan_line
    shift_line = next(n for n in got.notes if f"contour #{shift_n + 1} " in n)
    assert "'liver'" in shift_line and image_of(liver[shift_n]) in shift_line
    assert "20.0 mm off the plane" in shift_line and "tolerance 1.00 mm" in shift_line
    # neither is drawn anywhere; everything else, the 0.4 mm contour included, is as exported
    k_nan, k_shift = by_uid[image_of(liver[nan_n])][0], by_uid[image_of(liver[shift_n])][0]
    for k in range(vol.shape[2]):
        want = lm.array[:, :, k].copy()
        if k in (k_nan, k_shift):
            want[want == 1] = 0
        assert np.array_equal(got.array[:, :, k], want), k
    assert (got.array == 2).sum() == (lm.array == 2).sum()
