"""DecodeGate: lets a box decode overtake a running image encoder.

A box decode and a background encode in two threads share the two CPU cores badly (a box
took 2.2x longer during a precompute). The encoder therefore yields cooperatively: forward
pre-hooks on its blocks wait while a decode is in flight, so a box waits at most for one
sub-block and the precompute loses only the time the decoder actually runs.

The OpenVINO encoder cannot pause mid-inference. It is cut into parts (``ov_encoder_parts``);
a background slice starts each part through ``start`` as an asynchronous request, and a decode
that begins while a part runs cancels it (the runtime stops within one op); the part runs again
once the decode is over. Before a part starts, ``wait_to_start`` also waits for a short quiet
spell after the last decode (a box is often followed by another box or a click), at most
``HOLD`` seconds: a part started after that wait was forced and is not cancelled, nor is a part
cancelled twice already (``ov_encoder_parts.CANCELS``), so no stream of decodes can starve the
encoder. The waste is at most one part per decode.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator, Optional

from torch import nn

QUIET = 0.1  # s after the last decode before a background part starts
HOLD = 1.0  # s a background part waits for that quiet spell at most


class DecodeGate:
    """Counts box decodes in flight; the encoder's block hooks wait while there are any.

    A deep copy of a hooked model (training clones it) shares the gate instead of copying its
    lock, so the copy keeps yielding to the same decoder.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._last_end = float("-inf")  # time.monotonic() when the last decode ended
        self._cancel: Optional[Callable[[], None]] = None  # of the background part in flight
        self._cancelled = False
        self.cancels = 0  # background parts cancelled by a decode (benchmarks print it)

    def __deepcopy__(self, memo: dict) -> "DecodeGate":
        return self

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        with self._cond:
            self._active += 1
            cancel, self._cancel = self._cancel, None
            if cancel is not None:
                self._cancelled = True
                self.cancels += 1
        if cancel is not None:
            cancel()  # the runtime stops the part within one op; it runs again after us
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._last_end = time.monotonic()
                self._cond.notify_all()

    def wait(self) -> None:
        """Return once no box is being decoded (at most 5 s: a stuck decode cannot stall the
        encoder forever)."""
        if self._active:
            with self._cond:
                self._cond.wait_for(lambda: self._active == 0, timeout=5.0)

    def wait_hook(self, module: nn.Module, args: object) -> None:
        """Forward pre-hook: pause this encoder block while a box is being decoded."""
        self.wait()

    def wait_to_start(self, quiet: float = QUIET, hold: float = HOLD) -> bool:
        """Wait until no decode is in flight and none ended in the last ``quiet`` s, for at
        most ``hold`` s (then only for no decode in flight, at most 5 s more). True when the
        quiet spell did not come: the part is then forced (not cancellable)."""
        deadline = time.monotonic() + hold
        with self._cond:
            while True:
                now = time.monotonic()
                if self._active == 0 and now - self._last_end >= quiet:
                    return False
                if now >= deadline + 5.0 or (self._active == 0 and now >= deadline):
                    return True
                wake = (deadline if self._active else min(deadline, self._last_end + quiet))
                self._cond.wait(timeout=max(wake - now, 0.001) if now < deadline else 5.0)

    def start(self, begin: Callable[[], None], cancel: Optional[Callable[[], None]]) -> bool:
        """Start a background part (``begin`` starts it asynchronously) unless a decode has
        begun meanwhile (then False: wait again). With ``cancel``, a decode that begins before
        ``finished`` calls it."""
        with self._cond:
            if self._active and cancel is not None:
                return False
            begin()
            self._cancel, self._cancelled = cancel, False
            return True

    def finished(self) -> bool:
        """The background part ended (done or stopped); True if a decode cancelled it."""
        with self._cond:
            self._cancel = None
            cancelled, self._cancelled = self._cancelled, False
            return cancelled
