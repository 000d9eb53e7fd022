"""Training samples from saved workspaces, and the train/validation split by volume.

A sample is one label on one slice that a person edited or accepted (``SliceRecord.status``
"edited" or "accepted"): the binary mask of that label on that slice, and the box prompt the
model gets (the mask's extent; during training jittered outwards by up to ``JITTER`` pixels
per side, as MedSAM training does with its ``bbox_shift``). A label split into several pieces
on one slice gives one box around all of them, as in MedSAM training.

Empty slices (negatives): a reviewed record whose mask is empty is used only when the record
still holds the box the person prompted with: the model was asked there, produced a mask and
the person erased it, i.e. the model hallucinated on that box. It is trained with that box and
an all-zero target. Empty records without a prompt box carry no information for a box-prompted
model (nobody would draw a box there) and are skipped. Validation Dice of a negative is 1 when
the prediction is empty, else 0.

Model input: each sample keeps the input its slice was made with (from the record's provenance,
e.g. a lung window), so training shows the model what it saw when the person reviewed it;
slices without a recorded input (brush-only, older workspaces) use the automatic input.

Too little data: training needs at least ``MIN_TRAIN_SAMPLES`` samples from at least one
volume and ``MIN_VAL_SAMPLES`` from at least one other volume; below that ``MedsamError``.
"""

from __future__ import annotations

import json
import logging
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from medsam_gui.annotation import Workspace
from medsam_gui.annotation.saved_work import read_work
from medsam_gui.errors import MedsamError
from medsam_gui.volume import view_geometry

REVIEWED = ("edited", "accepted")
JITTER = 5  # pixels, MedSAM's bbox_shift
MIN_TRAIN_SAMPLES = 8
MIN_VAL_SAMPLES = 2
log = logging.getLogger(__name__)

Box = Tuple[float, float, float, float]


@dataclass
class Sample:
    volume_id: str  # content hash of the volume
    entry_dir: str  # per-volume workspace folder
    source_path: str
    series_uid: Optional[str]
    axis: str
    index: int
    label: int
    mask: np.ndarray  # bool, display slice shape
    prompt_box: Optional[Box] = None  # the person's box (used for negatives)
    model_input: Optional[dict] = None  # ModelInput JSON the slice was made with (None: auto)

    @property
    def is_negative(self) -> bool:
        return not self.mask.any()

    @property
    def input_key(self) -> str:
        return json.dumps(self.model_input or {}, sort_keys=True)

    @property
    def slice_key(self) -> Tuple[str, str, int, str]:
        """(volume, axis, slice, model input): one model image and embedding each."""
        return (self.volume_id, self.axis, self.index, self.input_key)

    def box(self, rng: Optional[np.random.Generator] = None, jitter: int = JITTER) -> Box:
        """Box (x0, y0, x1, y1) around the mask, jittered outwards when ``rng`` is given."""
        if self.is_negative:
            if self.prompt_box is None:
                raise ValueError("a negative sample needs its prompt box")
            return self.prompt_box
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        x0, x1, y0, y1 = float(cols[0]), float(cols[-1]), float(rows[0]), float(rows[-1])
        if rng is not None and jitter > 0:
            h, w = self.mask.shape
            d = rng.integers(0, jitter + 1, size=4)
            x0, y0 = max(0.0, x0 - d[0]), max(0.0, y0 - d[1])
            x1, y1 = min(w - 1.0, x1 + d[2]), min(h - 1.0, y1 + d[3])
        return (x0, y0, x1, y1)


@dataclass
class DataCounts:
    volumes: int
    slices: int
    samples: int
    labels: List[int]
    negatives: int

    def text(self) -> str:
        labs = ", ".join(str(v) for v in self.labels) or "none"
        neg = f" ({self.negatives} empty)" if self.negatives else ""
        return (f"{self.volumes} volume(s), {self.slices} slice(s), {self.samples} sample(s)"
                f"{neg}, labels {labs}")


def count(samples: Sequence[Sample]) -> DataCounts:
    return DataCounts(
        volumes=len({s.volume_id for s in samples}),
        slices=len({s.slice_key for s in samples}),
        samples=len(samples),
        labels=sorted({s.label for s in samples}),
        negatives=sum(1 for s in samples if s.is_negative),
    )


