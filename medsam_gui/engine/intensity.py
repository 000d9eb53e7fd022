"""What the model sees: the intensity rule that turns a volume's voxels into the uint8 image
the encoder is given, per input kind, and the user's choice of it.

The voxels are never changed; ``InputTransform.apply`` maps any slice (or the whole volume) to
a new uint8 array. The rules, each checked against ground truth on the data in
``../shared/data`` (numbers in ``benchmarks/bench_model_input.py`` and the README):

CT in Hounsfield units (DICOM applies RescaleSlope/Intercept; nibabel applies scl_slope/inter):
    upstream MedSAM's ``pre_CT_MR``: clip to level 40 / width 400 (soft tissue), then min-max
    over the clipped volume to 0..255. Kept: it is what the model was trained with.
CT stored without the rescale (a NIfTI of raw unsigned values, air near 0, water near 1024):
    a CT in HU has air or fat (< -100) in its lowest 0.1 % and little above 824 HU; a CT whose
    lowest 0.1 % is above -200 and whose top 1 % is above 824 is taken as stored without its
    rescale, HU = value - 1024 (the intercept the major vendors write), and the CT rule above
    applies in HU.
MR and anything else (raw MR, z-scored MR, 8-bit images and templates, float maps):
    clip to the 0.5/99.5 percentiles of the *foreground* voxels, min-max to 0..255, and
    background voxels black. Foreground = the voxels that differ from the background value, the
    most common value on the volume's six faces. Upstream takes the percentiles of the voxels
    ``> 0`` and keeps zeros at zero; on raw MR (non-negative, background 0) the two rules are the
    same, so the official behaviour is kept there. On standardised (z-scored) MR, 90 % of the
    brain is negative and the background is a constant (0 or the minimum): ``> 0`` clips most of
    the brain to black (GT-box Dice 0.70 instead of 0.78-0.80 on BRATS FLAIR), so we depart
    from upstream there. Percentiles are computed in float64, so tiny float ranges (1e-6 wide)
    map like any other.
An explicit window (CT presets, or "the display window"):
    level/width mapped linearly to 0..255 without the volume min-max, i.e. the model sees the
    grey values the person sees. CT presets are in HU (shifted for CT stored without rescale);
    the display window is in stored values.

Undefined inputs get a defined result or a clear error: non-finite voxels are left out of the
statistics and shown black (NaN, -inf) or white (+inf); a volume whose voxels all have one value
(empty, constant, all background) or that lies wholly outside the model window raises
``ModelInputError`` naming the problem.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Dict, Optional, Tuple

import numpy as np

from medsam_gui.errors import MedsamError

CT_WINDOW = (40.0, 400.0)  # level, width: pre_CT_MR's soft-tissue window
MR_PERCENTILES = (0.5, 99.5)  # of the foreground voxels
# MR percentiles come from at most about this many voxels (a lattice of every n-th voxel along
# each axis beyond it: a whole-volume sort of a 1,000-slice scan costs seconds and copies), so
# every scan of ../shared/data keeps exact percentiles. What a lattice changes is measured in
# benchmarks/bench_scale.py --percentiles and tests/test_scale.py (BRATS with every other
# voxel: model input within 1 of 255 levels)
PERCENTILE_SAMPLE = 16_000_000
CT_RAW_OFFSET = -1024.0  # HU = stored value + this, for CT stored without its rescale
RULE_VERSION = 2  # bump when a rule changes: old cached embeddings then stop matching

# CT windows a clinician knows (level, width in HU).
CT_PRESETS: Dict[str, Tuple[float, float]] = {
    "soft tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}
MODALITIES = ("auto", "CT", "MR")


class ModelInputError(MedsamError):
    """The volume cannot be turned into a meaningful model input under the chosen rule."""


@dataclass(frozen=True)
class ModelInput:
    """The user's choice of model input: modality rule and, optionally, a fixed window.

    ``modality``: "auto" (the volume's own: DICOM's Modality or the NIfTI guess), "CT" or "MR".
    ``window``: None for the modality's automatic rule, else (level, width). ``window_units``:
    "HU" (presets; shifted for CT stored without rescale) or "stored" (the display window).
    ``name`` names the choice for people ("lung", "display window").
    """

    modality: str = "auto"
    window: Optional[Tuple[float, float]] = None
    window_units: str = "HU"
    name: str = ""

    def __post_init__(self) -> None:
        mod = "auto" if str(self.modality).lower() == "auto" else str(self.modality).upper()
        if mod not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        object.__setattr__(self, "modality", mod)
        if self.window is not None:
            level, width = (float(v) for v in self.window)
            if not (np.isfinite(level) and np.isfinite(width)) or width <= 0:
                raise ValueError(f"a window needs a finite level and a width > 0, got {self.window}")
            object.__setattr__(self, "window", (level, width))
        if self.window_units not in ("HU", "stored"):
            raise ValueError("window_units must be 'HU' or 'stored'")

    @classmethod
    def preset(cls, name: str, modality: str = "auto") -> "ModelInput":
        return cls(modality, CT_PRESETS[name], "HU", name)

    @classmethod
    def display(cls, level: float, width: float, modality: str = "auto") -> "ModelInput":
        return cls(modality, (float(level), float(width)), "stored", "display window")

    def with_modality(self, modality: str) -> "ModelInput":
        return ModelInput(modality, self.window, self.window_units, self.name)

    def to_json(self) -> dict:
        d = asdict(self)
        d["window"] = None if self.window is None else list(self.window)
        return d

    @classmethod
    def from_json(cls, d: Optional[dict]) -> "ModelInput":
        if not d:
            return cls()
        win = d.get("window")
        return cls(str(d.get("modality", "auto")), None if win is None else tuple(win),
                   str(d.get("window_units", "HU")), str(d.get("name", "")))


@dataclass(frozen=True)
class InputTransform:
    """A resolved rule for one volume: ``apply`` maps voxels to uint8 through [lo, hi]."""

    rule: str  # "ct-window" | "foreground-percentile" | "window"
    modality: str  # the modality the rule was chosen for ("CT" or "MR")
    modality_source: str  # "user" | the volume's ("dicom", "guess", ...)
    lo: float  # stored value shown black
    hi: float  # stored value shown white
    background: Optional[float] = None  # stored value shown black whatever lo is
    offset: float = 0.0  # HU = stored + offset (CT stored without rescale)
    params: Dict[str, object] = field(default_factory=dict)  # the rule's own settings

    def apply(self, data: np.ndarray) -> np.ndarray:
        """uint8 image of ``data`` (any shape): clip to [lo, hi], scale to 0..255, truncate."""
        x = np.clip(data.astype(np.float64, copy=False), self.lo, self.hi)  # a new array
        x -= self.lo
        x /= self.hi - self.lo  # upstream's order of operations: equal at integer boundaries
        x *= 255.0
        if np.issubdtype(data.dtype, np.floating):
            x[np.isnan(x)] = 0.0
        out = x.astype(np.uint8)
        if self.background is not None:
            out[data == self.background] = 0
        return out

    @property
    def description(self) -> Dict[str, object]:
        """What names this input in the embedding cache key (and in provenance)."""
        d: Dict[str, object] = {"rule": self.rule, "version": RULE_VERSION,
                                "modality": self.modality, **self.params}
        if self.offset:
            d["offset"] = self.offset
        return d

    @cached_property
    def cache_key(self) -> str:
        """Computed once: every cache look-up on the box path asks for it."""
        return json.dumps(self.description, sort_keys=True)

    def provenance(self) -> Dict[str, object]:
        """The description plus where the modality came from and the resolved range."""
        return {**self.description, "modality_source": self.modality_source,
                "lo": float(self.lo), "hi": float(self.hi)}

    def summary(self) -> str:
        """One line for the status bar, e.g. 'MR · foreground 0.5–99.5 %'."""
        src = " (guessed)" if self.modality_source == "guess" else ""
        if self.rule == "foreground-percentile":
            what = "foreground {:g}–{:g} %".format(*MR_PERCENTILES)
        else:
            name = self.params.get("name") or "window"
            what = f"{name} L {self.params['level']:g} W {self.params['width']:g}"
            if self.offset:
                what += f" (stored {-self.offset:+g})"
        return f"{self.modality}{src} · {what}"


def volume_modality(volume) -> Tuple[str, str]:
    """(modality "CT"/"MR", where it came from) of a volume: DICOM's tag or the NIfTI guess."""
    mod = str(getattr(volume, "modality", "") or "").upper()
    source = str(volume.source.extra.get("modality_source", "")) if volume.source else ""
    if not source:
        source = "dicom" if getattr(volume.source, "kind", "") == "dicom" else "guess"
    return ("CT" if mod == "CT" else "MR"), source


