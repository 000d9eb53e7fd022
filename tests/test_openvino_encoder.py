"""The image encoder on OpenVINO: as exact as PyTorch fp32, as accurate against ground truth,
cached, with a clean fallback, and safe beside a preloaded allocator (real slices, real model).

The OpenVINO tests need a process without tcmalloc/jemalloc preloaded (the README's test
command); where the runtime is blocked or missing they are skipped with the reason. The int8
tests need NNCF (``pip install medsam-gui[int8]``; the test extra has it): without it the
quantisation test is skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsam_gui.engine import (EmbeddingCache, Session, load_backend, ov_encoder,
                               ov_encoder_parts, ov_int8, runtime)
from medsam_gui.engine.gate import DecodeGate
from medsam_gui.engine.evaluate import dice, gt_box_dice, mask_box, mean, pick_slices
from medsam_gui.io import load_volume
from medsam_gui.launch import find_tcmalloc

from conftest import ABDOMEN, PAT1, PAT2, REPO

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


@needs_openvino
def test_the_split_encoder_gives_the_whole_encoders_embedding_and_mask(ov32):
    enc = ov32._ov
    assert enc.parts is not None and len(enc.parts) == ov_encoder_parts.PARTS
    whole = ov_encoder.OpenVinoEncoder(None, ov32.encoder_sha256, ov32.input_size, "ov_f32",
                                       parts=1)  # read from the cache: no PyTorch model
    assert whole.parts is None
    vol = load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    k = pick_slices(vol.geometry("axial"), gt, 1)[0]
    img = Session(vol, ov32).model_slice("axial", k)
    x = ov32.model_input(img)
    a, b = whole(x), enc(x)
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())  # measured 0
    box = mask_box(vol.geometry("axial").take(gt, k))
    ma, _ = ov32.decode(a, (240, 240), box)
    mb, _ = ov32.decode(b, (240, 240), box)
    assert ma.sum() > 100 and np.array_equal(ma, mb)


class _SignalGate(DecodeGate):
    """Says when a background part has started, and holds the encoder thread there (its part
    running) until the test has begun a decode."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.go = threading.Event(), threading.Event()

    def start(self, begin, cancel) -> bool:
        ok = super().start(begin, cancel)
        if ok and cancel is not None and not self.started.is_set():
            self.started.set()
            self.go.wait(timeout=60)
        return ok


@needs_openvino
def test_a_box_during_a_background_encode_is_served_before_it(ov32):
    vol = load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    k = pick_slices(vol.geometry("axial"), gt, 1)[0]
    session = Session(vol, ov32, EmbeddingCache())
    emb = session.embed("axial", k)
    img = session.model_slice("axial", k + 1)
    expected = ov32.encode([img])
    gate, old = _SignalGate(), ov32._gate
    order, out = [], []

    def background() -> None:
        out.append(ov32.encode_background([img]))
        order.append("encode")

    ov32._gate = gate
    worker = threading.Thread(target=background)
    try:
        worker.start()
        assert gate.started.wait(timeout=120), "the background encode never started a part"
        with gate.decoding():  # a box begins while the encoder's first part runs
            gate.go.set()
            assert gate.cancels == 1  # ... and stops that part
            mask, _ = ov32.decode(emb, (240, 240), mask_box(vol.geometry("axial").take(gt, k)))
            order.append("decode")
        worker.join(timeout=300)
    finally:
        gate.go.set()
        ov32._gate = old
    assert order == ["decode", "encode"]
    assert mask.sum() > 100
    assert torch.equal(out[0], expected)  # the stopped part ran again: the same embedding


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


# ------------------------------------------------------------------------------ int8 (NNCF)
NO_NNCF = ov_int8.nncf_missing()
needs_nncf = pytest.mark.skipif(NO_NNCF is not None, reason=f"int8: {NO_NNCF}")


@needs_openvino
def test_auto_picks_int8_only_within_tolerance_and_measured_faster(monkeypatch):
    cpu = runtime.pick_device("cpu")
    base = runtime.cpu_baseline()
    # int8 failed the ground-truth bar (bench_runtime_accuracy.py): auto never picks it, even
    # where a remembered measurement says it is faster
    assert runtime.INT8_WITHIN_TOLERANCE is False
    monkeypatch.setattr(ov_int8, "measured_speed", lambda *a, **k: {"int8": True})
    assert runtime.resolve_precision("auto", cpu, "litemedsam") == base
    assert load_backend(decoder="pytorch").precision == base
    # the rule itself: within tolerance AND measured faster on this machine
    monkeypatch.setattr(runtime, "INT8_WITHIN_TOLERANCE", True)
    assert runtime.resolve_precision("auto", cpu, "litemedsam") == "ov_int8"
    monkeypatch.setattr(ov_int8, "measured_speed", lambda *a, **k: {"int8": False})
    assert runtime.resolve_precision("auto", cpu, "litemedsam") == base
    monkeypatch.setattr(ov_int8, "measured_speed", lambda *a, **k: None)  # not measured yet
    assert runtime.resolve_precision("auto", cpu, "litemedsam") == base
    assert runtime.resolve_precision("ov_int8", cpu, "litemedsam") == "ov_int8"  # asked for


