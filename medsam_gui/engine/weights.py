"""Checkpoint files: reading a state dict safely, its sha256, and the image encoder's digest
(which names cached embeddings and OpenVINO exports).

The digests of a checkpoint that loaded and checked well are remembered by the file's path,
size and modification time (``known_digests``), as make and git trust a file's stat: a start
whose converted runtime models are cached then needs neither to hash the file nor to read its
tensors, and need not build the PyTorch model at all (``loading.load_backend``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

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
    """State dict from a checkpoint file (weights_only); unwraps {"model": ...} wrappers.

    Refused with MedsamError naming the file: anything but plain tensors (pickled code is
    never run), a file torch cannot read, and weights holding NaN or Inf (they give empty
    masks without any other sign of trouble)."""
    check_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of every kind
        raise MedsamError(_load_problem(exc), path) from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MedsamError("checkpoint does not hold a model state dict", path)
    check_finite(obj, path)
    return obj


def _load_problem(exc: Exception) -> str:
    """What torch.load's failure means for the user, without torch's advice to load the file
    with ``weights_only=False`` (which would run whatever code the file holds)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"the file holds pickled Python objects ({found.group(1)}), not only weights; "
                "it is not loaded, for safety: unpickling could run code from the file. Save "
                "a plain state dict (torch.save(model.state_dict(), path)) and load that")
    if "weights_only" in text or isinstance(exc, pickle.UnpicklingError):
        return ("not a readable PyTorch checkpoint: its pickled data is damaged or holds "
                "code, and it is not loaded, for safety (code in a checkpoint is never run)")
    lines = text.strip().splitlines()
    msg = lines[0] if lines else type(exc).__name__
    return f"not a readable PyTorch checkpoint ({msg[:200]})"


def check_finite(state: dict, path: str) -> None:
    """Refuse weights holding NaN or Inf, naming the first such tensor."""
    bad = []
    for name, t in state.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            bad.append(name)
    if bad:
        t = state[bad[0]]
        n = int((~torch.isfinite(t)).sum())
        more = f" and {len(bad) - 1} other tensor(s)" if len(bad) > 1 else ""
        raise MedsamError(f"weights contain NaN/Inf in {bad[0]} ({n} of {t.numel()} values)"
                          f"{more}; the checkpoint is damaged or its training diverged, and it "
                          "is not loaded", path)


def encoder_digest(state: dict) -> str:
    """sha256 over the image encoder's parameter names and bytes in a state dict."""
    return parts_digest(state, ("image_encoder.",))


def parts_digest(state: dict, prefixes: Tuple[str, ...]) -> str:
    """sha256 over the names, dtypes and bytes of the tensors whose names start with one of
    ``prefixes`` (a model part: names a cache entry or a converted model by its weights)."""
    h = hashlib.sha256()
    for name in sorted(k for k in state if k.startswith(prefixes)):
        t = state[name]
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            h.update(str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------- remembered digests
DIGESTS_FILE = "weights-digests.json"
log = logging.getLogger(__name__)


def _stat_key(path: str) -> Optional[str]:
    """realpath|size|mtime_ns of ``path`` (None when it cannot be stat'ed)."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return f"{real}|{st.st_size}|{st.st_mtime_ns}"


def _read_digests(folder: Path) -> dict:
    try:
        with open(folder / DIGESTS_FILE, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def known_digests(path: str, folder: Path) -> Optional[Dict[str, str]]:
    """{"sha256", "encoder", "decoder"} remembered for ``path`` while its path, size and
    modification time are unchanged; None otherwise (then read and digest it)."""
    key = _stat_key(path)
    found = _read_digests(folder).get(key) if key else None
    if not isinstance(found, dict) or not all(
            isinstance(found.get(k), str) and len(found[k]) == 64
            for k in ("sha256", "encoder", "decoder")):
        return None
    return {k: found[k] for k in ("sha256", "encoder", "decoder")}


def remember_digests(path: str, digests: Dict[str, str], folder: Path) -> None:
    """Remember the digests of a checkpoint that loaded and checked well (atomic write; on
    failure the next start digests the file again)."""
    key = _stat_key(path)
    if key is None:
        return
    data = _read_digests(folder)
    real = key.split("|", 1)[0]
    # drop older stats of this file and entries of files that are gone (temporary copies)
    data = {k: v for k, v in data.items()
            if k.split("|", 1)[0] != real and os.path.exists(k.split("|", 1)[0])}
    data[key] = {k: digests[k] for k in ("sha256", "encoder", "decoder")}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{DIGESTS_FILE}-{os.getpid()}"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, folder / DIGESTS_FILE)
    except OSError as exc:
        log.warning("cannot remember checkpoint digests in %s (%s)", folder, exc)
