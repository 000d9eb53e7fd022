"""Checkpoint files: reading a state dict safely, its sha256, and the image encoder's digest
(which names cached embeddings and OpenVINO exports)."""

from __future__ import annotations

import hashlib
import os

import torch

from medsam_gui.errors import MedsamError


def check_file(path: str) -> None:
    if os.path.isdir(path):
        raise MedsamError("checkpoint not found: this is a folder, not a file", path)
    if not os.path.isfile(path):
        raise MedsamError("checkpoint file not found", path)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    except OSError as exc:
        raise MedsamError(f"cannot read checkpoint: {exc.strerror or exc}", path) from None
    return h.hexdigest()


def read_state_dict(path: str) -> dict:
    """State dict from a checkpoint file (weights_only); unwraps {"model": ...} wrappers."""
    check_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of every kind
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedsamError(f"not a readable PyTorch checkpoint ({msg[:200]})", path) from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MedsamError("checkpoint does not hold a model state dict", path)
    return obj


def encoder_digest(state: dict) -> str:
    """sha256 over the image encoder's parameter names and bytes in a state dict."""
    h = hashlib.sha256()
    for name in sorted(k for k in state if k.startswith("image_encoder.")):
        t = state[name]
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            h.update(str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