def border_mode(data: np.ndarray) -> float:
    """The most common value on the six faces of a 3D array (NaN ignored): the background."""
    faces = [data[[0, -1]], data[:, [0, -1]], data[:, :, [0, -1]]] if data.ndim == 3 else [data]
    border = np.concatenate([np.ravel(f) for f in faces])
    if np.issubdtype(border.dtype, np.floating):
        border = border[np.isfinite(border)]
    if border.size == 0:
        return float("nan")
    values, counts = np.unique(border, return_counts=True)
    return float(values[counts.argmax()])


def sample_stride(shape: Tuple[int, ...], most: Optional[int] = None) -> int:
    """The stride, the same along every axis, of a lattice of at most about ``most`` (default
    ``PERCENTILE_SAMPLE``) voxels of a volume of ``shape``; 1 (every voxel) when they fit. A
    lattice picks the same voxels whatever the array's memory order."""
    n = int(np.prod(shape)) if len(shape) else 0
    most = int(most or PERCENTILE_SAMPLE)
    if n <= most:
        return 1
    return int(np.ceil((n / most) ** (1.0 / max(1, len(shape)))))


def _finite(data: np.ndarray) -> np.ndarray:
    flat = np.ravel(data, order="K")
    if np.issubdtype(flat.dtype, np.floating):
        flat = flat[np.isfinite(flat)]
    return flat


