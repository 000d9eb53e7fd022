"""Limits of a read: how large an image may be, how far compressed data can expand, and the
caller's patience (progress and cancel of a long read).

``check_array_size`` refuses an image before anything is allocated for it: dimensions no
machine could hold (a corrupt header), and an image larger than the memory free now (the system
would otherwise kill the program part way through the read).

``read_progress`` lets a caller (the window's open worker) follow a long read and stop it: the
readers call ``tick(done, total)`` between chunks, which reports to the callback installed for
the current thread and raises ``LoadCancelled`` once the caller's ``cancel()`` says so. Nothing
is installed by default, so a script's or the CLI's read pays one dictionary lookup a chunk.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

from ..errors import MedsamError

# Refuse headers whose voxel array could not be held in memory (checked before allocating).
MAX_VOXEL_BYTES = 16 << 30
# deflate cannot expand data by more than 1032:1 (zlib's documented limit), so a compressed file
# of n bytes holds at most this many times n bytes of image
DEFLATE_MAX_RATIO = 1032


class LoadCancelled(MedsamError):
    """The caller cancelled a read in progress (not an error of the file)."""


def size_text(n: int) -> str:
    """A byte count for people: "7.0 GiB (7516192768 bytes)"."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def memory_limit() -> int:
    """The most voxel bytes an image may claim: the machine's memory, at most ``MAX_VOXEL_BYTES``."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        physical = MAX_VOXEL_BYTES
    return int(min(MAX_VOXEL_BYTES, physical))


def available_memory() -> Optional[int]:
    """Memory the system can give this process now without swapping (Linux ``MemAvailable``),
    or None where it does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_array_size(shape: Tuple[int, ...], itemsize: int, path: Path) -> None:
    """Refuse absurd dimensions, and an image larger than the memory free now, before
    anything is allocated (a scan that would not fit is refused with a message, instead of
    the system killing the program part way through the read)."""
    n = 1
    for s in shape:
        n *= int(s)
    limit = memory_limit()
    dims = "×".join(str(int(s)) for s in shape)
    if n * itemsize > limit:
        raise MedsamError(
            f"header dimensions {dims} need {n * itemsize / 2**30:.1f} GiB, more than this "
            f"machine can hold ({limit / 2**30:.1f} GiB); the header is corrupt or the image "
            "is too large",
            path,
        )
    free = available_memory()
    if free is not None and n * itemsize > free:
        raise MedsamError(
            f"the image ({dims}) needs {size_text(n * itemsize)} of memory for its voxels, "
            f"more than this machine has free now ({size_text(free)}): close other programs, "
            "or open a smaller part of it (one volume of a 4D series, a cropped copy)",
            path,
        )


# ---- progress and cancel of a read ---------------------------------------------------------
Progress = Callable[[int, int], None]
_local = threading.local()


@contextmanager
def read_progress(progress: Optional[Progress] = None,
                  cancel: Optional[Callable[[], bool]] = None) -> Iterator[None]:
    """Within this block (in this thread), readers report ``progress(done, total)`` (bytes)
    and stop with ``LoadCancelled`` as soon as ``cancel()`` is true."""
    before = getattr(_local, "hooks", None)
    _local.hooks = (progress, cancel)
    try:
        yield
    finally:
        _local.hooks = before


def check_cancel(path: Optional[Path] = None) -> None:
    """Raise ``LoadCancelled`` if the caller of the current read has cancelled it."""
    hooks = getattr(_local, "hooks", None)
    if hooks is not None and hooks[1] is not None and hooks[1]():
        raise LoadCancelled("the open was cancelled", path)


def tick(done: int, total: int, path: Optional[Path] = None) -> None:
    """A reader's progress: report it, then stop if the caller has cancelled."""
    hooks = getattr(_local, "hooks", None)
    if hooks is None:
        return
    if hooks[0] is not None:
        hooks[0](int(done), int(total))
    check_cancel(path)
