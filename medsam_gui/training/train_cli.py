"""medsam-train: fine-tune a model on reviewed annotations from workspaces, headless.

    medsam-train WORKSPACE... [--val WORKSPACE...] --mode decoder|full --epochs N
                 --out models/NAME.pth [--labels 1 2] [--lr 1e-4] [--batch-size 4] [--seed 0]
                 [--val-fraction 0.2] [--checkpoint BASE.pth --kind litemedsam]
                 [--split volume|slices]

With annotations of one scan only, ``--split slices`` validates on a contiguous block of its
slices (the 2 slices on each side of the block are not trained on), as the training dialog
offers; the estimate is optimistic and the run says so.

Several GPUs: ``torchrun --nproc_per_node=G -m medsam_gui.training.train_cli WORKSPACE ...``.
With WORLD_SIZE > 1 each process joins the process group (NCCL on CUDA, else Gloo), uses
GPU LOCAL_RANK, encodes the slices it needs itself, trains a DistributedDataParallel copy on
its share of every epoch's shuffled samples (same seed on every rank), and rank 0 validates,
decides early stopping (broadcast to the others) and writes the checkpoint and its metadata.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import List, Optional

from medsam_gui import __version__
from medsam_gui.errors import MedsamError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsam-train", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("workspaces", nargs="+", help="workspace folders (or per-volume folders)")
    p.add_argument("--val", nargs="+", default=None, metavar="WORKSPACE",
                   help="workspaces used only for validation (default: volumes drawn by seed)")
    p.add_argument("--mode", choices=("decoder", "full"), default="decoder",
                   help="decoder: mask decoder on cached embeddings (fast); full: also the "
                        "image encoder (slow on CPU)")
    p.add_argument("--train-prompt-encoder", action="store_true",
                   help="decoder mode: train the prompt encoder too")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default=None, help="new checkpoint NAME.pth (never overwritten)")
    p.add_argument("--labels", type=int, nargs="+", default=None, help="label values to use")
    p.add_argument("--lr", type=float, default=None, help="default 1e-4 decoder, 1e-5 full")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--split", choices=("volume", "slices"), default="volume",
                   help="volume (default): whole scans validate; slices: one annotated scan, "
                        "a block of its slices validates (an optimistic estimate)")
    p.add_argument("--patience", type=int, default=3, help="early stopping patience (epochs)")
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--kind", default="litemedsam", help="base model kind")
    p.add_argument("--checkpoint", default=None, help="base checkpoint (default: bundled)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best)")
    p.add_argument("--cache-dir", default=None,
                   help="embedding disk cache shared with the app (default: the user cache "
                        "folder; 'none' keeps embeddings in memory only)")
    p.add_argument("--dry-run", action="store_true", help="show the data counts and stop")
    return p


def _distributed_setup(device: Optional[str]) -> "tuple[bool, Optional[str]]":
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, device
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return True, f"cuda:{local}"
    dist.init_process_group("gloo")
    return True, device or "cpu"


SLICE_SPLIT_WARNING = ("--split slices: validation uses a block of this scan's own slices "
                       "(not trained on, nor the 2 slices next to it). The Dice it reports is "
                       "optimistic: the model has seen this patient and this scanner. Annotate "
                       "a second scan for an honest estimate.")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from medsam_gui.training import TrainConfig, count, mode_warning, plan, train
    from medsam_gui.training.finetune import check_config

    config = TrainConfig(
        workspaces=args.workspaces, val_workspaces=args.val, labels=args.labels,
        mode=args.mode, train_prompt_encoder=args.train_prompt_encoder, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
        max_steps_per_epoch=args.max_steps_per_epoch, out=args.out, split=args.split)
    distributed, device = False, args.device
    rank0 = int(os.environ.get("RANK", "0")) == 0
    say = print if rank0 else (lambda *a, **k: None)
    cancelled: List[bool] = []
    try:  # Ctrl-C cancels cleanly at the next step (only possible in the main thread)
        old_handler = signal.signal(signal.SIGINT, lambda *_: cancelled.append(True))
    except ValueError:
        old_handler = None
    try:
        if args.split == "slices" and args.val:
            raise MedsamError("--split slices validates on slices of the one annotated scan; "
                              "--val names validation scans: use one or the other")
        check_config(config)
        if not args.dry_run:  # refuse a bad device or output before reading any data
            from medsam_gui.engine.runtime import pick_device
            from medsam_gui.training.checkpoints import output_path

            pick_device(args.device)
            output_path(args.out, args.kind, args.checkpoint)
        try:
            train_s, val_s = plan(config)
        except MedsamError as exc:
            if args.split == "volume" and "at least 2 volumes" in str(exc):
                raise MedsamError(f"{exc.problem} Or, with one scan only, --split slices "
                                  "(an optimistic estimate)", exc.path) from None
            raise
        say(f"training:   {count(train_s).text()}")
        say(f"validation: {count(val_s).text()}")
        if args.split == "slices":
            say(f"warning: {SLICE_SPLIT_WARNING}", file=sys.stderr)
        if args.dry_run:
            return 0
        distributed, device = _distributed_setup(device)
        from medsam_gui.engine import EmbeddingCache, load_backend
        from medsam_gui.engine.cache import default_disk_dir

        base = load_backend(args.kind, checkpoint=args.checkpoint, device=device)
        disk = args.cache_dir if args.cache_dir is not None else default_disk_dir()
        cache = EmbeddingCache(disk_dir=None if disk.lower() == "none" else disk)
        warning = mode_warning(config.mode, base.device)
        if warning:
            say(f"warning: {warning}", file=sys.stderr)
        say(f"base model: {base.name} ({base.weights_sha256[:12]}…) on {base.device}")
        bars = _TqdmProgress(rank0)
        try:
            result = train(config, base, progress=bars, cancel=lambda: bool(cancelled),
                           cache=cache, distributed=distributed)
        finally:
            bars.close()
    except MedsamError as exc:
        print(f"medsam-train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if result.cancelled:
        say("medsam-train: cancelled; nothing was written", file=sys.stderr)
        return 130
    if result.checkpoint:
        say(f"validation Dice before {result.val_dice_before:.4f} -> after "
            f"{result.val_dice_after:.4f} (best epoch {result.best_epoch})")
        say(f"saved {result.checkpoint}\nmetadata {result.meta_path}")
    return 0


class _TqdmProgress:
    """Progress bars: one while slices are encoded, one over all training steps."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.phase = None

    def __call__(self, epoch: int, step: int, total: int, metrics: dict) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        phase = "embed" if metrics.get("phase") == "embed" else "train"
        if phase != self.phase:
            if self.bar is not None:
                self.bar.close()
            desc = "encoding slices" if phase == "embed" else "training"
            self.bar = tqdm(total=total, desc=desc, unit="slice" if phase == "embed" else "step",
                            file=sys.stderr, dynamic_ncols=True)
            self.phase = phase
        self.bar.update(max(0, step - self.bar.n))
        if metrics.get("phase") == "train":
            self.bar.set_postfix(epoch=epoch, loss=f"{metrics['loss']:.4f}", refresh=False)
        elif metrics.get("phase") == "epoch":
            self.bar.write(f"epoch {epoch}: train loss {metrics['train_loss']:.4f}, "
                           f"val loss {metrics['val_loss']:.4f}, "
                           f"val Dice {metrics['val_dice']:.4f}")
        if step >= total and phase == "embed":
            self.bar.close()
            self.bar, self.phase = None, None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.phase = None, None


if __name__ == "__main__":
    sys.exit(main())
