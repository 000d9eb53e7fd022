"""Per-backend model-input geometry: resize/pad of the uint8 slice, box and target transforms.

Everything here follows the official MedSAM preprocessing (``CVPR24_LiteMedSAM_infer.py``,
``MedSAM_Inference.py``) step by step, re-implemented. The intensity rule that makes the uint8
slice (what the model sees) lives in ``engine.intensity``. Each function returns new arrays.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

# ---------------------------------------------------------------- LiteMedSAM (256, INTER_AREA)


def longest_side_shape(h: int, w: int, target: int) -> Tuple[int, int]:
    """(new_h, new_w) with the longest side ``target``, rounded half up as upstream."""
    scale = target * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def lite_input(slice_uint8: np.ndarray, size: int = 256) -> Tuple[np.ndarray, Tuple[int, int]]:
    """(3, size, size) float32 model input and the resized (h, w) before padding.

    Grey → 3 channels, longest side → ``size`` with cv2.INTER_AREA, min-max to [0, 1]
    (computed in float64 like the upstream numpy code), zero-pad bottom/right.
    """
    h, w = slice_uint8.shape
    new_h, new_w = longest_side_shape(h, w, size)
    img3 = np.repeat(np.ascontiguousarray(slice_uint8)[:, :, None], 3, axis=2)
    small = cv2.resize(img3, (new_w, new_h), interpolation=cv2.INTER_AREA)
    lo, hi = small.min(), small.max()
    norm = (small - lo) / max(float(hi - lo), 1e-8)  # uint8 - uint8 >= 0, then float64
    out = np.zeros((3, size, size), np.float32)
    out[:, :new_h, :new_w] = norm.transpose(2, 0, 1)
    return out, (new_h, new_w)


def lite_box(box: Sequence[float], slice_shape: Tuple[int, int], size: int = 256) -> np.ndarray:
    """Box scaled by size/max(H, W) and truncated to integers (``int()`` as upstream)."""
    ratio = size / max(slice_shape)
    return np.trunc(np.asarray(box, np.float64) * ratio).astype(np.float32)


def lite_low_res_target(mask: np.ndarray, size: int = 256) -> np.ndarray:
    """Mask in the 256² decoder frame: longest side → 256 (nearest), zero-padded."""
    h, w = mask.shape
    new_h, new_w = longest_side_shape(h, w, size)
    small = cv2.resize(mask.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((size, size), np.uint8)
    out[:new_h, :new_w] = small
    return out


# ------------------------------------------------------- MedSAM ViT-B (1024 stretch, skimage)


def medsam_input(slice_uint8: np.ndarray, size: int = 1024) -> np.ndarray:
    """(3, 1024, 1024) float32: skimage resize order 3 + anti-aliasing, uint8, min-max [0, 1]."""
    from skimage import transform

    img3 = np.repeat(slice_uint8[:, :, None], 3, axis=2)
    big = transform.resize(
        img3, (size, size), order=3, preserve_range=True, anti_aliasing=True
    ).astype(np.uint8)
    lo, hi = big.min(), big.max()
    norm = (big - lo) / max(float(hi - lo), 1e-8)
    return np.ascontiguousarray(norm.transpose(2, 0, 1), dtype=np.float32)


def medsam_box(box: Sequence[float], slice_shape: Tuple[int, int], size: int = 1024) -> np.ndarray:
    h, w = slice_shape
    return (np.asarray(box, np.float64) / np.array([w, h, w, h]) * size).astype(np.float32)


def stretch_low_res_target(mask: np.ndarray, size: int = 256) -> np.ndarray:
    """Mask in the decoder frame of a model whose input is the stretched square slice."""
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