def collect_samples(workspaces: Sequence[str], labels: Optional[Sequence[int]] = None
                    ) -> List[Sample]:
    """Every reviewed (edited/accepted) slice label in these workspaces (or per-volume folders).

    ``labels`` keeps only those label values. The same volume found twice is read once.
    """
    wanted = None if labels is None else {int(v) for v in labels}
    out: List[Sample] = []
    seen: set = set()
    for ws in workspaces:
        dirs = Workspace(ws).entry_dirs()
        if not dirs:
            raise MedsamError("no saved annotations in this workspace folder", ws)
        for d in dirs:
            try:
                out.extend(_dir_samples(d, wanted, seen))
            except (KeyError, TypeError, ValueError, IndexError, AttributeError,
                    RecursionError) as exc:  # annotation.json parsed but not as written
                raise MedsamError(f"damaged annotation file ({type(exc).__name__}: "
                                  f"{str(exc)[:200]})", Path(d) / "annotation.json") from None
    return out


def _dir_samples(d, wanted: Optional[set], seen: set) -> List[Sample]:
    """The samples of one per-volume folder (none if its volume was seen already)."""
    out: List[Sample] = []
    work = read_work(Path(d))
    if work.problems:  # the current pair is damaged: read_work fell back to a whole backup
        log.warning("%s: training uses its newest whole backup (generation %s) because %s", d,
                    work.generation, "; ".join(str(p) for p in work.problems))
    meta, lm = work.meta, work.labelmap
    src = meta["source"]
    vid = str(src["content_hash"])
    if vid in seen:
        return out
    seen.add(vid)
    affine = np.asarray(src["affine"], np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"source affine is not a finite 4x4 matrix {affine.shape}")
    for rec in lm.records_for(REVIEWED):
        if wanted is not None and rec.label not in wanted:
            continue
        geom = view_geometry(affine, lm.shape, rec.axis)
        if not 0 <= rec.index < geom.n_slices:
            continue
        mask = np.ascontiguousarray(geom.take(lm.array, rec.index) == rec.label)
        box = tuple(float(v) for v in rec.boxes[-1]) if rec.boxes else None
        if not mask.any() and box is None:
            continue  # an empty slice nobody prompted: no information (see module doc)
        out.append(Sample(vid, str(d), src.get("path", ""), src.get("series_uid"),
                          rec.axis, rec.index, rec.label, mask, box,  # type: ignore[arg-type]
                          choice_of(rec.model_input)))
    return out


def choice_of(provenance: Optional[dict]) -> Optional[dict]:
    """The ModelInput (as JSON) that reproduces a slice's recorded model input, or None for the
    automatic input (nothing recorded, or the automatic rule with the volume's own modality)."""
    if not provenance:
        return None
    source = provenance.get("modality_source")
    modality = str(provenance.get("modality", "auto")) if source == "user" else "auto"
    if provenance.get("rule") != "window":
        return None if modality == "auto" else {"modality": modality}
    return {"modality": modality, "window": [provenance["level"], provenance["width"]],
            "window_units": provenance.get("units", "HU"), "name": provenance.get("name", "")}


def split_by_volume(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0,
                    val_volumes: Optional[Sequence[str]] = None
                    ) -> Tuple[List[Sample], List[Sample]]:
    """(train, val): whole volumes go to one side (neighbouring slices would leak).

    ``val_volumes`` (content hashes) fixes the validation volumes; otherwise
    ``round(n * val_fraction)`` volumes (at least one) are drawn with ``seed``, and when that
    draw leaves too little to train or validate on, the smallest volumes that can validate
    are held out instead.
    """
    groups: "OrderedDict[str, List[Sample]]" = OrderedDict()
    for s in sorted(samples, key=lambda s: (s.volume_id, s.axis, s.index, s.label)):
        groups.setdefault(s.volume_id, []).append(s)
    ids = list(groups)
    if val_volumes is not None:
        val_ids = set(val_volumes)
    else:
        if len(ids) < 2:
            raise MedsamError(
                f"need annotations of at least 2 volumes (1 to train, 1 to validate); found "
                f"{len(ids)}. Annotate and accept slices of another scan.")
        n_val = min(len(ids) - 1, max(1, int(round(len(ids) * val_fraction))))
        order = ids[:]
        random.Random(seed).shuffle(order)
        val_ids = set(order[:n_val])
        if not _enough_left(groups, val_ids):
            val_ids = _smallest_that_validate(groups, n_val) or val_ids
    train = [s for v in ids if v not in val_ids for s in groups[v]]
    val = [s for v in ids if v in val_ids for s in groups[v]]
    return train, val