def ct_stored_offset(finite: np.ndarray) -> float:
    """``CT_RAW_OFFSET`` for a CT stored without its rescale (see the module doc), else 0."""
    sample = finite[:: max(1, finite.size // 1_000_000)]
    low, high = np.percentile(sample, (0.1, 99.0))
    return CT_RAW_OFFSET if low > -200 and high > 824 else 0.0


def hu_offset(volume) -> float:
    """HU = stored value + this, for the volume as it is labelled (0 unless it is a CT stored
    without its rescale). The display uses it to place its HU presets."""
    if volume_modality(volume)[0] != "CT":
        return 0.0
    flat = np.ravel(volume.data, order="K")
    return ct_stored_offset(_finite(flat[:: max(1, flat.size // 1_000_000)]))


def _range_text(vmin: float, vmax: float) -> str:
    return f"{vmin:.6g}" if vmin == vmax else f"{vmin:.6g}…{vmax:.6g}"


def resolve(volume, choice: Optional[ModelInput] = None) -> InputTransform:
    """The transform ``choice`` (default: automatic) gives for this volume (see module doc)."""
    choice = choice or ModelInput()
    data = volume.data
    if choice.modality == "auto":
        modality, source = volume_modality(volume)
    else:
        modality, source = choice.modality, "user"
    finite = _finite(data)
    path = getattr(volume.source, "path", None) or None
    if finite.size == 0:
        raise ModelInputError("the volume has no finite voxel: nothing for the model to see",
                              path)
    vmin, vmax = float(finite.min()), float(finite.max())
    if vmin == vmax:
        raise ModelInputError(f"every voxel has the value {vmin:.6g}: the volume is constant, "
                              "so the model would see a blank image", path)
    offset = ct_stored_offset(finite) if modality == "CT" else 0.0

    if choice.window is not None:
        level, width = choice.window
        shift = offset if choice.window_units == "HU" else 0.0
        lo, hi = level - width / 2.0 - shift, level + width / 2.0 - shift
        if vmax <= lo or vmin >= hi:
            raise ModelInputError(
                f"no voxel lies inside the model window L {level:g} / W {width:g} "
                f"(voxels {_range_text(vmin, vmax)}): choose another model input", path)
        params = {"level": level, "width": width, "units": choice.window_units,
                  "name": choice.name}
        return InputTransform("window", modality, source, lo, hi, None,
                              shift, params)

    if modality == "CT":
        level, width = CT_WINDOW
        lo, hi = level - width / 2.0 - offset, level + width / 2.0 - offset
        if vmax <= lo or vmin >= hi:
            raise ModelInputError(
                f"no voxel lies inside the CT soft-tissue window (voxels "
                f"{_range_text(vmin, vmax)}): if this is not CT in HU, choose Modality MR", path)
        # upstream min-maxes the clipped volume: the range actually reached
        params = {"level": level, "width": width, "name": "soft tissue"}
        return InputTransform("ct-window", "CT", source, max(lo, vmin), min(hi, vmax), None,
                              offset, params)

    background = border_mode(data)
    stride = sample_stride(data.shape)
    pool = finite if stride == 1 else _finite(data[(slice(None, None, stride),) * data.ndim])
    fg = pool[pool != background]
    if fg.size == 0:
        raise ModelInputError(f"every voxel has the background value {background:.6g}: "
                              "the volume is empty", path)
    fg = fg if fg.dtype.kind in "iub" else fg.astype(np.float64)  # tiny float ranges too
    lo, hi = (float(v) for v in np.percentile(fg, MR_PERCENTILES))
    if hi <= lo:  # percentiles coincide (e.g. a binary mask): use the foreground's full range
        lo, hi = float(fg.min()), float(fg.max())
    # upstream's min-max of the clipped volume: the range actually reached
    lo, hi = max(lo, vmin), min(hi, vmax)
    if hi <= lo:  # the foreground is one value: white on black
        lo = hi - max(1.0, abs(hi))
    params = {"low_pct": MR_PERCENTILES[0], "high_pct": MR_PERCENTILES[1],
              "background": background}
    return InputTransform("foreground-percentile", "MR", source, lo, hi, background, 0.0, params)


def upstream_transform(volume) -> InputTransform:
    """MedSAM's ``pre_CT_MR`` as published, for side-by-side comparisons only: CT window 40/400
    on the stored values (no rescale check); else percentiles of the voxels > 0, zeros black."""
    data = volume.data
    vmin, vmax = float(np.nanmin(data)), float(np.nanmax(data))
    if volume.modality == "CT":
        level, width = CT_WINDOW
        lo, hi = max(level - width / 2.0, vmin), min(level + width / 2.0, vmax)
        return InputTransform("upstream-ct-window", "CT", "upstream", lo, hi, None, 0.0,
                              {"lo": lo, "hi": hi})
    positive = data[data > 0]
    positive = positive if positive.size else _finite(data)
    lo, hi = (float(v) for v in np.percentile(positive, MR_PERCENTILES))
    lo, hi = max(lo, vmin), min(hi, vmax)
    return InputTransform("upstream-positive-percentile", "MR", "upstream", lo, hi, 0.0, 0.0,
                          {"lo": lo, "hi": hi})


def normalise_for_model(volume, choice: Optional[ModelInput] = None) -> np.ndarray:
    """The whole volume as the model sees it (uint8, same shape)."""
    return resolve(volume, choice).apply(volume.data)
