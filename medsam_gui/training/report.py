"""The metadata written beside a fine-tuned checkpoint (NAME.json, medsam-gui-finetune/1)."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import List, Sequence

import torch

from medsam_gui.training.checkpoints import META_FORMAT
from medsam_gui.training.dataset import Sample, count, group_by_volume


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _volumes(samples: Sequence[Sample], split: str) -> List[dict]:
    out = []
    for vid, group in group_by_volume(samples).items():
        c = count(group)
        out.append({"id": vid, "split": split, "source_path": group[0].source_path,
                    "workspace": group[0].entry_dir, "slices": c.slices, "samples": c.samples,
                    "negatives": c.negatives, "labels": c.labels})
    return out


def build_meta(config, base, new_sha256: str, path: Path, train: Sequence[Sample],
               val: Sequence[Sample], history: List[dict], best_epoch: int, before: float,
               after: float, elapsed: float) -> dict:
    parts = ["mask_decoder"]
    if config.train_prompt_encoder or config.mode == "full":
        parts.append("prompt_encoder")
    if config.mode == "full":
        parts.append("image_encoder")
    return {
        "format": META_FORMAT,
        "kind": base.kind,
        "name": path.stem,
        "file": path.name,
        "sha256": new_sha256,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base": {"kind": base.kind, "name": base.name, "sha256": base.weights_sha256,
                 "checkpoint": getattr(base, "checkpoint", None)},
        # decoder mode leaves the encoder bit-identical to the base's: embeddings cached for
        # the base stay valid for this model
        "encoder_sha256_of": base.weights_sha256 if config.mode == "decoder" else None,
        "mode": config.mode,
        "trained_parts": parts,
        "data": {
            "workspaces": [str(w) for w in config.workspaces],
            "val_workspaces": [str(w) for w in (config.val_workspaces or [])],
            "labels": config.labels,
            "volumes": _volumes(train, "train") + _volumes(val, "val"),
            "counts": {"train": count(train).__dict__, "val": count(val).__dict__},
        },
        "split": {"method": "by-volume", "val_fraction": config.val_fraction,
                  "fixed_val": bool(config.val_workspaces), "seed": config.seed,
                  "train_volumes": sorted({s.volume_id for s in train}),
                  "val_volumes": sorted({s.volume_id for s in val})},
        "hyper_parameters": {
            "epochs": config.epochs, "batch_size": config.batch_size,
            "lr": config.learning_rate, "weight_decay": config.weight_decay,
            "optimizer": "AdamW", "loss": "dice+bce on 256x256 low-res logits",
            "patience": config.patience, "box_jitter_px": config.jitter,
            "max_steps_per_epoch": config.max_steps_per_epoch,
            "train_prompt_encoder": config.train_prompt_encoder,
        },
        "epochs": history,
        "best_epoch": best_epoch,
        "val_dice_before": before,
        "val_dice_after": after,
        "seed": config.seed,
        "elapsed_seconds": round(elapsed, 2),
        "environment": {"device": str(base.device), "precision": base.precision,
                        "world_size": _world_size(),
                        "torch": torch.__version__, "python": platform.python_version()},
    }
