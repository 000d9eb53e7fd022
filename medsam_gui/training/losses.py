"""Dice + BCE loss on the decoder's 256×256 low-res logits, and Dice of binary masks.

The loss is computed in the decoder's own frame against ``backend.low_res_target(mask)`` (as
MedSAM-Lite training does): no upsampling in the training step, and the same target geometry
the official post-processing inverts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over the batch of soft Dice loss + binary cross-entropy; shapes (B, 1, h, w)."""
    target = target.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, logits.ndim))
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    dice = 1.0 - (2.0 * inter + eps) / (denom + eps)
    return dice.mean() + bce


def mask_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (a correct negative)."""
    pred = np.asarray(pred, bool)
    truth = np.asarray(truth, bool)
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total
