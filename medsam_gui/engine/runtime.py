"""Where and how the models run: device choice, encoder precision variant, allocator advice.

Encoder variants, measured on the 2-core CI-like CPU on real slices (benchmarks/bench_engine.py):
``channels_last`` is exact (mask Dice 1.000 against fp32) and faster; bf16 autocast +
channels_last is faster still but moved LiteMedSAM masks on BRATS tumour slices to Dice
0.968-0.990 against fp32 (CT slices 0.994-0.998), below the 0.99 bar, so ``precision="auto"``
picks ``channels_last`` and bf16 is an explicit opt-in (``precision="bf16"``). The allocator
matters as much: start the app with tcmalloc preloaded or ``THP_MEM_ALLOC_ENABLE=1``
(``medsam_gui.launch.prefer_fast_allocator``, called by the entry points).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

PRECISIONS = ("auto", "fp32", "channels_last", "bf16")


def pick_device(device: Optional[str] = None) -> torch.device:
    """The requested device, else CUDA, then Apple MPS, then CPU."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device, kind: str) -> str:
    """Turn "auto" into the measured best encoder variant for this device and backend."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type != "cpu":
        return "fp32"
    return "channels_last"  # exact; bf16 failed the Dice >= 0.99 bar on real MR slices


@contextlib.contextmanager
def encoder_context(precision: str, device: torch.device) -> Iterator[None]:
    """no_grad plus bf16 autocast when the variant asks for it."""
    with torch.no_grad():
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
