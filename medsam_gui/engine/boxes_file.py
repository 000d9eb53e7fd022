"""The boxes of medsam-segment: a --boxes JSON file read and every field checked, and a
voxel-index box placed on its view (no Qt, no model).

An entry is a box prompt ``{"axis", "slice", "box", "label", "extent"}`` or an empty key slice
``{"axis", "slice", "label", "empty": true}``: the structure of that label is absent on that
slice, so propagation never fills it or crosses it (``engine.key_slices``).
"""

from __future__ import annotations

import json
import math
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from medsam_gui.errors import MedsamError

MAX_BOXES_BYTES = 16 * 2**20  # ~250 000 boxes; anything larger is not a prompt list
BOX_KEYS = ("axis", "slice", "box", "label", "extent", "empty")
BOX_FORMAT = '{"axis": 0|1|2, "slice": K, "box": [x0, y0, x1, y1], "label": 1, "extent": [a, b]}'
EMPTY_FORMAT = '{"axis": 0|1|2, "slice": K, "label": 1, "empty": true}'


@dataclass
class BoxPrompt:
    axis: int
    slice: int
    box: Optional[Sequence[int]]  # x0, y0, x1, y1 in source voxel indices; None if empty
    label: int
    extent: Optional[Sequence[int]] = None  # first, last slice along axis (propagation)
    origin: str = "box"  # how the user gave it: "--box 2 70 ..." or "boxes[3]"
    path: Optional[str] = None  # the boxes file it came from
    empty: bool = False  # an empty key slice: the label is absent on this slice

    def error(self, problem: str) -> MedsamError:
        """An error that names where this box was given."""
        return MedsamError(f"{self.origin}: {problem}", self.path)


class _BadBox(ValueError):
    """One field of one JSON box is wrong (the message says which and how)."""


class _BadNumber(ValueError):
    """A number JSON cannot mean: NaN, Infinity, or one too large for a float (1e400)."""


