"""Training benchmark (printed, not asserted).

1. A default decoder fine-tune on BRATS: pat0001 (20 tumour slices, ground truth as the
   "accepted" annotations) -> validation on pat0002 (10 tumour slices): wall time (cold
   embedding cache, split into encoding and training) and validation Dice before/after.
2. Time per training step: mask decoder on cached embeddings vs. the whole model (image
   encoder trained too), same batch, same slices; their ratio.

    python benchmarks/bench_training.py [--full-steps 3] [--decoder-steps 10] [--batch 4]

Start it with tcmalloc preloaded (LD_PRELOAD=.../libtcmalloc_minimal.so.4) as the app does.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSAM_TEST_DATA", REPO.parent / "shared" / "data"))
BRATS = DATA / "brain_tumour_brats2015"


def build(tmp: Path):
    from medsam_gui.training.seed_workspace import workspace_from_labels

    ws = []
    for case, n in (("brats_2013_pat0001_1", 20), ("brats_2013_pat0002_1", 10)):
        d = BRATS / case
        out = tmp / case
        workspace_from_labels(str(d / "Flair_subtrMeanDivStd.nii.gz"), str(d / "OTMultiClass.nii.gz"),
                              str(out), n_slices=n)
        ws.append(str(out))
    return ws


def step_times(backend, w1: str, w2: str, cache, batch: int, n_dec: int, n_full: int):
    from medsam_gui.training import TrainConfig, plan
    from medsam_gui.training.finetune import LowResHead, clone_model, set_trainable
    from medsam_gui.training.losses import dice_bce_loss
    from medsam_gui.training.prepare import prepare_slices

    train_s, _ = plan(TrainConfig([w1], val_workspaces=[w2]))
    batch_s = train_s[:batch]
    prep = prepare_slices(batch_s, backend, batch_s, cache)
    boxes = torch.from_numpy(np.stack([backend.box_to_model(s.box(), prep[s.slice_key].shape)
                                       for s in batch_s]).astype(np.float32))
    target = torch.stack([torch.from_numpy(backend.low_res_target(s.mask).astype(np.float32))
                          for s in batch_s])[:, None]
    embs = torch.cat([prep[s.slice_key].embedding for s in batch_s]).float()
    images = torch.cat([backend.model_input(prep[s.slice_key].image) for s in batch_s])
    runs = {}
    for mode in ("decoder", "full"):
        model = clone_model(backend.model)
        params = set_trainable(model, TrainConfig([w1], mode=mode))
        runs[mode] = (LowResHead(model, encode=mode == "full"),
                      torch.optim.AdamW(params, lr=1e-5), embs if mode == "decoder" else images)

    def step(mode: str) -> float:
        head, opt, x = runs[mode]
        t0 = time.perf_counter()
        loss = dice_bce_loss(head(x, boxes), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step("decoder"), step("full")  # warm-up
    # interleaved, so that a change in machine load hits both sides alike
    times = {"decoder": [], "full": []}
    per_round = max(1, n_dec // max(n_full, 1))
    for _ in range(max(n_full, 1)):
        times["decoder"] += [step("decoder") for _ in range(per_round)]
        times["full"].append(step("full"))
    out = {k: float(np.median(v)) for k, v in times.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--decoder-steps", type=int, default=10)
    ap.add_argument("--full-steps", type=int, default=3)
    ap.add_argument("--skip-finetune", action="store_true")
    args = ap.parse_args(argv)
    if not BRATS.is_dir():
        print(f"BRATS data not found at {BRATS}")
        return 1
    from medsam_gui.engine import EmbeddingCache, load_backend
    from medsam_gui.training import TrainConfig, train

    backend = load_backend("litemedsam")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
          f"{backend.device}, encoder precision {backend.precision}, LD_PRELOAD="
          f"{os.environ.get('LD_PRELOAD', '')!r}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    w1, w2 = build(tmp)
    cache = EmbeddingCache()
    if not args.skip_finetune:
        marks = {}

        def progress(epoch, step, total, m):
            if m["phase"] == "embed" and step == total:
                marks["embedded"] = time.perf_counter()
            if m["phase"] == "epoch":
                print(f"  epoch {epoch}: train loss {m['train_loss']:.4f}  val Dice "
                      f"{m['val_dice']:.4f}  ({m['seconds']:.1f} s)", flush=True)

        t0 = time.perf_counter()
        r = train(TrainConfig([w1], val_workspaces=[w2], out=str(tmp / "models" / "ft.pth")),
                  backend, progress=progress, cache=cache)
        wall = time.perf_counter() - t0
        enc = marks.get("embedded", t0) - t0
        print(f"default decoder fine-tune pat0001 (20 slices) -> pat0002 (10 slices): "
              f"wall {wall:.1f} s (encoding 30 slices {enc:.1f} s, training+validation "
              f"{wall - enc:.1f} s), {len(r.epochs)} epochs, best epoch {r.best_epoch}")
        print(f"validation Dice before {r.val_dice_before:.4f} -> after {r.val_dice_after:.4f} "
              f"({r.val_dice_after - r.val_dice_before:+.4f})")
    t = step_times(backend, w1, w2, cache, args.batch, args.decoder_steps, args.full_steps)
    print(f"training step, batch {args.batch}: decoder on cached embeddings "
          f"{t['decoder'] * 1000:.0f} ms, whole model {t['full'] * 1000:.0f} ms -> decoder is "
          f"{t['full'] / t['decoder']:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
