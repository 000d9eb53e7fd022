"""numpy slices -> QImages: display window/level and label-overlay colouring.

Everything here works on one 2D slice at a time and never modifies the volume: window/level
maps a *copy* of the slice to uint8 for display only. Kept free of widgets so it can be timed.
"""

from __future__ import annotations

import sys
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import qimage2ndarray
from PyQt5.QtGui import QImage

from medsam_gui.engine.intensity import hu_offset

Window = Tuple[float, float]  # (center, width)

# Display presets in Hounsfield units (center, width); the usual radiology defaults.
PRESETS: Dict[str, Window] = {
    "Brain": (40.0, 80.0),
    "CT soft tissue": (40.0, 400.0),
    "Lung": (-600.0, 1500.0),
    "Bone": (400.0, 1800.0),
}


def auto_window(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> Window:
    """A window spanning the low..high percentiles of the volume (non-zero voxels when the
    background is exactly zero, as in skull-stripped MR), estimated on a subsample."""
    flat = np.asarray(data).ravel(order="K")  # a view in the volume's own (Fortran) order
    step = max(1, flat.size // 2_000_000)
    sample = flat[::step].astype(np.float32, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.5, 1.0
    nonzero = sample[sample != 0]
    if nonzero.size > 0.05 * sample.size and nonzero.size < 0.9 * sample.size:
        sample = nonzero
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return float((lo + hi) / 2.0), float(hi - lo)


def presets_for(volume) -> Dict[str, Window]:
    """The HU presets in the volume's stored values (moved for a CT stored without rescale)."""
    shift = hu_offset(volume)
    return {name: (lw[0] - shift, lw[1]) for name, lw in PRESETS.items()}


def default_window(volume) -> Window:
    """DICOM's own window if given, CT soft tissue for CT, else percentiles."""
    dicom_preset = volume.source.window_preset
    if dicom_preset is not None and dicom_preset[1] > 0:
        return float(dicom_preset[0]), float(dicom_preset[1])
    if volume.modality.upper() == "CT":
        return presets_for(volume)["CT soft tissue"]
    return auto_window(volume.data)


def windowed_uint8(slice2d: np.ndarray, window: Window) -> np.ndarray:
    """Slice mapped linearly to 0..255 through (center, width); values outside saturate."""
    center, width = window
    width = max(float(width), 1e-6)
    lo = center - width / 2.0
    out = np.subtract(slice2d, lo, dtype=np.float32)
    out *= np.float32(255.0 / width)
    np.clip(out, 0.0, 255.0, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)  # NaN voxels black, like the background
    return out.astype(np.uint8)


def gray_image(slice2d: np.ndarray, window: Window) -> QImage:
    """The slice as an 8-bit grey QImage (a copy; safe to keep)."""
    return qimage2ndarray.gray2qimage(windowed_uint8(slice2d, window), normalize=False)


def color_lut(labels: Iterable[Tuple[int, Tuple[int, int, int], bool]], opacity: float,
              size: Optional[int] = None) -> np.ndarray:
    """RGBA lookup table (value -> colour) for (value, rgb, visible) triples; 0 transparent."""
    items = list(labels)
    top = max([v for v, _, _ in items] + [0])
    n = max(top + 1, size or 0, 1)
    lut = np.zeros((n, 4), np.uint8)
    alpha = int(round(255 * min(max(opacity, 0.0), 1.0)))
    for value, rgb, visible in items:
        if visible and 0 < value < n:
            lut[value, :3] = rgb
            lut[value, 3] = alpha
    return lut


def overlay_image(label2d: np.ndarray, lut: np.ndarray) -> Optional[QImage]:
    """Label slice coloured through ``lut``; None when nothing on it is visible.

    One 32-bit gather per pixel (the table as ARGB32 words) straight into the QImage buffer:
    a 512x512 slice costs about a millisecond, so three views redraw at once.
    """
    top = int(label2d.max()) if label2d.size else 0
    if top == 0:
        return None
    if top >= len(lut):  # values missing from the table: show them grey
        lut = np.vstack([lut, np.tile([[160, 160, 160, lut[:, 3].max() or 128]],
                                      (top + 1 - len(lut), 1))]).astype(np.uint8)
    order = [2, 1, 0, 3] if sys.byteorder == "little" else [3, 0, 1, 2]  # 0xAARRGGBB words
    argb = np.ascontiguousarray(lut[:, order]).view(np.uint32).ravel()
    words = argb[label2d]
    if not words.any():  # invisible labels are all-zero words
        return None
    h, w = words.shape
    image = QImage(words.data, w, h, 4 * w, QImage.Format_ARGB32)
    return image.copy()  # owns its pixels once ``words`` is gone


def outline_mask(label2d: np.ndarray) -> np.ndarray:
    """Labelled pixels that touch a pixel of another value (4-neighbours) or the slice edge.

    Numpy only: the slice compared with its copies shifted by one row and one column.
    """
    lab = np.asarray(label2d)
    edge = np.zeros(lab.shape, bool)
    if lab.size == 0:
        return edge
    edge[0, :] = edge[-1, :] = True
    edge[:, 0] = edge[:, -1] = True
    d = lab[1:, :] != lab[:-1, :]
    edge[1:, :] |= d
    edge[:-1, :] |= d
    d = lab[:, 1:] != lab[:, :-1]
    edge[:, 1:] |= d
    edge[:, :-1] |= d
    edge &= lab != 0
    return edge


def outline_image(label2d: np.ndarray, lut: np.ndarray) -> Optional[QImage]:
    """The labels' boundaries in their colours, opaque; None when nothing visible is on it."""
    if not label2d.any():
        return None
    edge = outline_mask(label2d)
    lut = lut.copy()
    lut[lut[:, 3] > 0, 3] = 255  # outlines are thin: draw them at full strength
    return overlay_image(np.where(edge, label2d, 0), lut)


def mask_image(mask2d: np.ndarray, rgb: Tuple[int, int, int], alpha: int = 140) -> QImage:
    """A binary mask in one colour (brush-stroke preview)."""
    rgba = np.zeros(mask2d.shape + (4,), np.uint8)
    rgba[mask2d] = (rgb[0], rgb[1], rgb[2], alpha)
    return qimage2ndarray.array2qimage(rgba, normalize=False)
