"""Fine-tune a backend's model on reviewed annotations (Dice + BCE, AdamW, early stopping).

Modes: "decoder" trains the mask decoder (optionally the prompt encoder too) on cached image
embeddings of the base encoder: fast on CPU, and the encoder, hence every cached embedding,
stays valid. "full" also trains the image encoder: opt-in, ~30x slower per step on CPU, and
the new model needs its embeddings rebuilt. BatchNorm statistics stay frozen (the model is
kept in eval mode; tiny batches would ruin them).

The base backend is never touched: a deep copy of its model is trained, so cancelling or a
failure leaves the model in use bit-identical. Before/after validation Dice is measured with
the real ``Backend.decode`` of the base and of the reloaded new checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from medsam_gui.engine.weights import check_finite
from medsam_gui.errors import MedsamError
from medsam_gui.training import checkpoints as ck
from medsam_gui.training.dataset import (
    JITTER, Sample, check_enough, collect_samples, count, split_by_slice_blocks, split_by_volume)
from medsam_gui.training.losses import dice_bce_loss, mask_dice
from medsam_gui.training.prepare import PreparedSlice, prepare_slices
from medsam_gui.training.report import build_meta

Progress = Optional[Callable[[int, int, int, dict], None]]
Cancel = Optional[Callable[[], bool]]
MODES = ("decoder", "full")


@dataclass
class TrainConfig:
    workspaces: List[str]
    val_workspaces: Optional[List[str]] = None  # fixed validation volumes (else drawn)
    labels: Optional[List[int]] = None
    mode: str = "decoder"
    train_prompt_encoder: bool = False
    epochs: int = 10
    batch_size: int = 4
    lr: Optional[float] = None  # 1e-4 decoder, 1e-5 full
    weight_decay: float = 0.01
    val_fraction: float = 0.2
    patience: int = 3  # epochs without a better validation Dice before stopping
    jitter: int = JITTER
    seed: int = 0
    split: str = "volume"  # "slices": one volume's slices in train / validation blocks
    max_steps_per_epoch: Optional[int] = None
    out: Optional[str] = None  # .pth path; default: a new name in models_dir()

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.mode == "decoder" else 1e-5)

    def to_json(self) -> dict:
        d = asdict(self)
        d["lr"] = self.learning_rate
        return d


@dataclass
class TrainResult:
    checkpoint: Optional[str]
    meta_path: Optional[str]
    cancelled: bool = False
    val_dice_before: Optional[float] = None
    val_dice_after: Optional[float] = None
    epochs: List[dict] = field(default_factory=list)
    best_epoch: int = 0
    counts: Dict[str, dict] = field(default_factory=dict)
    elapsed: float = 0.0
    meta: dict = field(default_factory=dict)


def mode_warning(mode: str, device: torch.device) -> Optional[str]:
    if mode == "full":
        slow = " and very slow on a CPU (about 30x slower per step)" if device.type == "cpu" else ""
        return ("Full mode trains the image encoder too: it needs much more memory" + slow
                + "; the new model's slice embeddings must be recomputed (the cache is rebuilt).")
    return None


def check_config(config: TrainConfig) -> None:
    """Refuse settings that would train nothing or nonsense (MedsamError, before any work):
    with zero epochs or zero steps the "fine-tuned" model would be the untrained base."""
    if config.mode not in MODES:
        raise MedsamError(f"unknown training mode {config.mode!r}; use decoder or full")
    if config.split not in ("volume", "slices"):
        raise MedsamError(f"unknown split {config.split!r}; use volume or slices")
    problems = []
    if not isinstance(config.epochs, int) or config.epochs < 1:
        problems.append(f"epochs must be at least 1 (got {config.epochs})")
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        problems.append(f"batch size must be at least 1 (got {config.batch_size})")
    if config.max_steps_per_epoch is not None and (
            not isinstance(config.max_steps_per_epoch, int) or config.max_steps_per_epoch < 1):
        problems.append(f"max steps per epoch must be at least 1 (got "
                        f"{config.max_steps_per_epoch})")
    if not isinstance(config.patience, int) or config.patience < 1:
        problems.append(f"patience must be at least 1 epoch (got {config.patience})")
    if config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0):
        problems.append(f"learning rate must be a positive number (got {config.lr})")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        problems.append(f"weight decay must be 0 or more (got {config.weight_decay})")
    if not config.val_workspaces and not 0 < config.val_fraction < 1:
        problems.append(f"validation fraction must lie between 0 and 1 (got "
                        f"{config.val_fraction})")
    if problems:
        raise MedsamError("cannot train: " + "; ".join(problems))


def plan(config: TrainConfig) -> Tuple[List[Sample], List[Sample]]:
    """Collect and split the samples; raise MedsamError when there is too little data or a
    setting is out of range."""
    check_config(config)
    samples = collect_samples(config.workspaces, config.labels)
    val_ids = None
    if config.val_workspaces:
        val_samples = collect_samples(config.val_workspaces, config.labels)
        val_ids = sorted({s.volume_id for s in val_samples})
        samples = samples + [s for s in val_samples
                             if s.volume_id not in {t.volume_id for t in samples}]
    if config.split == "slices":  # one volume: blocks of its slices (an optimistic estimate)
        train, val = split_by_slice_blocks(samples, config.val_fraction, config.seed)
        check_enough(train, val, one_volume=True)
        return train, val
    train, val = split_by_volume(samples, config.val_fraction, config.seed, val_ids)
    check_enough(train, val)
    return train, val


class LowResHead(nn.Module):
    """(embeddings | images, model boxes) -> (B, 1, 256, 256) low-res logits, one box per image.

    The same computation as segment-anything's ``MaskDecoder`` with ``multimask_output=False``
    (prompt tokens + two-way transformer + upscaling + the first mask token's hypernetwork),
    but batched over images: ``MaskDecoder.predict_masks`` repeats one image embedding per
    prompt and so cannot take a batch of (image, box) pairs. Batched, a step is ~1.5x faster
    than looping; the IoU head is skipped (not trained). ``Backend.decode`` stays the
    reference: validation before/after uses it.
    """

    def __init__(self, model: nn.Module, encode: bool):
        super().__init__()
        self.model = model
        self.encode = encode

    def forward(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        m = self.model
        emb = m.image_encoder(x) if self.encode else x
        sparse, dense = m.prompt_encoder(points=None, boxes=boxes, masks=None)
        dec = m.mask_decoder
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], 1)
        pe = m.prompt_encoder.get_dense_pe().expand(emb.shape[0], -1, -1, -1)
        b, c, h, w = emb.shape
        hs, src = dec.transformer(emb + dense, pe, tokens)
        up = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = dec.output_hypernetworks_mlps[0](hs[:, 1, :])  # first mask token
        b, c, h, w = up.shape
        return (hyper[:, None, :] @ up.reshape(b, c, h * w)).reshape(b, 1, h, w)


def clone_model(model: nn.Module) -> nn.Module:
    """A private copy to train: the model in use is never touched."""
    return copy.deepcopy(model).eval()


def set_trainable(model: nn.Module, config: TrainConfig) -> List[nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    parts = [model.mask_decoder]
    if config.train_prompt_encoder or config.mode == "full":
        parts.append(model.prompt_encoder)
    if config.mode == "full":
        parts.append(model.image_encoder)
    params = [p for part in parts for p in part.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


class _Trainer:
    def __init__(self, config: TrainConfig, backend, prepared: Dict, train: List[Sample],
                 val: List[Sample], progress: Progress, cancel: Cancel):
        self.c, self.b, self.prep = config, backend, prepared
        self.train_s, self.val_s = train, val
        self.progress, self.cancel = progress, cancel
        self.device = backend.device
        self.rng = np.random.default_rng(config.seed)
        self.targets = {id(s): torch.from_numpy(backend.low_res_target(s.mask).astype(np.float32))
                        for s in train + val}

    def _inputs(self, batch: Sequence[Sample], encode: bool, jitter: bool
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        boxes = []
        xs = []
        for s in batch:
            ps: PreparedSlice = self.prep[s.slice_key]
            box = s.box(self.rng if jitter else None, self.c.jitter)
            boxes.append(self.b.box_to_model(box, ps.shape))
            xs.append(self.b.model_input(ps.image) if encode else ps.embedding)
        x = torch.cat(xs, 0).to(self.device, torch.float32)
        bt = torch.from_numpy(np.stack(boxes).astype(np.float32)).to(self.device)
        return x, bt

    def _target(self, batch: Sequence[Sample]) -> torch.Tensor:
        return torch.stack([self.targets[id(s)] for s in batch])[:, None].to(self.device)

    def validate(self, head: LowResHead) -> Tuple[float, float]:
        """(mean Dice at slice resolution, mean loss) with exact boxes."""
        dices, losses = [], []
        with torch.no_grad():
            for s in self.val_s:
                x, bt = self._inputs([s], head.encode, jitter=False)
                low = head(x, bt)
                losses.append(float(dice_bce_loss(low, self._target([s]))))
                mask = self.b.postprocess(low, self.prep[s.slice_key].shape).cpu().numpy()
                dices.append(mask_dice(mask, s.mask))
        return float(np.mean(dices)), float(np.mean(losses))

    def run(self, model: nn.Module, params: List[nn.Parameter], before: float,
            distributed: bool) -> Optional[Tuple[List[dict], int, Optional[dict], int]]:
        """(history, best epoch, best state or None, optimizer steps run); None if cancelled."""
        c = self.c
        head = LowResHead(model, encode=c.mode == "full")
        module: nn.Module = head
        rank, world = 0, 1
        if distributed:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel as DDP

            rank, world = dist.get_rank(), dist.get_world_size()
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DDP(head, device_ids=ids, find_unused_parameters=True)
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(range(len(self.train_s)), num_replicas=world,
                                         rank=rank, shuffle=True, seed=c.seed)
        opt = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        n = len(self.train_s)
        per_rank = -(-n // world)
        steps = -(-per_rank // c.batch_size)
        if c.max_steps_per_epoch:
            steps = min(steps, c.max_steps_per_epoch)
        total, step = steps * c.epochs, 0
        history: List[dict] = []
        best, best_epoch, best_state, stale = before, 0, None, 0
        for epoch in range(1, c.epochs + 1):
            t0 = time.time()
            if world > 1:  # each rank its share of one seeded shuffle (padded to equal size)
                sampler.set_epoch(epoch)
                order = np.asarray(list(sampler))
            else:
                order = self.rng.permutation(n)
            losses = []
            for k in range(steps):
                if self.cancel is not None and self.cancel():
                    return None
                batch = [self.train_s[i] for i in order[k * c.batch_size:(k + 1) * c.batch_size]]
                x, bt = self._inputs(batch, head.encode, jitter=True)
                loss = dice_bce_loss(module(x, bt), self._target(batch))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                losses.append(loss.item())
                if self.progress is not None and rank == 0:
                    self.progress(epoch, step, total, {"phase": "train", "loss": losses[-1]})
            dice, val_loss = self.validate(head)
            rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                   "val_dice": dice, "seconds": round(time.time() - t0, 3)}
            history.append(rec)
            if dice > best + 1e-4:
                best, best_epoch, stale = dice, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            if self.progress is not None and rank == 0:
                self.progress(epoch, step, total, {"phase": "epoch", **rec})
            if _agree(stale >= c.patience, distributed):
                break
        return history, best_epoch, best_state, step


def _agree(stop: bool, distributed: bool) -> bool:
    """Rank 0 decides (validation may differ in the last bit between devices)."""
    if not distributed:
        return stop
    import torch.distributed as dist

    flag = torch.tensor([1 if stop else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _decode_dice(backend, samples: Sequence[Sample], prep: Dict, encode: bool,
                 cancel: Cancel) -> Optional[float]:
    """Validation Dice through ``backend.decode`` (the real inference path)."""
    dices = []
    for s in samples:
        if cancel is not None and cancel():
            return None
        ps = prep[s.slice_key]
        emb = backend.encode([ps.image]) if encode else ps.embedding
        mask, _ = backend.decode(emb.to(backend.device, torch.float32), ps.shape, s.box())
        dices.append(mask_dice(mask, s.mask))
    return float(np.mean(dices))


def train(config: TrainConfig, base_backend, progress: Progress = None, cancel: Cancel = None,
          cache=None, distributed: bool = False) -> TrainResult:
    """Fine-tune a copy of ``base_backend.model``; write NAME.pth + NAME.json (rank 0).

    ``progress(epoch, step, total, metrics)``: metrics["phase"] is "embed" (preparing slice
    embeddings; epoch 0), "train" (after each step, with "loss") or "epoch" (after each
    epoch's validation, with train_loss, val_loss, val_dice, seconds). ``cancel()`` is polled
    before every encoder call and every step; a cancelled run writes nothing.
    """
    t_start = time.time()
    from medsam_gui.engine import load_backend

    train_s, val_s = plan(config)
    rank0 = True
    if distributed:
        import torch.distributed as dist

        rank0 = dist.get_rank() == 0
    path = ck.output_path(config.out, base_backend.kind, getattr(base_backend, "checkpoint", None))
    torch.manual_seed(config.seed)
    embed = train_s + val_s if config.mode == "decoder" else val_s
    prep = prepare_slices(train_s + val_s, base_backend, embed, cache, progress, cancel)
    counts = {"train": asdict(count(train_s)), "val": asdict(count(val_s))}
    if prep is None:
        return TrainResult(None, None, cancelled=True, counts=counts,
                           elapsed=time.time() - t_start)
    before = _decode_dice(base_backend, val_s, prep, False, cancel)
    if before is None:
        return TrainResult(None, None, cancelled=True, counts=counts,
                           elapsed=time.time() - t_start)
    model = clone_model(base_backend.model)
    params = set_trainable(model, config)
    trainer = _Trainer(config, base_backend, prep, train_s, val_s, progress, cancel)
    ran = trainer.run(model, params, before, distributed)
    if ran is None:
        return TrainResult(None, None, cancelled=True, counts=counts,
                           val_dice_before=before, elapsed=time.time() - t_start)
    history, best_epoch, best_state, steps_run = ran
    if steps_run == 0:  # the "fine-tuned" model would be the base, unchanged
        raise MedsamError("no training step ran (no batch in any epoch); nothing was saved",
                          path)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:  # no epoch beat the base on validation: the result keeps the base weights
        model.load_state_dict(base_backend.model.state_dict())
    if not rank0:
        return TrainResult(None, None, val_dice_before=before, epochs=history,
                           best_epoch=best_epoch, counts=counts, elapsed=time.time() - t_start)
    try:
        check_finite(model.state_dict(), str(path))
    except MedsamError as exc:
        raise MedsamError(f"training diverged: {exc.problem.split(';')[0]}; nothing was saved",
                          path) from None
    tmp_pth, tmp_json = ck.temp_paths(path)
    made = ck.make_folders(path)
    try:
        ck.write_checkpoint(model, tmp_pth, getattr(base_backend, "checkpoint", None))
        new = load_backend(base_backend.kind, checkpoint=str(tmp_pth),
                           device=str(base_backend.device), precision=base_backend.precision)
        after = _decode_dice(new, val_s, prep, config.mode == "full", cancel)
        if after is None:
            ck.discard(tmp_pth, tmp_json)
            ck.remove_folders(made)
            return TrainResult(None, None, cancelled=True, counts=counts,
                               val_dice_before=before, epochs=history)
        elapsed = time.time() - t_start
        meta = build_meta(config, base_backend, new.weights_sha256, path, train_s, val_s,
                          history, best_epoch, before, after, elapsed)
        ck.commit(tmp_pth, tmp_json, meta, path)
    except BaseException:
        ck.discard(tmp_pth, tmp_json)
        ck.remove_folders(made)
        raise
    return TrainResult(str(path), str(path.with_suffix(".json")), False, before, after, history,
                       best_epoch, counts, elapsed, meta)
