"""Per-slice provenance: how one label's mask on one slice came to be (a person's box or brush,
propagated, interpolated, imported), from which model and input, and who reviewed it."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional

import numpy as np

from medsam_gui.annotation.change import RecordKey

STATUSES = ("model", "edited", "accepted")
REVIEWED = ("edited", "accepted")  # a person looked at the slice: training data
# how a mask was made: "" a person's box/points or brush (and records from before methods were
# recorded), "propagated" from a neighbouring slice, "interpolated" between key slices,
# "imported" from a segmentation made elsewhere (its file name is in ``model``)
METHODS = ("", "propagated", "interpolated", "imported")
FILLED = ("propagated", "interpolated")
UNREVIEWED_METHODS = FILLED + ("imported",)  # machine-made until a person accepts or edits


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def mask_sha256(mask: np.ndarray) -> str:
    """Hash of a binary mask (shape + packed bits): provenance of a raw model mask."""
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    h = hashlib.sha256(str(m.shape).encode())
    h.update(np.packbits(m).tobytes())
    return h.hexdigest()


@dataclass
class SliceRecord:
    """Provenance of one label on one slice: how the mask came to be and who checked it."""

    axis: str
    index: int
    label: int
    status: str = "model"  # "model" | "edited" | "accepted"
    boxes: List[list] = field(default_factory=list)
    points: List[list] = field(default_factory=list)
    model: str = ""
    weights_sha256: str = ""
    model_mask_sha256: str = ""
    iou: Optional[float] = None
    time: str = field(default_factory=now_iso)
    # what the model saw (engine.intensity.InputTransform.provenance()); {} = not recorded
    model_input: Dict[str, object] = field(default_factory=dict)
    method: str = ""  # one of METHODS
    from_slices: List[int] = field(default_factory=list)  # propagated from [k] / between [k, m]
    stop_reason: str = ""  # propagation: why its front stopped after this run

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} not one of {STATUSES}")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} not one of {METHODS}")
        self.from_slices = [int(v) for v in self.from_slices]
        self.index = int(self.index)
        self.label = int(self.label)

    @property
    def key(self) -> RecordKey:
        return (self.axis, self.index, self.label)

    @property
    def reviewed(self) -> bool:
        return self.status in REVIEWED

    @property
    def unreviewed_fill(self) -> bool:
        """Filled by propagation or interpolation, or imported, and not looked at by a person
        since."""
        return self.method in UNREVIEWED_METHODS and not self.reviewed

    def to_json(self) -> dict:
        d = asdict(self)
        d["boxes"] = [[float(v) for v in b] for b in self.boxes]
        d["points"] = [[float(v) for v in p] for p in self.points]
        d["iou"] = None if self.iou is None else float(self.iou)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "SliceRecord":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def copy(self, **changes: object) -> "SliceRecord":
        d = asdict(self)
        d.update(changes)
        return SliceRecord(**d)
