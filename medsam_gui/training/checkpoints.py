"""Fine-tuned checkpoints: where they go, their file format and their metadata sidecar.

The checkpoint is a plain state dict with exactly the base model's keys (for LiteMedSAM:
``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*`` as in ``lite_medsam.pth``), so
official tools load it. ``NAME.json`` beside it (format ``medsam-gui-finetune/1``) says what it
is. Both are written to temp names and renamed at the end; a base or an existing file is never
overwritten.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import nn

from medsam_gui.engine.registry import models_dir
from medsam_gui.errors import MedsamError
from medsam_gui.io.atomic import write_synced

META_FORMAT = "medsam-gui-finetune/1"


def output_path(out: Optional[str], base_kind: str, base_checkpoint: Optional[str]) -> Path:
    """Where the new checkpoint goes: ``out`` (must not exist), else a fresh name in
    models_dir(). Checked before any training (``check_writable_target``): nothing is
    created here."""
    if out:
        path = Path(out).expanduser()
        if path.is_dir():
            raise MedsamError("this is a folder; give a new checkpoint file name ending in "
                              ".pth", path)
        if path.suffix != ".pth":
            raise MedsamError("the output checkpoint name must end in .pth", path)
        if path.exists() or path.with_suffix(".json").exists():
            raise MedsamError("refusing to overwrite an existing checkpoint; choose a new name",
                              path)
    else:
        folder = models_dir()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"{base_kind}-finetuned-{stamp}.pth"
        n = 2
        while path.exists() or path.with_suffix(".json").exists():
            path = folder / f"{base_kind}-finetuned-{stamp}-{n}.pth"
            n += 1
    if base_checkpoint and os.path.abspath(path) == os.path.abspath(base_checkpoint):
        raise MedsamError("the output would overwrite the base checkpoint", path)
    check_writable_target(path)
    return path


def check_writable_target(path: Path) -> None:
    """Refuse, before any training, a checkpoint path that cannot be written: a file where a
    folder is needed, or a folder (the nearest existing one; missing folders below it are made
    when the checkpoint is written) that does not take new files. Leaves nothing behind."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise MedsamError(f"{folder} is a file, not a folder", path)
    probe = folder / f".medsam-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise MedsamError(f"cannot write in {folder} ({exc.strerror or exc})", path) from None
    try:
        probe.unlink()
    except OSError:
        pass


def make_folders(path: Path) -> List[Path]:
    """Create the missing folders above ``path``; returns them, deepest first (for
    ``remove_folders`` when nothing gets written)."""
    made: List[Path] = []
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_folders(made)
        raise MedsamError(f"cannot create the folder ({exc.strerror or exc})", path.parent) \
            from None
    return made


def remove_folders(folders: List[Path]) -> None:
    """Remove folders made for a checkpoint that was not written (only if still empty)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def plain_state_dict(model: nn.Module, key_order: Optional[List[str]] = None
                     ) -> "OrderedDict[str, torch.Tensor]":
    """CPU, contiguous copy of the state dict with the model's own keys (in the base file's
    key order when given and the key sets agree)."""
    sd = model.state_dict()
    keys = key_order if key_order is not None and set(key_order) == set(sd) else list(sd)
    return OrderedDict((k, sd[k].detach().to("cpu").contiguous().clone()) for k in keys)


def base_key_order(base_checkpoint: Optional[str]) -> Optional[List[str]]:
    if not base_checkpoint or not os.path.isfile(base_checkpoint):
        return None
    try:
        from medsam_gui.engine.weights import read_state_dict

        return list(read_state_dict(base_checkpoint))
    except Exception:  # the order is cosmetic; the model's own order is fine too
        return None


def temp_paths(path: Path) -> Tuple[Path, Path]:
    """Temp names that no model list picks up (they do not end in .pth/.json)."""
    pid = os.getpid()
    return (path.with_name(f"{path.name}.tmp-{pid}"),
            path.with_name(f"{path.with_suffix('.json').name}.tmp-{pid}"))


def write_checkpoint(model: nn.Module, tmp_pth: Path, base_checkpoint: Optional[str] = None
                     ) -> None:
    """The model's state dict to ``tmp_pth`` (its folder exists: ``make_folders``), synced."""
    state = plain_state_dict(model, base_key_order(base_checkpoint))
    try:
        with open(tmp_pth, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise MedsamError(f"cannot write the checkpoint ({exc})", tmp_pth) from None


def commit(tmp_pth: Path, tmp_json: Path, meta: dict, path: Path) -> Path:
    """Write the metadata and rename both temp files to their final names."""
    write_synced(tmp_json, json.dumps(meta, indent=1).encode("utf-8"))
    if path.exists():  # appeared meanwhile: never overwrite
        raise MedsamError("refusing to overwrite an existing checkpoint", path)
    os.replace(tmp_pth, path)
    os.replace(tmp_json, path.with_suffix(".json"))
    return path


def discard(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass
