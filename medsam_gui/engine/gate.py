"""DecodeGate: lets a box decode overtake a running image encoder.

A box decode and a background encode in two threads share the two CPU cores badly (a box
took 2.2x longer during a precompute). The encoder therefore yields cooperatively: forward
pre-hooks on its blocks wait while a decode is in flight, so a box waits at most for one
sub-block and the precompute loses only the time the decoder actually runs.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from torch import nn


class DecodeGate:
    """Counts box decodes in flight; the encoder's block hooks wait while there are any.

    A deep copy of a hooked model (training clones it) shares the gate instead of copying its
    lock, so the copy keeps yielding to the same decoder.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0

    def __deepcopy__(self, memo: dict) -> "DecodeGate":
        return self

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def wait_hook(self, module: nn.Module, args: object) -> None:
        """Forward pre-hook: pause this encoder block while a box is being decoded."""
        if self._active:
            with self._cond:
                self._cond.wait_for(lambda: self._active == 0, timeout=5.0)
