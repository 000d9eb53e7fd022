"""The image encoder on OpenVINO: as exact as PyTorch fp32, as accurate against ground truth,
cached, with a clean fallback, and safe beside a preloaded allocator (real slices, real model).

The OpenVINO tests need a process without tcmalloc/jemalloc preloaded (the README's test
command); where the runtime is blocked or missing they are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.engine import Session, load_backend, ov_encoder
from medsam_gui.engine.evaluate import dice, gt_box_dice, mask_box, mean, pick_slices
from medsam_gui.io import load_volume
from medsam_gui.launch import find_tcmalloc

from conftest import ABDOMEN, PAT1, REPO

pytestmark = pytest.mark.needs_data
BLOCKED = ov_encoder.blocked_reason()
needs_openvino = pytest.mark.skipif(BLOCKED is not None, reason=f"OpenVINO: {BLOCKED}")


@pytest.fixture(scope="module")
def fp32():
    return load_backend(precision="fp32")


@pytest.fixture(scope="module")
def ov32():
    backend = load_backend(precision="ov_f32")
    assert backend.runtime == "openvino", backend.runtime_note
    return backend


def cases():
    """(name, volume, truth) per kind of labelled scan."""
    flair = load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    yield "BRATS FLAIR", flair, gt
    ct = load_volume(ABDOMEN / "example_ct_sm.nii.gz")
    yield "abdominal CT liver", ct, np.asarray(nib.load(str(ABDOMEN / "example_seg.nii.gz")).dataobj) == 5
    mr = load_volume(ABDOMEN / "example_mr_sm.nii.gz")
    yield "abdominal MR liver", mr, np.asarray(nib.load(str(ABDOMEN / "example_seg_mr.nii.gz")).dataobj) == 5


@needs_openvino
def test_f32_runtime_gives_pytorch_fp32_embeddings_and_masks(fp32, ov32):
    for name, vol, truth in cases():
        geom = vol.geometry("axial")
        k = pick_slices(geom, truth, 1)[0]
        img = Session(vol, fp32).model_slice("axial", k)
        a, b = fp32.encode([img]), ov32.encode([img])
        assert a.shape == b.shape == (1, 256, 64, 64)
        rel = float((a - b).abs().max() / a.abs().max())
        assert rel < 1e-4, (name, rel)  # measured ~6e-6
        box = mask_box(geom.take(truth, k))
        ma, _ = fp32.decode(a, geom.slice_shape, box)
        mb, _ = ov32.decode(b, geom.slice_shape, box)
        assert dice(ma, mb) >= 0.999, name


@needs_openvino
def test_auto_is_the_runtime_and_as_accurate_against_ground_truth(fp32):
    auto = load_backend()
    assert auto.runtime == "openvino" and auto.precision.startswith("ov_")
    assert auto.cache_tag != fp32.cache_tag  # runtimes never share cached embeddings
    for name, vol, truth in cases():
        slices = pick_slices(vol.geometry("axial"), truth, 6)
        ref = mean(gt_box_dice(Session(vol, fp32), "axial", truth, slices))
        got = mean(gt_box_dice(Session(vol, auto), "axial", truth, slices))
        assert got >= ref - 0.01, (name, auto.precision, got, ref)


@needs_openvino
def test_the_export_is_reused_from_the_cache(ov32):
    assert ov32._ov.path.is_file() and ov32._ov.path.with_suffix(".bin").is_file()
    again = load_backend(precision="ov_f32")
    assert again.runtime == "openvino" and not again._ov.converted
    assert again._ov.path == ov32._ov.path


def test_a_missing_or_failing_runtime_falls_back_to_pytorch(monkeypatch):
    monkeypatch.setattr(ov_encoder, "blocked_reason", lambda: "the openvino package is missing")
    auto = load_backend()
    assert (auto.runtime, auto.precision) == ("pytorch", "channels_last")
    asked = load_backend(precision="ov_f32")
    assert (asked.runtime, asked.precision) == ("pytorch", "channels_last")
    assert "openvino package is missing" in asked.runtime_note
    monkeypatch.setattr(ov_encoder, "blocked_reason", lambda: None)

    def broken(*_a, **_k):
        raise RuntimeError("compilation failed")

    monkeypatch.setattr(ov_encoder, "OpenVinoEncoder", broken)
    failed = load_backend(precision="ov_f32")
    assert failed.runtime == "pytorch" and "compilation failed" in failed.runtime_note
    img = np.zeros((240, 240), np.uint8)
    img[80:160, 80:160] = 200
    assert failed.encode([img]).shape == (1, 256, 64, 64)  # and it still encodes


CHILD = """
import numpy as np
from medsam_gui.engine import load_backend
b = load_backend()
img = np.zeros((240, 240), np.uint8); img[80:160, 80:160] = 200
print(b.runtime, b.precision, tuple(b.encode([img]).shape))
"""


@pytest.mark.skipif(find_tcmalloc() is None, reason="no tcmalloc on this machine")
def test_a_process_with_tcmalloc_preloaded_keeps_pytorch_and_does_not_crash():
    env = dict(os.environ, LD_PRELOAD=find_tcmalloc())
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["pytorch", "channels_last"]


@needs_openvino
def test_the_real_entry_point_runs_the_runtime_encoder(tmp_path):
    script = Path(sys.executable).with_name("medsam-segment")
    if not script.is_file():
        pytest.skip("medsam-segment is not installed beside this Python")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MEDSAM_NO_PRELOAD")}
    out = tmp_path / "tumour.nii.gz"
    demo = REPO / "resources" / "demo" / "brats_2013_pat0001_flair.nii.gz"
    run = subprocess.run([str(script), str(demo), "--box", "2", "63", "58", "76", "103", "166",
                          "--out", str(out)], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "image encoder: openvino" in run.stderr
    assert np.asarray(nib.load(str(out)).dataobj).any()