def _enough_left(groups: Dict[str, List[Sample]], val_ids: set) -> bool:
    n_train = sum(len(g) for v, g in groups.items() if v not in val_ids)
    n_val = sum(len(g) for v, g in groups.items() if v in val_ids)
    return n_train >= MIN_TRAIN_SAMPLES and n_val >= MIN_VAL_SAMPLES


def _smallest_that_validate(groups: Dict[str, List[Sample]], n_val: int) -> Optional[set]:
    """The ``n_val`` smallest volumes that can each validate, when holding them out leaves
    enough to train on; the random draw can hold out the one large annotated scan of two and
    leave a few slices to train on, which the user could not see or fix."""
    fits = sorted((v for v, g in groups.items() if len(g) >= MIN_VAL_SAMPLES),
                  key=lambda v: (len(groups[v]), v))[:n_val]
    chosen = set(fits)
    return chosen if len(chosen) == n_val and _enough_left(groups, chosen) else None


SLICE_GAP = 2  # slices left out of training on each side of a validation block


def split_by_slice_blocks(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0,
                          gap: int = SLICE_GAP) -> Tuple[List[Sample], List[Sample]]:
    """(train, val) from the annotated slices of ONE volume: a contiguous block of about
    ``val_fraction`` of them (position drawn with ``seed``) validates, the rest trains, and
    ``gap`` slices on each side of the block are left out of training, so the slice next to a
    validation slice (nearly the same image) is not trained on. The estimate stays optimistic
    (same patient, same scanner): what a user with one annotated scan can have, said so."""
    volumes = {s.volume_id for s in samples}
    if len(volumes) != 1:
        raise MedsamError(f"a split by slices is for one volume; found {len(volumes)}")
    keys = sorted({(s.axis, s.index) for s in samples})
    n_val = max(1, int(round(len(keys) * val_fraction)))
    if len(keys) < 2 or n_val >= len(keys):
        raise MedsamError(f"need at least 2 annotated slices to split one volume; found "
                          f"{len(keys)}. Accept or edit more slices.")
    start = random.Random(seed).randrange(0, len(keys) - n_val + 1)
    val_keys = set(keys[start:start + n_val])
    near = {(axis, index + d) for axis, index in val_keys for d in range(-gap, gap + 1)}
    ordered = sorted(samples, key=lambda s: (s.axis, s.index, s.label))
    val = [s for s in ordered if (s.axis, s.index) in val_keys]
    train = [s for s in ordered if (s.axis, s.index) not in near]
    return train, val


def check_enough(train: Sequence[Sample], val: Sequence[Sample],
                 one_volume: bool = False) -> None:
    """Refuse with a clear message when there is too little data to train and validate
    (``one_volume``: a split by slices, where both sides come from the same volume)."""
    ct, cv = count(train), count(val)
    problems = []
    if ct.volumes < 1 or ct.samples < MIN_TRAIN_SAMPLES:
        problems.append(f"training has {ct.samples} sample(s) from {ct.volumes} volume(s), "
                        f"needs at least {MIN_TRAIN_SAMPLES} from 1 volume")
    if cv.volumes < 1 or cv.samples < MIN_VAL_SAMPLES:
        problems.append(f"validation has {cv.samples} sample(s) from {cv.volumes} volume(s), "
                        f"needs at least {MIN_VAL_SAMPLES} from another volume")
    overlap = {s.volume_id for s in train} & {s.volume_id for s in val}
    if overlap and not one_volume:
        problems.append("a volume is in both training and validation")
    if problems:
        raise MedsamError("too little annotated data to fine-tune: " + "; ".join(problems)
                          + ". Edit or accept more slices (each accepted slice label counts).")


def group_by_volume(samples: Sequence[Sample]) -> Dict[str, List[Sample]]:
    out: Dict[str, List[Sample]] = OrderedDict()
    for s in samples:
        out.setdefault(s.volume_id, []).append(s)
    return out