def _no_constant(name: str) -> float:
    raise _BadNumber(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(text)
    return value


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(value: object, what: str) -> int:
    """A JSON whole number (70 or 70.0); booleans, fractions, strings and null are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadBox(f'"{what}" must be a whole number (got {_shown(value)})')
    if isinstance(value, float) and not value.is_integer():
        raise _BadBox(f'"{what}" must be a whole number (got {_shown(value)})')
    return int(value)


def _numbers(value: object, n: int, what: str) -> List[int]:
    if not isinstance(value, list) or len(value) != n:
        raise _BadBox(f'"{what}" must be a list of {n} whole numbers (got {_shown(value)})')
    return [_whole(v, f"{what}[{i}]") for i, v in enumerate(value)]


def check_prompt(prompt: BoxPrompt) -> None:
    """What can be checked without the image: axis, label, corner order, extent."""
    if prompt.axis not in (0, 1, 2):
        raise prompt.error(f"the axis must be 0, 1 or 2 (got {prompt.axis})")
    if not 0 < prompt.label < 65536:
        raise prompt.error(f"the label must be within 1..65535 (got {prompt.label})")
    if prompt.empty:
        return
    x0, y0, x1, y1 = prompt.box
    if not (x0 < x1 and y0 < y1):
        raise prompt.error(f"a box needs X0 < X1 and Y0 < Y1 (it spans at least 2 voxels each "
                           f"way; got X0={x0} Y0={y0} X1={x1} Y1={y1})")


def _box_of(item: object, default_label: int, n: int, path: str) -> BoxPrompt:
    where = f"boxes[{n}]"
    if not isinstance(item, dict):
        raise _BadBox(f"each box must be a JSON object like {BOX_FORMAT} (got {_shown(item)})")
    unknown = sorted(set(item) - set(BOX_KEYS))
    if unknown:
        raise _BadBox(f"unknown key(s) {', '.join(map(repr, unknown))}; a box has "
                      f"{', '.join(BOX_KEYS)}")
    empty = item.get("empty", False)
    if not isinstance(empty, bool):
        raise _BadBox(f'"empty" must be true or false (got {_shown(empty)})')
    if empty and ("box" in item or "extent" in item):
        raise _BadBox(f'an empty key slice has no "box" or "extent": {EMPTY_FORMAT}')
    missing = [k for k in ("axis", "slice") + (() if empty else ("box",)) if k not in item]
    if missing:
        raise _BadBox(f"missing {', '.join(repr(k) for k in missing)}")
    extent = item.get("extent")
    prompt = BoxPrompt(_whole(item["axis"], "axis"), _whole(item["slice"], "slice"),
                       None if empty else _numbers(item["box"], 4, "box"),
                       _whole(item.get("label", default_label), "label"),
                       None if extent is None else _numbers(extent, 2, "extent"), where, path,
                       empty)
    check_prompt(prompt)
    return prompt


def read_boxes_json(path: str, default_label: int) -> List[BoxPrompt]:
    """The boxes of a --boxes file, every field checked; MedsamError naming the file if not."""
    file = Path(path).expanduser()
    try:
        info = file.stat()
        if stat.S_ISDIR(info.st_mode):
            raise MedsamError("this is a folder, not a boxes file", path)
        if not stat.S_ISREG(info.st_mode):
            raise MedsamError("the boxes file is not a regular file", path)
        if info.st_size > MAX_BOXES_BYTES:
            raise MedsamError(f"the boxes file is {info.st_size} bytes; a boxes file holds at "
                              f"most {MAX_BOXES_BYTES // 2**20} MB", path)
        raw = file.read_bytes()
    except OSError as exc:
        raise MedsamError(f"cannot read the boxes file ({exc.strerror or exc})", path) from None
    if not raw.strip():
        raise MedsamError("the boxes file is empty", path)
    try:
        items = json.loads(raw.decode("utf-8"), parse_constant=_no_constant,
                           parse_float=_finite)
    except UnicodeDecodeError:
        raise MedsamError("the boxes file is not UTF-8 text", path) from None
    except _BadNumber as exc:
        raise MedsamError(f"the boxes file holds {exc}, which is not a finite number", path) \
            from None
    except RecursionError:
        raise MedsamError("the boxes file is nested too deeply to be a list of boxes", path) \
            from None
    except ValueError as exc:
        raise MedsamError(f"the boxes file is not valid JSON ({exc})", path) from None
    if not isinstance(items, list):
        raise MedsamError(f"the boxes file must hold a JSON list of boxes like [{BOX_FORMAT}]",
                          path)
    if not items:
        raise MedsamError("the boxes file holds an empty list: no boxes", path)
    out = []
    for n, item in enumerate(items):
        try:
            out.append(_box_of(item, default_label, n, path))
        except (_BadBox, RecursionError) as exc:
            problem = str(exc) if isinstance(exc, _BadBox) else "nested too deeply"
            raise MedsamError(f"boxes[{n}] is malformed: {problem}", path) from None
    return out


def display_box(volume, prompt: BoxPrompt, image: str):
    """(view geometry, display slice index, display box x0 y0 x1 y1) for a voxel-index box;
    the box is None for an empty key slice."""
    from medsam_gui.volume import view_for_axis

    shape = volume.shape
    check_prompt(prompt)
    rest = [a for a in range(3) if a != prompt.axis]
    x0, y0, x1, y1 = prompt.box if not prompt.empty else (0, 0, 0, 0)
    checks = [(prompt.slice, prompt.axis, "slice"), (x0, rest[0], "X0"), (x1, rest[0], "X1"),
              (y0, rest[1], "Y0"), (y1, rest[1], "Y1")]
    for value, ax, what in checks:
        if not 0 <= value < shape[ax]:
            raise prompt.error(f"{what}={value} is outside 0..{shape[ax] - 1} along voxel axis "
                               f"{ax} of {image} (image shape {shape})")
    if prompt.extent is not None:
        first, last = sorted(prompt.extent)
        if first < 0 or last >= shape[prompt.axis]:
            raise prompt.error(f"extent {first}..{last} is outside 0..{shape[prompt.axis] - 1} "
                               f"along voxel axis {prompt.axis} of {image}")
        if not first <= prompt.slice <= last:
            raise prompt.error(f"the box's slice {prompt.slice} is outside its extent "
                               f"{first}..{last}")
    geom = view_for_axis(volume.affine, shape, prompt.axis)
    if prompt.empty:
        vox = [0, 0, 0]
        vox[prompt.axis] = prompt.slice
        return geom, geom.display_pixel(tuple(vox))[0], None
    corners = []
    for x, y in ((x0, y0), (x1, y1)):
        vox = [0, 0, 0]
        vox[prompt.axis], vox[rest[0]], vox[rest[1]] = prompt.slice, x, y
        corners.append(geom.display_pixel(tuple(vox)))
    rows = [c[1] for c in corners]
    cols = [c[2] for c in corners]
    return geom, corners[0][0], (min(cols), min(rows), max(cols), max(rows))


@dataclass
class KeyGroup:
    """The key slices of one label on one axis: display slice -> its model masks (filled in by
    the caller; an empty key slice keeps an empty list), and the slices it may fill."""

    geom: object  # ViewGeometry of the axis
    keys: Dict[int, list] = field(default_factory=dict)
    extent: Optional[Tuple[int, int]] = None


def key_groups(prompts: Sequence[BoxPrompt], placed: Sequence[tuple]
               ) -> Dict[Tuple[int, int], KeyGroup]:
    """Group the prompts (with their ``display_box`` placements) by (label, axis), in the
    order given. A group's extent spans its boxes' extents when every box has one, else it is
    the whole axis. A slice given both as empty and with a box of the same label is refused."""
    groups: Dict[Tuple[int, int], KeyGroup] = {}
    empty_at: Dict[Tuple[int, int, int], BoxPrompt] = {}
    boxed_at: Dict[Tuple[int, int, int], BoxPrompt] = {}
    for prompt, (geom, k, _box) in zip(prompts, placed):
        group = groups.setdefault((prompt.label, prompt.axis), KeyGroup(geom))
        group.keys.setdefault(int(k), [])
        where = (prompt.label, prompt.axis, prompt.slice)
        (empty_at if prompt.empty else boxed_at).setdefault(where, prompt)
        if where in empty_at and where in boxed_at:
            raise empty_at[where].error(
                f"slice {prompt.slice} of axis {prompt.axis} is given as empty for label "
                f"{prompt.label} and also has a box of that label ({boxed_at[where].origin})")
    for (label, axis), group in groups.items():
        mine = [p for p in prompts if (p.label, p.axis) == (label, axis) and not p.empty]
        if mine and all(p.extent is not None for p in mine):
            ends = [e for p in mine for e in p.extent]
            first, last = min(ends), max(ends)
            rows = []
            for end in (first, last):  # voxel index -> display index along the view
                vox = [0, 0, 0]
                vox[axis] = end
                rows.append(int(group.geom.display_pixel(tuple(vox))[0]))
            group.extent = (min(rows), max(rows))
    return groups
