"""The label table: the value, name, colour, visibility and segment type of each label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

Color = Tuple[int, int, int]

# Distinct colours for new labels (value 1 is red, like most annotation tools).
PALETTE: Tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195),
    (128, 128, 0), (255, 215, 180), (0, 0, 128),
)


@dataclass
class Label:
    value: int
    name: str
    color: Color
    visible: bool = True
    property_type: str = ""  # DICOM SEG segment type (io.seg_terms key); "" = guess from name


class LabelTable:
    """Names, colours and visibility of label values (0 is background and never listed)."""

    def __init__(self, labels: Optional[Sequence[Label]] = None):
        self.labels: List[Label] = list(labels) if labels is not None else [
            Label(1, "label 1", PALETTE[0])
        ]

    def add(self, name: Optional[str] = None, color: Optional[Color] = None) -> Label:
        value = max((lab.value for lab in self.labels), default=0) + 1
        if value > 65535:
            raise ValueError("no free label value left (max 65535)")
        label = Label(
            value,
            name or f"label {value}",
            tuple(color) if color is not None else PALETTE[(value - 1) % len(PALETTE)],
        )
        self.labels.append(label)
        return label

    def get(self, value: int) -> Optional[Label]:
        """The label with this value, or None (like ``dict.get``)."""
        for lab in self.labels:
            if lab.value == value:
                return lab
        return None

    def _require(self, value: int) -> Label:
        lab = self.get(value)
        if lab is None:
            raise KeyError(f"no label with value {value}")
        return lab

    def rename(self, value: int, name: str) -> None:
        self._require(value).name = str(name)

    def recolor(self, value: int, color: Color) -> None:
        self._require(value).color = tuple(int(c) for c in color)  # type: ignore[assignment]

    def remove(self, value: int) -> None:
        """Drop the entry; ``LabelMap.remove_label`` also clears its voxels (undoable)."""
        self.labels.remove(self._require(value))

    def to_json(self) -> List[dict]:
        out = []
        for lab in self.labels:
            d = {"value": lab.value, "name": lab.name, "color": list(lab.color),
                 "visible": lab.visible}
            if lab.property_type:
                d["property_type"] = lab.property_type
            out.append(d)
        return out

    @classmethod
    def from_json(cls, items: List[dict]) -> "LabelTable":
        return cls([
            Label(int(d["value"]), str(d["name"]), tuple(int(c) for c in d["color"]),  # type: ignore[arg-type]
                  bool(d.get("visible", True)), str(d.get("property_type", "")))
            for d in items
        ])