def _gt_dice(backend, vol, truth, n):
    slices = pick_slices(vol.geometry("axial"), truth, n)
    return mean(gt_box_dice(Session(vol, backend), "axial", truth, slices))


@needs_openvino
@needs_nncf
def test_int8_is_quantised_cached_by_settings_and_close_to_f32(ov32, tmp_path, monkeypatch):
    """A small quantisation (3 calibration slices of the bundled demo, pat0001; no bias
    correction: it costs a second pass) into an empty cache folder, end to end through
    load_backend; scored on pat0002 and the abdominal CT, never on the calibration case."""
    import openvino as ov

    for suffix in (".xml", ".bin"):  # the f32 model as converted before: no second export
        (tmp_path / ov32._ov.path.name).with_suffix(suffix).write_bytes(
            ov32._ov.path.with_suffix(suffix).read_bytes())
    small = {**ov_int8.SETTINGS, "slices": 3, "bias_correction": "none"}
    monkeypatch.setenv("MEDSAM_OPENVINO_CACHE", str(tmp_path))
    monkeypatch.setattr(ov_int8, "SETTINGS", small)
    b8 = load_backend(precision="ov_int8", decoder="pytorch")
    enc = b8._ov
    assert (b8.runtime, b8.runtime_label) == ("openvino", "openvino int8"), b8.runtime_note
    assert enc.quantise_seconds > 0 and enc.path.parent == tmp_path
    assert enc.path.name.startswith(ov32._ov.path.stem + "-int8-")  # weights digest, size, OV
    fq = [op for op in ov.Core().read_model(str(enc.path)).get_ops()
          if op.get_type_name() == "FakeQuantize"]
    assert len(fq) > 50  # really quantised (measured: 60, the convolutions kept in float)
    faster = enc.speed["int8_ms"] < ov_int8.FASTER * enc.speed["baseline_ms"]
    assert enc.speed["int8"] == faster
    assert ov_int8.measured_speed(small, tmp_path) == enc.speed  # remembered for auto

    again = load_backend(precision="ov_int8", decoder="pytorch")
    assert again._ov.quantise_seconds == 0 and again._ov.path == enc.path  # read, not redone
    inputs = ov_int8.calibration_inputs(3)
    assert ov_int8.settings_digest(inputs, small) in enc.path.name
    # cached embeddings are named by the quantisation and the precision of its float ops
    assert b8.cache_tag.endswith(f":{ov_int8.settings_digest(inputs, small)}:{enc.float_hint}")
    assert enc.float_hint == ("bf16" if runtime.cpu_baseline() == "ov_bf16" else "f32")
    other = ov_int8.settings_digest(inputs, {**small, "preset": "performance"})
    assert other not in enc.path.name  # other settings, other file

    flair = load_volume(PAT2 / "Flair_subtrMeanDivStd.nii.gz")
    gt = np.asarray(nib.load(str(PAT2 / "OTMultiClass.nii.gz")).dataobj) > 0
    ct = load_volume(ABDOMEN / "example_ct_sm.nii.gz")
    liver = np.asarray(nib.load(str(ABDOMEN / "example_seg.nii.gz")).dataobj) == 5
    scores = {name: (_gt_dice(b8, vol, truth, 3), _gt_dice(ov32, vol, truth, 3))
              for name, vol, truth in (("BRATS pat0002 FLAIR", flair, gt),
                                       ("abdominal CT liver", ct, liver))}
    # still a segmentation of the structure (a broken quantisation gives next to nothing), but
    # a calibration this small costs accuracy and varies with the build (measured: FLAIR 0.803
    # and 0.763 against f32 0.904); the production settings (12 slices, bias correction) are
    # scored in bench_runtime_accuracy.py and did not meet the 0.01 bar
    assert all(got >= 0.5 and got >= ref - 0.3 for got, ref in scores.values()), scores
    assert any(got != ref for got, ref in scores.values()), scores  # int8 really ran


def test_compiled_blobs_are_pruned_least_recently_used_first(tmp_path):
    """The compiled-model cache stays under its size: the least recently used blobs go first,
    and blobs of the old shared folder are removed when a core is made."""
    compiled = tmp_path / "compiled"
    for i, hint in enumerate(("f32-2threads", "bf16-2threads", "f32-2threads", "f32-1threads")):
        (compiled / hint).mkdir(parents=True, exist_ok=True)
        blob = compiled / hint / f"{i}.blob"
        blob.write_bytes(b"x" * 1000)
        os.utime(blob, (1000.0 + i, 1000.0 + i))  # blob 0 the least recently used
    (compiled / "old.blob").write_bytes(b"x" * 10)
    assert ov_encoder.prune_compiled(compiled, max_bytes=2500) == 2000
    left = sorted(p.name for p in compiled.glob("*/*.blob"))
    assert left == ["2.blob", "3.blob"]
    if ov_encoder.blocked_reason() is None:
        ov_encoder.make_core(tmp_path)
        assert not (compiled / "old.blob").exists() and len(list(compiled.glob("*/*.blob"))) == 2
