"""Between-case learning with a check: fine-tune the mask decoder on the reviewed slices of the
done cases, and adopt the new model only when it is better on the user's held-back work.

Held back: whole cases (``holdout_fraction`` of the done cases with reviewed slices, at least
one; or the cases the caller names). With a single done case, slices are held back in blocks
(two of ``BLOCKS`` runs of consecutive slices: a third of them) and the result says plainly
that the check is weaker: neighbouring slices of one scan look alike.

Training reuses ``training.finetune`` (decoder on cached embeddings of the current model's
encoder, which a decoder fine-tune keeps, so every slice is encoded once over all versions).
No epoch is chosen on the held-back slices: the model after the last epoch is the candidate,
so the held-back Dice is an honest estimate and not a maximum over epochs.

Decision rule (see ``decide``): with ``d_i`` = candidate Dice − current Dice on held-back
sample ``i`` (same box, same slice), adopt only when

- the mean gain is at least ``MIN_GAIN``: two trainings on the same data that differ only in
  their seed differ by this much on held-back slices (measured: benchmarks/bench_dataset.py),
  so a smaller gain cannot be told from training noise; and
- the one-sided 95 % paired bootstrap lower bound of the mean gain is above 0: the gain is not
  an accident of which slices were held back.

A rejected candidate is deleted; the current model stays. Adopted models go to
``DATASET/models/v<N>.pth`` (+ .json) and the manifest's model history; ``rollback`` returns
to the one before.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from medsam_gui.dataset.manifest import Dataset
from medsam_gui.dataset.status import case_status
from medsam_gui.errors import MedsamError

# Noise of the held-back Dice: two trainings that differed only in their seed (BRATS FLAIR
# whole tumour, 12 slices of pat0001 to learn, 12 of pat0002 held back, 6 epochs) gave 0.8404
# and 0.8474 from a base of 0.8289, a spread of 0.007; a gain must be about 3x that. The
# bootstrap bound covers the other noise: which slices happened to be held back (its spread
# was 0.011 to 0.018 at 8 to 12 slices). benchmarks/bench_dataset.py repeated it with three
# seeds (24 slices to learn, 8 held back): 0.810, 0.813, 0.823, spread 0.012, sd 0.006.
MIN_GAIN = 0.02
BOOTSTRAP = 2000
BLOCKS, HELD_BLOCKS = 6, (1, 4)  # one done case: slices in 6 runs, the 2nd and 5th held back
MIN_TRAIN, MIN_VAL = 8, 4
Say = Callable[[str], None]


@dataclass
class AdaptConfig:
    epochs: int = 6
    batch_size: int = 4
    lr: float = 1e-4
    seed: int = 0
    holdout: Optional[List[str]] = None  # case ids held back (default: drawn with ``seed``)
    holdout_fraction: float = 0.25
    labels: Optional[List[int]] = None
    max_slices_per_case: Optional[int] = None  # spread evenly (benchmarks, tests)
    min_gain: float = MIN_GAIN
    kind: str = "litemedsam"
    device: Optional[str] = None
    cache_dir: Optional[str] = None  # None: the user cache folder; "none": memory only


@dataclass
class Decision:
    adopt: bool
    gain: float
    lower: float  # one-sided 95 % bootstrap lower bound of the mean gain
    reason: str


@dataclass
class AdaptResult:
    adopted: bool
    model: Optional[str]  # the model in use after this step (None: the bundled base)
    base_dice: float
    new_dice: float
    slices: int  # held-back samples (slice labels) the check used
    decision: Optional[Decision] = None
    version: Optional[int] = None
    warnings: List[str] = field(default_factory=list)
    held_back: List[str] = field(default_factory=list)  # case ids (or "<case> slice blocks")
    seconds: float = 0.0

    current_name: str = "the base model"  # the model kept when the new one is not adopted

    @property
    def message(self) -> str:
        """What the user reads: "model v3 adopted: Dice +0.040 on 120 of your reviewed slices"
        or "kept model v2: the new one was not better (…)"."""
        d = self.decision
        diff = self.new_dice - self.base_dice
        if self.adopted:
            head = (f"model v{self.version} adopted: Dice {diff:+.3f} on {self.slices} of your "
                    "reviewed slices")
        else:
            head = (f"kept {self.current_name}: the new one was not better (Dice {diff:+.3f} "
                    f"on {self.slices} of your reviewed slices; {d.reason if d else ''})")
        return "; ".join([head] + self.warnings)

    def line(self) -> dict:
        return {"adopted": self.adopted, "model": self.model,
                "base_dice": round(self.base_dice, 4), "new_dice": round(self.new_dice, 4),
                "slices": self.slices}


def decide(base: Sequence[float], new: Sequence[float], min_gain: float = MIN_GAIN,
           seed: int = 0, n_boot: int = BOOTSTRAP) -> Decision:
    """The adoption rule of the module doc, on paired per-sample Dice."""
    d = np.asarray(new, np.float64) - np.asarray(base, np.float64)
    if d.size == 0:
        return Decision(False, 0.0, 0.0, "no held-back slices")
    gain = float(d.mean())
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lower = float(np.quantile(means, 0.05))
    if gain < min_gain:
        return Decision(False, gain, lower, f"a gain below {min_gain:.3f} cannot be told "
                        "from training noise")
    if lower <= 0:
        return Decision(False, gain, lower, "the gain is not consistent over the held-back "
                        f"slices (95 % lower bound {lower:+.3f})")
    return Decision(True, gain, lower, "better beyond the noise")


def learned_modalities(ds: Dataset) -> List[str]:
    """The modalities (CT, MR, …) of the done cases a learning step learns from and checks
    on, as their saved work recorded them; a model is used only on cases of these
    (``Dataset.model_for``)."""
    from medsam_gui.dataset.status import read_work_summary

    found = set()
    for cid in _done_dirs(ds):
        try:
            meta = read_work_summary(ds, ds.case(cid)) or {}
        except (OSError, ValueError):
            continue
        modality = (meta.get("source") or {}).get("modality")
        if modality:
            found.add(str(modality))
    return sorted(found)


def _done_dirs(ds: Dataset) -> Dict[str, str]:
    """case id -> workspace folder, for done cases with saved work."""
    out = {}
    for c in ds.active():
        if case_status(ds, c).status == "done" and ds.workspace(c).entry_dirs():
            out[c.id] = str(ds.case_dir(c))
    return out


def _thin(samples: list, n: Optional[int]) -> list:
    if not n:
        return samples
    slices = sorted({(s.axis, s.index) for s in samples})
    if len(slices) <= n:
        return samples
    keep = {slices[k] for k in np.linspace(0, len(slices) - 1, n).round().astype(int)}
    return [s for s in samples if (s.axis, s.index) in keep]


def split(ds: Dataset, config: AdaptConfig, say: Say) -> Tuple[list, list, List[str],
                                                                List[str]]:
    """(train samples, held-back samples, held-back names, warnings)."""
    from medsam_gui.training.dataset import collect_samples

    dirs = _done_dirs(ds)
    if not dirs:
        raise MedsamError("no done case with saved work: mark reviewed cases done first",
                          ds.folder)
    by_case: Dict[str, list] = {}
    for cid, d in dirs.items():
        got = _thin(collect_samples([d], config.labels), config.max_slices_per_case)
        if got:
            by_case[cid] = got
    if not by_case:
        raise MedsamError("the done cases have no reviewed slices to learn from", ds.folder)
    warnings: List[str] = []
    ids = sorted(by_case)
    if config.holdout:
        missing = [c for c in config.holdout if c not in by_case]
        if missing:
            raise MedsamError("cannot hold back " + ", ".join(missing) + ": not a done case "
                              "with reviewed slices", ds.folder)
        held = list(config.holdout)
    elif len(ids) >= 2:
        order = ids[:]
        random.Random(config.seed).shuffle(order)
        held = order[:min(len(ids) - 1, max(1, int(round(len(ids) * config.holdout_fraction))))]
    else:
        held = []
    if held:
        train = [s for c in ids if c not in held for s in by_case[c]]
        val = [s for c in held for s in by_case[c]]
        names = held
    else:  # one case: blocks of consecutive slices
        cid = ids[0]
        samples = by_case[cid]
        slices = sorted({(s.axis, s.index) for s in samples})
        block = {sl: min(BLOCKS - 1, k * BLOCKS // len(slices)) for k, sl in enumerate(slices)}
        train = [s for s in samples if block[(s.axis, s.index)] not in HELD_BLOCKS]
        val = [s for s in samples if block[(s.axis, s.index)] in HELD_BLOCKS]
        names = [f"{cid} (slice blocks)"]
        warnings.append("only one done case: the check held back blocks of its own slices, "
                        "which look like the ones it trained on; mark another case done for a "
                        "real check")
    if not train:
        raise MedsamError("every done case is held back: nothing is left to train on",
                          ds.folder)
    if len(train) < MIN_TRAIN or len(val) < MIN_VAL:
        raise MedsamError(f"too few reviewed slices to learn and check: {len(train)} to train "
                          f"(need {MIN_TRAIN}), {len(val)} held back (need {MIN_VAL})",
                          ds.folder)
    return train, val, names, warnings


def _dices(backend, samples: Sequence, prep: Dict) -> List[float]:
    import torch

    from medsam_gui.training.losses import mask_dice

    out = []
    for s in samples:
        ps = prep[s.slice_key]
        mask, _ = backend.decode(ps.embedding.to(backend.device, torch.float32), ps.shape,
                                 s.box())
        out.append(mask_dice(mask, s.mask))
    return out


def _next_version(ds: Dataset) -> int:
    hist = (ds.meta.get("model") or {}).get("history", [])
    n = max([int(h.get("version", 0)) for h in hist] + [0]) + 1
    while (ds.models_dir / f"v{n}.pth").exists():
        n += 1
    return n


def model_name(ds: Dataset, path: Optional[str] = None) -> str:
    """ "model v2" for the dataset's model ``path`` (default: the current one), "the base
    model" for None."""
    path = ds.current_model if path is None else path
    if not path:
        return "the base model"
    for h in (ds.meta.get("model") or {}).get("history", []):
        if h.get("path") and str(ds.folder / h["path"]) == str(path):
            return f"model v{h['version']}"
    return f"model {Path(path).stem}"


