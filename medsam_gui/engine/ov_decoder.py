"""The prompt encoder + mask decoder on OpenVINO (CPU), the cost of every box.

Converted once per decoder weights (prompt encoder + mask decoder digest) and cached on disk
beside the encoder (``ov_encoder.cache_dir``); compiled models go to OpenVINO's own cache
(``ov_encoder.make_core``), so a second start neither converts nor compiles. Training stays on
PyTorch: a fine-tune is a new checkpoint, hence a new digest and a new conversion.

The exported graph takes the prompt already as SAM's sparse tokens: coordinates normalised to
[0, 1] of the model frame (computed in numpy float32 with PyTorch's exact steps: +0.5, ÷ size)
and one label per token: 0 / 1 negative / positive click, 2 / 3 the box's corners, -1 SAM's
padding point. Labels select the learnt embeddings by multiplication with 0/1 masks, which adds
exact zeros, so the tokens equal PyTorch's ``PromptEncoder`` bit for bit before the runtime's
own arithmetic. It returns all four low-res masks and IoU scores, as ``MaskDecoder.predict_masks``;
the caller slices single- or multi-mask output exactly as ``MaskDecoder.forward`` does.

Each (number of tokens, mask prompt or not) is compiled with static shapes on first use (a box:
2 tokens). Whether it runs at all is decided by measurement (``faster_than_pytorch``), once per
machine, weights and library versions, and remembered in the cache folder.

In bf16, the first call of each shape is also run in f32, and a shape whose logits differ by
more than ``BF16_LIMIT`` runs in f32 from then on. On AMD EPYC with AVX-512 BF16 (OpenVINO
2026.4) the 3-token shape (a box and one click, or two clicks) came out wrong in bf16, and
differently from one process to the next: logits 15 to 29 away from f32's, low-res masks with
Dice 0.0 to 0.73 against f32's, where every other shape (2 to 9 tokens, with and without a mask
prompt) stayed within 0.8 (Dice ≥ 0.96 wherever the mask had more than a few pixels).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from medsam_gui.engine.ov_encoder import HINTS, cache_dir, make_core, save_atomically
from medsam_gui.errors import MedsamError

log = logging.getLogger(__name__)
BF16_LIMIT = 4.0  # largest logit difference from f32 accepted of a bf16 shape's first call


class PromptMaskDecoder(nn.Module):
    """Prompt tokens (+ optional low-res mask prompt) and an embedding -> 4 masks, 4 IoUs."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module,
                 dense_pe: torch.Tensor, with_mask: bool) -> None:
        super().__init__()
        self.pe, self.md, self.with_mask = prompt_encoder, mask_decoder, with_mask
        self.register_buffer("dense_pe", dense_pe.detach().clone())

    def forward(self, embedding: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
                mask_input: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        pe = self.pe
        tokens = pe.pe_layer._pe_encoding(coords)  # coords already (x + 0.5) / size
        lab = labels.unsqueeze(-1)
        tokens = tokens * (lab != -1).to(tokens.dtype)
        tokens = tokens + pe.not_a_point_embed.weight * (lab == -1).to(tokens.dtype)
        for i in range(pe.num_point_embeddings):
            tokens = tokens + pe.point_embeddings[i].weight * (lab == i).to(tokens.dtype)
        if self.with_mask:
            dense = pe.mask_downscaling(mask_input)
        else:
            h, w = pe.image_embedding_size
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        return self.md.predict_masks(embedding, self.dense_pe, tokens, dense)


def prompt_tokens(box: Optional[np.ndarray], points_xy: Optional[np.ndarray],
                  point_labels: Optional[np.ndarray], frame: Tuple[int, int]
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """(1, N, 2) normalised coordinates and (1, N) labels of SAM's sparse prompt, in
    ``PromptEncoder``'s order: clicks, then the box corners, or a padding point when there is
    no box. ``frame``: the prompt encoder's input size (H, W)."""
    xy, lab = [], []
    if points_xy is not None and len(points_xy):
        xy.append(np.asarray(points_xy, np.float32).reshape(-1, 2) + np.float32(0.5))
        lab.append(np.asarray(point_labels, np.float32).reshape(-1))
        if box is None:  # PromptEncoder pads (coordinate 0, not shifted) with label -1
            xy.append(np.zeros((1, 2), np.float32))
            lab.append(np.array([-1], np.float32))
    if box is not None:
        xy.append(np.asarray(box, np.float32).reshape(2, 2) + np.float32(0.5))
        lab.append(np.array([2, 3], np.float32))
    if not xy:
        raise ValueError("a box or at least one point is needed")
    coords = np.concatenate(xy, 0)
    coords = coords / np.array([frame[1], frame[0]], np.float32)
    return coords[None].astype(np.float32), np.concatenate(lab)[None]


class OpenVinoDecoder:
    """``decoder(embedding, coords, labels, mask_input=None)`` -> (low_res (1,4,h,w), iou (1,4))."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module,
                 dense_pe: torch.Tensor, digest: str, precision: str = "ov_f32",
                 threads: Optional[int] = None, folder: Optional[Path] = None) -> None:
        import openvino as ov

        if precision not in HINTS:
            raise ValueError(f"precision must be one of {tuple(HINTS)}, got {precision!r}")
        self._ov = ov
        self.precision = precision
        self.folder = folder or cache_dir()
        self.digest = digest
        self._parts = (prompt_encoder, mask_decoder, dense_pe.detach().cpu().float())
        self._core = make_core(self.folder)
        self._config = {"INFERENCE_PRECISION_HINT": HINTS[precision],
                        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
                        "PERFORMANCE_HINT": "LATENCY"}
        self._models: Dict[bool, object] = {}  # with_mask -> ov.Model (dynamic token count)
        self._compiled: Dict[Tuple[int, bool], object] = {}  # (tokens, with_mask) -> request
        self._checked: set = set()  # bf16 shapes whose first call was compared with f32
        self.f32_shapes: set = set()  # bf16 shapes that failed that comparison: run in f32
        self._lock = threading.Lock()
        self.converted = False  # True when this load had to convert (not read from the cache)
        self.emb_shape = (1, int(mask_decoder.transformer_dim),
                          *(int(v) for v in prompt_encoder.image_embedding_size))
        self.mask_shape = (1, 1, *(4 * v for v in self.emb_shape[2:]))
        self._request(2, False)  # the box: converted (or read) and compiled now

    def path(self, with_mask: bool) -> Path:
        ver = self._ov.__version__.split("-")[0]
        kind = "decoder-mask" if with_mask else "decoder"
        return self.folder / f"{kind}-{self.digest[:16]}-ov{ver}.xml"

    def _model(self, with_mask: bool):
        model = self._models.get(with_mask)
        if model is not None:
            return model
        path = self.path(with_mask)
        if path.is_file():
            try:
                model = self._core.read_model(str(path))
            except Exception as exc:  # a damaged cache file: convert again
                log.warning("re-exporting the OpenVINO decoder (%s: %s)", path, exc)
        if model is None:
            model = self._convert(with_mask, path)
        self._models[with_mask] = model
        return model

    def _convert(self, with_mask: bool, path: Path):
        pe, md, dense_pe = self._parts
        net = PromptMaskDecoder(pe, md, dense_pe, with_mask).eval()
        example = [torch.zeros(self.emb_shape), torch.full((1, 2, 2), 0.5),
                   torch.tensor([[2.0, 3.0]])]
        if with_mask:
            example.append(torch.zeros(self.mask_shape))
        inputs = [[1, -1, 2] if i == 1 else [1, -1] if i == 2 else list(t.shape)
                  for i, t in enumerate(example)]
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings
                model = self._ov.convert_model(net, example_input=tuple(example), input=inputs)
        except Exception as exc:
            raise MedsamError(f"cannot convert the mask decoder to OpenVINO ({exc})") from None
        self.converted = True
        save_atomically(self._ov, model, path)
        return model

    def _request(self, tokens: int, with_mask: bool, f32: bool = False):
        """The compiled request of this shape (``f32``: a new one in f32, not kept)."""
        key = (tokens, with_mask)
        req = None if f32 else self._compiled.get(key)
        if req is None:
            model = self._model(with_mask).clone()
            shapes = {0: list(self.emb_shape), 1: [1, tokens, 2], 2: [1, tokens]}
            if with_mask:
                shapes[3] = list(self.mask_shape)
            model.reshape(shapes)
            config = dict(self._config, INFERENCE_PRECISION_HINT="f32") if f32 else self._config
            req = self._core.compile_model(model, "CPU", config).create_infer_request()
            if f32:
                return req
            self._compiled[key] = req
        return req

    def __call__(self, embedding: torch.Tensor, coords: np.ndarray, labels: np.ndarray,
                 mask_input: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        feed = [np.ascontiguousarray(embedding.detach().cpu().numpy(), dtype=np.float32),
                coords, labels]
        if mask_input is not None:
            feed.append(np.ascontiguousarray(mask_input.detach().cpu().float().numpy()))
        key = (int(coords.shape[1]), mask_input is not None)
        with self._lock:
            low, iou = self._infer(self._request(*key), feed)
            if self._config["INFERENCE_PRECISION_HINT"] != "f32" and key not in self._checked:
                self._checked.add(key)
                exact = self._request(*key, f32=True)
                f32_low, f32_iou = self._infer(exact, feed)
                off = float((low - f32_low).abs().max())
                if not off <= BF16_LIMIT:  # NaN too
                    log.warning("decoder shape %s: %s off f32 by %.1f in logits; run in f32",
                                key, self._config["INFERENCE_PRECISION_HINT"], off)
                    self._compiled[key] = exact
                    self.f32_shapes.add(key)
                    low, iou = f32_low, f32_iou
        return low, iou

    @staticmethod
    def _infer(req, feed) -> Tuple[torch.Tensor, torch.Tensor]:
        out = req.infer(dict(enumerate(feed)))
        low, iou = (torch.from_numpy(np.array(v, dtype=np.float32)) for v in out.values())
        return low, iou


# ------------------------------------------------------------------ choice by measurement
def _measure(run: Callable[[], object], reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def measure_pair(pytorch: Callable[[], object], openvino: Callable[[], object],
                 reps: int = 5) -> Tuple[float, float]:
    """Median seconds of each, interleaved after one warm-up each (the machine's noise hits
    both alike)."""
    pytorch()
    openvino()
    a, b = [], []
    for _ in range(reps):
        a.append(_measure(pytorch, 1))
        b.append(_measure(openvino, 1))
    return float(np.median(a)), float(np.median(b))


def _choices_file(folder: Path) -> Path:
    return folder / "decoder-choices.json"


def remembered_choice(key: str, folder: Optional[Path] = None) -> Optional[dict]:
    try:
        with open(_choices_file(folder or cache_dir()), encoding="utf-8") as fh:
            found = json.load(fh).get(key)
        return found if isinstance(found, dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def remember_choice(key: str, value: dict, folder: Optional[Path] = None) -> None:
    path = _choices_file(folder or cache_dir())
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # measured again at the next start
        log.warning("cannot remember the decoder choice in %s (%s)", path, exc)


def cpu_name() -> str:
    """The CPU's model name (part of the measurement's key: another CPU measures again)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _note(found: dict) -> str:
    return (f"one box: PyTorch {found.get('pytorch_ms', '?')} ms, OpenVINO "
            f"{found.get('openvino_ms', '?')} ms (measured on this machine)")


def measure_backend(backend, dec: "OpenVinoDecoder") -> dict:
    """One box on a random embedding, the backend's PyTorch modules and ``dec`` interleaved."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(dec.emb_shape, generator=g) * 0.3
    size = backend.model.prompt_encoder.input_image_size
    box = np.array([0.25 * size[1], 0.3 * size[0], 0.6 * size[1], 0.7 * size[0]], np.float32)

    def run(ov):
        def call():
            with torch.inference_mode():
                backend._prompt_decode(emb, box, None, None, None, ov)
        return call

    t_pt, t_ov = measure_pair(run(None), run(dec))
    return {"pytorch_ms": round(t_pt * 1e3, 2), "openvino_ms": round(t_ov * 1e3, 2),
            "openvino": bool(t_ov < t_pt)}


def decoder_for(backend, choice: str, precision: str) -> Tuple[Optional[OpenVinoDecoder], str]:
    """(decoder, note) or (None, why not) for ``backend`` on CPU.

    ``choice`` "openvino": converted (once) and used. "auto": used when it measured faster
    than PyTorch on this machine (measured once per CPU model, weights, thread count and
    library versions, then remembered beside the converted models). Converting takes ~10 s
    on 2 cores, so under "auto" the bundled weights are converted at once, while other weights
    (a fine-tune that training loads once to validate it) only from their second load on;
    until then they decode on PyTorch.
    """
    from importlib.metadata import version

    from medsam_gui.engine.ov_encoder import blocked_reason

    reason = blocked_reason()
    if reason is not None:
        return None, f"OpenVINO not used: {reason}"
    folder = cache_dir()
    key = "|".join([backend.kind, backend.decoder_sha256[:16], cpu_name(),
                    f"torch {torch.__version__}", f"threads {torch.get_num_threads()}",
                    precision, f"openvino {version('openvino')}"])
    found = remembered_choice(key, folder) if choice == "auto" else None
    if found is not None and "openvino" in found and not found["openvino"]:
        return None, _note(found)
    if choice == "auto" and "openvino" not in (found or {}):
        import openvino as ov

        ver = ov.__version__.split("-")[0]
        converted = (folder / f"decoder-{backend.decoder_sha256[:16]}-ov{ver}.xml").is_file()
        bundled = getattr(backend, "bundled", False)
        if not converted and not bundled and not (found or {}).get("seen"):
            remember_choice(key, {"seen": True}, folder)
            return None, "decoder on PyTorch: these weights are converted at their next load"
    try:
        dec = backend.openvino_decoder(precision, folder)  # built from the cached files
    except Exception as exc:  # conversion or compilation failed
        log.warning("mask decoder stays on PyTorch: %s", exc)
        return None, f"OpenVINO not used: {type(exc).__name__}: {exc}"
    if choice == "auto" and "openvino" not in (found or {}):
        found = measure_backend(backend, dec)
        remember_choice(key, found, folder)
    if found is not None and not found["openvino"]:
        return None, _note(found)
    return dec, _note(found) if found else "asked for"


__all__ = ["OpenVinoDecoder", "PromptMaskDecoder", "cpu_name", "decoder_for", "measure_backend",
           "measure_pair", "prompt_tokens", "remember_choice", "remembered_choice"]
