"""The prompt encoder + mask decoder on OpenVINO: f32 equal to PyTorch (box, box + clicks,
one ambiguous click, a mask prompt), bf16 as accurate against ground truth, the choice by
measurement, the compiled-model cache and the fallback (real slices, real model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsam_gui.engine import Session, load_backend, ov_decoder, ov_encoder, refine
from medsam_gui.engine.backends import Backend
from medsam_gui.engine.evaluate import dice, gt_box_dice, mask_box, mean, pick_slices

from test_openvino_encoder import cases

pytestmark = pytest.mark.needs_data
BLOCKED = ov_encoder.blocked_reason()
needs_openvino = pytest.mark.skipif(BLOCKED is not None, reason=f"OpenVINO: {BLOCKED}")


@pytest.fixture(scope="module")
def pair():
    """The same weights and encoder, the decoder on OpenVINO f32 and on PyTorch."""
    ov = load_backend(precision="ov_f32", decoder="openvino")
    assert ov.decoder_runtime == "openvino f32", ov.decoder_note
    pt = load_backend(precision="ov_f32", decoder="pytorch")
    assert pt.decoder_runtime == "pytorch"
    return ov, pt


@pytest.fixture(scope="module")
def slices(pair):
    """(name, embedding, shape, truth slice) of one tumour/organ slice per kind."""
    ov, _ = pair
    out = []
    for name, vol, truth in cases():
        geom = vol.geometry("axial")
        k = pick_slices(geom, truth, 1)[0]
        emb = ov.encode([Session(vol, ov).model_slice("axial", k)])
        out.append((name, emb, geom.slice_shape, geom.take(truth, k)))
    return out


@needs_openvino
def test_f32_decoder_equals_pytorch_on_every_prompt_kind(pair, slices):
    ov, pt = pair
    for name, emb, shape, truth in slices:
        box = mask_box(truth)
        click = refine.corrective_click(truth, ov.decode(emb, shape, box)[0])
        assert click is not None
        ys, xs = np.nonzero(truth)
        inside = (float(xs[len(xs) // 2]), float(ys[len(ys) // 2]), 1)
        prompts = {"box": (box, None, None, False),
                   "box + 2 clicks": (box, [click, (box[0], box[1], 0)], None, False),
                   "one click, multi-mask": (None, [inside], None, True)}
        with torch.inference_mode():
            low_box, _ = pt.low_res(emb, shape, box)
            prompts["box + mask prompt"] = (box, [click], low_box, False)
            for what, (b, pts, mask_in, multi) in prompts.items():
                a_low, a_iou = ov.low_res(emb, shape, b, pts, mask_in, multi)
                r_low, r_iou = pt.low_res(emb, shape, b, pts, mask_in, multi)
                assert a_low.shape == r_low.shape == (1, 3 if multi else 1, 256, 256)
                diff = float((a_low - r_low).abs().max())
                assert diff < 1e-3, (name, what, diff)  # measured ~2e-5 on logits of ~20
                assert float((a_iou - r_iou).abs().max()) < 1e-4, (name, what)
                assert np.array_equal(ov.postprocess(a_low[:, :1], shape).numpy(),
                                      pt.postprocess(r_low[:, :1], shape).numpy()), (name, what)
        ma, ia = ov.decode(emb, shape, box)
        mr, ir = pt.decode(emb, shape, box)
        assert np.array_equal(ma, mr) and abs(ia - ir) < 1e-4, name
        assert dice(ma, truth) > 0.7, name  # and the mask is the structure
        single = ov.decode(emb, shape, None, [inside])
        assert np.array_equal(single[0], pt.decode(emb, shape, None, [inside])[0]), name


@needs_openvino
def test_click_refinement_runs_on_the_runtime_and_matches_pytorch(pair, slices):
    """The same clicks (chosen on the OpenVINO masks) through both decoders give the same
    masks. Each side choosing its own clicks is not comparable: logits ~2e-5 apart flip a few
    boundary pixels, and where two error regions are nearly the same size the next corrective
    click moves elsewhere.

    The "points" method once failed here in full test runs (first click: IoU 0.38 against
    0.87): an earlier test had compiled the 3-token shape in bf16, and OpenVINO's compiled-model
    cache handed that blob to the f32 compile (``ov_encoder.CachingCore``; the test below)."""
    ov, pt = pair
    for name, emb, shape, truth in slices:
        box = mask_box(truth)
        for method in ("points", "mask_prompt", "local"):
            on_ov, on_pt = refine.start(ov, emb, shape, box), refine.start(pt, emb, shape, box)
            for _ in range(2):
                c = refine.corrective_click(truth, on_ov.mask)
                if c is None:
                    break
                on_ov = refine.step(ov, emb, shape, on_ov, c, method)
                on_pt = refine.step(pt, emb, shape, on_pt, c, method)
                assert on_ov.clicks == on_pt.clicks, (name, method)
                assert dice(on_ov.mask, on_pt.mask) > 0.995, (name, method)
            assert len(on_ov.clicks) == 2 or c is None, (name, method)


@needs_openvino
def test_bf16_decoder_is_as_accurate_against_ground_truth(pair):
    _ov, pt = pair
    bf16 = load_backend(precision="ov_bf16", decoder="openvino")
    assert bf16.decoder_runtime == "openvino bf16", bf16.decoder_note
    for name, vol, truth in cases():
        picked = pick_slices(vol.geometry("axial"), truth, 6)
        ref = mean(gt_box_dice(Session(vol, pt), "axial", truth, picked))
        got = mean(gt_box_dice(Session(vol, bf16), "axial", truth, picked))
        assert got >= ref - 0.01, (name, got, ref)


def _prompts(truth: np.ndarray):
    """Box and click prompts of every token count from 2 to 6 (clicks inside the box, both
    signs), with and without the box."""
    box = mask_box(truth)
    ys, xs = np.nonzero(truth)
    picks = np.linspace(0, len(xs) - 1, 5).astype(int)
    clicks = [(float(xs[i]), float(ys[i]), int(i % 2 == 0)) for i in picks]
    clicks[1] = (box[0] + 2.0, box[1] + 2.0, 0)  # a negative click in the box's corner
    for n in range(0, 5):
        yield box, clicks[:n] or None
        if n:
            yield None, clicks[:n]


@needs_openvino
@pytest.mark.skipif(not ov_encoder.cpu_has_fast_bf16(), reason="no bf16 units on this CPU")
def test_every_bf16_decoder_shape_stays_near_pytorch(pair, slices):
    """Each (token count, mask prompt) shape in bf16 stays within ``BF16_LIMIT`` of PyTorch's
    logits: a shape that OpenVINO computes wrongly in bf16 (the 3-token shape here, logits
    15 to 29 off) is found on its first call and run in f32."""
    _ov, pt = pair
    bf16 = load_backend(precision="ov_bf16", decoder="openvino")
    assert bf16.decoder_runtime == "openvino bf16", bf16.decoder_note
    _name, emb, shape, truth = slices[0]
    with torch.inference_mode():
        low_box, _ = pt.low_res(emb, shape, mask_box(truth))
        for box, clicks in _prompts(truth):
            for mask_in in (None, low_box):
                got, _ = bf16.low_res(emb, shape, box, clicks, mask_in)
                ref, _ = pt.low_res(emb, shape, box, clicks, mask_in)
                off = float((got - ref).abs().max())
                what = (box is not None, len(clicks or ()), mask_in is not None)
                assert off <= ov_decoder.BF16_LIMIT + 0.5, (what, off)
                a, b = got > 0, ref > 0
                if b.sum() > 50:
                    assert 2 * float((a & b).sum()) / float(a.sum() + b.sum()) > 0.95, what


@needs_openvino
def test_compiled_models_are_cached_apart_per_precision(pair, slices, tmp_path, monkeypatch):
    """A bf16 compile of a shape, then an f32 compile of the same shape in a fresh cache: the
    f32 decoder still equals PyTorch (OpenVINO names both blobs alike; in one shared folder
    the f32 model read back the bf16 blob, logits 8.9 off). Blobs of the old shared folder
    are removed."""
    ov, pt = pair
    dec = ov._ov_dec
    for with_mask in (False, True):  # the converted models, so that nothing converts again
        for suffix in (".xml", ".bin"):
            src = dec.path(with_mask).with_suffix(suffix)
            (tmp_path / src.name).write_bytes(src.read_bytes())
    stale = tmp_path / "compiled" / "1234.blob"
    stale.parent.mkdir()
    stale.write_bytes(b"an old blob")
    pe, md, dense_pe = dec._parts
    _name, emb, shape, truth = slices[0]
    box = np.asarray(ov.box_to_model(mask_box(truth), shape), np.float32)
    xy, labels = box[None, :2] + np.float32(2.0), np.array([0])  # box + one click: 3 tokens
    with torch.inference_mode():
        ref, _ = pt._prompt_decode(emb, box, xy, labels, None, None)
        for precision in ("ov_bf16", "ov_f32"):
            d = ov_decoder.OpenVinoDecoder(pe, md, dense_pe, dec.digest, precision,
                                           folder=tmp_path)
            assert not d.converted and not stale.exists()
            got, _ = ov._prompt_decode(emb, box, xy, labels, None, d)
    assert float((got - ref).abs().max()) < 1e-3  # the f32 decoder, compiled second
    compiled = tmp_path / "compiled"
    assert any((compiled / f"f32-{torch.get_num_threads()}threads").glob("*.blob"))
    if ov_encoder.cpu_has_fast_bf16():
        assert any((compiled / f"bf16-{torch.get_num_threads()}threads").glob("*.blob"))


def test_decoder_runs_in_bf16_where_the_encoder_float_ops_do(monkeypatch):
    """bf16 beside an encoder whose float ops are bf16 (asked for, or auto on a CPU with bf16
    units, int8 there too), f32 otherwise; auto on this machine gets what the rule says."""
    from medsam_gui.engine import runtime

    rule = ov_encoder.decoder_precision
    assert rule("ov_bf16") == "ov_bf16"
    assert [rule(p) for p in ("ov_f32", "auto", "channels_last", "fp32")] == ["ov_f32"] * 4
    for fast, want in ((True, "ov_bf16"), (False, "ov_f32")):
        monkeypatch.setattr(ov_encoder, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert rule("ov_int8") == want  # int8's convolutions run as the baseline does
        if BLOCKED is None:
            cpu = runtime.pick_device("cpu")
            assert rule(runtime.resolve_precision("auto", cpu, "litemedsam")) == want


@needs_openvino
def test_auto_follows_the_measurement_and_remembers_it(pair, monkeypatch, tmp_path):
    ov, _ = pair
    dec = ov._ov_dec
    monkeypatch.setenv("MEDSAM_OPENVINO_CACHE", str(tmp_path))
    for t_pt, t_ov, runtime in ((0.010, 0.020, "pytorch"), (0.020, 0.010, "openvino f32")):
        monkeypatch.setattr(ov_decoder, "measure_pair", lambda *_a, **_k: (t_pt, t_ov))
        monkeypatch.setattr(Backend, "openvino_decoder", lambda *_a, **_k: dec)
        ov.use_openvino_decoder("auto")
        assert ov.decoder_runtime == runtime, ov.decoder_note
        assert f"PyTorch {t_pt * 1e3:.1f} ms" in ov.decoder_note
        # remembered: the next load neither measures nor builds what it will not use
        monkeypatch.setattr(ov_decoder, "measure_pair", None)
        if runtime == "pytorch":
            monkeypatch.setattr(Backend, "openvino_decoder", None)
        ov.use_openvino_decoder("auto")
        assert ov.decoder_runtime == runtime
        (tmp_path / "decoder-choices.json").unlink()
    ov.use_openvino_decoder("openvino")  # leave the shared fixture as it was


@needs_openvino
def test_converted_and_compiled_models_are_cached(pair, monkeypatch):
    ov, _ = pair
    dec = ov._ov_dec
    assert dec.path(False).is_file() and dec.path(False).with_suffix(".bin").is_file()
    assert dec.path(True).is_file()  # the mask-prompt variant, converted on first use
    core = ov_encoder.make_core(dec.folder)
    assert core.cache_folder(dec._config).parent == dec.folder / "compiled"
    assert any(core.cache_folder(dec._config).glob("*.blob"))
    again = load_backend(precision="ov_f32", decoder="openvino")
    assert again._ov_dec is not None and not again._ov_dec.converted


@needs_openvino
def test_a_failing_decoder_conversion_falls_back_to_pytorch(monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(Backend, "openvino_decoder", broken)
    b = load_backend(precision="ov_f32", decoder="openvino")
    assert b.decoder_runtime == "pytorch" and "conversion failed" in b.decoder_note
    img = np.zeros((240, 240), np.uint8)
    img[80:160, 80:160] = 200
    mask, _ = b.decode(b.encode([img]), (240, 240), (70, 70, 170, 170))
    assert mask[120, 120] and not mask[10, 10]