def adapt(ds: Dataset, config: Optional[AdaptConfig] = None, say: Optional[Say] = None,
          cancel: Optional[Callable[[], bool]] = None, backend=None,
          progress: Optional[Callable[[str, int, int], None]] = None) -> AdaptResult:
    """One learning step with its check (see the module doc). ``backend``: the current model
    already loaded (the window's); otherwise it is loaded from the dataset's current model.
    ``progress(phase, done, total)``: phase "encoding", "training" or "checking"."""
    import torch

    from medsam_gui.engine import EmbeddingCache, load_backend
    from medsam_gui.engine.cache import default_disk_dir
    from medsam_gui.training import checkpoints as ck
    from medsam_gui.training.finetune import (TrainConfig, _Trainer, clone_model,
                                              set_trainable)
    from medsam_gui.training.prepare import prepare_slices
    from medsam_gui.training.report import build_meta

    t0 = time.time()
    config = config or AdaptConfig()
    say = say or (lambda _m: None)
    tell = progress or (lambda _p, _d, _t: None)
    train_s, val_s, held, warnings = split(ds, config, say)
    for w in warnings:
        say(f"warning: {w}")
    current = ds.current_model
    current_name = model_name(ds, current)
    if backend is None:
        backend = load_backend(config.kind, checkpoint=current, device=config.device)
    disk = config.cache_dir if config.cache_dir is not None else default_disk_dir()
    cache = EmbeddingCache(disk_dir=None if str(disk).lower() == "none" else disk)
    say(f"learning from {len(train_s)} reviewed slice labels, checking on {len(val_s)} "
        f"held back ({', '.join(held)})")
    prep = prepare_slices(train_s + val_s, backend, train_s + val_s, cache,
                          progress=lambda _e, d, t, _m: tell("encoding", d, t), cancel=cancel)
    if prep is None:
        raise MedsamError("cancelled; nothing changed")
    base_d = _dices(backend, val_s, prep)
    tc = TrainConfig(workspaces=[], mode="decoder", epochs=config.epochs,
                     batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                     patience=config.epochs + 1)
    torch.manual_seed(config.seed)
    model = clone_model(backend.model)
    params = set_trainable(model, tc)
    # the trainer validates after each epoch to choose one; no epoch is chosen here, so it
    # gets one held-back sample (its checks need one) instead of decoding all of them each time
    trainer = _Trainer(tc, backend, prep, train_s, val_s[:1],
                       lambda _e, d, t, _m: tell("training", d, t), cancel)
    ran = trainer.run(model, params, -1.0, False)
    if ran is None:
        raise MedsamError("cancelled; nothing changed")
    history = ran[0]
    version = _next_version(ds)
    path = ds.models_dir / f"v{version}.pth"
    tmp_pth, tmp_json = ck.temp_paths(path)
    ck.make_folders(path)
    try:
        ck.write_checkpoint(model, tmp_pth, getattr(backend, "checkpoint", None))
        new = load_backend(backend.kind, checkpoint=str(tmp_pth), device=str(backend.device),
                           precision=backend.precision)
        tell("checking", 0, 1)
        new_d = _dices(new, val_s, prep)
        tell("checking", 1, 1)
        decision = decide(base_d, new_d, config.min_gain, config.seed)
        result = AdaptResult(decision.adopt, current, float(np.mean(base_d)),
                             float(np.mean(new_d)), len(val_s), decision, None, warnings, held,
                             current_name=current_name)
        entry = {"version": version, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                           time.gmtime()),
                 "adopted": decision.adopt, "base": current, "base_dice": result.base_dice,
                 "new_dice": result.new_dice, "gain": decision.gain,
                 "gain_lower_95": decision.lower, "slices": len(val_s), "held_back": held,
                 "train_samples": len(train_s), "reason": decision.reason,
                 "modalities": learned_modalities(ds)}
        if decision.adopt:
            meta = build_meta(tc, backend, new.weights_sha256, path, train_s, val_s, history,
                              len(history), result.base_dice, result.new_dice,
                              time.time() - t0)
            meta["dataset"] = {"folder": str(ds.folder), "version": version, **entry}
            ck.commit(tmp_pth, tmp_json, meta, path)
            rel = str(path.relative_to(ds.folder))
            entry["path"] = rel
            result.model, result.version = str(path), version

            def change(d: Dataset) -> None:
                d.meta.setdefault("model", {"current": None, "history": []})
                d.meta["model"]["current"] = rel
                d.meta["model"].setdefault("history", []).append(entry)
        else:
            ck.discard(tmp_pth, tmp_json)

            def change(d: Dataset) -> None:
                d.meta.setdefault("model", {"current": None, "history": []})
                d.meta["model"].setdefault("history", []).append(entry)
        ds.update(change)
    except BaseException:
        ck.discard(tmp_pth, tmp_json)
        raise
    result.seconds = time.time() - t0
    return result


def rollback(ds: Dataset) -> str:
    """Use the model adopted before the current one (the bundled base before v1)."""
    model = ds.meta.get("model") or {}
    cur = model.get("current")
    if not cur:
        raise MedsamError("the dataset uses the base model already; nothing to roll back",
                          ds.folder)
    adopted = [h for h in model.get("history", []) if h.get("adopted") and h.get("path")]
    paths = [h["path"] for h in adopted]
    k = paths.index(cur) if cur in paths else len(paths)
    previous = paths[k - 1] if k >= 1 else None

    def change(d: Dataset) -> None:
        d.meta["model"]["current"] = previous
        d.meta["model"].setdefault("rolled_back", []).append(cur)

    ds.update(change)
    return f"now using {previous or 'the base model'} (was {cur})"
